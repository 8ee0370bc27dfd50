"""The demo's supervised warm start: its problem stream, its two phases, what it learns."""

import numpy as np
import pytest
from trl_tiny import parse_sum

from e3core.adapters.trl.demo import (
    build_model,
    evaluate,
    in_eval_split,
    make_dataset,
    supervised,
    warm_start,
)


def test_warm_start_problems_hold_out_all_but_one_digit_sums():
    rng = np.random.default_rng(0)
    digits = rng.choice([1, 2, 3], size=3000)
    prompts, answers = supervised._warm_start_problems(rng, digits)
    seen_eval_one_digit = 0
    for p, ans, d in zip(prompts, answers, digits):
        a, b = parse_sum(p)
        assert ans == str(a + b) and len(str(max(a, b))) == d
        if d >= 2:
            assert not in_eval_split(a, b)
        else:
            seen_eval_one_digit += bool(in_eval_split(a, b))
    assert seen_eval_one_digit > 0


def test_warm_start_learns_one_digit_sums(tok):
    model = build_model(tok, seed=0)
    ones = make_dataset(60, seed=7, digits=(1,), split="eval")
    before = evaluate(model, tok, ones, k=4, seed=1).rows[-1]["pass@1"]
    stats = warm_start(model, tok, steps=150, batch_size=32, digits=(1, 2), seed=0, progress=False)
    assert stats["steps"] == 150 and not model.training
    assert stats["final_loss"] < 0.75 * stats["initial_loss"]
    after = evaluate(model, tok, ones, k=4, seed=1).rows[-1]["pass@1"]
    chance = 1 / 19  # a uniform guess among the 19 possible sums 0..18
    assert after > max(before, chance)


def test_warm_start_easy_phase_then_full_mix(tok, monkeypatch):
    seen = []
    original = supervised._warm_start_problems

    def record(rng, digits):
        seen.append(sorted(set(digits.tolist())))
        return original(rng, digits)

    monkeypatch.setattr(supervised, "_warm_start_problems", record)
    small = build_model(tok, seed=0, hidden_size=16, num_layers=1)
    warm_start(small, tok, steps=10, batch_size=64, easy_fraction=0.5, progress=False)
    assert len(seen) == 10
    assert all(max(d) <= 2 for d in seen[:5])
    assert all(max(d) >= 3 for d in seen[5:])
    seen.clear()
    warm_start(small, tok, steps=4, digits=(3, 4), easy_fraction=0.5, progress=False)
    assert all(min(d) >= 3 for d in seen) and len(seen) == 4


def test_warm_start_errors(tok):
    model = build_model(tok, seed=0)
    with pytest.raises(ValueError, match="seconds and steps must not both be None"):
        warm_start(model, tok)
    with pytest.raises(ValueError, match=r"seconds must be > 0\.0, got 0\.0"):
        warm_start(model, tok, seconds=0.0)
    with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
        warm_start(model, tok, steps=1, batch_size=0)
    with pytest.raises(ValueError, match=r"decay_fraction must be <= 1\.0, got 1\.5"):
        warm_start(model, tok, steps=1, decay_fraction=1.5)
    stats = warm_start(model, tok, seconds=0.5, progress=False)
    assert stats["steps"] >= 1 and stats["seconds"] >= 0.5
