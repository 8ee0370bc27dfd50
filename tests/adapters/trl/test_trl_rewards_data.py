"""TRL adapter: reward functions (exact, math-verify, load_reward) and the prompt-dataset loader."""

from __future__ import annotations

import asyncio
import inspect
import json
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import datasets
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from e3core.adapters.trl import rewards as rewards_mod
from e3core.adapters.trl.data import load_prompt_dataset
from e3core.adapters.trl.rewards import (
    completion_text,
    exact_reward,
    load_reward,
    make_exact_reward,
    make_math_reward,
    math_reward,
)

datasets.disable_progress_bars()


def conv(text: str | None) -> list[dict[str, str | None]]:
    """A conversational completion as TRL builds it for chat prompts."""
    return [{"role": "assistant", "content": text}]


def call(func, completions, answers, **extra):
    """Call a reward the way TRL's GRPOTrainer does (keywords, columns as aligned lists)."""
    n = len(completions)
    return func(
        prompts=["Q"] * n,
        completions=list(completions),
        completion_ids=[[1, 2]] * n,
        answer=list(answers),
        trainer_state=None,
        **extra,
    )


# --------------------------------------------------------------------------- completion_text


def test_completion_text_forms():
    assert completion_text("abc") == "abc"
    assert completion_text(None) == ""
    assert completion_text([]) == ""
    assert completion_text(conv("x = 2")) == "x = 2"
    assert completion_text(conv(None)) == ""
    assert completion_text({"role": "assistant", "content": "one"}) == "one"
    tool_turns = [
        {"role": "assistant", "content": "", "tool_calls": [{"name": "calc"}]},
        {"role": "tool", "content": "42"},
        {"role": "assistant", "content": "final 42"},
    ]
    assert completion_text(tool_turns) == "final 42"
    assert completion_text([{"role": "tool", "content": "only tool"}]) == "only tool"
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"text": "b"}]}]
    assert completion_text(parts) == "ab"


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (3, "completion must be a string, a message dict or a list"),
        (["a", "b"], "list of message dicts, got a list holding \\['str'\\]"),
        ([{"role": "assistant", "content": 5}], "content must be a string, None or a list"),
    ],
)
def test_completion_text_rejects_bad_forms(bad, match):
    with pytest.raises(TypeError, match=match):
        completion_text(bad)


# --------------------------------------------------------------------------- exact_reward


def test_exact_reward_plain_and_conversational():
    completions = [" 42\n", "42.0", "forty-two", "", None, "42"]
    answers = ["42", "42", "42", "42", "42", 42]
    expected = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert call(exact_reward, completions, answers) == expected
    assert call(exact_reward, [conv(c) for c in completions], answers) == expected


def test_exact_reward_none_answer_means_not_applicable():
    assert call(exact_reward, ["1", "1"], [None, "1"]) == [None, 1.0]


@given(
    st.text(max_size=20),
    st.text(alphabet=" \t\n", max_size=3),
    st.text(alphabet=" \t\n", max_size=3),
)
def test_exact_reward_ignores_surrounding_whitespace_and_form(text, left, right):
    padded = left + text + right
    plain = call(exact_reward, [padded, text + "!"], [text, text])
    assert plain[0] == 1.0
    assert plain[1] == float((text + "!").strip() == text.strip())
    assert call(exact_reward, [conv(padded), conv(text + "!")], [text, text]) == plain


def test_exact_reward_custom_answer_column_and_name():
    reward = make_exact_reward("solution")
    assert reward.__name__ == "exact_reward"
    assert exact_reward.__name__ == "exact_reward"
    out = reward(prompts=["p", "p"], completions=["7", "8"], completion_ids=None, solution=[7, 7])
    assert out == [1.0, 0.0]
    with pytest.raises(ValueError, match=r"no column 'solution'.*\['answer'\]"):
        call(reward, ["7"], ["7"])


