"""State and input hygiene (issue 14, items 6-10).

Loads are transactional (a bad state raises naming the field and changes nothing), ``observe``
checks everything before it counts anything, controllers never return a non-finite temperature,
and every public entry point names the bad argument.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e3core import (
    BetaDifficultyTracker,
    Budget,
    CosineAnnealedTarget,
    E3Scheduler,
    E3TemperatureController,
    EntropyTarget,
    FixedTarget,
    KnapsackAllocator,
    PITemperatureController,
    Posterior,
    RankAllocator,
    ThompsonAllocator,
    UniformAllocator,
    WarmupMeanTarget,
    group_advantages,
    group_loss_weights,
)
from e3core.settings import E3Settings

# --------------------------------------------------------------------------- objects under test


def _tracker(grid: bool) -> BetaDifficultyTracker:
    tracker = BetaDifficultyTracker(0.5, 2.0, decay=0.9)
    tracker.update(["a", 7, ("t", 1), "b"], [1.0, 0.0, 2.5, 4.0], [2.0, 3.0, 4.0, 4.0])
    tracker.update(["a", "c"], [1.0, 1.0], [1.0, 3.0])
    if grid:
        tracker.fit_prior("grid", grid_size=5)
    return tracker


def _targets() -> dict[str, Callable[[], EntropyTarget]]:
    return {
        "fixed": lambda: FixedTarget(1.2),
        "warmup": lambda: WarmupMeanTarget(2),
        "cosine": lambda: CosineAnnealedTarget(WarmupMeanTarget(2), 1, 5),
    }


def _controller(kind: str, target: str) -> Any:
    make = _targets()[target]
    if kind == "pi":
        ctrl: Any = PITemperatureController(kp=0.3, ki=0.2, target=make())
    else:
        ctrl = E3TemperatureController(1000, target=make(), min_temperature=0.2)
    for h in (1.0, 0.7, 1.4):
        ctrl.update(h)
    return ctrl


def _scheduler(kind: str) -> E3Scheduler:
    if kind == "paper":
        sched = E3Scheduler.paper(1000, steps_per_epoch=2, total_steps=8, rollouts_per_prompt=4)
    elif kind == "fixed":
        sched = E3Scheduler(controller=None, max_per_prompt=None, refit_min_prompts=1)
    else:
        sched = E3Scheduler(refit_every=2, refit_min_prompts=1)
    ids = ["a", "b", "c"]
    for step in range(3):  # the paper's ends an epoch, so it has a rank snapshot
        counts = sched.plan(ids).counts
        group = np.repeat(np.arange(3), counts)
        rewards = (np.arange(len(group)) % (step + 2) == 0).astype(float)
        sched.observe(ids, rewards, group, 1.0 + 0.1 * step)
    return sched


OBJECTS: dict[str, Callable[[], Any]] = {
    "tracker-beta": lambda: _tracker(False),
    "tracker-grid": lambda: _tracker(True),
    **{
        f"{kind}-{target}": (lambda kind=kind, target=target: _controller(kind, target))
        for kind in ("pi", "e3")
        for target in _targets()
    },
    **{
        f"scheduler-{kind}": (lambda kind=kind: _scheduler(kind))
        for kind in ("pi", "paper", "fixed")
    },
}


def _exercise(obj: Any) -> Any:
    """What the object does next (compared between an object and an untouched twin)."""
    if isinstance(obj, BetaDifficultyTracker):
        obj.update(["a", "z"], [1.0, 0.0], [2.0, 1.0])
        return obj.posterior(["a", "b", "z", "q"]).mean.tolist()
    if isinstance(obj, E3Scheduler):
        plan = obj.plan(["a", "c", "d"])
        group = np.repeat(np.arange(3), plan.counts)
        metrics = obj.observe(["a", "c", "d"], np.ones(len(group)), group, 0.9)
        return plan.counts.tolist(), plan.temperature, metrics
    return [obj.update(h) for h in (0.8, 1.1)]


def _same(a: Any, b: Any) -> bool:
    """Exact equality of nested states (numpy arrays compared by value)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple, np.ndarray)) and isinstance(b, (list, tuple, np.ndarray)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and (a == b or (a != a and b != b))


# --------------------------------------------------------------------------- corruptions

_OPTIONAL = {"last_entropy", "rank_snapshot"}
_MAY_BE_NEGATIVE = {"integral", "ids"}


def _leaves(state: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in state.items():
        if isinstance(value, dict) and key != "rng":
            out.append((*path, key))  # the sub-state itself may be missing or get extra keys
            out.extend(_leaves(value, (*path, key)))
        else:
            out.append((*path, key))
    return out


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _corruptions(state: dict[str, Any]) -> list[tuple[tuple[str, ...], str]]:
    """Every (field path, corruption) that must make a load fail."""
    out: list[tuple[tuple[str, ...], str]] = []
    dicts = [()] + [p for p in _leaves(state) if isinstance(_get(state, p), dict)]
    for path in dicts:
        if path and path[-1] == "rng":
            continue
        out.append((path, "extra"))
    for path in _leaves(state):
        value = _get(state, path)
        key = path[-1]
        if key not in _OPTIONAL:
            out.append((path, "missing"))
        if key != "rng" or not path[:-1]:
            out.append((path, "wrong_type"))
        seq = isinstance(value, (list, np.ndarray))
        if key == "rng" or isinstance(value, dict):
            continue
        if _is_number(value) or (seq and len(value) and _is_number(_first(value))):
            out.append((path, "nan"))
            if key not in _MAY_BE_NEGATIVE:
                out.append((path, "negative"))
        if seq:
            out.append((path, "shape"))
        if key == "ids" and len(value):
            out.append((path, "duplicate"))
    return out


def _first(value: Any) -> Any:
    item = value[0]
    return item.item() if isinstance(item, np.generic) else item


def _get(state: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        state = state[key]
    return state


def _corrupt(state: dict[str, Any], path: tuple[str, ...], how: str) -> dict[str, Any]:
    bad = copy.deepcopy(state)
    parent = _get(bad, path[:-1]) if path else None
    if how == "extra":
        _get(bad, path)["unknown_key"] = 1
        return bad
    key = path[-1]
    value = parent[key]
    if how == "missing":
        del parent[key]
    elif how == "wrong_type":
        parent[key] = "x"
    elif how in ("nan", "negative"):
        new = math.nan if how == "nan" else -1
        if isinstance(value, (list, np.ndarray)):
            items = list(value)
            items[0] = new
            parent[key] = items
        else:
            parent[key] = new
    elif how == "shape":
        parent[key] = [list(value)]
    elif how == "duplicate":
        ids = list(value)
        parent[key] = [*ids, ids[0]]
        for other in ("successes", "failures"):
            parent[other] = [*list(parent[other]), 1.0]
    return bad


def _named(path: tuple[str, ...], how: str) -> str:
    return "unknown_key" if how == "extra" else path[-1]


@given(data=st.data())
def test_a_corrupted_state_raises_naming_the_field_and_changes_nothing(data):
    name = data.draw(st.sampled_from(sorted(OBJECTS)), label="object")
    obj, twin = OBJECTS[name](), OBJECTS[name]()
    state = obj.state_dict()
    path, how = data.draw(st.sampled_from(_corruptions(state)), label="corruption")
    before = copy.deepcopy(obj.state_dict())
    with pytest.raises((TypeError, ValueError)) as info:
        obj.load_state_dict(_corrupt(state, path, how))
    assert _named(path, how) in str(info.value)
    assert _same(obj.state_dict(), before)
    assert _same(_exercise(obj), _exercise(twin))


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_every_corruption_of_every_field_is_refused(name):
    """The property above, exhaustively: each field, each corruption, one at a time."""
    obj, twin = OBJECTS[name](), OBJECTS[name]()
    state = obj.state_dict()
    before = copy.deepcopy(state)
    for path, how in _corruptions(state):
        with pytest.raises((TypeError, ValueError)) as info:
            obj.load_state_dict(_corrupt(state, path, how))
        assert _named(path, how) in str(info.value), (path, how, str(info.value))
        assert _same(obj.state_dict(), before), (path, how)
    assert _same(_exercise(obj), _exercise(twin))


def test_every_corruption_kind_is_exercised():
    kinds = {how for make in OBJECTS.values() for _, how in _corruptions(make().state_dict())}
    assert kinds == {"extra", "missing", "wrong_type", "nan", "negative", "shape", "duplicate"}


@pytest.mark.parametrize("name", sorted(OBJECTS))
def test_a_valid_state_still_loads_exactly(name):
    obj, other = OBJECTS[name](), OBJECTS[name]()
    other.load_state_dict(obj.state_dict())
    assert _same(other.state_dict(), obj.state_dict())


def test_a_pi_state_is_refused_by_an_e3_controller():
    state = _controller("pi", "fixed").state_dict()
    ctrl = _controller("e3", "fixed")
    before = ctrl.state_dict()
    with pytest.raises(ValueError, match=r"unknown keys \['integral'\]"):
        ctrl.load_state_dict(state)
    assert ctrl.state_dict() == before


def test_a_scheduler_load_that_fails_in_the_controller_leaves_the_tracker():
    sched = _scheduler("pi")
    state = sched.state_dict()
    state["tracker"]["ids"] = ["x", "y", "z"]  # valid on its own
    state["controller"]["temperature"] = 99.0  # outside the bounds
    before = sched.state_dict()
    with pytest.raises(ValueError, match=r"state\['controller'\]\['temperature'\] must be <="):
        sched.load_state_dict(state)
    assert _same(sched.state_dict(), before)


def test_scheduler_bounds_must_fit_its_configuration():
    sched = _scheduler("pi")
    state = sched.state_dict()
    with pytest.raises(ValueError, match=r"state\['min_per_prompt'\] must be <= rollouts_per"):
        sched.load_state_dict({**state, "min_per_prompt": 9})
    with pytest.raises(ValueError, match=r"state\['max_per_prompt'\] is None but"):
        sched.load_state_dict({**state, "max_per_prompt": None})
    with pytest.raises(ValueError, match=r"rank_snapshot'\] has 5 ranks but"):
        sched.load_state_dict({**state, "rank_snapshot": [0.5] * 5})


def test_target_states_must_be_consistent():
    with pytest.raises(ValueError, match=r"\['total'\] must be 0 exactly when"):
        WarmupMeanTarget(2).load_state_dict({"count": 0, "total": 1.0})


# --------------------------------------------------------------------------- observe (item 7)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((["a", "b"], [1.0, np.nan], [0, 1], 1.0), ValueError, "rewards must be finite"),
        ((["a", "b"], "ab", [0, 1], 1.0), TypeError, "rewards must be an array"),
        ((["a", "b"], [1.0, 0.0], [0, 2], 1.0), ValueError, r"group_ids must be integers in"),
        ((["a", "b"], [1.0, 0.0], [0.0, 1.0], 1.0), TypeError, "group_ids must be integers"),
        ((["a", "b"], [1.0, 0.0], "01", 1.0), TypeError, "group_ids must be a 1-D array"),
        ((["a", "b"], [1.0, 0.0], [0], 1.0), ValueError, "one entry per reward"),
        ((None, [1.0, 0.0], [0, 1], 1.0), TypeError, "prompt_ids must be a sequence"),
        (("ab", [1.0, 0.0], [0, 1], 1.0), TypeError, "prompt_ids must be a sequence"),
        (([["a"], "b"], [1.0, 0.0], [0, 1], 1.0), TypeError, r"prompt_ids\[0\].* not hashable"),
        ((["a", "b"], [1.0, 0.0], [0, 1], "x"), TypeError, "entropy must be a real number"),
        ((["a", "b"], [1.0, 0.0], [0, 1], [1.0, 2.0]), TypeError, "entropy must be"),
    ],
)
def test_observe_checks_everything_before_counting(args, exc, match):
    sched = _scheduler("pi")
    before = sched.state_dict()
    with pytest.raises(exc, match=match):
        sched.observe(*args)
    assert _same(sched.state_dict(), before)  # a retry counts the rewards once


def test_observe_with_a_nan_entropy_counts_once_and_skips_the_entropy():
    sched = _scheduler("pi")
    metrics = sched.observe(["a"], [1.0], [0], float("nan"))
    assert metrics["e3/entropy_skipped"] == 1.0
    s, f = sched.tracker.counts(["a"])
    fresh = _scheduler("pi")
    fresh.observe(["a"], [1.0], [0])
    assert (s, f) == fresh.tracker.counts(["a"])


# --------------------------------------------------------------------------- controllers (item 8)

gains = st.one_of(st.just(0.0), st.floats(1e-300, 1e300))
entropies = st.one_of(
    st.sampled_from([5e-324, 1e-320, 1e-300, 1e300, 1.7e308]), st.floats(1e-300, 1e300)
)


@given(kp=gains, ki=gains, hs=st.lists(entropies, min_size=1, max_size=6))
def test_pi_controller_temperature_is_always_finite_and_bounded(kp, ki, hs):
    ctrl = PITemperatureController(kp=kp, ki=ki, target=FixedTarget(1.0))
    for h in hs:
        t = ctrl.update(h)
        assert math.isfinite(t) and ctrl.min_temperature <= t <= ctrl.max_temperature
        assert math.isfinite(ctrl.integral)


@given(hs=st.lists(entropies, min_size=1, max_size=6), high=st.sampled_from([1.5, 1e300]))
def test_e3_controller_temperature_is_always_finite_and_bounded(hs, high):
    ctrl = E3TemperatureController(3, target=FixedTarget(1.0), max_temperature=high)
    for h in hs:
        t = ctrl.update(h)
        assert math.isfinite(t) and ctrl.min_temperature <= t <= high


@pytest.mark.parametrize(
    "extreme",
    [(1000.0, 0.1, 1e-300), (0.0, 0.1, 1e-320), (0.0, 0.0, 5e-324), (1e300, 1e300, 1e300)],
)
def test_pi_controller_reported_extremes(extreme):
    kp, ki, h = extreme
    t = PITemperatureController(kp=kp, ki=ki, target=FixedTarget(1.0)).update(h)
    assert t in (0.5, 1.0, 1.5)


class _BadTarget(EntropyTarget):
    def __init__(self, value: Any):
        self.bad = value
        self.seen = 0

    def observe(self, entropy: float) -> None:
        self.seen += 1

    def value(self, step: int) -> Any:
        return self.bad

    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen}

    def load_state_dict(self, state: Any) -> None:
        self.seen = int(state["seen"])


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (math.nan, ValueError, r"_BadTarget.value\(1\) must be finite"),
        (math.inf, ValueError, r"_BadTarget.value\(1\) must be finite"),
        (-1.0, ValueError, r"_BadTarget.value\(1\) must be > 0"),
        (0.0, ValueError, r"_BadTarget.value\(1\) must be > 0"),
        ("1", TypeError, r"_BadTarget.value\(1\) must be a real number"),
    ],
)
@pytest.mark.parametrize("kind", ["pi", "e3"])
def test_a_bad_target_value_raises_and_changes_nothing(value, exc, match, kind):
    target = _BadTarget(value)
    if kind == "pi":
        ctrl: Any = PITemperatureController(target=target)
    else:
        ctrl = E3TemperatureController(100, target=target)
    before = ctrl.state_dict()
    with pytest.raises(exc, match=match):
        ctrl.update(1.0)
    assert ctrl.state_dict() == before and target.seen == 0


