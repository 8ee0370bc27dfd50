"""The demo's task: tokenizer, model, addition problems, held-out split, dataset, reward."""

import re
import types

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from trl import GRPOTrainer
from trl_tiny import parse_sum

from e3core.adapters.trl import demo
from e3core.adapters.trl.demo import (
    ALPHABET,
    build_model,
    build_tokenizer,
    evaluation,
    in_eval_split,
    make_dataset,
    sample_problems,
    supervised,
    task,
)
from e3core.adapters.trl.rewards import exact_reward


def test_package_exports_every_public_name_of_its_modules():
    names = [n for module in (task, supervised, evaluation) for n in module.__all__]
    assert sorted(demo.__all__) == sorted(names) and len(set(names)) == len(names)
    for module in (task, supervised, evaluation):
        for name in module.__all__:
            assert getattr(demo, name) is getattr(module, name)


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
        a, b = parse_sum(row["prompt"])
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
    pairs = {frozenset(parse_sum(p)) for p in train["prompt"]}
    assert not pairs & {frozenset(parse_sum(p)) for p in held["prompt"]}
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
# The demo trains and evaluates with rewards.exact_reward. Before the split it had its own copy:
# 1.0 if completion.strip() == str(answer).strip() else 0.0, on the text TRL decodes with
# skip_special_tokens=True (so without eos). These tests hold exact_reward to that rule.


def former_demo_reward(completions, answers):
    """The demo's former exact-match rule, written plainly."""
    return [1.0 if c.strip() == str(a).strip() else 0.0 for c, a in zip(completions, answers)]


def test_exact_reward_scores_the_former_demo_cases():
    completions = ["168", " 168\n", "1680", "16", "", "168 ", "0168", "\t168"]
    answers = ["168"] * len(completions)
    expected = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    assert former_demo_reward(completions, answers) == expected
    assert exact_reward(prompts=["x"] * 8, completions=completions, answer=answers) == expected


@given(
    st.lists(
        st.tuples(st.text(alphabet=ALPHABET + " \n\t", max_size=8), st.integers(0, 10**5)),
        max_size=20,
    )
)
def test_exact_reward_equals_the_former_demo_rule(pairs):
    completions = [c for c, _ in pairs]
    answers = [str(a) for _, a in pairs]
    got = exact_reward(prompts=None, completions=completions, answer=answers)
    assert got == former_demo_reward(completions, answers)


def test_exact_reward_on_decoded_demo_completions_as_trl_calls_it(tok):
    # TRL decodes each completion (up to and including its eos) with skip_special_tokens=True
    # and passes every dataset column as a keyword: here the demo's bucket and digits too.
    rows = make_dataset(6, seed=9, split="train")
    texts = list(rows["answer"])
    texts[1] = texts[1][:-1]  # stopped one digit short
    texts[2] = texts[2] + "0"  # one digit too many
    ids = [[*tok(t, add_special_tokens=False).input_ids, tok.eos_token_id] for t in texts]
    ids[3] = ids[3][:-1]  # no eos: cut by max_completion_length
    completions = tok.batch_decode(ids, skip_special_tokens=True)
    assert all(re.fullmatch(r"[0-9]*", c) for c in completions)
    got = exact_reward(
        prompts=rows["prompt"],
        completions=completions,
        completion_ids=ids,
        answer=rows["answer"],
        bucket=rows["bucket"],
        digits=rows["digits"],
        trainer_state=None,
    )
    assert got == [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    assert got == former_demo_reward(completions, rows["answer"])
