"""End-to-end CPU tests of E3GRPOTrainer on a tiny Qwen2 (real TRL 1.16 training loop)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trl_tiny import difficulty_reward, sum_dataset, tiny_model, tiny_tokenizer

from e3core import group_advantages
from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import (
    SCHEDULER_FILE,
    E3GRPOTrainer,
    fused_head_temperature,
    set_fused_head_temperature,
)

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
    **overrides: Any,
) -> E3GRPOTrainer:
    settings: dict[str, Any] = {
        "output_dir": str(tmp_path / "out"),
        "use_cpu": True,
        "bf16": False,
        "per_device_train_batch_size": B * G,
        "num_generations": G,
        "max_completion_length": 4,
        "max_steps": steps,
        "logging_steps": 1,
        "report_to": [],
        "save_strategy": "no",
        "learning_rate": 1e-3,
        "e3_min_per_prompt": 1,
        "e3_max_per_prompt": 10,
        "e3_prior_kind": "beta",
        "e3_refit_every": None,
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(overrides)
    args = E3GRPOConfig(**settings)
    return cls(
        model=tiny_model(),
        processing_class=tiny_tokenizer(),
        reward_funcs=reward,
        args=args,
        train_dataset=sum_dataset(),
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
    return {"save_strategy": "steps", "save_steps": 3, "e3_prior_kind": "grid"}


def test_resume_plans_like_an_uninterrupted_run(tmp_path: Path) -> None:
    full = make(
        tmp_path / "a", steps=6, e3_refit_every=2, e3_refit_min_prompts=1, **_resume_settings()
    )
    full.train()
    ckpt = tmp_path / "a" / "out" / "checkpoint-3"
    assert (ckpt / SCHEDULER_FILE).is_file()
    state = torch.load(ckpt / SCHEDULER_FILE, weights_only=False)
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


def test_two_processes_agree_and_match_single_process_maths(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SCRIPT.parent)}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        "29533",
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
