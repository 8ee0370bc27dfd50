import itertools
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from e3core import (
    CosineAnnealedTarget,
    E3TemperatureController,
    FixedTarget,
    PITemperatureController,
    WarmupMeanTarget,
)
from e3core.temperature import CONTROLLERS, EntropyTarget

entropies = st.lists(st.floats(0.01, 5.0), min_size=1, max_size=60)


@given(entropies=entropies, vocab=st.integers(1000, 200_000), t0=st.floats(0.6, 1.4))
def test_e3_rule_matches_loop_reference_when_unbounded(entropies, vocab, t0):
    ctrl = E3TemperatureController(
        vocab, initial_temperature=t0, min_temperature=1e-6, max_temperature=1e6
    )
    denom = math.log(vocab) + math.log(math.log(vocab))
    temp, target = t0, None
    for h in entropies:
        if target is None:
            target = h
        temp = min(max(temp * (1 + temp * math.log(target / h) / denom), 1e-6), 1e6)
        assert ctrl.update(h) == pytest.approx(temp, rel=1e-12)
    assert ctrl.target_entropy == pytest.approx(entropies[0])


@pytest.mark.parametrize("cls", ["e3", "pi"])
@given(entropies=entropies, lo=st.floats(0.1, 1.0), width=st.floats(0.0, 2.0))
def test_controllers_stay_in_bounds(cls, entropies, lo, width):
    hi = lo + width
    kw = dict(initial_temperature=lo, min_temperature=lo, max_temperature=hi)
    ctrl = (
        E3TemperatureController(152_000, **kw)
        if cls == "e3"
        else PITemperatureController(kp=2.0, ki=1.0, **kw)
    )
    for h in entropies:
        t = ctrl.update(h)
        assert lo <= t <= hi
        assert ctrl.temperature == t


@given(entropies=st.lists(st.floats(0.1, 3.0), min_size=4, max_size=10), k=st.integers(1, 4))
def test_warmup_target_is_the_mean_of_the_first_steps(entropies, k):
    ctrl = PITemperatureController(target=WarmupMeanTarget(steps=k))
    for h in entropies[: k - 1]:
        assert ctrl.update(h) == 1.0
        assert ctrl.target_entropy is None
    ctrl.update(entropies[k - 1])
    assert ctrl.target_entropy == pytest.approx(np.mean(entropies[:k]))


def softmax_entropy(logits, temperature):
    z = logits / temperature
    z = z - z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return float(np.mean(-(p * np.log(np.maximum(p, 1e-300))).sum(axis=-1)))


@given(
    seed=st.integers(0, 10_000),
    scale=st.floats(1.0, 6.0),
    target_temp=st.floats(0.7, 1.3),
)
def test_pi_converges_without_steady_state_error_on_a_softmax_plant(seed, scale, target_temp):
    # The plant: mean entropy of fixed random logits at temperature T (monotone in T).
    logits = np.random.default_rng(seed).normal(size=(16, 50)) * scale
    target = softmax_entropy(logits, target_temp)
    ctrl = PITemperatureController(target=FixedTarget(target))
    h = softmax_entropy(logits, ctrl.temperature)
    for _ in range(400):
        h = softmax_entropy(logits, ctrl.update(h))
    assert math.log(h / target) == pytest.approx(0.0, abs=1e-4)
    assert ctrl.temperature == pytest.approx(target_temp, rel=1e-3)


@given(gamma=st.floats(0.3, 5.0), ratio=st.floats(0.8, 1.25), drift=st.floats(0.0, 0.003))
def test_pi_tracks_a_drifting_power_law_plant(gamma, ratio, drift):
    # entropy falls over training (drift) at fixed temperature; PI keeps it near the target
    needed = (math.log(ratio) + drift * 300) / gamma  # log temperature at the end
    assume(math.log(0.25) < needed < math.log(4.0))
    ctrl = PITemperatureController(
        target=FixedTarget(ratio), min_temperature=0.2, max_temperature=5
    )
    h = 1.0
    for step in range(300):
        t = ctrl.update(h)
        h = t**gamma * math.exp(-drift * step)
    # a ramp disturbance leaves an error of about drift / (gamma * ki) in log entropy
    assert abs(math.log(h / ratio)) <= drift / (gamma * 0.1) * 1.5 + 1e-3


