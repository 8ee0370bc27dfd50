import io
import logging
import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e3core import (
    BetaDifficultyTracker,
    E3Scheduler,
    E3TemperatureController,
    FixedTarget,
    KnapsackAllocator,
    PITemperatureController,
    RankAllocator,
    ThompsonAllocator,
    WarmupMeanTarget,
)
from e3core.allocation import ALLOCATORS
from e3core.scheduler import STATE_VERSION
from e3core.settings import E3Settings
from e3core.temperature import CONTROLLERS

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
            tracker=BetaDifficultyTracker(decay=0.9),
            allocator=ThompsonAllocator(),
            controller=E3TemperatureController(32000),
            refit_every=3,
            refit_prior="beta",
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
    ctrl = PITemperatureController(target=FixedTarget(1.0))
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
    together = E3Scheduler(controller=PITemperatureController(target=FixedTarget(target)))
    split = E3Scheduler(controller=PITemperatureController(target=FixedTarget(target)))
    for step, h in enumerate(entropies):
        ids, rewards, groups = [step, step + 100], [1.0, 0.0, 0.0], [0, 0, 1]
        a = together.observe(ids, rewards, groups, entropy=h)
        split.observe(ids, rewards, groups)
        b = split.observe_entropy(h)
        assert b["e3/entropy"] == a["e3/entropy"]
        assert b["e3/target_entropy"] == a["e3/target_entropy"]
        assert split.temperature == together.temperature
    assert split.controller.state_dict() == together.controller.state_dict()


def test_observe_entropy_skips_and_counts_missing_or_bad_values(caplog):
    sched = E3Scheduler(refit_every=None)
    with caplog.at_level(logging.WARNING, logger="e3core.scheduler"):
        for n, bad in enumerate((None, 0.0, -1.0, float("nan"), float("inf")), start=1):
            metrics = sched.observe_entropy(bad, hint="set --log-entropy")
            assert metrics == {"e3/temperature": 1.0, "e3/entropy_skipped": float(n)}
    assert sched.controller.step == 0 and sched.entropy_skipped == 5
    warnings = [r for r in caplog.records if "no valid entropy" in r.getMessage()]
    assert len(warnings) == 1 and "set --log-entropy" in warnings[0].getMessage()
    with pytest.raises(TypeError, match="entropy must be"):
        sched.observe_entropy("0.5")
    with pytest.raises(TypeError, match="entropy must be one real number"):
        sched.observe_entropy(torch.ones(2))
    sched.observe_entropy(torch.tensor(0.5))  # a one-element tensor is one number
    assert sched.controller.step == 1 and sched.entropy_skipped == 5


def test_observe_reports_a_skipped_entropy_and_keeps_the_temperature(caplog):
    sched = E3Scheduler(controller=PITemperatureController(target=FixedTarget(1.0)))
    with caplog.at_level(logging.WARNING, logger="e3core.scheduler"):
        metrics = sched.observe([0], [1.0, 0.0], [0, 0], entropy=float("nan"))
    assert metrics["e3/entropy_skipped"] == 1.0 and "e3/entropy" not in metrics
    assert metrics["e3/temperature"] == 1.0 and sched.step == 1
    # no entropy given is not a skip: it may come later through observe_entropy
    assert sched.observe([0], [1.0], [0])["e3/entropy_skipped"] == 1.0
    # without a controller a skip is still counted, with no warning
    fixed = E3Scheduler(controller=None)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="e3core.scheduler"):
        assert fixed.observe([0], [1.0], [0], entropy=0.0)["e3/entropy_skipped"] == 1.0
    assert not caplog.records


@settings(max_examples=40)
@given(
    batch=st.integers(1, 12),
    g=st.integers(1, 6),
    seed=st.integers(0, 1000),
    unscored=st.floats(0.0, 0.5),
)
def test_count_metrics_match_a_loop_over_the_observed_completions(batch, g, seed, unscored):
    sched = E3Scheduler(
        controller=None, rollouts_per_prompt=g, min_per_prompt=1, max_per_prompt=3 * g
    )
    rng = np.random.default_rng(seed)
    ids = list(range(batch))
    plan = sched.plan(ids)
    keep = rng.random(plan.total) >= unscored  # completions a framework failed to score
    groups = plan.group_ids[keep]
    metrics = sched.observe(ids, rng.random(int(keep.sum())), groups)
    counts = [sum(1 for q in groups if q == p) for p in range(batch)]
    mean = sum(counts) / batch
    std = (sum((c - mean) ** 2 for c in counts) / batch) ** 0.5
    ordered = sorted(counts)
    half = batch // 2
    median = ordered[half] if batch % 2 else (ordered[half - 1] + ordered[half]) / 2
    assert metrics["e3/count_mean"] == pytest.approx(mean)
    assert metrics["e3/count_std"] == pytest.approx(std)
    assert metrics["e3/count_median"] == pytest.approx(median)
    assert metrics["e3/count_max"] == max(counts)
    assert metrics["e3/count_min"] == min((c for c in counts if c), default=0)


def test_observe_reports_the_temperature_the_step_was_planned_at():
    sched = E3Scheduler(controller=PITemperatureController(target=FixedTarget(1.0)))
    plan = sched.plan([0, 1])
    metrics = sched.observe([0, 1], np.ones(plan.total), plan.group_ids, entropy=0.5)
    assert metrics["e3/sample_temperature"] == plan.temperature == 1.0
    assert metrics["e3/temperature"] == sched.temperature > 1.0  # the next step's
    # an unplanned step (the adapter sampled at the current temperature) reports that one
    unplanned = sched.observe([0], [1.0], [0])
    assert unplanned["e3/sample_temperature"] == sched.temperature
    # the plan is remembered until observe: entropy fed in between (TRL, verl) leaves it
    plan = sched.plan([0, 1])
    sched.observe_entropy(0.2)
    assert sched.temperature > plan.temperature
    metrics = sched.observe([0, 1], np.ones(plan.total), plan.group_ids)
    assert metrics["e3/sample_temperature"] == plan.temperature


