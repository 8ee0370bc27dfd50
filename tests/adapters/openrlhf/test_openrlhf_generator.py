"""Contract: the real ``SamplesGenerator`` dispatch loop, with E3's counts and temperature.

A local CPU Ray runs two fake vLLM engine actors; everything else is OpenRLHF 0.11.2's own
generator code (load balancing, collection, dynamic filtering with refills, the buffer).
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace as NS  # noqa: N814

import numpy as np
import pytest
from orlhf_fixtures import FakeEngine, make_args, prompt_loader

from e3core import prompt_key
from e3core.adapters.openrlhf.generator import PROMPT_KEY_INFO, E3SamplesGenerator, sample_key
from e3core.settings import E3Settings


def _generator(args, scheduler, loader, engines=2, eval_loader=None):
    return E3SamplesGenerator(
        NS(args=args),
        loader,
        eval_loader,
        NS(pad_token_id=0),
        [FakeEngine.remote() for _ in range(engines)],
        scheduler=scheduler,
    )


def _scheduler(n=4, **settings):
    sched = E3Settings(**{"max_per_prompt": 12, **settings}).build_scheduler(n)
    # Known difficulties, so the allocation is uneven: p0..p7 observed 6 times each.
    keys = [prompt_key(f"p{i}") for i in range(8)]
    successes = np.array([0, 2, 4, 6, 0, 2, 4, 6], dtype=float)
    sched.tracker.update(keys, successes, np.full(8, 6.0))
    return sched


def _groups(samples):
    return Counter(s.prompts[0] for s in samples)


def test_each_prompt_gets_its_count_at_the_injected_temperature(local_ray):
    args = make_args(batch_size=4, n=4)
    sched = _scheduler(initial_temperature=1.3)
    gen = _generator(args, sched, prompt_loader(8))
    samples, _, consumed, _ = gen.generate_samples(temperature=1.0, max_len=64, max_new_tokens=8)
    assert consumed == 4 and len(samples) == 4 * 4
    planned = {f"p{i}": gen.e3_planned[prompt_key(f"p{i}")] for i in range(4)}
    assert dict(_groups(samples)) == planned
    assert len(set(planned.values())) > 1  # uneven: the allocation did something
    for s in samples:
        assert s.info["temperature"].item() == pytest.approx(1.3)
        assert s.info["num_samples"].item() == planned[s.prompts[0]]
        assert sample_key(s) == prompt_key(s.prompts[0])  # computed at dispatch, carried
    assert gen._e3_keys == {}  # nothing kept once the samples are made


def test_dynamic_filtering_refills_keep_groups_whole(local_ray):
    # p0, p4 are never solved and p3, p7 always: filtered out, refilled with one prompt each.
    args = make_args(batch_size=4, n=4, dynamic_filtering=True)
    sched = _scheduler(min_per_prompt=2)
    gen = _generator(args, sched, prompt_loader(16))
    samples, _, consumed, _ = gen.generate_samples(temperature=1.0, max_len=64, max_new_tokens=8)
    groups = _groups(samples)
    assert consumed > 4  # refills happened
    assert all(1 / 3 <= int(p[1:]) % 4 / 3 <= 2 / 3 for p in groups)  # only mixed groups kept
    for prompt, count in groups.items():
        assert count == gen.e3_planned[prompt_key(prompt)]  # whole groups only
    assert sum(groups.values()) <= 4 * 4
    # whatever stayed in the buffer is whole groups too
    rest = _groups(gen._sample_buffer)
    for prompt, count in rest.items():
        assert count == gen.e3_planned[prompt_key(prompt)]


def test_refills_alone_get_the_base_count(local_ray):
    args = make_args(batch_size=1, n=4, dynamic_filtering=True)
    sched = _scheduler()
    gen = _generator(args, sched, prompt_loader(6))
    samples, *_ = gen.generate_samples(temperature=1.0, max_len=64, max_new_tokens=8)
    assert set(_groups(samples).values()) == {4}


def test_evaluation_keeps_openrlhf_settings(local_ray):
    args = make_args(batch_size=2, n=4)
    sched = _scheduler(initial_temperature=1.3)
    gen = _generator(args, sched, prompt_loader(4), eval_loader=prompt_loader(2, start=20))
    samples = gen.generate_eval_samples(temperature=0.6, n_samples_per_prompt=3, max_len=64)
    assert gen.e3_planned == {}
    assert Counter(s.prompts[0] for s in samples) == {"p20": 3, "p21": 3}
    assert all(s.info["temperature"].item() == pytest.approx(0.6) for s in samples)
    assert not any(PROMPT_KEY_INFO in s.info for s in samples)
    with pytest.raises(KeyError, match="E3SamplesGenerator"):
        sample_key(samples[0])
