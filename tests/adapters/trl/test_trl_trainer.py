"""End-to-end CPU tests of E3GRPOTrainer on a tiny Qwen2 (real TRL 1.16 training loop)."""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from trl_tiny import difficulty_reward, sum_dataset, tiny_model, tiny_settings, tiny_tokenizer

from e3core import group_advantages
from e3core._validation import check_float, check_int
from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import (
    LAST_VALUE_METRICS,
    SCHEDULER_FILE,
    E3GRPOTrainer,
    _prompt_key,
    fused_head_temperature,
    set_fused_head_temperature,
)
from e3core.prompt_keys import prompt_key

B, G = 4, 4


class Recording(E3GRPOTrainer):
    """Keeps what each generation step produced: gathered rewards, advantages, temperatures."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.rec_rewards: list[torch.Tensor] = []
        self.rec_advantages: list[torch.Tensor] = []
        self.rec_generate_temperatures: list[float] = []
        model = self.accelerator.unwrap_model(self.model)
        original = model.generate

        def generate(*a: Any, **kw: Any) -> Any:
            self.rec_generate_temperatures.append(float(kw["generation_config"].temperature))
            return original(*a, **kw)

        model.generate = generate

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):  # type: ignore[no-untyped-def]
        out = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        self.rec_rewards.append(out[:, 0].clone())
        return out

    def _generate_and_score_completions(self, inputs):  # type: ignore[no-untyped-def]
        out = super()._generate_and_score_completions(inputs)
        self.rec_advantages.append(out["advantages"].clone())
        return out


def make(
    tmp_path: Path,
    steps: int = 6,
    reward: Any = difficulty_reward,
    cls: type[E3GRPOTrainer] = Recording,
    dataset: Dataset | None = None,
    **overrides: Any,
) -> E3GRPOTrainer:
    settings = tiny_settings(tmp_path, steps, B, G)
    settings.update(overrides)
    args = E3GRPOConfig(**settings)
    return cls(
        model=tiny_model(),
        processing_class=tiny_tokenizer(),
        reward_funcs=reward,
        args=args,
        train_dataset=sum_dataset() if dataset is None else dataset,
    )


def recording_reward() -> tuple[Any, list[list[str]]]:
    seen: list[list[str]] = []

    def reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
        seen.append(list(prompts))
        return difficulty_reward(prompts, completions)

    return reward, seen


def test_counts_vary_sum_to_budget_and_reach_generation(tmp_path: Path) -> None:
    reward, seen = recording_reward()
    trainer = make(tmp_path, steps=8, reward=reward)
    trainer.train()
    history = trainer.e3_history
    assert len(history) == 8 == len(seen)
    varied = False
    for step, prompts in zip(history, seen):
        counts = np.array(step["counts"])
        assert counts.sum() == B * G
        assert counts.min() >= 1 and counts.max() <= 10
        varied |= len(set(counts.tolist())) > 1
        # the generated rows: slot k's prompt repeated exactly counts[k] times, in slot order
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        expected = [prompts[s] for s, n in zip(starts, counts) for _ in range(n)]
        assert prompts == expected
    assert varied, "the allocator never moved away from uniform on prompts of spread difficulty"
    # easy (always solved) prompts end with fewer rollouts than hard-but-mixed ones
    last = history[-1]
    assert last["e3/all_correct_share"] + last["e3/all_wrong_share"] + last["e3/mixed_share"] == (
        pytest.approx(1.0)
    )


def test_advantages_equal_e3core_over_gathered_rewards(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=5, e3_loss_weighting="sample")
    trainer.train()
    assert len(trainer.rec_rewards) == 5
    for step, rewards, adv in zip(trainer.e3_history, trainer.rec_rewards, trainer.rec_advantages):
        gids = np.repeat(np.arange(B), step["counts"])
        expected = group_advantages(rewards, torch.as_tensor(gids), eps=1e-4)
        torch.testing.assert_close(adv, expected)
        # a plain loop: (r - mean) / (unbiased std + 1e-4) by group; 0 for size-1 groups
        r = rewards.double().numpy()
        for k in range(B):
            sel = gids == k
            if sel.sum() < 2:
                np.testing.assert_allclose(adv.numpy()[sel], 0.0)
                continue
            ref = (r[sel] - r[sel].mean()) / (r[sel].std(ddof=1) + 1e-4)
            np.testing.assert_allclose(adv.numpy()[sel], ref, rtol=1e-5, atol=1e-6)


def test_prompt_weighting_scales_advantages(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=4, e3_loss_weighting="prompt")
    trainer.train()
    for step, rewards, adv in zip(trainer.e3_history, trainer.rec_rewards, trainer.rec_advantages):
        counts = np.array(step["counts"])
        gids = np.repeat(np.arange(B), counts)
        base = group_advantages(rewards, torch.as_tensor(gids), eps=1e-4).numpy()
        weight = (B * G / B) / counts[gids]  # every prompt's completions sum to N / B
        np.testing.assert_allclose(adv.numpy(), base * weight, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("enabled", [True, False])
def test_leave_one_out_baseline_reaches_the_advantages(tmp_path: Path, enabled: bool) -> None:
    # e3_baseline is honoured with E3 off as well (TRL's own advantages use the group mean)
    trainer = make(tmp_path, steps=3, e3_baseline="leave_one_out", e3_enabled=enabled)
    trainer.train()
    for step, rewards, adv in zip(trainer.e3_history, trainer.rec_rewards, trainer.rec_advantages):
        gids = np.repeat(np.arange(B), step["counts"])
        r = rewards.double().numpy()
        for k in range(B):  # a plain loop: r_j minus the mean of the group's other rewards
            sel = np.flatnonzero(gids == k)
            if len(sel) < 2 or np.ptp(r[sel]) == 0:
                np.testing.assert_allclose(adv.numpy()[sel], 0.0)
                continue
            others = (r[sel].sum() - r[sel]) / (len(sel) - 1)
            ref = (r[sel] - others) / (r[sel].std(ddof=1) + 1e-4)
            np.testing.assert_allclose(adv.numpy()[sel], ref, rtol=1e-5, atol=1e-6)


def test_uniform_allocation_equals_trl_fixed_groups(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=3, e3_allocator="uniform")
    trainer.train()
    for step, rewards, adv in zip(trainer.e3_history, trainer.rec_rewards, trainer.rec_advantages):
        assert step["counts"] == [G] * B
        grouped = rewards.view(-1, G)
        trl = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
        torch.testing.assert_close(adv, trl.reshape(-1))


def test_disabled_is_plain_grpo(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=3, e3_enabled=False, temperature=0.9)
    trainer.train()
    for step, rewards, adv in zip(trainer.e3_history, trainer.rec_rewards, trainer.rec_advantages):
        assert step["counts"] == [G] * B
        grouped = rewards.view(-1, G)
        trl = (grouped - grouped.mean(1, keepdim=True)) / (grouped.std(1, keepdim=True) + 1e-4)
        torch.testing.assert_close(adv, trl.reshape(-1))
    assert trainer.rec_generate_temperatures == [0.9] * 3
    assert "e3/mixed_share" in trainer.e3_history[-1]


def test_temperature_reaches_generation_and_loss(tmp_path: Path) -> None:
    # a target far above the measured entropy drives the temperature up every step
    trainer = make(tmp_path, steps=5, e3_target_entropy=50.0, e3_kp=0.5, e3_ki=0.5)
    trainer.train()
    temps = [h["e3/sample_temperature"] for h in trainer.e3_history]
    assert temps[0] == 1.0 and temps[1] > 1.0
    assert np.all(np.diff(temps) >= 0) and temps[-1] <= 1.5  # rises to the bound, never past
    assert trainer.rec_generate_temperatures == temps
    model = trainer.accelerator.unwrap_model(trainer.model)
    assert fused_head_temperature(model) == trainer.temperature == temps[-1]
    # the training log-probs use the same temperature
    ids = torch.tensor([[1, 5, 14, 6, 15, 9]])
    labels = ids.clone()
    labels[:, :3] = -100
    with torch.no_grad():
        fused = model(input_ids=ids, labels=labels, fused_lm_head=True).log_probs[0, 2:]
        logits = model(input_ids=ids).logits[0, 2:-1].double() / temps[-1]
        ref = torch.log_softmax(logits, -1).gather(-1, ids[0, 3:, None]).squeeze(-1)
    torch.testing.assert_close(fused.double(), ref, rtol=1e-4, atol=1e-5)


def test_entropy_feeds_controller_one_step_late(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=4)
    trainer.train()
    history = trainer.e3_history
    assert "e3/entropy" not in history[0]
    for h in history[1:]:
        assert h["e3/entropy"] > 0
        assert h["e3/target_entropy"] == pytest.approx(history[1]["e3/entropy"])


def _resume_settings() -> dict[str, Any]:
    return {"save_strategy": "steps", "save_steps": 3, "e3_refit_prior": "grid"}


def test_resume_plans_like_an_uninterrupted_run(tmp_path: Path) -> None:
    full = make(
        tmp_path / "a", steps=6, e3_refit_every=2, e3_refit_min_prompts=1, **_resume_settings()
    )
    full.train()
    ckpt = tmp_path / "a" / "out" / "checkpoint-3"
    assert (ckpt / SCHEDULER_FILE).is_file()
    state = torch.load(ckpt / SCHEDULER_FILE, weights_only=True)
    assert set(state) >= {"scheduler", "pending_entropies", "temperature"}
    assert state["scheduler"]["step"] == 3 and len(state["pending_entropies"]) == 1

    resumed = make(
        tmp_path / "b", steps=6, e3_refit_every=2, e3_refit_min_prompts=1, **_resume_settings()
    )
    resumed.train(resume_from_checkpoint=str(ckpt))
    tail = full.e3_history[3:]
    assert len(resumed.e3_history) == 3
    for a, b in zip(tail, resumed.e3_history):
        assert a["counts"] == b["counts"]
        assert a["e3/sample_temperature"] == b["e3/sample_temperature"]
        assert a["reward"] == b["reward"]
    sa, sb = full.e3_scheduler.state_dict(), resumed.e3_scheduler.state_dict()
    assert sa["step"] == sb["step"] == 6
    assert sa["controller"] == sb["controller"]
    np.testing.assert_array_equal(sa["tracker"]["successes"], sb["tracker"]["successes"])
    np.testing.assert_array_equal(sa["tracker"]["failures"], sb["tracker"]["failures"])


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"e3_allocator": "greedy"}, "e3_allocator"),
        ({"e3_min_per_prompt": 9}, "e3_min_per_prompt"),
        ({"e3_max_per_prompt": 2}, "e3_max_per_prompt"),
        ({"e3_controller": "pid"}, "e3_controller"),
        ({"temperature": 3.0}, "temperature"),
        ({"e3_decay": 0.0}, "e3_decay"),
    ],
)
def test_config_rejects_bad_settings(tmp_path: Path, overrides: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        E3GRPOConfig(output_dir=str(tmp_path), use_cpu=True, num_generations=G, **overrides)


def test_generation_kwargs_temperature_conflict(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="generation_kwargs"):
        make(tmp_path, generation_kwargs={"temperature": 0.7})


def test_needs_e3_config(tmp_path: Path) -> None:
    from trl import GRPOConfig

    args = GRPOConfig(output_dir=str(tmp_path), use_cpu=True, num_generations=G)
    with pytest.raises(TypeError, match="E3GRPOConfig"):
        E3GRPOTrainer(
            model=tiny_model(),
            processing_class=tiny_tokenizer(),
            reward_funcs=difficulty_reward,
            args=args,
            train_dataset=sum_dataset(),
        )


def test_set_fused_head_temperature_needs_trl_head() -> None:
    with pytest.raises(RuntimeError, match="fused LM head"):
        set_fused_head_temperature(tiny_model(), 0.8)


SCRIPT = Path(__file__).with_name("trl_two_process.py")


def _free_port() -> int:
    """A TCP port nothing listens on now (a fixed one clashes with a concurrent test run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_two_processes_agree_and_match_single_process_maths(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parent)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        str(_free_port()),
        str(SCRIPT),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == 4
    for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"]):
        assert s0["counts"] == s1["counts"]
        assert s0["temperature"] == s1["temperature"]
        assert s0["rewards"] == s1["rewards"]  # gathered over both processes
        counts = np.array(s0["counts"])
        assert counts.sum() == 2 * B * G  # the global budget: 2 processes x 16 rows
        gids = np.repeat(np.arange(len(counts)), counts)
        expected = group_advantages(np.array(s0["rewards"]), gids, eps=1e-4)
        got = np.array(s0["advantages"] + s1["advantages"])  # rank slices in order
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert any(len(set(s["counts"])) > 1 for s in ranks[0]["steps"])


# ---------------------------------------------------------------------- default args (A)
def test_no_args_builds_a_default_e3_config(tmp_path: Path, monkeypatch: Any) -> None:
    import transformers.training_args

    # the defaults ask for bf16, which transformers refuses on a machine without a GPU
    monkeypatch.setattr(transformers.training_args, "is_torch_bf16_gpu_available", lambda: True)
    monkeypatch.chdir(tmp_path)
    model = tiny_model()
    model.config._name_or_path = "org/tiny-qwen"
    for extra in ({}, {"args": None}):
        trainer = E3GRPOTrainer(
            model=model,
            reward_funcs=difficulty_reward,
            processing_class=tiny_tokenizer(),
            train_dataset=sum_dataset(),
            **extra,
        )
        assert type(trainer.args) is E3GRPOConfig
        # TRL names its default output_dir "<model>-GRPO"; E3's is "<model>-E3GRPO"
        assert trainer.args.output_dir == "tiny-qwen-E3GRPO"
        assert trainer.args.e3_enabled and trainer.args.e3_allocator == "knapsack"
        assert trainer.args.e3_prompt_id_column is None
        assert trainer.args.e3_history_file == "e3_history.csv"


# ---------------------------------------------------------------------- logging (C)
def test_counters_are_logged_as_their_last_value(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=4, logging_steps=2)
    trainer.train()
    history = trainer.e3_history
    logged = [h for h in trainer.state.log_history if "e3/step" in h]
    assert [h["e3/step"] for h in logged] == [2.0, 4.0]  # not the window means 1.5 and 3.5
    for log, last, window in zip(logged, (history[1], history[3]), (history[:2], history[2:])):
        for key in LAST_VALUE_METRICS & set(last):
            assert log[key] == pytest.approx(last[key]), key
        # per-step measurements are still averaged over the window, as TRL averages its own
        mean = np.mean([h["e3/mixed_share"] for h in window])
        assert log["e3/mixed_share"] == pytest.approx(mean)
    assert {"e3/step", "e3/epoch", "e3/entropy_skipped", "e3/tracked_prompts"} <= set(
        LAST_VALUE_METRICS
    )


# ---------------------------------------------------------------------- prompt identity (D, E)
def _image(color: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (4, 3), color)


def test_prompt_identity_includes_the_images() -> None:
    text = "What colour is this?"
    red, blue = _image((255, 0, 0)), _image((0, 0, 255))
    key_red = _prompt_key({"prompt": text, "image": red}, None)
    assert key_red != _prompt_key({"prompt": text, "image": blue}, None)
    # same pixels in another object, or as a one-image list: the same prompt
    assert key_red == _prompt_key({"prompt": text, "image": _image((255, 0, 0))}, None)
    assert key_red == _prompt_key({"prompt": text, "images": [red]}, None)
    assert key_red != _prompt_key({"prompt": text, "images": [red, red]}, None)
    # text alone keys as before images counted, and differs from text plus an image
    assert _prompt_key({"prompt": text}, None) == prompt_key(text)
    assert _prompt_key({"prompt": text, "images": []}, None) == prompt_key(text)
    assert _prompt_key({"prompt": text, "image": None}, None) == prompt_key(text)
    assert key_red != prompt_key(text)
    # images inside a chat, arrays and raw bytes are digested by content too
    chat = [{"role": "user", "content": [{"type": "image", "image": red}]}]
    chat_blue = [{"role": "user", "content": [{"type": "image", "image": blue}]}]
    assert _prompt_key({"prompt": chat}, None) != _prompt_key({"prompt": chat_blue}, None)
    arr = np.zeros((2, 2, 3), dtype=np.uint8)
    assert _prompt_key({"prompt": text, "image": arr}, None) == _prompt_key(
        {"prompt": text, "image": arr.copy()}, None
    )
    assert _prompt_key({"prompt": text, "image": arr}, None) != _prompt_key(
        {"prompt": text, "image": arr + 1}, None
    )
    assert _prompt_key({"prompt": text, "image": {"bytes": b"png1"}}, None) != _prompt_key(
        {"prompt": text, "image": {"bytes": b"png2"}}, None
    )
    # an id column wins over everything else
    assert _prompt_key({"prompt": text, "image": red, "uid": 7}, "uid") == 7


def test_prompt_identity_refuses_objects_it_cannot_hash_stably() -> None:
    class Opaque:
        pass

    with pytest.raises(ValueError, match=r"cannot hash stably.*e3_prompt_id_column"):
        _prompt_key({"prompt": "p", "image": Opaque()}, None)
    with pytest.raises(ValueError, match=r"e3_prompt_id_column='uid'.*no value"):
        _prompt_key({"prompt": "p", "uid": None}, "uid", required=True)


def test_explicit_prompt_id_column_must_be_a_dataset_column(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        make(tmp_path, e3_prompt_id_column="uid")
    assert str(info.value).startswith(
        "e3_prompt_id_column='uid' is not a column of the training dataset "
        "(its columns: ['prompt', 'answer'])"
    )


@pytest.mark.parametrize(
    ("column_name", "setting"), [("e3_prompt_id", None), ("uid", "uid"), (None, None)]
)
def test_prompt_ids_come_from_the_id_column(
    tmp_path: Path, column_name: str | None, setting: str | None
) -> None:
    data = sum_dataset(16)
    ids = [f"prompt-{i}" for i in range(len(data))]
    if column_name is not None:
        data = data.add_column(column_name, ids)
    trainer = make(tmp_path, steps=2, dataset=data, e3_prompt_id_column=setting)
    trainer.train()
    tracker = trainer.e3_scheduler.tracker
    assert len(tracker) == 8
    known = [i for i in ids if i in tracker]
    if column_name is None:  # hashed prompts
        assert known == []
        assert sum(prompt_key(p) in tracker for p in set(data["prompt"])) == len(tracker)
    else:
        assert len(known) == 8


# ---------------------------------------------------------------------- error messages (F)
@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"e3_min_per_prompt": 100},
            f"e3_min_per_prompt must be <= num_generations ({G}), got 100",
        ),
        ({"e3_max_per_prompt": 2}, f"e3_max_per_prompt must be >= num_generations ({G}), got 2"),
        (
            {"e3_min_per_prompt": 2, "e3_widen_min": 3},
            "e3_widen_min must be <= e3_min_per_prompt (2), got 3",
        ),
        (
            {"e3_max_per_prompt": 16, "e3_widen_max": 10},
            "e3_widen_max must be >= e3_max_per_prompt (16), got 10",
        ),
        (
            {"e3_max_temperature": 0.4},
            "e3_max_temperature must be >= e3_min_temperature (0.5), got 0.4",
        ),
        (
            {"temperature": 2.0},
            "temperature must be <= e3_max_temperature (1.5), got 2.0 (or set e3_controller none)",
        ),
        (
            {"temperature": 0.2},
            "temperature must be >= e3_min_temperature (0.5), got 0.2 (or set e3_controller none)",
        ),
    ],
)
def test_config_errors_name_the_setting_behind_a_bound(
    tmp_path: Path, overrides: dict, message: str
) -> None:
    with pytest.raises(ValueError) as info:
        E3GRPOConfig(output_dir=str(tmp_path), use_cpu=True, num_generations=G, **overrides)
    assert str(info.value) == message


