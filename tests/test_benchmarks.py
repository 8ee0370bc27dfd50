"""The benchmarks' shared harness (``benchmarks/_common.py``) and peer baselines (``peers.py``).

The benchmark scripts run as ``python benchmarks/<script>.py`` and import ``_common`` and
``peers`` from their own folder; here both are loaded from their files. The peers are checked
against e3core where both compute the same thing, and the knapsack peer against a plain loop.
"""

import ast
import importlib.util
import math
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from e3core import Budget, group_advantages
from e3core.kernels import logprobs_and_entropy

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


common = _load("_common")
peers = _load("peers")


# ------------------------------------------------------------------------ harness
def test_table_lines_are_markdown():
    lines = common.table_lines(["a", "b c"], [["1", ""], [2.5, "x"]])
    assert lines == ["| a | b c |", "|---|---|", "| 1 |  |", "| 2.5 | x |"]
    spaced = common.table_lines(["a", "b"], [], spaced_rule=True)
    assert spaced == ["| a | b |", "| --- | --- |"]


def test_table_lines_refuse_a_row_of_the_wrong_width():
    with pytest.raises(ValueError, match=r"rows\[1\] has 1 cells, but the table has 2 columns"):
        common.table_lines(["a", "b"], [["1", "2"], ["3"]])


def test_write_csv_takes_the_union_of_keys_in_first_seen_order(tmp_path):
    path = tmp_path / "sub" / "rows.csv"
    rows = [{"b": 1, "a": 2.5}, {"a": "x", "c": ""}, {"d": None}]
    assert common.write_csv(rows, path) == path
    assert path.read_text().splitlines()[0] == "b,a,c,d"
    assert common.read_csv(path) == [
        {"b": "1", "a": "2.5", "c": "", "d": ""},
        {"b": "", "a": "x", "c": "", "d": ""},
        {"b": "", "a": "", "c": "", "d": ""},
    ]


def test_median_seconds_warms_up_calibrates_and_repeats():
    calls = []
    seconds = common.median_seconds(lambda: calls.append(1), repeats=4, min_time=0.0)
    # one warm-up, the calibrating repeat (kept as the first of 4), then 3 more: one call each
    assert len(calls) == 5
    assert seconds >= 0.0


def test_median_seconds_loops_until_a_repeat_lasts_min_time():
    calls = []
    seconds = common.median_seconds(lambda: calls.append(1), repeats=2, min_time=0.002)
    # a call takes well under 2 ms, so calibration loops it many times per repeat
    assert len(calls) > 10
    assert 0.0 < seconds < 0.002


def test_median_seconds_interleaved_takes_repeats_in_turn():
    order: list[str] = []
    times = common.median_seconds_interleaved(
        [lambda: order.append("a"), lambda: order.append("b")], repeats=3, min_time=0.0
    )
    assert len(times) == 2
    # per call: warm-up and calibration (not kept), then the repeats round-robin
    assert order == ["a", "a", "b", "b", "a", "b", "a", "b", "a", "b"]


@pytest.mark.parametrize(
    ("repeats", "min_time", "message"),
    [(0, 0.0, "repeats must be a positive"), (1, -1.0, "min_time must be >= 0")],
)
def test_timers_name_a_bad_argument(repeats, min_time, message):
    with pytest.raises(ValueError, match=message):
        common.median_seconds(lambda: None, repeats, min_time)
    with pytest.raises(ValueError, match=message):
        common.median_seconds_interleaved([lambda: None], repeats, min_time)