def test_pi_anti_windup_recovers_at_once():
    ctrl = PITemperatureController(target=FixedTarget(10.0), kp=0.1, ki=0.5, max_temperature=1.5)
    for _ in range(200):  # unreachable target: saturates high
        ctrl.update(1.0)
    assert ctrl.temperature == 1.5
    integral_at_bound = ctrl.integral
    assert integral_at_bound < 2.0  # not wound up over 200 saturated steps
    ctrl.target = FixedTarget(
        0.5
    )  # now the entropy is too high: the temperature must leave the bound
    ctrl.update(1.0)
    ctrl.update(1.0)
    assert ctrl.temperature < 1.5


def test_e3_warmup_keeps_initial_temperature():
    ctrl = E3TemperatureController(1000, target=WarmupMeanTarget(steps=3))
    assert [ctrl.update(h) for h in (1.0, 2.0, 3.0)] == [1.0, 1.0, ctrl.temperature]
    assert ctrl.target_entropy == pytest.approx(2.0)
    # entropy 3 > target 2: the temperature goes down
    assert ctrl.temperature < 1.0


def test_cosine_schedule_values():
    sched = CosineAnnealedTarget(FixedTarget(2.0), 60, 100, 0.9)
    assert sched.value(0) == 2.0
    assert sched.value(60) == 2.0
    assert sched.value(80) == pytest.approx(2.0 * (0.9 + 0.1 * 0.5))
    assert sched.value(100) == pytest.approx(1.8)
    assert sched.value(10_000) == pytest.approx(1.8)  # guarded past its end
    paper = CosineAnnealedTarget.paper(FixedTarget(1.0), 480)
    assert (paper.start_step, paper.end_step, paper.final_ratio) == (480 - 192, 480, 0.9)


@given(steps=st.lists(st.integers(0, 1000), min_size=2, max_size=20), eta=st.floats(0.1, 1.0))
def test_cosine_schedule_is_monotone_and_bounded(steps, eta):
    sched = CosineAnnealedTarget(FixedTarget(1.0), 100, 500, eta)
    values = [sched.value(s) for s in sorted(steps)]
    assert all(a >= b - 1e-15 for a, b in itertools.pairwise(values))
    assert all(eta - 1e-15 <= v <= 1.0 for v in values)


def test_schedule_is_applied_by_controller_step():
    sched = CosineAnnealedTarget(WarmupMeanTarget(), 2, 4, 0.5)
    ctrl = E3TemperatureController(1000, target=sched)
    ctrl.update(1.0)  # step 1 sets the base target 1.0
    targets = []
    for _ in range(5):
        ctrl.update(1.0)
        targets.append(ctrl.target_entropy)
    reference = CosineAnnealedTarget(FixedTarget(1.0), 2, 4, 0.5)
    assert targets == pytest.approx([reference.value(s) for s in range(2, 7)])


@pytest.mark.parametrize("cls", ["e3", "pi"])
@given(entropies=entropies, split=st.integers(0, 60))
def test_state_round_trip(cls, entropies, split):
    def make():
        if cls == "e3":
            return E3TemperatureController(
                5000, target=CosineAnnealedTarget(WarmupMeanTarget(), 3, 9)
            )
        return PITemperatureController(target=CosineAnnealedTarget(WarmupMeanTarget(2), 3, 9))

    a = make()
    split = min(split, len(entropies))
    for h in entropies[:split]:
        a.update(h)
    b = make()
    b.load_state_dict(a.state_dict())
    for h in entropies[split:]:
        assert a.update(h) == b.update(h)
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf])
@pytest.mark.parametrize("cls", ["e3", "pi"])
def test_bad_entropy_raises(cls, bad):
    ctrl = E3TemperatureController(100) if cls == "e3" else PITemperatureController()
    with pytest.raises(ValueError, match="entropy must be"):
        ctrl.update(bad)
    assert ctrl.step == 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_temperature": 0.0}, "min_temperature must be > 0"),
        ({"min_temperature": 1.0, "max_temperature": 0.5}, "max_temperature must be >= 1.0"),
        ({"initial_temperature": 3.0}, "initial_temperature must be <= 1.5"),
        ({"kp": -0.1}, "kp must be >= 0"),
    ],
)
def test_bad_settings_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PITemperatureController(**kwargs)
    with pytest.raises(ValueError, match="vocab_size must be >= 3"):
        E3TemperatureController(2)
    with pytest.raises(ValueError, match="end_step must be >= 11"):
        CosineAnnealedTarget(FixedTarget(1.0), 10, 10)


