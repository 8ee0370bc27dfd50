import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from e3core import (
    BetaDifficultyTracker,
    E3Scheduler,
    E3TemperatureController,
    KnapsackAllocator,
    PITemperatureController,
    RankAllocator,
    ThompsonAllocator,
)

RATES = np.random.default_rng(123).beta(0.3, 0.3, size=300)


def run_steps(scheduler, steps, seed, batch=12, start=0):
    """Drive the scheduler on a synthetic task; return the plans."""
    plans = []
    for step in range(start, start + steps):
        rng = np.random.default_rng(seed * 10_000 + step)
        ids = rng.choice(len(RATES), batch, replace=False)
        plan = scheduler.plan(ids)
        groups = plan.group_ids
        rewards = (rng.random(plan.total) < RATES[ids][groups]).astype(float)
        scheduler.observe(ids, rewards, groups, entropy=0.4 * plan.temperature**2 / (1 + step))
        plans.append((plan.counts.tolist(), plan.temperature))
    return plans


def make(kind):
    if kind == "default":
        return E3Scheduler(refit_every=5, refit_min_prompts=10)
    if kind == "thompson-beta":
        return E3Scheduler(
            BetaDifficultyTracker(decay=0.9),
            ThompsonAllocator(),
            E3TemperatureController(32000),
            refit_every=3,
            prior_kind="beta",
            refit_min_prompts=5,
            seed=7,
        )
    return E3Scheduler.paper(151_936, steps_per_epoch=6, total_steps=18)


@pytest.mark.parametrize("kind", ["default", "thompson-beta", "paper"])
@settings(max_examples=12)
@given(split=st.integers(1, 16), seed=st.integers(0, 50))
def test_resume_plans_exactly_like_an_uninterrupted_run(kind, split, seed):
    full = make(kind)
    expected = run_steps(full, 18, seed)
    first = make(kind)
    head = run_steps(first, split, seed)
    state = pickle.loads(pickle.dumps(first.state_dict()))  # as a checkpoint would
    resumed = make(kind)
    resumed.load_state_dict(state)
    tail = run_steps(resumed, 18 - split, seed, start=split)
    assert head + tail == expected


def test_plan_counts_and_group_ids():
    sched = E3Scheduler(rollouts_per_prompt=4, min_per_prompt=2, max_per_prompt=8)
    plan = sched.plan(["a", "b", "c"])
    assert plan.total == 12
    assert plan.counts.dtype == np.int64
    assert plan.group_ids.tolist() == np.repeat([0, 1, 2], plan.counts).tolist()
    assert plan.temperature == 1.0


def test_observe_updates_tracker_and_metrics():
    sched = E3Scheduler(
        controller=None, rollouts_per_prompt=3, min_per_prompt=2, max_per_prompt=4, refit_every=None
    )
    ids = ["easy", "hard", "mixed"]
    rewards = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    metrics = sched.observe(ids, rewards, groups)
    np.testing.assert_allclose(sched.tracker.posterior(ids).alpha, [4, 1, 3])
    np.testing.assert_allclose(sched.tracker.posterior(ids).beta, [1, 4, 2])
    assert metrics["e3/mixed_share"] == pytest.approx(1 / 3)
    assert metrics["e3/all_correct_share"] == pytest.approx(1 / 3)
    assert metrics["e3/all_wrong_share"] == pytest.approx(1 / 3)
    assert metrics["e3/success_rate"] == pytest.approx(5 / 9)
    assert metrics["e3/temperature"] == 1.0
    assert "e3/entropy" not in metrics


def test_success_threshold_for_graded_rewards():
    sched = E3Scheduler(controller=None, success_threshold=0.8, refit_every=None)
    sched.observe([0], [0.9, 0.5, 0.8, -1.0], [0, 0, 0, 0])
    post = sched.tracker.posterior([0])
    assert (post.alpha[0], post.beta[0]) == (3.0, 3.0)


def test_prompts_without_rewards_are_not_updated():
    sched = E3Scheduler(controller=None, refit_every=None)
    sched.observe(["a", "b"], [1.0, 0.0], [0, 0])
    assert "b" not in sched.tracker


def test_controller_receives_entropy():
    ctrl = PITemperatureController(target_entropy=1.0)
    sched = E3Scheduler(controller=ctrl, refit_every=None)
    metrics = sched.observe([0], [1.0, 0.0], [0, 0], entropy=0.5)
    assert sched.temperature > 1.0
    assert metrics["e3/temperature"] == sched.temperature
    assert metrics["e3/target_entropy"] == 1.0
    assert sched.plan([0, 1]).temperature == sched.temperature