# --------------------------------------------------------------------------- named errors (item 9)

_POST = Posterior([1.0, 2.0], [1.0, 3.0], rank=[0.0, 1.0])


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda: E3Scheduler(seed=-1), ValueError, "seed must be >= 0, got -1"),
        (lambda: E3Settings(seed=-1).validate(8), ValueError, r"e3\.seed must be >= 0, got -1"),
        (
            lambda: E3Settings().build_scheduler(8, seed=-1),
            ValueError,
            "seed must be >= 0, got -1",
        ),
        (lambda: Posterior([1e308], [1e308]), ValueError, r"alpha \+ beta must be finite"),
        (lambda: UniformAllocator().allocate(_POST, Budget(4, 1), rng="x"), TypeError, "rng must"),
        (lambda: KnapsackAllocator().allocate(_POST, Budget(4, 1), rng="x"), TypeError, "rng must"),
        (lambda: RankAllocator().allocate(_POST, Budget(4, 1), rng="x"), TypeError, "rng must"),
        (lambda: ThompsonAllocator().allocate(_POST, Budget(4, 1), rng="x"), TypeError, "rng"),
        (lambda: _POST.sample("x"), TypeError, "rng must be a numpy.random.Generator"),
        (lambda: E3Scheduler(widen_limits=(1,)), ValueError, "widen_limits must be a pair"),
        (lambda: E3Scheduler(widen_limits=3), TypeError, "widen_limits must be a pair"),
        (lambda: E3Scheduler().plan(None), TypeError, "prompt_ids must be a sequence"),
        (lambda: E3Scheduler().plan("abc"), TypeError, "prompt_ids must be a sequence"),
        (lambda: Budget(10**30, 1), ValueError, r"total must be <= 9007199254740992"),
        (lambda: E3Settings.from_mapping("abc"), TypeError, "mapping must be a mapping"),
        (lambda: E3Settings.from_mapping([("a", 1)]), TypeError, "mapping must be a mapping"),
        (
            lambda: E3Scheduler(rollouts_per_prompt=2**31),
            ValueError,
            r"max_per_prompt must be >= rollouts_per_prompt \(2147483648\), got 32",
        ),
        (
            lambda: group_advantages(np.zeros(2), np.array([0.0, 1.0])),
            TypeError,
            "group_ids must be integers or hashable labels",
        ),
        (
            lambda: BetaDifficultyTracker().update([1], [np.nan], [1.0]),
            ValueError,
            "successes must be finite",
        ),
    ],
)
def test_bad_arguments_are_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_a_huge_posterior_has_finite_moments():
    post = Posterior([1e200, 2.0], [1e200, 3.0])
    np.testing.assert_allclose(post.variance, [0.25 / (2e200 + 1), 6 / (25 * 6)], rtol=1e-12)
    assert np.isfinite(post.mean).all()