# ------------------------------------------------------------------- advantages
def test_trl_reshape_equals_e3core_on_equal_groups():
    rewards = (torch.rand(64, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    ours = group_advantages(rewards, torch.arange(64) // 8, eps=1e-6)
    torch.testing.assert_close(peers.trl_reshape_advantages(rewards, 8, 1e-6), ours)


@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=8),
    seed=st.integers(0, 10_000),
)
def test_verl_loop_equals_e3core_except_on_lone_samples(sizes, seed):
    rng = np.random.default_rng(seed)
    gid = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    rewards = torch.from_numpy((rng.random(len(gid)) < 0.5).astype(np.float32))
    uids = [f"uid-{g}" for g in gid]
    theirs = peers.verl_loop_advantages(rewards, uids, 1e-6)
    ours = group_advantages(rewards, torch.from_numpy(gid), eps=1e-6)
    lone = np.asarray(sizes)[gid] == 1
    torch.testing.assert_close(theirs[~lone], ours[~lone])
    # verl passes a lone sample's raw reward; e3core gives it no advantage
    torch.testing.assert_close(theirs[lone], rewards[lone])
    assert not ours[lone].any()


# ---------------------------------------------------------------------- tracker
def test_dict_beta_tracker_adds_successes_and_failures_to_the_prior():
    tracker = peers.DictBetaTracker(alpha0=0.5, beta0=2.0)
    tracker.update(np.array([3, 7, 3]), np.array([1.0, 0.0, 4.0]), np.array([2.0, 8.0, 8.0]))
    alpha, beta = tracker.posterior(np.array([3, 7, 9]))
    np.testing.assert_array_equal(alpha, [0.5 + 5.0, 0.5, 0.5])
    np.testing.assert_array_equal(beta, [2.0 + 5.0, 2.0 + 8.0, 2.0])


# ------------------------------------------------------------------- allocation
def _value(p: float, n: int, kind: str) -> float:
    w = p * (1 - p) ** 2 if kind == "info" else 1.0
    return w * (1 - p**n - (1 - p) ** n)


def _greedy_loop(p_hat: np.ndarray, lo: int, hi: int, spare: int, kind: str) -> float:
    """The knapsack's total value by plain greedy: one rollout at a time to the largest gain."""
    counts = [lo] * len(p_hat)
    for _ in range(spare):
        gains = [
            _value(p, n + 1, kind) - _value(p, n, kind) if n < hi else -math.inf
            for p, n in zip(p_hat, counts, strict=True)
        ]
        if max(gains) == -math.inf:
            break
        counts[int(np.argmax(gains))] += 1
    return sum(_value(p, n, kind) for p, n in zip(p_hat, counts, strict=True))


@given(
    data=st.data(),
    num=st.integers(1, 12),
    lo=st.integers(1, 4),
    width=st.integers(0, 6),
    kind=st.sampled_from(["info", "mixed"]),
)
def test_point_knapsack_fills_the_budget_within_bounds(data, num, lo, width, kind):
    hi = lo + width
    total = data.draw(st.integers(lo * num, hi * num), label="total")
    rate = st.one_of(st.just(math.nan), st.just(0.0), st.just(1.0), st.floats(0.01, 0.99))
    last = np.array(data.draw(st.lists(rate, min_size=num, max_size=num), label="last"))
    knapsack = peers.PointKnapsack(kind, num)
    knapsack.last[:] = last
    counts = knapsack.plan(np.arange(num), Budget(total, lo, hi))
    assert counts.sum() == total
    assert counts.min() >= lo and counts.max() <= hi


@given(
    p_hat=st.lists(st.floats(0.02, 0.98), min_size=1, max_size=8),
    extra=st.integers(0, 40),
    kind=st.sampled_from(["info", "mixed"]),
)
def test_point_knapsack_value_equals_a_plain_greedy_loop(p_hat, extra, kind):
    num, lo, hi = len(p_hat), 2, 8
    total = min(lo * num + extra, hi * num)
    knapsack = peers.PointKnapsack(kind, num)
    knapsack.last[:] = p_hat
    counts = knapsack.plan(np.arange(num), Budget(total, lo, hi))
    value = sum(_value(p, int(n), kind) for p, n in zip(p_hat, counts, strict=True))
    assert value == pytest.approx(_greedy_loop(np.array(p_hat), lo, hi, total - lo * num, kind))


def test_point_knapsack_records_the_last_groups_rate_and_refuses_unknown_values():
    knapsack = peers.PointKnapsack("mixed", 4)
    knapsack.record(np.array([1, 3]), np.array([2, 0]), np.array([8, 4]))
    np.testing.assert_array_equal(knapsack.last, [np.nan, 0.25, np.nan, 0.0])
    with pytest.raises(ValueError, match="value must be one of info, mixed; got 'entropy'"):
        peers.PointKnapsack("entropy", 4)


# ---------------------------------------------------------------------- entropy
@pytest.mark.parametrize("peer", ["verl_entropy", "trl_chunked_entropy"])
def test_entropy_peers_equal_e3cores_reference(peer):
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(300, 50, generator=gen) * 3
    labels = torch.randint(0, 50, (300,), generator=gen)
    lp, ent = getattr(peers, peer)(logits, labels, 0.7)
    ref_lp, ref_ent = logprobs_and_entropy(logits, labels, 0.7, backend="torch")
    torch.testing.assert_close(lp, ref_lp, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent, ref_ent, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------- scripts
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.stem not in ("_common", "peers"))


def test_the_benchmark_scripts_are_all_checked():
    assert {p.stem for p in SCRIPTS} >= {"allocation_sim", "bench_core", "bench_entropy"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.stem)
def test_no_benchmark_imports_another(script):
    tree = ast.parse(script.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    others = {p.stem for p in SCRIPTS} - {script.stem}
    assert not imported & others, f"{script.name} imports another benchmark"
    assert "importlib" not in imported, f"{script.name} loads a module by path"
    assert "_common" in imported, f"{script.name} does not use the shared harness"