@pytest.mark.parametrize("func", [exact_reward, math_reward])
def test_reward_call_validation(func):
    name = func.__name__
    with pytest.raises(ValueError, match=rf"{name}: no column 'answer'.*\['other'\]"):
        func(prompts=["p"], completions=["1"], completion_ids=None, other=[1], trainer_state=0)
    with pytest.raises(ValueError, match="answer has 2 entries but completions has 1"):
        func(prompts=["p"], completions=["1"], completion_ids=None, answer=["1", "2"])
    with pytest.raises(ValueError, match="prompts has 2 entries but completions has 1"):
        func(prompts=["p", "q"], completions=["1"], completion_ids=None, answer=["1"])
    with pytest.raises(TypeError, match="completions must be a list"):
        func(prompts=["p"], completions="1", completion_ids=None, answer=["1"])
    with pytest.raises(TypeError, match="answer must be a list aligned with completions"):
        func(prompts=["p"], completions=["1"], completion_ids=None, answer="1")


@pytest.mark.parametrize("factory", [make_exact_reward, make_math_reward])
def test_reward_factories_check_answer_column(factory):
    with pytest.raises(TypeError, match=r"answer_column must be a string.*got 3"):
        factory(3)
    with pytest.raises(ValueError, match="answer_column must be a non-empty column name"):
        factory("")


# --------------------------------------------------------------------------- math_reward


def test_math_reward_plain_and_conversational():
    completions = [
        "\\boxed{1/2}",
        "The answer is $\\frac{1}{2}$",
        "so x = 0.5",
        "\\boxed{0.25}",
        "garbage",
        "",
        None,
        "\\boxed{",
        "$$$ \\frac{",
    ]
    expected = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert call(math_reward, completions, ["0.5"] * len(completions)) == expected
    conversational = [conv(c) for c in completions]
    assert call(math_reward, conversational, ["0.5"] * len(completions)) == expected
    assert math_reward.__name__ == "math_reward"


@pytest.mark.parametrize(
    "gold",
    ["0.5", "1/2", "\\frac{1}{2}", "$\\frac{1}{2}$", "\\boxed{\\frac12}", " 1/2 ", 0.5],
)
def test_math_reward_reads_bare_and_latex_answers(gold):
    assert call(math_reward, ["The answer is \\boxed{\\frac{1}{2}}"], [gold]) == [1.0]
    assert call(math_reward, ["The answer is \\boxed{\\frac{1}{3}}"], [gold]) == [0.0]


def test_math_reward_symbolic_answers():
    completions = ["$\\sqrt{2}$", "\\boxed{x^2 + 1}", "\\boxed{1 + x^2}", "\\boxed{x^2}"]
    answers = ["\\sqrt{2}", "x^2+1", "x^2+1", "x^2+1"]
    assert call(math_reward, completions, answers) == [1.0, 1.0, 1.0, 0.0]


def test_math_reward_none_safe_and_unparsable_gold():
    out = call(math_reward, ["\\boxed{1}", None, "\\boxed{1}", "\\boxed{1}"], [None, "1", "", "}{"])
    assert out == [None, 0.0, 0.0, 0.0]


@settings(max_examples=25)
@given(st.integers(min_value=-(10**6), max_value=10**6))
def test_math_reward_integers(n):
    completions = [f"Thus \\boxed{{{n}}}.", conv(f"so the result is ${n}$"), f"\\boxed{{{n + 1}}}"]
    assert call(math_reward, completions, [str(n), n, str(n)]) == [1.0, 1.0, 0.0]


@settings(max_examples=40)
@given(st.text(alphabet="0123456789xy+-*/^=(){}[]$\\ .,abcfrqtboxed", max_size=40))
def test_math_reward_never_raises(text):
    out = call(math_reward, [text, conv(text)], ["3", "x+1"])
    assert len(out) == 2
    assert set(out) <= {0.0, 1.0}


