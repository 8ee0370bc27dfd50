import math
import types

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from trl import GRPOTrainer

from e3core.adapters.trl.demo_task import (
    ALPHABET,
    EvalResult,
    _warm_start_problems,
    build_model,
    build_tokenizer,
    evaluate,
    exact_match_reward,
    format_table,
    in_eval_split,
    make_dataset,
    sample_problems,
    save_plot,
    summarize,
    warm_start,
)


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer()


def parse(prompt):
    assert prompt.endswith("=")
    a, b = prompt[:-1].split("+")
    return int(a), int(b)


# ---------------------------------------------------------------- tokenizer


def test_vocabulary_and_special_ids(tok):
    assert len(tok) == 16
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2, 3)
    assert tok.convert_ids_to_tokens(list(range(4, 16))) == list(ALPHABET)


@given(st.text(alphabet=ALPHABET, max_size=40))
def test_round_trip(s):
    tok = build_tokenizer()
    ids = tok(s).input_ids
    assert ids == [tok.bos_token_id] + [4 + ALPHABET.index(ch) for ch in s]
    assert tok.decode(ids, skip_special_tokens=True) == s
    assert tok(s, add_special_tokens=False).input_ids == ids[1:]


def test_trl_string_prompts_get_bos_as_in_warm_start(tok):
    # GRPOTrainer tokenizes plain-string prompts itself; call its real method with a bare self.
    fake = types.SimpleNamespace(processing_class=tok)
    prompts = ["1+2=", "123+45="]
    ids, images, fields = GRPOTrainer._tokenize_prompts(fake, prompts)
    assert images is None and fields == {}
    assert [list(x) for x in ids] == [tok(p).input_ids for p in prompts]
    assert all(x[0] == tok.bos_token_id and tok.eos_token_id not in x for x in ids)


def test_left_padding_and_unknown_characters(tok):
    batch = tok(["1+2=", "123+45="], padding=True, padding_side="left", return_tensors="pt")
    assert batch["input_ids"].shape == (2, 8)
    assert batch["input_ids"][0, :3].tolist() == [tok.pad_token_id] * 3
    assert batch["attention_mask"][0].tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert batch["input_ids"][1, 0].item() == tok.bos_token_id
    assert tok("1 x").input_ids == [1, 5, 3, 3]


