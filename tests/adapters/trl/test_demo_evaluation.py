"""The demo's evaluation: pass@j per bucket (against a plain loop), sampled evaluation."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from trl_tiny import parse_sum

from e3core.adapters.trl.demo import (
    EvalResult,
    build_model,
    evaluate,
    make_dataset,
    summarize,
)

# ---------------------------------------------------------------- aggregation


@given(
    st.integers(1, 12).flatmap(
        lambda n: st.lists(
            st.tuples(st.sampled_from(["1-digit", "2-digit", "10-digit"]), st.integers(0, n)),
            min_size=1,
            max_size=30,
        ).map(lambda rows: (n, rows))
    )
)
def test_summarize_against_plain_loop(data):
    n, rows = data
    buckets = [b for b, _ in rows]
    correct = [c for _, c in rows]
    out = summarize(buckets, [n] * len(rows), correct, ks=(1, n))
    names = [r["bucket"] for r in out]
    expected_order = [b for b in ("1-digit", "2-digit", "10-digit") if b in buckets] + ["all"]
    assert names == expected_order
    for row in out:
        members = [c for b, c in rows if row["bucket"] in (b, "all")]
        assert row["prompts"] == len(members) and row["samples"] == n * len(members)
        ref1 = sum(c / n for c in members) / len(members)
        refk = sum(1 - math.comb(n - c, n) / math.comb(n, n) for c in members) / len(members)
        assert row["pass@1"] == pytest.approx(ref1, abs=1e-12)
        assert row[f"pass@{n}"] == pytest.approx(refk, abs=1e-12)
        assert row["pass@1"] <= row[f"pass@{n}"] + 1e-12


def test_summarize_all_correct_gives_one_and_errors():
    rows = summarize(["a", "a", "b"], [8, 8, 8], [8, 8, 8], ks=(1, 4, 8))
    assert all(r[key] == 1.0 for r in rows for key in ("pass@1", "pass@4", "pass@8"))
    rows = summarize(["a"], [8], [0], ks=(1, 8))
    assert rows[0]["pass@8"] == 0.0
    with pytest.raises(ValueError, match="one length"):
        summarize(["a"], [8, 8], [1, 1])
    with pytest.raises(ValueError, match="k must be <= num_samples"):
        summarize(["a"], [4], [1], ks=(8,))
    with pytest.raises(ValueError, match="at least one prompt"):
        summarize([], [], [])


# ---------------------------------------------------------------- evaluate


class ScriptedModel(torch.nn.Module):
    """Answers a+b correctly in the first `right(a, b)` of its samples, else a+b+1."""

    def __init__(self, tok, right):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.tok = tok
        self.right = right
        self.calls = []

    def generate(self, input_ids, attention_mask, max_new_tokens, num_return_sequences, **kwargs):
        self.calls.append({"training": self.training, "rows": len(input_ids), **kwargs})
        out = []
        for ids, mask in zip(input_ids, attention_mask):
            a, b = parse_sum(self.tok.decode(ids[mask.bool()], skip_special_tokens=True))
            for r in range(num_return_sequences):
                text = str(a + b) if r < self.right(a, b) else str(a + b + 1)
                new = [*self.tok(text, add_special_tokens=False).input_ids, self.tok.eos_token_id]
                new += [self.tok.pad_token_id] * (max_new_tokens - len(new))
                out.append(ids.tolist() + new[:max_new_tokens])
        return torch.tensor(out)


def test_evaluate_counts_each_prompts_samples_exactly(tok):
    ds = make_dataset(40, seed=2, split="eval")
    model = ScriptedModel(tok, right=lambda a, b: len(str(max(a, b))) * 2 - 2)  # 0, 2, 4, 6 of 8
    model.train()
    result = evaluate(model, tok, ds, k=8, batch_size=7)
    assert isinstance(result, EvalResult) and model.training
    assert not any(call["training"] for call in model.calls)
    assert all(call["do_sample"] and call["temperature"] == 1.0 for call in model.calls)
    assert result.prompts == ds["prompt"] and result.buckets == ds["bucket"]
    np.testing.assert_array_equal(result.num_samples, np.full(40, 8))
    np.testing.assert_array_equal(result.num_correct, 2 * np.asarray(ds["digits"]) - 2)
    assert result.rows == summarize(ds["bucket"], result.num_samples, result.num_correct, (1, 8))
    by_bucket = {r["bucket"]: r for r in result.rows}
    assert by_bucket["1-digit"]["pass@1"] == 0.0 and by_bucket["1-digit"]["pass@8"] == 0.0
    assert by_bucket["3-digit"]["pass@1"] == pytest.approx(0.5)
    assert by_bucket["4-digit"]["pass@8"] == 1.0


def test_evaluate_oracle_gives_pass_at_k_one(tok):
    ds = make_dataset(12, seed=3, split="eval")
    result = evaluate(ScriptedModel(tok, right=lambda a, b: 99), tok, ds, k=4)
    assert all(r["pass@1"] == 1.0 and r["pass@4"] == 1.0 for r in result.rows)
    greedy = evaluate(ScriptedModel(tok, right=lambda a, b: 99), tok, ds, k=4, temperature=0.0)
    np.testing.assert_array_equal(greedy.num_correct, np.full(12, 4))
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        evaluate(ScriptedModel(tok, right=lambda a, b: 1), tok, ds, k=0)
    with pytest.raises(ValueError, match="dataset must have a 'answer' column"):
        evaluate(ScriptedModel(tok, right=lambda a, b: 1), tok, {"prompt": ["1+1="]})


def test_evaluate_real_model_is_consistent_and_reproducible(tok):
    model = build_model(tok, seed=0)
    ds = make_dataset(24, seed=4, split="eval")
    state = torch.get_rng_state()
    one = evaluate(model, tok, ds, k=5, seed=11, batch_size=10)
    assert torch.equal(state, torch.get_rng_state())
    two = evaluate(model, tok, ds, k=5, seed=11, batch_size=10)
    np.testing.assert_array_equal(one.num_correct, two.num_correct)
    assert ((one.num_correct >= 0) & (one.num_correct <= 5)).all()
    for row in one.rows:
        assert 0.0 <= row["pass@1"] <= row["pass@5"] <= 1.0