def test_a_huge_scheduler_budget_needs_no_widen_limits():
    sched = E3Scheduler(rollouts_per_prompt=2**31, max_per_prompt=None)
    assert sched.widen_limits == (1, 2**31)


@pytest.mark.parametrize("empty", [[], np.array([]), torch.zeros(0, dtype=torch.int64)])
def test_empty_group_ids_are_accepted(empty):
    rewards = torch.zeros(0) if isinstance(empty, torch.Tensor) else np.zeros(0)
    assert len(group_advantages(rewards, empty)) == 0
    assert len(group_loss_weights(empty, "prompt")) == 0


def test_bool_labels_mean_the_same_in_numpy_and_torch():
    labels = [True, False, True, True]
    rewards = [1.0, 0.0, 0.0, 1.0]
    np_adv = group_advantages(np.array(rewards), np.array(labels))
    torch_adv = group_advantages(torch.tensor(rewards, dtype=torch.float64), torch.tensor(labels))
    np.testing.assert_allclose(torch_adv.numpy(), np_adv)
    np.testing.assert_allclose(
        group_loss_weights(torch.tensor(labels), "prompt").numpy(),
        group_loss_weights(np.array(labels), "prompt"),
    )


def test_tensors_that_require_grad_are_accepted():
    tracker = BetaDifficultyTracker()
    s = torch.tensor([1.0], requires_grad=True)
    tracker.update(["a"], s, torch.tensor([2.0], requires_grad=True))
    assert tracker.counts(["a"]) == (np.array([1.0]), np.array([1.0]))


def test_numpy_scalars_are_accepted_like_python_numbers():
    budget = Budget(np.int64(8), np.int64(2), np.int64(4))
    assert budget == Budget(8, 2, 4) and type(budget.total) is int
    sched = E3Scheduler(
        rollouts_per_prompt=np.int64(4),
        min_per_prompt=np.int64(2),
        max_per_prompt=np.int64(8),
        success_threshold=np.float32(0.5),
        temperature=np.float32(1.0),
        seed=np.int64(3),
    )
    plan = sched.plan(np.array([1, 2]))
    sched.observe(np.array([1, 2]), np.ones(plan.total), plan.group_ids, np.float32(1.2))
    ctrl = PITemperatureController(kp=np.float32(0.1), initial_temperature=np.float64(1.0))
    assert isinstance(ctrl.update(np.float32(0.9)), float)
    assert group_advantages(np.ones(2), [0, 0], eps=np.float32(1e-6), clip=np.int64(2)).shape == (
        2,
    )
    E3Settings(min_per_prompt=np.int64(2), kp=np.float32(0.2), seed=np.int64(1)).validate(
        np.int64(8)
    )