def test_math_reward_timeout_on_main_thread_gives_zero():
    # SymPy cannot settle 9^(9^(9^9)) == 1; without a timeout this comparison runs for ages.
    reward = make_math_reward(timeout_seconds=1)
    start = time.perf_counter()
    assert call(reward, ["\\boxed{9^{9^{9^{9}}}}"], ["1"]) == [0.0]
    assert time.perf_counter() - start < 15.0


def test_math_reward_from_worker_threads():
    completions = ["\\boxed{1/2}", "The answer is $\\frac{1}{2}$", "garbage", conv("$0.5$")]
    expected = [1.0, 1.0, 0.0, 1.0]

    def score() -> tuple[list[float | None], bool]:
        out = call(math_reward, completions, ["0.5"] * len(completions))
        return out, threading.current_thread() is threading.main_thread()

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [f.result() for f in [pool.submit(score) for _ in range(4)]]
    assert all(out == expected for out, _ in results)
    assert not any(on_main for _, on_main in results)


def test_math_verify_defaults_fail_off_the_main_thread():
    """Control for the test above: math-verify's own defaults refuse to run in a thread."""
    from math_verify import parse

    assert rewards_mod._usable_timeout(5) == 5
    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(rewards_mod._usable_timeout, 5).result() is None
        with pytest.raises(ValueError, match="thread"):
            pool.submit(parse, "$\\frac{1}{2}$").result()


@pytest.mark.parametrize(
    ("value", "exc", "match"),
    [
        (0, ValueError, "timeout_seconds must be >= 1 or None, got 0"),
        (1.5, TypeError, "timeout_seconds must be a positive integer.*got 1.5"),
        (True, TypeError, "timeout_seconds must be a positive integer.*got True"),
    ],
)
def test_math_reward_checks_timeout(value, exc, match):
    with pytest.raises(exc, match=match):
        make_math_reward(timeout_seconds=value)


