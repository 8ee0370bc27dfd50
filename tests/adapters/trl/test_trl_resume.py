"""Checkpoint and resume of E3GRPOTrainer (issue 14, items 1-5) on a tiny Qwen2 on CPU.

A checkpoint that Transformers considers complete (it has ``trainer_state.json``) always holds
its E3 state; a resume from any epoch and any generation boundary equals the uninterrupted
run; anything else is refused with a message naming the file or the setting.
"""

from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trl import GRPOTrainer
from trl.trainer.utils import RepeatSampler
from trl_tiny import difficulty_reward, sum_dataset, tiny_model, tiny_settings, tiny_tokenizer

from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import (
    SCHEDULER_FILE,
    E3GRPOTrainer,
    EpochRepeatSampler,
    atomic_torch_save,
)

B, G = 2, 2  # prompts per generation step, completions per prompt
N_PROMPTS = 8  # 4 generation steps per epoch
TRAINER_STATE = "trainer_state.json"


class Recording(E3GRPOTrainer):
    """Keeps the prompts of each training generation step, in order."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rec_prompts: list[list[str]] = []

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        if self.model.training:
            self.rec_prompts.append([row["prompt"] for row in inputs[:: self.num_generations]])
        return super()._generate_and_score_completions(inputs)


def make(tmp_path: Path, steps: int, **overrides: Any) -> Recording:
    settings = tiny_settings(tmp_path, steps, B, G)
    settings.update(save_strategy="steps", save_steps=1, e3_refit_every=2, e3_refit_min_prompts=1)
    settings.update(overrides)
    return Recording(
        model=tiny_model(),
        processing_class=tiny_tokenizer(),
        reward_funcs=difficulty_reward,
        args=E3GRPOConfig(**settings),
        train_dataset=sum_dataset(N_PROMPTS),
    )


def assert_same_run(full: Recording, resumed: Recording, skip: int) -> None:
    """``resumed`` made the decisions of ``full``'s generation steps from ``skip`` on."""
    assert resumed.rec_prompts == full.rec_prompts[skip:]
    tail = full.e3_history[skip:]
    assert len(resumed.e3_history) == len(tail)
    for a, b in zip(tail, resumed.e3_history):
        assert a["counts"] == b["counts"]
        assert a["e3/sample_temperature"] == b["e3/sample_temperature"]
        assert a["reward"] == b["reward"]
    sa, sb = full.e3_scheduler.state_dict(), resumed.e3_scheduler.state_dict()
    assert (sa["step"], sa["epoch"]) == (sb["step"], sb["epoch"])
    assert sa["controller"] == sb["controller"]
    assert sa["tracker"]["ids"] == sb["tracker"]["ids"]
    np.testing.assert_array_equal(sa["tracker"]["successes"], sb["tracker"]["successes"])
    np.testing.assert_array_equal(sa["tracker"]["failures"], sb["tracker"]["failures"])
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(pa, pb)


# ---------------------------------------------------------------- 1. E3 state first, atomically
def test_the_e3_state_is_in_the_folder_before_trl_writes_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[bool, bool]] = []

    def crash(self: Any, model: Any, trial: Any) -> None:  # a kill right after the E3 write
        folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
        seen.append(((folder / SCHEDULER_FILE).is_file(), (folder / TRAINER_STATE).exists()))
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(GRPOTrainer, "_save_checkpoint", crash)
    trainer = make(tmp_path, steps=2)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert seen == [(True, False)]
    state = torch.load(tmp_path / "out" / "checkpoint-1" / SCHEDULER_FILE, weights_only=True)
    assert state["scheduler"]["step"] == 1


def test_a_crash_while_writing_the_e3_state_leaves_the_previous_checkpoint_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saves = {"e3": 0}
    real_save = torch.save

    def dying_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(obj, dict) and "pending_entropies" in obj and saves["e3"] == 2:
            f.write(b"PK\x03\x04 half a zip")  # a partial write, then the kill
            raise KeyboardInterrupt("killed while saving")
        return real_save(obj, f, *args, **kwargs)

    real_atomic = atomic_torch_save

    def counting_atomic(obj: Any, path: Any) -> None:
        saves["e3"] += 1
        real_atomic(obj, path)

    monkeypatch.setattr(torch, "save", dying_save)
    monkeypatch.setattr("e3core.adapters.trl.trainer.atomic_torch_save", counting_atomic)
    trainer = make(tmp_path, steps=3, save_total_limit=1)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    out = tmp_path / "out"
    # checkpoint-2's save died before TRL wrote anything: no trainer state, no rotation
    assert not (out / "checkpoint-2" / TRAINER_STATE).exists()
    assert not (out / "checkpoint-2" / SCHEDULER_FILE).exists()
    assert list((out / "checkpoint-2").iterdir()) == []  # the temporary file was removed
    assert (out / "checkpoint-1" / TRAINER_STATE).is_file()
    assert (out / "checkpoint-1" / SCHEDULER_FILE).is_file()
    for folder in out.glob("checkpoint-*"):  # the invariant
        if (folder / TRAINER_STATE).exists():
            assert (folder / SCHEDULER_FILE).is_file()


