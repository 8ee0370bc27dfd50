"""E3Settings: validation names the setting, and the scheduler it builds behaves as specified."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from e3core import E3Scheduler
from e3core.allocation import KnapsackAllocator, RankAllocator, UniformAllocator
from e3core.prompt_keys import prompt_key
from e3core.settings import E3Settings
from e3core.temperature import E3TemperatureController, PITemperatureController


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
    assert built.tracker.prior_kind == "beta" and built.refit_every == 25
    reference = E3Scheduler(rollouts_per_prompt=8, min_per_prompt=2, max_per_prompt=32)
    assert _simulate(built, 30, seed=1) == _simulate(reference, 30, seed=1)


@given(seed=st.integers(0, 1000), epoch=st.integers(2, 6))
def test_paper_settings_build_the_papers_scheduler(seed, epoch):
    vocab, total = 151_936, 6 * epoch
    built = E3Settings.paper().build_scheduler(
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
