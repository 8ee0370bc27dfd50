"""E3Settings: validation names the setting, and the scheduler it builds behaves as specified."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e3core import E3Scheduler
from e3core.allocation import (
    ALLOCATORS,
    VALUES,
    KnapsackAllocator,
    RankAllocator,
    UniformAllocator,
)
from e3core.difficulty import PRIORS, RANK_BY
from e3core.prompt_keys import prompt_key
from e3core.settings import E3Settings
from e3core.temperature import CONTROLLERS, E3TemperatureController, PITemperatureController


def _simulate(scheduler: E3Scheduler, steps: int, seed: int) -> list[tuple[list[int], float]]:
    rng = np.random.default_rng(seed)
    rates = rng.beta(0.4, 0.4, size=40)
    out = []
    for t in range(steps):
        ids = list(rng.choice(40, size=8, replace=False))
        plan = scheduler.plan(ids)
        out.append((plan.counts.tolist(), plan.temperature))
        group = plan.group_ids
        rewards = (rng.random(plan.total) < rates[np.array(ids)][group]).astype(float)
        scheduler.observe(ids, rewards, group, entropy=0.6 + 0.3 * np.sin(t))
    return out


def test_defaults_are_the_recommended_scheduler():
    built = E3Settings().build_scheduler(8)
    assert isinstance(built.allocator, KnapsackAllocator) and built.allocator.value == "mixed"
    assert isinstance(built.controller, PITemperatureController)
    assert (built.min_per_prompt, built.max_per_prompt) == (2, 32)
    assert built.tracker.prior.kind == "beta" and built.refit_every == 25
    reference = E3Scheduler(rollouts_per_prompt=8, min_per_prompt=2, max_per_prompt=32)
    assert _simulate(built, 30, seed=1) == _simulate(reference, 30, seed=1)


@given(seed=st.integers(0, 1000), epoch=st.integers(2, 6))
def test_paper_settings_build_the_papers_scheduler(seed, epoch):
    vocab, total = 151_936, 6 * epoch
    built = E3Settings.paper(8).build_scheduler(
        8, vocab_size=vocab, total_steps=total, steps_per_epoch=epoch
    )
    assert isinstance(built.allocator, RankAllocator)
    assert isinstance(built.controller, E3TemperatureController)
    reference = E3Scheduler.paper(vocab, steps_per_epoch=epoch, total_steps=total)
    assert _simulate(built, total, seed) == _simulate(reference, total, seed)
    assert (built.min_per_prompt, built.max_per_prompt) == (4, 12)


@given(steps=st.integers(1, 20), seed=st.integers(0, 1000))
def test_disabled_is_uniform_at_a_fixed_temperature(steps, seed):
    built = E3Settings(enabled=False, initial_temperature=0.7).build_scheduler(8)
    assert isinstance(built.allocator, UniformAllocator) and built.controller is None
    for counts, temperature in _simulate(built, steps, seed):
        assert counts == [8] * 8 and temperature == 0.7


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"allocator": "greedy"}, "allocator"),
        ({"value": "reward"}, "value"),
        ({"controller": "p"}, "controller"),
        ({"min_per_prompt": 0}, "min_per_prompt"),
        ({"min_per_prompt": 9}, "min_per_prompt"),
        ({"max_per_prompt": 7}, "max_per_prompt"),
        ({"decay": 0.0}, "decay"),
        ({"prior_alpha": -1.0}, "prior_alpha"),
        ({"refit_every": 0}, "refit_every"),
        ({"widen_min": 3}, "widen_min"),
        ({"widen_max": 31}, "widen_max"),
        ({"min_temperature": 0.0}, "min_temperature"),
        ({"max_temperature": 0.4}, "max_temperature"),
        ({"initial_temperature": 2.0}, "initial_temperature"),
        ({"anneal_final_ratio": 1.5}, "anneal_final_ratio"),
        ({"loss_weighting": "token"}, "loss_weighting"),
        ({"baseline": "median"}, "baseline"),
        ({"target_entropy": 0.0}, "target_entropy"),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_bad_settings_name_the_setting_with_its_prefix(kwargs, name):
    with pytest.raises((TypeError, ValueError), match=rf"cfg\.{name}"):
        E3Settings(**kwargs).validate(8, prefix="cfg.")


def test_max_defaults_to_four_g_and_unknown_keys_are_listed():
    assert E3Settings().validate(6).max_per_prompt == 24
    with pytest.raises(ValueError, match=r"e3\.alocator") as info:
        E3Settings.from_mapping({"alocator": "rank"})
    assert "e3.allocator" in str(info.value)
    assert E3Settings.from_mapping({"allocator": "rank"}).allocator == "rank"


def test_settings_that_need_the_run_say_so():
    with pytest.raises(ValueError, match="vocabulary size"):
        E3Settings(controller="e3").build_scheduler(8)
    with pytest.raises(ValueError, match="total number of steps"):
        E3Settings(anneal_final_ratio=0.9).build_scheduler(8)


chats = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text()}),
    min_size=1,
    max_size=3,
)


@given(chat=chats)
def test_prompt_key_is_a_stable_63_bit_id_of_the_content(chat):
    key = prompt_key(chat)
    assert 0 <= key < 2**63
    as_array = np.empty(len(chat), dtype=object)
    as_array[:] = [dict(reversed(list(m.items()))) for m in chat]  # other key order, numpy
    assert prompt_key(as_array) == key
    assert prompt_key([*chat, {"role": "user", "content": "x"}]) != key


# ----------------------------------------------------------------------------- one source
@given(g=st.integers(1, 64))
def test_paper_takes_g_from_its_caller(g):
    paper = E3Settings.paper(g)
    assert (paper.min_per_prompt, paper.max_per_prompt) == (g, g)  # uniform in epoch 1
    assert paper.widen_min <= g <= paper.widen_max
    assert paper.validate(g) == paper  # valid for every G


def test_paper_is_the_papers_configuration():
    # arXiv 2505.18573 and its scripts: rank allocation on the epoch accuracy rank, G..G in
    # epoch 1 widened by 2 per epoch within 4..12, the E3 rule annealed to 0.9, no refits.
    paper = E3Settings.paper(8)
    assert (paper.allocator, paper.rank_by, paper.refit_prior, paper.refit_every) == (
        "rank",
        "epoch_accuracy",
        "beta",
        None,
    )
    assert (paper.widen_per_epoch, paper.widen_min, paper.widen_max) == (2, 4, 12)
    assert (paper.controller, paper.target_entropy, paper.anneal_final_ratio) == ("e3", None, 0.9)
    assert (paper.min_temperature, paper.max_temperature) == (0.1, 10.0)
    assert E3Settings.paper(8, max_temperature=5.0).max_temperature == 5.0
    with pytest.raises(ValueError, match=r"unknown E3 setting\(s\) \['alocator'\]"):
        E3Settings.paper(8, alocator="uniform")
    with pytest.raises(TypeError, match="rollouts_per_prompt must be an integer"):
        E3Settings.paper(8.0)


@pytest.mark.parametrize(
    ("setting", "names"),
    [
        ("allocator", ALLOCATORS.names()),
        ("value", VALUES.names()),
        ("refit_prior", PRIORS.names()),
        ("rank_by", RANK_BY.names()),
        ("controller", (*CONTROLLERS.names(), "none")),
    ],
)
def test_strategy_names_come_from_the_registries(setting, names):
    for name in names:
        E3Settings(**{setting: name}).validate(8)
    with pytest.raises(ValueError) as info:
        E3Settings(**{setting: "bogus"}).validate(8, prefix="cfg.")
    assert str(info.value).startswith(f"cfg.{setting} must be one of {names}")
    assert "got 'bogus'" in str(info.value)
    assert str(names) in E3Settings.help(setting)


def test_allocator_object_validates_and_builds_each_registered_allocator():
    for name in ALLOCATORS.names():
        built = E3Settings(allocator=name, value="info_gain").allocator_object()
        assert type(built) is ALLOCATORS.get(name)
        assert getattr(built, "value", "info_gain") == "info_gain"
    assert type(E3Settings(enabled=False, allocator="rank").allocator_object()) is UniformAllocator
    with pytest.raises(ValueError, match=r"e3\.allocator must be one of .*got 'bogus'"):
        E3Settings(allocator="bogus").allocator_object()
    with pytest.raises(TypeError, match=r"e3\.enabled must be a bool, got 'false'"):
        E3Settings(enabled="false").allocator_object()
    with pytest.raises(ValueError, match=r"--e3\.value must be one of"):
        E3Settings(value="reward").allocator_object(prefix="--e3.")


def test_every_setting_has_help_spelled_for_its_adapter():
    for name in E3Settings.__dataclass_fields__:
        assert len(E3Settings.help(name)) > 20, name
    assert "`target_entropy`" in E3Settings.help("warmup_steps")
    assert "`e3_target_entropy`" in E3Settings.help("warmup_steps", prefix="e3_")
    trl = {"rollouts_per_prompt": "num_generations", "initial_temperature": "temperature"}
    assert "`num_generations`" in E3Settings.help("min_per_prompt", prefix="e3_", names=trl)
    assert "`temperature`" in E3Settings.help("enabled", prefix="e3_", names=trl)
    with pytest.raises(ValueError, match="got 'alocator'"):
        E3Settings.help("alocator")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_per_prompt": 9}, "x.min_per_prompt must be <= n (8), got 9"),
        ({"max_per_prompt": 7}, "x.max_per_prompt must be >= n (8), got 7"),
        ({"widen_min": 3}, "x.widen_min must be <= x.min_per_prompt (2), got 3"),
        ({"max_temperature": 0.4}, "x.max_temperature must be >= x.min_temperature (0.5), got 0.4"),
        (
            {"initial_temperature": 2.0},
            "temp must be <= x.max_temperature (1.5), got 2.0 (or set x.controller none)",
        ),
    ],
)
def test_messages_name_the_setting_behind_a_bound(kwargs, message):
    names = {"rollouts_per_prompt": "n", "initial_temperature": "temp"}
    with pytest.raises(ValueError) as info:
        E3Settings(**kwargs).validate(8, prefix="x.", names=names)
    assert str(info.value) == message


def test_default_spelling_and_renamed_settings():
    with pytest.raises(ValueError) as info:
        E3Settings(min_per_prompt=9).validate(8)
    assert str(info.value) == "e3.min_per_prompt must be <= rollouts_per_prompt (8), got 9"
    with pytest.raises(ValueError, match=r"e3\.prior_kind is now e3\.refit_prior"):
        E3Settings.from_mapping({"prior_kind": "beta"})
    # with E3 off or no controller the temperature is any positive number (one rule everywhere)
    E3Settings(enabled=False, initial_temperature=2.0).validate(8)
    E3Settings(controller="none", initial_temperature=2.0).validate(8)