def test_atomic_save_replaces_in_one_step_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "state.pt"
    atomic_torch_save({"a": 1}, path)

    def no_replace(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr("os.replace", no_replace)
    with pytest.raises(OSError, match="disk gone"):
        atomic_torch_save({"a": 2}, path)
    assert torch.load(path, weights_only=True) == {"a": 1}  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


# ---------------------------------------------------------------- 2. missing or corrupt state
@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Recording:
    """An uninterrupted 12-step run (3 epochs of 4 steps) with a checkpoint at every step."""
    trainer = make(tmp_path_factory.mktemp("full"), steps=12)
    trainer.train()
    return trainer


def copy_checkpoint(finished: Recording, step: int, dest: Path) -> Path:
    import shutil

    src = Path(finished.args.output_dir) / f"checkpoint-{step}"
    return Path(shutil.copytree(src, dest / f"checkpoint-{step}"))


def test_a_checkpoint_without_e3_state_is_refused_naming_the_file_and_the_option(
    finished: Recording, tmp_path: Path
) -> None:
    ckpt = copy_checkpoint(finished, 2, tmp_path)
    (ckpt / SCHEDULER_FILE).unlink()
    (ckpt / f".{SCHEDULER_FILE}.x1y2.tmp").write_bytes(b"left by a kill")  # never read
    trainer = make(tmp_path / "run", steps=4)
    with pytest.raises(FileNotFoundError, match="e3_resume_fresh=True") as info:
        trainer.train(resume_from_checkpoint=str(ckpt))
    assert str(ckpt / SCHEDULER_FILE) in str(info.value)

    fresh = make(tmp_path / "fresh", steps=4, e3_resume_fresh=True)
    fresh.train(resume_from_checkpoint=str(ckpt))
    assert fresh.e3_scheduler.step == 2  # started afresh at the checkpoint


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a checkpoint at all"])
def test_a_corrupt_e3_state_is_refused_naming_the_file(
    finished: Recording, tmp_path: Path, content: bytes
) -> None:
    ckpt = copy_checkpoint(finished, 2, tmp_path)
    whole = (ckpt / SCHEDULER_FILE).read_bytes()
    (ckpt / SCHEDULER_FILE).write_bytes(content or whole[: len(whole) // 2])
    trainer = make(tmp_path / "run", steps=4)
    with pytest.raises(ValueError, match="corrupt or truncated") as info:
        trainer.train(resume_from_checkpoint=str(ckpt))
    assert str(ckpt / SCHEDULER_FILE) in str(info.value)


def test_a_state_that_is_not_an_e3_state_is_refused_naming_the_file(
    finished: Recording, tmp_path: Path
) -> None:
    ckpt = copy_checkpoint(finished, 2, tmp_path)
    torch.save({"scheduler": {}}, ckpt / SCHEDULER_FILE)
    trainer = make(tmp_path / "run", steps=4)
    with pytest.raises(ValueError, match="missing keys") as info:
        trainer.train(resume_from_checkpoint=str(ckpt))
    assert str(ckpt / SCHEDULER_FILE) in str(info.value)


# ---------------------------------------------------------------- 3. every epoch
def test_the_sampler_draws_each_epoch_from_seed_and_epoch() -> None:
    data = list(range(10))
    kwargs = {"mini_repeat_count": 2, "batch_size": 5, "repeat_count": 1, "seed": 3}
    trl_order = list(RepeatSampler(data, **kwargs))
    continuing = EpochRepeatSampler(data, **kwargs)
    passes = [list(continuing) for _ in range(3)]
    assert passes[0] == trl_order  # epoch 0 is TRL's order
    assert passes[1] != passes[0] and passes[2] != passes[1]
    for epoch, expected in enumerate(passes):
        fresh = EpochRepeatSampler(data, **kwargs)  # a resumed run's new sampler
        fresh.set_epoch(epoch)
        assert list(fresh) == expected
    with pytest.raises(ValueError, match="epoch must be an int >= 0, got -1"):
        fresh.set_epoch(-1)


def test_the_uninterrupted_run_sees_a_new_order_each_epoch(finished: Recording) -> None:
    epochs = [list(itertools.chain(*finished.rec_prompts[4 * e : 4 * e + 4])) for e in range(3)]
    assert all(sorted(e) == sorted(epochs[0]) for e in epochs)  # every prompt once per epoch
    assert epochs[0] != epochs[1] != epochs[2]
    assert finished.e3_scheduler.epoch == 3


@pytest.mark.parametrize("step", [2, 4, 6, 10], ids=lambda s: f"checkpoint-{s}")
def test_a_resume_in_any_epoch_equals_the_uninterrupted_run(
    finished: Recording, tmp_path: Path, step: int
) -> None:
    ckpt = Path(finished.args.output_dir) / f"checkpoint-{step}"
    resumed = make(tmp_path, steps=12)
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert_same_run(finished, resumed, skip=step)


# ---------------------------------------------------------------- 4. mid-cycle checkpoints
@pytest.mark.parametrize(
    "cycle", [{"steps_per_generation": 2}, {"num_iterations": 2}], ids=["spg2", "iter2"]
)
def test_resume_on_a_generation_boundary_is_exact_and_mid_cycle_is_refused(
    tmp_path: Path, cycle: dict[str, int]
) -> None:
    full = make(tmp_path / "full", steps=6, **cycle)
    full.train()
    assert len(full.e3_history) == 3  # one generation per 2 optimizer steps
    out = Path(full.args.output_dir)

    resumed = make(tmp_path / "even", steps=6, **cycle)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-2"))
    assert_same_run(full, resumed, skip=1)

    for odd in (1, 3):
        refused = make(tmp_path / f"odd{odd}", steps=6, **cycle)
        with pytest.raises(ValueError, match="inside a generation cycle") as info:
            refused.train(resume_from_checkpoint=str(out / f"checkpoint-{odd}"))
        assert f"global_step={odd}" in str(info.value)
        assert "save_steps to a multiple of 2" in str(info.value)


# ---------------------------------------------------------------- 5. changed settings
def test_changed_settings_come_from_the_config_and_state_from_the_checkpoint(
    finished: Recording, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = Path(finished.args.output_dir) / "checkpoint-6"
    saved = torch.load(ckpt / SCHEDULER_FILE, weights_only=True)
    assert saved["settings"]["min_per_prompt"] == 1 and saved["settings"]["decay"] == 1.0
    trainer = make(
        tmp_path,
        steps=8,
        e3_min_per_prompt=2,
        e3_max_per_prompt=6,  # below the saved 10: the config's bounds are set before the load
        e3_decay=0.5,
        e3_prior_alpha=2.0,
        e3_refit_every=None,
        e3_kp=0.3,
        e3_max_temperature=1.2,
    )
    with caplog.at_level(logging.WARNING, logger="e3core.adapters.trl.trainer"):
        trainer.train(resume_from_checkpoint=str(ckpt))
    sched = trainer.e3_scheduler
    assert sched.step == 8 and sched.epoch == 2  # state: the checkpoint's, carried on
    assert len(trainer.e3_history) == 2
    assert (sched.min_per_prompt, sched.max_per_prompt) == (2, 6)  # settings: the config's
    assert sched.tracker.decay == 0.5
    assert sched.tracker.prior.state_dict()["alpha"] == 2.0
    assert sched.controller.kp == 0.3 and sched.controller.temperature <= 1.2
    assert all(min(h["counts"]) >= 2 and max(h["counts"]) <= 6 for h in trainer.e3_history)
    messages = [r.getMessage() for r in caplog.records if "differ from the checkpoint" in r.message]
    assert len(messages) == 1  # logged once
    for text in (
        "e3_min_per_prompt: 1 -> 2",
        "e3_max_per_prompt: 10 -> 6",
        "e3_decay: 1.0 -> 0.5",
        "e3_kp: 0.1 -> 0.3",
        "e3_refit_every: 2 -> None",
    ):
        assert text in messages[0]


def test_a_changed_controller_kind_is_an_error_listing_the_differences(
    finished: Recording, tmp_path: Path
) -> None:
    ckpt = Path(finished.args.output_dir) / "checkpoint-2"
    trainer = make(tmp_path, steps=4, e3_controller="e3", e3_decay=0.9)
    with pytest.raises(ValueError, match="e3_controller='pi'") as info:
        trainer.train(resume_from_checkpoint=str(ckpt))
    text = str(info.value)
    assert "e3_controller: 'pi' -> 'e3'" in text and "e3_decay: 1.0 -> 0.9" in text
    assert "e3_resume_fresh=True" in text


def test_unchanged_settings_resume_without_a_settings_message(
    finished: Recording, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ckpt = Path(finished.args.output_dir) / "checkpoint-10"
    trainer = make(tmp_path, steps=11)
    with caplog.at_level(logging.WARNING, logger="e3core.adapters.trl.trainer"):
        trainer.train(resume_from_checkpoint=str(ckpt))
    assert not [r for r in caplog.records if "differ from the checkpoint" in r.message]
