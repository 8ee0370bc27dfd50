"""E3's advantages against TRL 1.16's own, for ``multi_objective_aggregation``'s two modes.

With equal groups (the uniform allocator) the rows E3 generates are TRL's fixed groups, so the
advantages E3 recomputes must equal the ones TRL computed; with uneven groups they must equal a
plain loop over the groups.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from trl_tiny import difficulty_reward, sum_dataset, tiny_model, tiny_settings, tiny_tokenizer

from e3core.adapters.trl.config import E3GRPOConfig
from e3core.adapters.trl.trainer import E3GRPOTrainer, normalize_then_sum_advantages

B, G = 4, 4
WEIGHTS = [1.0, 0.5]


def mostly_difficulty(prompts: list[str], completions: list[str], **kwargs: Any) -> list:
    """``difficulty_reward``, but None (unscored) for prompts whose second addend is >= 6."""
    base = difficulty_reward(prompts, completions)
    return [None if int(p[2]) >= 6 else r for p, r in zip(prompts, base)]


def length_reward(prompts: list[str], completions: list[str], **kwargs: Any) -> list:
    """A quarter per completion character (exact in binary), None for even second addends."""
    return [
        None if int(p[2]) % 2 == 0 else min(len(c), 4) / 4 for p, c in zip(prompts, completions)
    ]


class Recording(E3GRPOTrainer):
    """Keeps, per generation step, TRL's advantages and E3's, with the inputs to both."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.trl_advantages: list[torch.Tensor] = []
        self.e3_advantages: list[torch.Tensor] = []
        self.per_func: list[torch.Tensor] = []
        self.trl_zero_std: list[float] = []
        self.e3_zero_std: list[float] = []

    def _e3_replace_advantages(self, output, rewards_per_func, rewards, group_ids, scored):  # type: ignore[no-untyped-def]
        self.trl_advantages.append(output["advantages"].clone())
        self.trl_zero_std.append(self._metrics["train"]["frac_reward_zero_std"][-1])
        self.per_func.append(rewards_per_func.clone())
        super()._e3_replace_advantages(output, rewards_per_func, rewards, group_ids, scored)
        self.e3_advantages.append(output["advantages"].clone())
        self.e3_zero_std.append(self._metrics["train"]["frac_reward_zero_std"][-1])


def make(tmp_path: Path, steps: int, prompts: int = 64, **overrides: Any) -> Recording:
    settings = tiny_settings(tmp_path, steps, B, G)
    settings.update(multi_objective_aggregation="normalize_then_sum", reward_weights=WEIGHTS)
    settings.update(overrides)
    return Recording(
        model=tiny_model(),
        processing_class=tiny_tokenizer(),
        reward_funcs=[mostly_difficulty, length_reward],
        args=E3GRPOConfig(**settings),
        train_dataset=sum_dataset(prompts),
    )


def loop_reference(
    per_func: np.ndarray, counts: list[int], weights: list[float], *, prompt_weighting: bool
) -> np.ndarray:
    """normalize_then_sum written out as plain loops over groups, functions and rows."""
    n, k = per_func.shape
    starts = np.concatenate([[0], np.cumsum(counts)])
    summed = np.zeros(n)
    for f in range(k):
        for g in range(len(counts)):
            rows = [j for j in range(starts[g], starts[g + 1]) if not np.isnan(per_func[j, f])]
            if len(rows) < 2:
                continue  # a lone score has no spread: it adds 0
            x = per_func[rows, f]
            z = (x - x.mean()) / (x.std(ddof=1) + 1e-4)
            for j, value in zip(rows, z):
                summed[j] += weights[f] * value
    scored = [j for j in range(n) if not np.isnan(per_func[j]).all()]
    out = np.zeros(n)
    if len(scored) >= 2:
        s = summed[scored]
        out[scored] = (s - s.mean()) / (s.std(ddof=1) + 1e-4)
    if prompt_weighting:
        for g, c in enumerate(counts):
            out[starts[g] : starts[g + 1]] *= (n / len(counts)) / c
    return out


