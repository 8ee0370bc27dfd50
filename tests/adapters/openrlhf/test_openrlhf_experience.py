"""Contract: E3's advantage step on real ``Experience`` objects against OpenRLHF's own.

Samples come from the real ``SamplesGenerator`` (fake engines), go through the real
``RemoteExperienceMaker.split_rollout_samples`` into micro-batch experiences, and both makers'
``compute_advantages_and_returns`` run on copies. With equal groups E3's equals upstream's
(group_norm, dr_grpo, rloo); with E3's uneven groups it equals e3core's group advantages.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace as NS  # noqa: N814

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
from orlhf_fixtures import FakeEngine, make_args, prompt_loader

from e3core import group_advantages, group_loss_weights, prompt_key
from e3core.adapters.openrlhf.experience import E3ExperienceMaker, shaped_group_rewards
from e3core.adapters.openrlhf.generator import PROMPT_KEY_INFO, E3SamplesGenerator
from e3core.settings import E3Settings

ESTIMATORS = ["group_norm", "dr_grpo", "rloo"]


def _samples(args, e3: bool, prompts: int):
    """Samples of E3's generator: uneven groups (``e3``), or E3 disabled (upstream's groups)."""
    engines = [FakeEngine.remote() for _ in range(2)]
    common = (NS(args=args), prompt_loader(prompts), None, NS(pad_token_id=0), engines)
    n = args.rollout.n_samples_per_prompt
    sched = E3Settings(enabled=e3, max_per_prompt=10).build_scheduler(n)
    if e3:
        keys = [prompt_key(f"p{i}") for i in range(prompts)]
        sched.tracker.update(keys, 2.0 * (np.arange(prompts) % 5), np.full(prompts, 8.0))
    gen = E3SamplesGenerator(*common, scheduler=sched)
    samples, *_ = gen.generate_samples(temperature=1.0, max_len=64, max_new_tokens=8)
    return samples


def _experiences(maker_cls, args, samples, weighting="sample"):
    tokenizer = NS(pad_token_id=0)
    maker = maker_cls(None, None, None, None, FixedKLController(0.0), NS(args=args), tokenizer)
    if weighting != "sample":
        maker.loss_weighting = weighting
    batches = maker.split_rollout_samples(copy.deepcopy(samples))
    for b in batches:  # what make_experience attaches before the advantage step
        b.kl = torch.zeros_like(b.action_mask, dtype=torch.float32)
        b.values = None
    return maker.compute_advantages_and_returns(batches)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_equal_groups_match_upstream(local_ray, estimator):
    args = make_args(batch_size=4, n=4, estimator=estimator)
    samples = _samples(args, e3=False, prompts=4)
    ours = _experiences(E3ExperienceMaker, args, samples)
    theirs = _experiences(RemoteExperienceMaker, copy.deepcopy(args), samples)
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a.advantages, b.advantages)
        torch.testing.assert_close(a.returns, b.returns)
        torch.testing.assert_close(a.info["return"], b.info["return"])
        torch.testing.assert_close(a.info["group_reward_std"], b.info["group_reward_std"])
        assert PROMPT_KEY_INFO not in a.info  # the carried keys are used, then never logged


@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("weighting", ["sample", "prompt"])
def test_uneven_groups_equal_e3core(local_ray, estimator, weighting):
    args = make_args(batch_size=6, n=4, estimator=estimator)
    samples = _samples(args, e3=True, prompts=6)
    sizes = {}
    for s in samples:
        sizes[s.prompts[0]] = sizes.get(s.prompts[0], 0) + 1
    assert len(set(sizes.values())) > 1
    exps = _experiences(E3ExperienceMaker, args, samples, weighting)
    rewards = torch.cat([e.info["reward"] for e in exps]).double()
    labels = [p for e in exps for p in e.prompts]
    want = group_advantages(
        rewards,
        np.array(labels, dtype=object),
        baseline="leave_one_out" if estimator == "rloo" else "mean",
        scale="std" if estimator == "group_norm" else "none",
        eps=1e-9,
    )
    if weighting == "prompt":
        want = want * torch.as_tensor(group_loss_weights(np.array(labels, dtype=object), "prompt"))
    got = torch.cat([e.info["return"] for e in exps]).double()
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    for e in exps:  # no KL, gamma = 1: the shaped reward is the advantage of every response token
        mask = e.action_mask.to(e.advantages.dtype)
        torch.testing.assert_close(e.advantages * mask, e.info["return"][:, None] * mask)


@settings(max_examples=40)
@given(
    sizes=st.lists(st.integers(1, 7), min_size=1, max_size=6),
    estimator=st.sampled_from(ESTIMATORS),
    data=st.data(),
)
def test_shaped_rewards_equal_a_plain_loop(sizes, estimator, data):
    n = sum(sizes)
    rewards = data.draw(st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=n, max_size=n))
    prompts = [f"q{g}" for g, s in enumerate(sizes) for _ in range(s)]
    perm = data.draw(st.permutations(range(n)))
    r = torch.tensor([rewards[i] for i in perm], dtype=torch.float64)
    p = [prompts[i] for i in perm]
    shaped, std = shaped_group_rewards(r, p, estimator)
    for j in range(n):
        members = [k for k in range(n) if p[k] == p[j]]
        vals = [r[k].item() for k in members]
        m = len(vals)
        mean = sum(vals) / m
        sd = (sum((v - mean) ** 2 for v in vals) / (m - 1)) ** 0.5 if m > 1 else 0.0
        if m < 2:
            want = 0.0
        elif estimator == "rloo":
            want = r[j].item() - (sum(vals) - r[j].item()) / (m - 1)
        elif estimator == "dr_grpo":
            want = r[j].item() - mean
        else:
            want = (r[j].item() - mean) / (sd + 1e-9) if sd > 0 else 0.0
        assert shaped[j].item() == pytest.approx(want, abs=1e-9)
        assert std[j].item() == pytest.approx(sd, abs=1e-12)


def test_unsupported_estimator_is_named():
    with pytest.raises(ValueError, match="estimator='gae'"):
        shaped_group_rewards(torch.zeros(2), ["a", "a"], "gae")