# --------------------------------------------------------------------------- load_reward


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """A fresh importable module on sys.path; returns its name."""
    name = f"e3_test_rewards_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import functools\n"
        "\n"
        "def length_reward(prompts, completions, completion_ids=None, **kwargs):\n"
        "    return [float(len(c)) for c in completions]\n"
        "\n"
        "class Scorer:\n"
        "    def __call__(self, prompts, completions, completion_ids=None, **kwargs):\n"
        "        return [2.0 for _ in completions]\n"
        "\n"
        "    @staticmethod\n"
        "    def score(prompts, completions, completion_ids=None, **kwargs):\n"
        "        return [3.0 for _ in completions]\n"
        "\n"
        "class AsyncScorer:\n"
        "    async def __call__(self, prompts, completions, completion_ids=None, **kwargs):\n"
        "        return [4.0 for _ in completions]\n"
        "\n"
        "scorer = Scorer()\n"
        "async_scorer = AsyncScorer()\n"
        "partial_reward = functools.partial(length_reward, completion_ids=None)\n"
        "NOT_CALLABLE = 3\n"
    )
    (tmp_path / f"{name}_broken.py").write_text("import e3_no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for key in (name, f"{name}_broken"):
        sys.modules.pop(key, None)


def test_load_reward_builtin_names():
    exact = load_reward("exact")
    math = load_reward(" math ")
    assert (exact.__name__, math.__name__) == ("exact_reward", "math_reward")
    assert call(exact, ["3"], ["3"]) == [1.0]
    assert call(math, ["\\boxed{3/6}"], ["1/2"]) == [1.0]
    custom = load_reward("exact", answer_column="gold")
    assert custom(prompts=["p"], completions=["3"], completion_ids=None, gold=["3"]) == [1.0]


def test_load_reward_module_function(reward_module):
    module = sys.modules.get(reward_module) or __import__(reward_module)
    func = load_reward(f"{reward_module}:length_reward")
    assert func is module.length_reward
    assert func(prompts=["p", "p"], completions=["ab", "abc"], completion_ids=None) == [2.0, 3.0]
    method = load_reward(f"{reward_module}:Scorer.score")
    assert method.__name__ == "score"
    assert method(prompts=["p"], completions=["x"]) == [3.0]


def test_load_reward_dotted_path_as_trl(reward_module):
    # TRL's --reward_funcs form: package.module.function (the longest importable prefix).
    assert load_reward(f"{reward_module}.length_reward") is load_reward(
        f"{reward_module}:length_reward"
    )
    assert load_reward(f"{reward_module}.Scorer.score").__name__ == "score"
    with pytest.raises(ValueError, match=r"has no attribute 'missing'"):
        load_reward(f"{reward_module}.missing")
    with pytest.raises(ModuleNotFoundError, match="e3_no_such_dependency_xyz"):
        load_reward(f"{reward_module}_broken.f")


def test_load_reward_names_unnamed_callables(reward_module):
    instance = load_reward(f"{reward_module}:scorer")
    assert instance.__name__ == "scorer"
    assert not inspect.iscoroutinefunction(instance)
    assert instance(prompts=["p"], completions=["x", "y"]) == [2.0, 2.0]
    partial = load_reward(f"{reward_module}:partial_reward")
    assert partial.__name__ == "partial_reward"
    assert partial(prompts=["p"], completions=["xyz"]) == [3.0]
    async_instance = load_reward(f"{reward_module}:async_scorer")
    assert async_instance.__name__ == "async_scorer"
    assert inspect.iscoroutinefunction(async_instance)
    assert asyncio.run(async_instance(prompts=["p"], completions=["x"])) == [4.0]


def test_load_reward_errors(reward_module):
    with pytest.raises(ValueError, match=r"spec='e3_no_such_module_xyz:f'.*no module named"):
        load_reward("e3_no_such_module_xyz:f")
    with pytest.raises(
        ValueError, match=rf"spec='{reward_module}:missing'.*no attribute 'missing'"
    ):
        load_reward(f"{reward_module}:missing")
    with pytest.raises(ValueError, match=r"\.Scorer' has no attribute 'nope'"):
        load_reward(f"{reward_module}:Scorer.nope")
    with pytest.raises(TypeError, match=rf"spec='{reward_module}:NOT_CALLABLE'.*not callable"):
        load_reward(f"{reward_module}:NOT_CALLABLE")
    with pytest.raises(TypeError, match=r"names the class Scorer"):
        load_reward(f"{reward_module}:Scorer")
    # A module that exists but fails on its own import shows that error, not "no module".
    with pytest.raises(ModuleNotFoundError, match="e3_no_such_dependency_xyz"):
        load_reward(f"{reward_module}_broken:f")


@pytest.mark.parametrize(
    ("spec", "exc", "match"),
    [
        ("", ValueError, r"one of \('exact', 'math'\), 'module:function' or .*, got ''"),
        ("Exact", ValueError, "one of .*, 'module:function' or .*, got 'Exact'"),
        ("a..b", ValueError, "a name between every two dots"),
        ("e3_no_such_module_xyz.f", ValueError, "no module named 'e3_no_such_module_xyz'"),
        ("a:b:c", ValueError, "got 'a:b:c'"),
        (":f", ValueError, "both parts non-empty, got ':f'"),
        ("mod:", ValueError, "both parts non-empty, got 'mod:'"),
        (None, TypeError, "spec must be a string.*got None"),
        (exact_reward, TypeError, "spec must be a string"),
    ],
)
def test_load_reward_bad_specs(spec, exc, match):
    with pytest.raises(exc, match=match):
        load_reward(spec)


# --------------------------------------------------------------------------- load_prompt_dataset

ROWS = [
    {"question": "What is 1+1?", "solution": 2, "level": 1},
    {"question": "Half of one?", "solution": 0.5, "level": 3},
    {"question": "Name x if x+1=4.", "solution": 3, "level": 2},
]


def write(tmp_path: Path, kind: str, rows: list[dict]) -> Path:
    """Write ``rows`` as a .json (records), .jsonl or .parquet file under tmp_path."""
    path = tmp_path / f"data_{uuid.uuid4().hex[:6]}.{kind}"
    if kind == "json":
        path.write_text(json.dumps(rows))
    elif kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        datasets.Dataset.from_list(rows).to_parquet(str(path))
    return path


def load(path, tmp_path, **kwargs):
    return load_prompt_dataset(str(path), cache_dir=str(tmp_path / "cache"), **kwargs)


@pytest.mark.parametrize("kind", ["json", "jsonl", "parquet"])
def test_load_prompt_dataset_files_and_renaming(tmp_path, kind):
    ds = load(
        write(tmp_path, kind, ROWS), tmp_path, prompt_column="question", answer_column="solution"
    )
    assert isinstance(ds, datasets.Dataset)
    assert sorted(ds.column_names) == ["answer", "level", "prompt"]
    assert ds["prompt"][:] == [r["question"] for r in ROWS]
    # JSON stores [2, 0.5, 3] as float64; answers come back as the file wrote them.
    assert ds["answer"][:] == ["2", "0.5", "3"]
    assert ds.features["answer"] == datasets.Value("string")
    assert ds["level"][:] == [1, 3, 2]


def test_load_prompt_dataset_default_columns_and_split_name(tmp_path):
    rows = [{"prompt": "p1", "answer": "a1"}, {"prompt": "p2", "answer": "\\frac{1}{2}"}]
    ds = load(write(tmp_path, "jsonl", rows), tmp_path, split="validation")
    assert ds.split == "validation"
    assert ds.to_list() == rows
    sliced = load(
        write(tmp_path, "json", ROWS),
        tmp_path,
        split="test[1:]",
        prompt_column="question",
        answer_column="solution",
    )
    assert sliced["prompt"][:] == [r["question"] for r in ROWS[1:]]


def test_load_prompt_dataset_mixed_type_answers(tmp_path):
    rows = [{"prompt": "p1", "answer": "1/2"}, {"prompt": "p2", "answer": 7}]
    ds = load(write(tmp_path, "json", rows), tmp_path)
    assert ds["answer"][:] == ["1/2", "7"]


@pytest.mark.parametrize("system_prompt", [None, "Reason step by step."])
def test_load_prompt_dataset_chat(tmp_path, system_prompt):
    path = write(tmp_path, "json", ROWS)
    ds = load(
        path,
        tmp_path,
        prompt_column="question",
        answer_column="solution",
        chat=True,
        system_prompt=system_prompt,
    )
    head = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    for row, example in zip(ROWS, ds):
        assert example["prompt"] == [*head, {"role": "user", "content": row["question"]}]
    assert ds["level"][:] == [1, 3, 2]


def test_load_prompt_dataset_feeds_the_rewards(tmp_path):
    """The loaded columns are what TRL hands the rewards: answers line up with completions."""
    ds = load(
        write(tmp_path, "parquet", ROWS),
        tmp_path,
        prompt_column="question",
        answer_column="solution",
    )
    batch = ds[:]
    completions = ["\\boxed{2}", "$\\frac{1}{2}$", "x = 4"]
    out = math_reward(
        prompts=batch["prompt"], completions=completions, completion_ids=None, **batch
    )
    assert out == [1.0, 1.0, 0.0]
    assert call(exact_reward, ["2", "0.5", "3"], batch["answer"]) == [1.0, 1.0, 1.0]


def test_load_prompt_dataset_without_answers(tmp_path):
    ds = load(write(tmp_path, "json", ROWS), tmp_path, prompt_column="question", answer_column=None)
    assert sorted(ds.column_names) == ["level", "prompt", "solution"]


def test_load_prompt_dataset_missing_columns_list_available(tmp_path):
    path = write(tmp_path, "json", ROWS)
    with pytest.raises(
        ValueError,
        match=r"prompt_column='prompt' is not a column.*\['question', 'solution', 'level'\]",
    ):
        load(path, tmp_path)
    with pytest.raises(
        ValueError, match=r"answer_column='answer' is not a column.*\['question', 'solution'"
    ):
        load(path, tmp_path, prompt_column="question")


def test_load_prompt_dataset_rename_clash(tmp_path):
    rows = [{"prompt": "old", "question": "new", "answer": "1"}]
    with pytest.raises(ValueError, match="already has a 'prompt' column"):
        load(write(tmp_path, "json", rows), tmp_path, prompt_column="question")


@pytest.mark.parametrize(
    ("rows", "exc", "match"),
    [
        ([{"prompt": "ok", "answer": "1"}, {"prompt": 5, "answer": "2"}], TypeError, "row 1"),
        ([{"prompt": "ok", "answer": "1"}, {"prompt": "  ", "answer": "2"}], ValueError, "row 1"),
        ([{"prompt": "a", "answer": "1"}, {"prompt": "b", "answer": None}], ValueError, "row 1"),
        ([{"prompt": "a", "answer": [1, 2]}], TypeError, "row 0 holds a list"),
    ],
)
def test_load_prompt_dataset_bad_rows(tmp_path, rows, exc, match):
    with pytest.raises(exc, match=match):
        load(write(tmp_path, "jsonl", rows), tmp_path)


def test_load_prompt_dataset_empty_inputs(tmp_path):
    empty_jsonl = tmp_path / "empty.jsonl"
    empty_jsonl.write_text("")
    with pytest.raises(ValueError, match=r"name_or_path=.*empty.jsonl' is an empty file"):
        load(empty_jsonl, tmp_path)
    empty_list = tmp_path / "empty.json"
    empty_list.write_text("[]")
    with pytest.raises(ValueError, match=r"empty.json' \(split 'train'\) has no rows"):
        load(empty_list, tmp_path)
    no_rows = tmp_path / "none.parquet"
    datasets.Dataset.from_dict({"prompt": [], "answer": []}).to_parquet(str(no_rows))
    with pytest.raises(ValueError, match=r"none.parquet' \(split 'train'\) has no rows"):
        load(no_rows, tmp_path)


def test_load_prompt_dataset_paths(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"name_or_path=.*missing.jsonl' looks like a local"
    ):
        load(tmp_path / "missing.jsonl", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"name_or_path='./no_such_folder'"):
        load_prompt_dataset("./no_such_folder")
    csv = tmp_path / "data.csv"
    csv.write_text("prompt,answer\nq,1\n")
    with pytest.raises(ValueError, match=r"unsupported type '.csv'; supported: \['.json'"):
        load(csv, tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"name_or_path": 3}, TypeError, "name_or_path must be a non-empty string, got 3"),
        ({"name_or_path": " "}, ValueError, "name_or_path must be a non-empty string"),
        ({"split": None}, TypeError, "split must be a non-empty string, got None"),
        ({"prompt_column": ""}, ValueError, "prompt_column must be a non-empty string"),
        ({"answer_column": 1}, TypeError, "answer_column must be a non-empty string or None"),
        ({"answer_column": "prompt"}, ValueError, "must differ, both are 'prompt'"),
        ({"chat": 1}, TypeError, "chat must be a bool, got 1"),
        ({"system_prompt": 5, "chat": True}, TypeError, "system_prompt must be a string"),
        ({"system_prompt": "hi"}, ValueError, "system_prompt is only used with chat=True"),
    ],
)
def test_load_prompt_dataset_argument_checks(kwargs, exc, match):
    kwargs = {"name_or_path": "data.json", **kwargs}
    with pytest.raises(exc, match=match):
        load_prompt_dataset(**kwargs)