def test_validation_messages_without_bound_names_are_unchanged() -> None:
    with pytest.raises(ValueError) as info:
        check_int("n", 100, high=8)
    assert str(info.value) == "n must be <= 8, got 100"
    with pytest.raises(ValueError) as info:
        check_float("x", 0.0, low=0.0, low_open=True)
    assert str(info.value) == "x must be > 0.0, got 0.0"
    with pytest.raises(ValueError) as info:
        check_float("x", 2.0, high=1.0, high_name="cap", hint="or raise cap")
    assert str(info.value) == "x must be <= cap (1.0), got 2.0 (or raise cap)"


# ---------------------------------------------------------------------- metrics file (G)
def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_history_csv_has_one_row_per_generation_step(tmp_path: Path) -> None:
    path = tmp_path / "out" / "e3_history.csv"
    path.parent.mkdir(parents=True)
    path.write_text("global_step,stale\n99,old run\n")  # a fresh run overwrites it
    trainer = make(tmp_path, steps=3)
    trainer.train()
    rows = _read_csv(path)
    assert [r["global_step"] for r in rows] == ["0", "1", "2"]
    assert [r["generation"] for r in rows] == ["1", "2", "3"]
    assert "stale" not in rows[0]
    for row, entry in zip(rows, trainer.e3_history):
        assert row["counts"] == " ".join(str(c) for c in entry["counts"])
        assert float(row["e3/step"]) == entry["e3/step"]
        assert float(row["reward"]) == pytest.approx(entry["reward"])
    # the first step has no entropy yet: the column was added when it came, empty before
    assert rows[0]["e3/entropy"] == "" and float(rows[1]["e3/entropy"]) > 0
    assert list(rows[0])[:2] == ["global_step", "generation"]