def test_bad_targets_raise():
    with pytest.raises(ValueError, match="entropy must be > 0"):
        FixedTarget(-1.0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        WarmupMeanTarget(steps=0)
    with pytest.raises(TypeError, match=r"target must be an EntropyTarget .*got 1\.2"):
        PITemperatureController(target=1.2)
    with pytest.raises(TypeError, match="base must be an EntropyTarget"):
        CosineAnnealedTarget(1.2, 0, 10)
    with pytest.raises(TypeError, match="vocab_size"):
        E3TemperatureController(target=FixedTarget(1.0))  # vocab_size is required


def test_controllers_are_registered_by_name():
    assert CONTROLLERS.names() == ("pi", "e3")
    assert CONTROLLERS.get("pi") is PITemperatureController
    assert CONTROLLERS.get("e3") is E3TemperatureController
    with pytest.raises(ValueError, match=r"controller must be one of \('pi', 'e3'\)"):
        CONTROLLERS.get("pid")


entropy_lists = st.lists(st.floats(0.01, 5.0), min_size=0, max_size=30)


@given(entropies=entropy_lists, k=st.integers(1, 5))
def test_warmup_mean_target_matches_loop_reference(entropies, k):
    target = WarmupMeanTarget(steps=k)
    total = 0.0
    for step, h in enumerate(entropies, start=1):
        target.observe(h)
        if step <= k:
            total += h
        assert target.value(step) == (total / k if step >= k else None)


@given(
    entropies=st.lists(st.floats(0.01, 5.0), min_size=1, max_size=30),
    start=st.integers(0, 20),
    length=st.integers(1, 20),
    eta=st.floats(0.1, 1.0),
    k=st.integers(1, 3),
)
def test_annealed_warmup_target_is_the_warmup_value_times_the_cosine(
    entropies, start, length, eta, k
):
    """Composition: annealing a measured target equals annealing the number it measured."""
    composed = CosineAnnealedTarget(WarmupMeanTarget(k), start, start + length, eta)
    for step, h in enumerate(entropies, start=1):
        composed.observe(h)
        base = composed.base.value(step)
        expected = (
            None
            if base is None
            else CosineAnnealedTarget(FixedTarget(base), start, start + length, eta).value(step)
        )
        assert composed.value(step) == expected


@given(entropies=entropy_lists, split=st.integers(0, 30))
def test_target_state_round_trip(entropies, split):
    def make() -> EntropyTarget:
        return CosineAnnealedTarget(WarmupMeanTarget(3), 2, 8)

    a = make()
    split = min(split, len(entropies))
    for h in entropies[:split]:
        a.observe(h)
    b = make()
    b.load_state_dict(a.state_dict())
    for step, h in enumerate(entropies[split:], start=split + 1):
        a.observe(h)
        b.observe(h)
        assert a.value(step) == b.value(step)
    assert a.state_dict() == b.state_dict()


def test_target_states_are_checked():
    with pytest.raises(ValueError, match=r"missing keys \['total'\]"):
        WarmupMeanTarget(2).load_state_dict({"count": 1})
    with pytest.raises(ValueError, match=r"state\['count'\] must be <= 2"):
        WarmupMeanTarget(2).load_state_dict({"count": 3, "total": 1.0})
    ctrl = PITemperatureController()
    with pytest.raises(ValueError, match="missing keys"):
        ctrl.load_state_dict({"temperature": 1.0, "step": 0, "integral": 0.0})
