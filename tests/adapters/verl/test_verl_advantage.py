"""Contract: ``algorithm.adv_estimator=e3_grpo`` through verl's own ``compute_advantage``.

Real ``DataProto`` batches with uneven and size-1 uid groups; the result equals a plain-loop
reference everywhere and verl's ``grpo`` wherever both are defined (every group of two or
more).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from verl import DataProto
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories
from verl_fixtures import verl_config


def _batch(sizes: list[int], rewards: list[float], length: int = 5, seed: int = 0) -> DataProto:
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    uids = np.array([f"uid-{g}" for g, s in enumerate(sizes) for _ in range(s)], dtype=object)
    order = rng.permutation(n)  # groups interleaved, as rows arrive from the transfer queue
    lengths = rng.integers(1, length + 1, size=n)
    mask = (torch.arange(length)[None, :] < torch.as_tensor(lengths)[:, None]).float()
    scores = torch.zeros(n, length)
    scores[torch.arange(n), torch.as_tensor(lengths) - 1] = torch.tensor(rewards, dtype=torch.float)
    data = DataProto.from_dict(
        tensors={
            "token_level_rewards": scores[order],
            "response_mask": mask[order],
        },
        non_tensors={"uid": uids[order]},
    )
    return data


def _run(data: DataProto, estimator: str, **algo: object) -> torch.Tensor:
    overrides = [f"+algorithm.{k}={v}" for k, v in algo.items() if k.startswith("e3_")]
    overrides += [f"algorithm.{k}={v}" for k, v in algo.items() if not k.startswith("e3_")]
    config = verl_config(*overrides).algorithm
    keys = [f"{u}_{i}_0" for i, u in enumerate(data.non_tensor_batch["uid"])]
    out = compute_advantage_for_multi_trajectories(
        data,
        batch_keys=keys,
        adv_estimator=estimator,
        norm_adv_by_std_in_grpo=config.get("norm_adv_by_std_in_grpo", True),
        config=config,
    )
    return out.batch["advantages"]


def _loop_reference(data: DataProto, *, std: bool, loo: bool, prompt: bool) -> torch.Tensor:
    r = data.batch["token_level_rewards"].double().sum(-1).tolist()
    uids = list(data.non_tensor_batch["uid"])
    groups: dict[str, list[int]] = {}
    for j, u in enumerate(uids):
        groups.setdefault(u, []).append(j)
    adv = [0.0] * len(r)
    for members in groups.values():
        n = len(members)
        if n < 2:
            continue
        vals = [r[j] for j in members]
        mean = sum(vals) / n
        sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
        for j in members:
            base = (n * mean - r[j]) / (n - 1) if loo else mean
            a = r[j] - base
            if std:
                a = a / (sd + 1e-6) if sd > 0 else 0.0
            if prompt:
                a *= len(r) / (len(groups) * n)
            adv[j] = a
    mask = data.batch["response_mask"].double()
    return torch.tensor(adv, dtype=torch.float64)[:, None] * mask


group_sizes = st.lists(st.integers(1, 9), min_size=1, max_size=8)


@given(sizes=group_sizes, data=st.data())
def test_e3_grpo_equals_loop_reference(sizes, data):
    n = sum(sizes)
    rewards = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=n, max_size=n))
    std = data.draw(st.booleans())
    loo = data.draw(st.booleans())
    prompt = data.draw(st.booleans())
    batch = _batch(sizes, rewards)
    algo = {
        "norm_adv_by_std_in_grpo": std,
        "e3_baseline": "leave_one_out" if loo else "mean",
        "e3_loss_weighting": "prompt" if prompt else "sample",
    }
    got = _run(batch, "e3_grpo", **algo).double()
    want = _loop_reference(batch, std=std, loo=loo, prompt=prompt)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@given(sizes=st.lists(st.integers(2, 9), min_size=1, max_size=8), data=st.data())
def test_e3_grpo_equals_verl_grpo_for_groups_of_two_or_more(sizes, data):
    n = sum(sizes)
    rewards = data.draw(st.lists(st.sampled_from([0.0, 1.0]), min_size=n, max_size=n))
    std = data.draw(st.booleans())
    batch = _batch(sizes, rewards)
    ours = _run(batch, "e3_grpo", norm_adv_by_std_in_grpo=std)
    theirs = _run(_batch(sizes, rewards), "grpo", norm_adv_by_std_in_grpo=std)
    torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-6)


def test_group_of_one_gets_zero_where_verl_grpo_passes_the_reward_through():
    batch = _batch([1, 3], [1.0, 1.0, 0.0, 1.0])
    lone = batch.non_tensor_batch["uid"] == "uid-0"
    ours = _run(batch, "e3_grpo")
    theirs = _run(_batch([1, 3], [1.0, 1.0, 0.0, 1.0]), "grpo")
    assert torch.all(ours[torch.as_tensor(lone)] == 0)
    assert theirs[torch.as_tensor(lone)].abs().sum() > 0
    torch.testing.assert_close(ours[torch.as_tensor(~lone)], theirs[torch.as_tensor(~lone)])


def test_bad_settings_and_inputs_are_named():
    from e3core.adapters.verl import compute_e3_grpo_advantage

    rewards = torch.zeros(3, 4)
    mask = torch.ones(3, 4)
    with pytest.raises(ValueError, match="index"):
        compute_e3_grpo_advantage(rewards, mask, index=None)
    with pytest.raises(ValueError, match="labels"):
        compute_e3_grpo_advantage(rewards, mask, index=np.array(["a", "b"], dtype=object))
    with pytest.raises(ValueError, match=r"algorithm\.e3_baseline"):
        compute_e3_grpo_advantage(
            rewards, mask, index=np.array(["a"] * 3, dtype=object), config={"e3_baseline": "x"}
        )
    with pytest.raises(ValueError, match=r"algorithm\.e3_loss_weighting"):
        compute_e3_grpo_advantage(
            rewards,
            mask,
            index=np.array(["a"] * 3, dtype=object),
            config={"e3_loss_weighting": "tokens"},
        )