METRICS = {
    "e3/temperature",
    "e3/sample_temperature",
    "e3/step",
    "e3/epoch",
    "e3/success_rate",
    "e3/mixed_share",
    "e3/all_correct_share",
    "e3/all_wrong_share",
    "e3/count_min",
    "e3/count_max",
    "e3/count_mean",
    "e3/count_std",
    "e3/count_median",
    "e3/min_per_prompt",
    "e3/max_per_prompt",
    "e3/tracked_prompts",
    "e3/entropy_skipped",
}


def test_the_metric_set():
    sched = E3Scheduler(refit_every=None)
    first = sched.observe([0], [1.0], [0])
    assert set(first) == METRICS | {"e3/prior_alpha", "e3/prior_beta"}
    later = sched.observe([0], [1.0], [0], entropy=0.5)
    assert set(later) == set(first) | {"e3/entropy", "e3/target_entropy"}


def test_refits_switch_to_the_grid_prior():
    sched = E3Scheduler(controller=None, refit_every=2, refit_min_prompts=3)
    run_steps(sched, 1, 0)
    assert sched.tracker.prior.kind == "beta"
    run_steps(sched, 1, 0, start=1)
    assert sched.tracker.prior.kind == "grid"
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
    target = sched.controller.target  # the first step's entropy, annealed to 0.9 of it
    assert (target.start_step, target.end_step, target.final_ratio) == (12 - 4, 12, 0.9)
    assert isinstance(target.base, WarmupMeanTarget) and target.base.steps == 1
    bounds = (sched.controller.min_temperature, sched.controller.max_temperature)
    assert bounds == (0.1, 10.0) and sched.controller.initial_temperature == 1.0


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
    with pytest.raises(TypeError, match="entropy must be"):
        sched.observe([0, 1], [1.0, 0.0], [0, 1], entropy="high")
    assert sched.step == 0 and len(sched.tracker) == 0  # nothing changed
    with pytest.raises(ValueError, match="prompt_ids must not be empty"):
        sched.plan([])


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"rollouts_per_prompt": 0}, ValueError, "rollouts_per_prompt must be >= 1"),
        ({"min_per_prompt": 9}, ValueError, "min_per_prompt must be <= 8"),
        ({"max_per_prompt": 4}, ValueError, r"max_per_prompt must be >= rollouts_per_prompt \(8\)"),
        ({"refit_prior": "normal"}, ValueError, "refit_prior must be one of"),
        ({"controller": "pid"}, TypeError, "controller must be a TemperatureController"),
        ({"controller": lambda: 1.0}, TypeError, r"controller\(\) must return"),
        ({"allocator": object()}, TypeError, "allocator must have allocate"),
        ({"tracker": {}}, TypeError, "tracker must be a BetaDifficultyTracker"),
        (
            {"widen_limits": (3, 40)},
            ValueError,
            r"widen_limits\[0\] must be <= min_per_prompt \(2\)",
        ),
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
        E3Scheduler().load_state_dict({"version": STATE_VERSION, "step": 1})
    with pytest.raises(ValueError, match="has version 1, this e3core reads version 2"):
        E3Scheduler().load_state_dict({**E3Scheduler().state_dict(), "version": 1})


def test_default_is_knapsack_with_grid_refits():
    sched = E3Scheduler()
    assert isinstance(sched.allocator, KnapsackAllocator)
    assert sched.refit_prior == "grid"
    assert isinstance(sched.controller, PITemperatureController)


def test_the_default_controller_is_a_fresh_pi_controller_per_scheduler():
    a, b = E3Scheduler(), E3Scheduler()
    assert isinstance(a.controller, PITemperatureController) and a.controller is not b.controller
    built = E3Scheduler(controller=lambda: E3TemperatureController(1000))
    assert isinstance(built.controller, E3TemperatureController)


def _torch_round_trip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


CONFIGS = [
    (allocator, controller, prior)
    for allocator in ALLOCATORS.names()
    for controller in CONTROLLERS.names()
    for prior in ("grid", "beta")
]


@pytest.mark.parametrize(("allocator", "controller", "prior"), CONFIGS)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(split=st.integers(1, 11), seed=st.integers(0, 50), warmup=st.integers(1, 3))
def test_state_loads_with_weights_only_and_resumes_exactly(
    allocator, controller, prior, split, seed, warmup
):
    """A checkpoint is plain data: torch.load(weights_only=True) reads it and resumes exactly."""
    config = E3Settings(
        allocator=allocator,
        controller=controller,
        refit_prior=prior,
        refit_every=3,
        refit_min_prompts=5,
        rank_by="epoch_accuracy" if allocator == "rank" else "mean",
        warmup_steps=warmup,
        anneal_final_ratio=0.8,
        widen_per_epoch=1,
        min_per_prompt=3,
        max_per_prompt=8,
        seed=seed,
    )

    def make():
        return config.build_scheduler(4, vocab_size=5000, total_steps=12, steps_per_epoch=4)

    expected = run_steps(make(), 12, seed)
    first = make()
    head = run_steps(first, split, seed)
    first.observe_entropy(None)  # a skipped entropy is part of the state too
    state = _torch_round_trip(first.state_dict())
    assert state == first.state_dict()  # nothing lost or changed on the way
    resumed = make()
    resumed.load_state_dict(state)
    assert resumed.entropy_skipped == 1
    tail = run_steps(resumed, 12 - split, seed, start=split)
    assert head + tail == expected