@settings(max_examples=30)
@given(
    entropies=st.lists(st.floats(0.05, 5.0), min_size=1, max_size=8),
    target=st.floats(0.1, 3.0),
)
def test_observe_entropy_later_equals_observe_with_entropy(entropies, target):
    """Rewards first and entropy after (TRL's order) ends where one combined call ends."""
    together = E3Scheduler(controller=PITemperatureController(target_entropy=target))
    split = E3Scheduler(controller=PITemperatureController(target_entropy=target))
    for step, h in enumerate(entropies):
        ids, rewards, groups = [step, step + 100], [1.0, 0.0, 0.0], [0, 0, 1]
        a = together.observe(ids, rewards, groups, entropy=h)
        split.observe(ids, rewards, groups)
        b = split.observe_entropy(h)
        assert b["e3/entropy"] == a["e3/entropy"]
        assert b["e3/target_entropy"] == a["e3/target_entropy"]
        assert split.temperature == together.temperature
    assert split.controller.state_dict() == together.controller.state_dict()


def test_observe_entropy_rejects_bad_values():
    sched = E3Scheduler(refit_every=None)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="entropy"):
            sched.observe_entropy(bad)
    assert sched.controller.step == 0


def test_refits_switch_to_the_grid_prior():
    sched = E3Scheduler(controller=None, refit_every=2, refit_min_prompts=3)
    run_steps(sched, 1, 0)
    assert sched.tracker.prior_kind == "beta"
    run_steps(sched, 1, 0, start=1)
    assert sched.tracker.prior_kind == "grid"
    assert "e3/prior_mass_never" in sched.observe([0], [1.0], [0])


def test_paper_configuration():
    sched = E3Scheduler.paper(151_936, steps_per_epoch=4, total_steps=12)
    assert isinstance(sched.allocator, RankAllocator)
    assert isinstance(sched.controller, E3TemperatureController)
    bounds = []
    for epoch in range(3):
        bounds.append((sched.min_per_prompt, sched.max_per_prompt))
        plans = run_steps(sched, 4, epoch, batch=64)
        if epoch == 0:  # min = max = G: allocation is off in epoch 1
            assert all(counts == [8] * 64 for counts, _ in plans)
    assert bounds == [(8, 8), (6, 10), (4, 12)]
    sched.end_epoch()
    assert (sched.min_per_prompt, sched.max_per_prompt) == (4, 12)  # stays within limits
    assert sched.controller.target_schedule.start_step == 12 - 4


def test_paper_ranks_are_frozen_within_an_epoch():
    sched = E3Scheduler.paper(1000, steps_per_epoch=3, total_steps=30)
    run_steps(sched, 3, 0, batch=64)  # epoch 1 ends: snapshot taken
    ids = np.array(sched.tracker.ids[:40])  # all in the epoch-end snapshot
    before = sched.plan(ids).counts
    sched.observe(ids, np.ones(40 * 8), np.repeat(np.arange(40), 8))  # all solved
    np.testing.assert_array_equal(sched.plan(ids).counts, before)


def test_bad_observe_inputs():
    sched = E3Scheduler(refit_every=None)
    with pytest.raises(ValueError, match=r"group_ids must be integers in \[0, 2\)"):
        sched.observe([0, 1], [1.0, 0.0], [0, 2])
    with pytest.raises(ValueError, match="one entry per reward"):
        sched.observe([0, 1], [1.0, 0.0], [0])
    with pytest.raises(ValueError, match="rewards must be finite"):
        sched.observe([0, 1], [1.0, float("nan")], [0, 1])
    with pytest.raises(ValueError, match="entropy must be > 0"):
        sched.observe([0, 1], [1.0, 0.0], [0, 1], entropy=0.0)
    with pytest.raises(ValueError, match="prompt_ids must not be empty"):
        sched.plan([])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rollouts_per_prompt": 0}, ValueError, "rollouts_per_prompt must be >= 1"),
        ({"min_per_prompt": 9}, ValueError, "min_per_prompt must be <= 8"),
        ({"max_per_prompt": 4}, ValueError, "max_per_prompt must be >= 8"),
        ({"prior_kind": "normal"}, ValueError, "prior_kind must be one of"),
        ({"controller": "pid"}, ValueError, "controller must be"),
        ({"allocator": object()}, TypeError, "allocator must have allocate"),
        ({"tracker": {}}, TypeError, "tracker must be a BetaDifficultyTracker"),
        ({"widen_limits": (3, 40)}, ValueError, r"widen_limits\[0\] must be <= 2"),
    ],
)
def test_bad_settings(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        E3Scheduler(**kwargs)


def test_load_state_needs_matching_configuration():
    state = E3Scheduler(controller=None).state_dict()
    with pytest.raises(ValueError, match="disagree on having a temperature controller"):
        E3Scheduler().load_state_dict(state)
    with pytest.raises(ValueError, match="missing keys"):
        E3Scheduler().load_state_dict({"step": 1})


def test_default_is_knapsack_with_grid_refits():
    sched = E3Scheduler()
    assert isinstance(sched.allocator, KnapsackAllocator)
    assert sched.prior_kind == "grid"
    assert isinstance(sched.controller, PITemperatureController)