def test_save_and_reload(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again("98+7=").input_ids == tok("98+7=").input_ids
    assert again.decode(again("98+7=").input_ids, skip_special_tokens=True) == "98+7="


# ---------------------------------------------------------------- model


def test_model_config_and_seeding(tok):
    state = torch.get_rng_state()
    model = build_model(tok, seed=3)
    assert torch.equal(state, torch.get_rng_state())
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (3, 128, 4)
    assert cfg.num_key_value_heads == 2 and cfg.vocab_size == 16 and cfg.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        assert getattr(model.generation_config, name) == getattr(tok, name)
        assert getattr(cfg, name) == getattr(tok, name)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    same = build_model(tok, seed=3)
    other = build_model(tok, seed=4)
    w = model.model.embed_tokens.weight
    assert torch.equal(w, same.model.embed_tokens.weight)
    assert not torch.equal(w, other.model.embed_tokens.weight)
    with pytest.raises(ValueError, match="hidden_size must be a multiple of 8, got 12"):
        build_model(tok, hidden_size=12)
    with pytest.raises(TypeError, match="tokenizer must define pad_token_id"):
        build_model(types.SimpleNamespace(), seed=0)


# ---------------------------------------------------------------- problems and datasets


@given(st.lists(st.integers(1, 8), max_size=40), st.integers(0, 2**32), st.booleans())
def test_sample_problems_digits_and_split(digits, seed, held_out):
    split = "eval" if held_out else "train"
    a, b = sample_problems(np.random.default_rng(seed), np.array(digits, dtype=np.int64), split)
    for d, x, y in zip(digits, a.tolist(), b.tolist()):
        assert len(str(max(x, y))) == d and min(x, y) >= 0
        assert bool(in_eval_split(x, y)) == held_out


def test_split_none_draws_from_both_splits():
    digits = np.full(400, 2)
    a, b = sample_problems(np.random.default_rng(0), digits, None)
    held = in_eval_split(a, b)
    assert 0.1 < held.mean() < 0.3
    assert all(len(str(max(x, y))) == 2 for x, y in zip(a.tolist(), b.tolist()))


def test_warm_start_problems_hold_out_all_but_one_digit_sums():
    rng = np.random.default_rng(0)
    digits = rng.choice([1, 2, 3], size=3000)
    prompts, answers = _warm_start_problems(rng, digits)
    seen_eval_one_digit = 0
    for p, ans, d in zip(prompts, answers, digits):
        a, b = parse(p)
        assert ans == str(a + b) and len(str(max(a, b))) == d
        if d >= 2:
            assert not in_eval_split(a, b)
        else:
            seen_eval_one_digit += bool(in_eval_split(a, b))
    assert seen_eval_one_digit > 0


@given(st.integers(0, 10**8 - 1), st.integers(0, 10**8 - 1))
def test_split_is_symmetric(a, b):
    assert in_eval_split(a, b) == in_eval_split(b, a)


def test_split_holds_out_about_one_pair_in_five():
    a, b = np.meshgrid(np.arange(300), np.arange(300))
    share = in_eval_split(a, b).mean()
    assert 0.18 < share < 0.22
    with pytest.raises(ValueError, match=r"a and b must be in \[0, 10\*\*8\)"):
        in_eval_split(-1, 3)


@pytest.mark.parametrize("split", ["train", "eval"])
def test_dataset_rows_are_correct(split):
    ds = make_dataset(400, seed=5, split=split)
    assert ds.column_names == ["prompt", "answer", "bucket", "digits"]
    counts = {}
    for row in ds:
        a, b = parse(row["prompt"])
        assert row["answer"] == str(a + b)
        d = len(str(max(a, b)))
        assert row["bucket"] == f"{d}-digit" and row["digits"] == d
        assert bool(in_eval_split(a, b)) == (split == "eval")
        counts[d] = counts.get(d, 0) + 1
    assert counts == {1: 60, 2: 100, 3: 140, 4: 100}  # 0.15/0.25/0.35/0.25 of 400
    assert make_dataset(400, seed=5, split=split)["prompt"] == ds["prompt"]
    assert make_dataset(400, seed=6, split=split)["prompt"] != ds["prompt"]


def test_train_and_eval_are_disjoint():
    train = make_dataset(3000, seed=0, split="train")
    held = make_dataset(1000, seed=0, split="eval")
    pairs = {frozenset(parse(p)) for p in train["prompt"]}
    assert not pairs & {frozenset(parse(p)) for p in held["prompt"]}
    # a harder bucket is diverse: few repeats among 3-digit eval problems
    three = [p for p, b in zip(held["prompt"], held["bucket"]) if b == "3-digit"]
    assert len(set(three)) > 0.95 * len(three)


def test_dataset_weights_and_errors():
    ds = make_dataset(10, seed=1, digits=(2, 5), weights=(3, 1))
    assert sorted(ds["bucket"]).count("2-digit") == 8 and ds["bucket"].count("5-digit") == 2
    uniform = make_dataset(9, seed=1, digits=(1, 2, 3))
    assert sorted(uniform["digits"]) == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    with pytest.raises(ValueError, match="num_prompts must be >= 1, got 0"):
        make_dataset(0)
    with pytest.raises(ValueError, match="split must be one of"):
        make_dataset(5, split="test")
    with pytest.raises(ValueError, match="digits must be <= 8, got 9"):
        make_dataset(5, digits=(1, 9))
    with pytest.raises(ValueError, match="weights must have one entry per digit count"):
        make_dataset(5, digits=(1, 2), weights=(1.0,))
    with pytest.raises(ValueError, match=r"weights must be >= 0\.0, got -1\.0"):
        make_dataset(5, digits=(1, 2), weights=(1.0, -1.0))
    with pytest.raises(TypeError, match="digits must be a non-empty sequence"):
        make_dataset(5, digits=3)


# ---------------------------------------------------------------- reward


def test_exact_match_reward():
    completions = ["168", " 168\n", "1680", "16", "", "168 ", "0168"]
    got = exact_match_reward(completions, ["168"] * len(completions), prompts=["x"] * 7)
    assert got == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    chat = [[{"role": "assistant", "content": "42"}], [{"role": "assistant", "content": "4"}]]
    assert exact_match_reward(chat, ["42", "42"]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="same length, got 2 and 1"):
        exact_match_reward(["1", "2"], ["1"])
    with pytest.raises(TypeError, match="completions must hold strings"):
        exact_match_reward([3], ["3"])


@given(st.lists(st.tuples(st.integers(0, 10**5), st.integers(0, 10**5)), max_size=20))
def test_reward_is_exact_equality_of_numbers(pairs):
    completions = [str(x) for x, _ in pairs]
    answers = [str(y) for _, y in pairs]
    assert exact_match_reward(completions, answers) == [float(x == y) for x, y in pairs]


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
            a, b = parse(self.tok.decode(ids[mask.bool()], skip_special_tokens=True))
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


# ---------------------------------------------------------------- warm start


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
    import e3core.adapters.trl.demo_task as demo

    seen = []
    original = demo._warm_start_problems

    def record(rng, digits):
        seen.append(sorted(set(digits.tolist())))
        return original(rng, digits)

    monkeypatch.setattr(demo, "_warm_start_problems", record)
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


# ---------------------------------------------------------------- table and plot


def test_format_table():
    before = summarize(["1-digit", "2-digit"], [8, 8], [4, 0], ks=(1, 8))
    after = summarize(["1-digit", "2-digit"], [8, 8], [8, 2], ks=(1, 8))
    text = format_table(before)
    lines = text.splitlines()
    assert lines[0].split() == ["bucket", "prompts", "pass@1", "pass@8"]
    assert len({len(line) for line in lines}) == 1
    assert lines[2].split() == ["1-digit", "1", "0.500", "1.000"]
    both = format_table(before, after, labels=("pre", "post")).splitlines()
    assert both[0].split() == [
        "bucket",
        "prompts",
        *["pass@1", "pre", "pass@1", "post", "pass@8", "pre", "pass@8", "post"],
    ]
    assert both[-1].split() == ["all", "2", "0.250", "0.625", "0.500", "1.000"]
    with pytest.raises(ValueError, match=r"missing \['2-digit', 'all'\]"):
        format_table(before, after[:1])
    with pytest.raises(ValueError, match="rows must hold at least one row"):
        format_table([])


def test_save_plot_tolerates_missing_keys(tmp_path):
    history = [
        {"step": i, "entropy": 0.3 - 0.01 * i, "reward": 0.1 * i, "e3/temperature": 1.0 + 0.02 * i}
        for i in range(10)
    ]
    history[3]["e3/target_entropy"] = 0.25
    history[4]["entropy"] = float("nan")
    path = save_plot(history, tmp_path / "sub" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    empty = save_plot([], tmp_path / "empty.png")
    assert empty.stat().st_size > 0