def test_history_csv_can_be_turned_off(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=1, e3_history_file=None)
    trainer.train()
    assert not (tmp_path / "out" / "e3_history.csv").exists()
    assert len(trainer.e3_history) == 1


def test_history_csv_after_a_crash_and_resume_holds_every_step_once(tmp_path: Path) -> None:
    settings = {"save_strategy": "steps", "save_steps": 2}
    first = make(tmp_path, steps=4, cls=E3GRPOTrainer, **settings)
    first.train()
    path = tmp_path / "out" / "e3_history.csv"
    rows = _read_csv(path)
    assert [r["global_step"] for r in rows] == ["0", "1", "2", "3"]
    # a run that crashed after checkpoint-2 had written rows past it (and maybe more)
    fields = list(rows[0])
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows[:2])
        for step in (2, 3, 5):
            writer.writerow({"global_step": step, "generation": step + 1, "counts": "bogus"})
    resumed = make(tmp_path, steps=4, cls=E3GRPOTrainer, **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    after = _read_csv(path)
    assert [r["global_step"] for r in after] == ["0", "1", "2", "3"]
    assert [r["generation"] for r in after] == ["1", "2", "3", "4"]
    assert after[:2] == rows[:2]
    assert len(resumed.e3_history) == 2
    for row, entry in zip(after[2:], resumed.e3_history):
        assert row["counts"] == " ".join(str(c) for c in entry["counts"])
        assert float(row["e3/step"]) == entry["e3/step"]
