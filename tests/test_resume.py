"""The resume rule (e3core.resume): settings from the config, state from the checkpoint."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from e3core.priors import BetaPrior
from e3core.resume import RUN_CONTROL, load_scheduler_state, settings_changes
from e3core.scheduler import E3Scheduler
from e3core.settings import E3Settings

G = 4
VOCAB = 1000
TOTAL = 20
STEPS_PER_EPOCH = 2


def build(s: E3Settings) -> E3Scheduler:
    return s.build_scheduler(
        G, vocab_size=VOCAB, total_steps=TOTAL, steps_per_epoch=STEPS_PER_EPOCH, seed=0
    )


def run(scheduler: E3Scheduler, steps: int, seed: int) -> None:
    """``steps`` plan/observe steps on 3 prompts out of 6, with entropies the controller uses."""
    rng = np.random.default_rng(seed)
    rates = np.linspace(0.1, 0.9, 6)
    for _ in range(steps):
        ids = [int(i) for i in rng.choice(6, size=3, replace=False)]
        plan = scheduler.plan(ids)
        group = plan.group_ids
        rewards = (rng.random(plan.total) < rates[np.array(ids)][group]).astype(float)
        scheduler.observe(ids, rewards, group, entropy=0.5 + 0.4 * rng.random())


@st.composite
def e3_settings(draw: st.DrawFn, controller: str) -> E3Settings:
    """Valid settings for G = 4 with the given controller; every knob the rule covers varies."""
    min_per = draw(st.integers(1, G))
    max_per = draw(st.integers(G, 10))
    low_t = draw(st.floats(0.2, 1.0))
    high_t = draw(st.floats(low_t, 3.0))
    return E3Settings(
        controller=controller,
        min_per_prompt=min_per,
        max_per_prompt=max_per,
        widen_per_epoch=draw(st.integers(0, 2)),
        widen_min=draw(st.integers(1, min_per)),
        widen_max=draw(st.integers(max_per, 14)),
        decay=draw(st.floats(0.1, 1.0)),
        prior_alpha=draw(st.floats(0.2, 5.0)),
        prior_beta=draw(st.floats(0.2, 5.0)),
        kp=draw(st.floats(0.0, 2.0)),
        ki=draw(st.floats(0.0, 2.0)),
        min_temperature=low_t,
        max_temperature=high_t,
        initial_temperature=draw(st.floats(low_t, high_t)),
        target_entropy=draw(st.one_of(st.none(), st.floats(0.1, 2.0))),
        warmup_steps=draw(st.integers(1, 3)),
        anneal_final_ratio=draw(st.one_of(st.none(), st.just(0.9))),
        refit_every=draw(st.one_of(st.none(), st.integers(1, 3))),
        refit_min_prompts=1,
        resume_fresh=draw(st.booleans()),
    ).validate(G)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    controller=st.sampled_from(["pi", "e3"]),
    steps=st.integers(0, 7),
    seed=st.integers(0, 2**16),
)
def test_changed_settings_never_fail_a_valid_state_and_the_state_is_carried(
    data: st.DataObject, controller: str, steps: int, seed: int
) -> None:
    old = data.draw(e3_settings(controller), label="saved")
    new = data.draw(e3_settings(controller), label="config")
    saved = build(old)
    run(saved, steps, seed)
    state = saved.state_dict()

    scheduler = build(new)
    changes = load_scheduler_state(
        scheduler, state, saved_settings=dataclasses.asdict(old), settings=new
    )

    a, b = dataclasses.asdict(old), dataclasses.asdict(new)
    assert changes == {k: (a[k], b[k]) for k in a if a[k] != b[k] and k not in RUN_CONTROL}
    # the state: the checkpoint's
    assert (scheduler.step, scheduler.epoch) == (saved.step, saved.epoch)
    assert scheduler.tracker.ids == saved.tracker.ids
    loaded = scheduler.state_dict()
    np.testing.assert_array_equal(loaded["tracker"]["successes"], state["tracker"]["successes"])
    np.testing.assert_array_equal(loaded["tracker"]["failures"], state["tracker"]["failures"])
    assert loaded["rng"] == state["rng"]
    ctrl, saved_ctrl = scheduler.controller, saved.controller
    assert ctrl is not None and saved_ctrl is not None
    assert ctrl.step == saved_ctrl.step
    if controller == "pi":
        assert ctrl.integral == saved_ctrl.integral  # type: ignore[attr-defined]
    # the settings: the config's
    low, high = scheduler.widen_limits
    widen = new.widen_per_epoch * saved.epoch
    if {"min_per_prompt", "max_per_prompt", "widen_per_epoch", "widen_min", "widen_max"} & set(
        changes
    ):
        assert scheduler.min_per_prompt == max(low, new.min_per_prompt - widen)
        assert scheduler.max_per_prompt == min(high, new.max_per_prompt + widen)
    else:
        assert (scheduler.min_per_prompt, scheduler.max_per_prompt) == (
            saved.min_per_prompt,
            saved.max_per_prompt,
        )
    assert ctrl.min_temperature <= scheduler.temperature <= ctrl.max_temperature
    assert (ctrl.min_temperature, ctrl.max_temperature) == (
        new.min_temperature,
        new.max_temperature,
    )
    if not {"min_temperature", "max_temperature"} & set(changes):
        assert scheduler.temperature == saved.temperature
    if controller == "pi":
        assert (ctrl.kp, ctrl.ki) == (new.kp, new.ki)  # type: ignore[attr-defined]
    if changes:
        assert scheduler.tracker.decay == new.decay
    if {"prior_alpha", "prior_beta"} & set(changes):
        assert scheduler.tracker.prior == BetaPrior(new.prior_alpha, new.prior_beta)
    fresh_target = build(new).controller
    assert fresh_target is not None
    if {"target_entropy", "warmup_steps", "anneal_final_ratio"} & set(changes):
        assert ctrl.target.state_dict() == fresh_target.target.state_dict()
    else:
        assert ctrl.target.state_dict() == saved_ctrl.target.state_dict()
    # and the run goes on under the config's bounds
    plan = scheduler.plan([0, 1, 2])
    assert plan.counts.sum() == 3 * G
    assert scheduler.min_per_prompt <= plan.counts.min()
    assert plan.counts.max() <= scheduler.max_per_prompt


def _pair(**config: Any) -> tuple[E3Scheduler, dict[str, Any], E3Scheduler, E3Settings]:
    old = E3Settings(refit_min_prompts=1).validate(G)
    saved = build(old)
    run(saved, 3, 0)
    new = dataclasses.replace(old, **config).validate(G)
    return saved, dataclasses.asdict(old), build(new), new


@pytest.mark.parametrize(
    ("config", "shown"),
    [
        ({"controller": "e3", "decay": 0.5}, "controller='e3'"),
        ({"controller": "none"}, "controller='none'"),
        ({"enabled": False}, "enabled=False"),
    ],
)
def test_a_changed_controller_kind_is_an_error_listing_the_differences(
    config: dict[str, Any], shown: str
) -> None:
    saved, old, scheduler, new = _pair(**config)
    before = scheduler.state_dict()
    with pytest.raises(ValueError, match="means nothing to another") as info:
        load_scheduler_state(
            scheduler, saved.state_dict(), saved_settings=old, settings=new, prefix="--e3."
        )
    text = str(info.value)
    assert "--e3.controller='pi'" in text and f"--e3.{shown}" in text
    assert "--e3.resume_fresh=True" in text
    for name in config:
        assert f"--e3.{name}: {old[name]!r} -> {config[name]!r}" in text
    assert scheduler.state_dict() == before  # nothing loaded


def test_differences_are_logged_once_in_the_users_spelling(
    caplog: pytest.LogCaptureFixture,
) -> None:
    saved, old, scheduler, new = _pair(decay=0.5, initial_temperature=0.8, resume_fresh=True)
    with caplog.at_level(logging.WARNING, logger="e3core.resume"):
        changes = load_scheduler_state(
            scheduler,
            saved.state_dict(),
            saved_settings=old,
            settings=new,
            prefix="e3_",
            names={"initial_temperature": "temperature"},
        )
    assert changes == {"decay": (1.0, 0.5), "initial_temperature": (1.0, 0.8)}
    records = [r.getMessage() for r in caplog.records if r.name == "e3core.resume"]
    assert len(records) == 1
    assert "e3_decay: 1.0 -> 0.5" in records[0] and "temperature: 1.0 -> 0.8" in records[0]
    assert "resume_fresh" not in records[0]  # how a run starts is not a setting of its state


@pytest.mark.parametrize("which", ["saved", "current"])
def test_unknown_settings_load_the_state_as_it_is(
    which: str, caplog: pytest.LogCaptureFixture
) -> None:
    saved, old, scheduler, new = _pair(decay=0.5)
    kwargs = {"saved_settings": None if which == "saved" else old}
    kwargs["settings"] = None if which == "current" else new
    with caplog.at_level(logging.WARNING, logger="e3core.resume"):
        assert load_scheduler_state(scheduler, saved.state_dict(), **kwargs) == {}
    assert scheduler.tracker.decay == 1.0  # the state's: no settings to compare
    assert scheduler.state_dict()["tracker"] == saved.state_dict()["tracker"]
    assert not caplog.records


def test_settings_changes_compares_the_settings_both_sides_have() -> None:
    current = E3Settings(decay=0.5, resume_fresh=True)
    saved = {"decay": 1.0, "resume_fresh": False, "kp": 0.1, "gone": 3}
    assert settings_changes(saved, current) == {"decay": (1.0, 0.5)}
    assert settings_changes(None, current) == {} == settings_changes(saved, None)
    with pytest.raises(TypeError, match="saved settings must be a mapping"):
        settings_changes(["decay"], current)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="current must be an E3Settings"):
        settings_changes(saved, {"decay": 0.5})  # type: ignore[arg-type]


def test_an_invalid_state_changes_nothing_even_with_changed_settings() -> None:
    saved, old, scheduler, new = _pair(decay=0.5, min_per_prompt=1)
    state = saved.state_dict()
    state["tracker"] = {**state["tracker"], "successes": [-1.0] * len(state["tracker"]["ids"])}
    before = scheduler.state_dict()
    with pytest.raises(ValueError, match=r"state\['tracker'\]\['successes'\]"):
        load_scheduler_state(scheduler, state, saved_settings=old, settings=new)
    assert scheduler.state_dict() == before
    with pytest.raises(TypeError, match="state must be a scheduler state"):
        load_scheduler_state(scheduler, [1], saved_settings=old, settings=new)  # type: ignore[arg-type]