def test_normalize_then_sum_equals_trl_on_equal_groups(tmp_path: Path) -> None:
    trainer = make(tmp_path, steps=4, e3_allocator="uniform")
    trainer.train()
    assert len(trainer.e3_advantages) == 4
    saw_unscored = False
    for step, trl, ours, zero_trl, zero_ours in zip(
        trainer.e3_history,
        trainer.trl_advantages,
        trainer.e3_advantages,
        trainer.trl_zero_std,
        trainer.e3_zero_std,
    ):
        assert step["counts"] == [G] * B
        torch.testing.assert_close(ours, trl)
        assert zero_ours == zero_trl
        saw_unscored |= step["e3/unscored"] > 0
    assert any(bool(torch.isnan(p).any()) for p in trainer.per_func)
    assert saw_unscored, "the test rewards never left a row unscored"


@pytest.mark.parametrize("weighting", ["sample", "prompt"])
def test_normalize_then_sum_over_uneven_groups_equals_a_loop(
    tmp_path: Path, weighting: str
) -> None:
    # 8 prompts: each comes back every other step, so the tracker knows them and counts move
    trainer = make(tmp_path, steps=6, prompts=8, e3_loss_weighting=weighting)
    trainer.train()
    uneven = differs = False
    for step, per_func, ours, trl in zip(
        trainer.e3_history, trainer.per_func, trainer.e3_advantages, trainer.trl_advantages
    ):
        counts = step["counts"]
        uneven |= len(set(counts)) > 1
        ref = loop_reference(
            per_func.double().numpy(), counts, WEIGHTS, prompt_weighting=weighting == "prompt"
        )
        np.testing.assert_allclose(ours.double().numpy(), ref, rtol=1e-5, atol=1e-5)
        differs |= not torch.allclose(ours, trl, atol=1e-4)
    assert uneven, "the allocator never produced uneven groups"
    assert differs, "TRL's fixed groups gave the same advantages: the test cannot tell them apart"
    assert any(h["e3/unscored"] > 0 for h in trainer.e3_history)


def test_normalize_then_sum_function_matches_the_loop_and_edge_cases() -> None:
    gen = torch.Generator().manual_seed(0)
    counts = [1, 3, 5, 2, 7]
    n = sum(counts)
    per_func = torch.randint(0, 4, (n, 3), generator=gen).float() / 4
    per_func[torch.rand(n, 3, generator=gen) < 0.25] = torch.nan
    per_func[2] = torch.nan  # an unscored row
    weights = torch.tensor([1.0, -0.5, 2.0])
    gids = np.repeat(np.arange(len(counts)), counts)
    adv, std = normalize_then_sum_advantages(per_func, weights, gids)
    ref = loop_reference(
        per_func.double().numpy(), counts, weights.tolist(), prompt_weighting=False
    )
    np.testing.assert_allclose(adv.double().numpy(), ref, rtol=1e-5, atol=1e-5)
    assert adv[2] == 0 and bool(torch.isfinite(std))
    # one scored row: no batch spread (NaN, as TRL's nanstd), advantages 0
    lone = torch.full((3, 1), torch.nan)
    lone[1, 0] = 1.0
    adv, std = normalize_then_sum_advantages(lone, torch.ones(1), np.array([0, 0, 1]))
    assert torch.equal(adv, torch.zeros(3)) and bool(torch.isnan(std))
    # a batch of one row: std 0 (TRL's zeros), advantage 0
    adv, std = normalize_then_sum_advantages(torch.ones(1, 1), torch.ones(1), np.array([0]))
    assert torch.equal(adv, torch.zeros(1)) and float(std) == 0.0
    with pytest.raises(ValueError, match="weights must have shape"):
        normalize_then_sum_advantages(torch.ones(2, 2), torch.ones(3), np.array([0, 0]))
