import itertools
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import e3core
from e3core.metrics import mean_pass_at_k, pass_at_k


def exact(n, c, k):
    """1 - C(n-c, k)/C(n, k) as an exact rational (math.comb is 0 when k > n - c)."""
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def brute_force(n, c, k):
    """Share of the k-subsets of n samples (c of them correct) holding a correct one."""
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    hits = sum(any(samples[i] for i in s) for s in subsets)
    return Fraction(hits, len(subsets))


@st.composite
def nck(draw, max_n=60):
    n = draw(st.integers(1, max_n))
    c = draw(st.integers(0, n))
    k = draw(st.integers(1, n))
    return n, c, k


@given(nck(max_n=9))
def test_matches_brute_force_over_subsets(args):
    n, c, k = args
    assert pass_at_k(n, c, k) == pytest.approx(float(brute_force(n, c, k)), abs=1e-15)
    assert brute_force(n, c, k) == exact(n, c, k)


@given(nck(max_n=400))
def test_matches_exact_rational(args):
    n, c, k = args
    assert float(pass_at_k(n, c, k)) == pytest.approx(float(exact(n, c, k)), rel=1e-13, abs=1e-15)


@given(
    st.integers(1, 12_000).flatmap(
        lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))
    )
)
def test_exact_for_large_n_without_overflow(args):
    n, c, k = args
    got = float(pass_at_k(n, c, k))
    want = float(exact(n, c, k))
    assert math.isfinite(got)
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_extreme_values_are_exact():
    # tiny pass@k (ratio close to 1) keeps its digits thanks to expm1
    assert float(pass_at_k(10_000, 1, 1)) == pytest.approx(1e-4, rel=1e-14)
    want = float(exact(10**6, 1, 3))
    assert float(pass_at_k(10**6, 1, 3)) == pytest.approx(want, rel=1e-13)
    # ratio underflowing to 0 gives 1, not nan
    assert float(pass_at_k(10_000, 5_000, 4_000)) == 1.0
    assert float(pass_at_k(10**6, 10**5, 10**5)) == 1.0


@given(nck())
def test_special_cases(args):
    n, c, k = args
    assert float(pass_at_k(n, c, 1)) == pytest.approx(c / n, rel=1e-14, abs=1e-16)
    assert float(pass_at_k(n, 0, k)) == 0.0
    if n - c < k:
        assert float(pass_at_k(n, c, k)) == 1.0
    value = float(pass_at_k(n, c, k))
    assert 0.0 <= value <= 1.0


@given(nck(max_n=200))
def test_monotone_in_k_and_c(args):
    n, c, _ = args
    over_k = pass_at_k(n, c, np.arange(1, n + 1))
    assert np.all(np.diff(over_k) >= -1e-15)
    for k in (1, max(1, n // 3), n):
        over_c = pass_at_k(n, np.arange(n + 1), k)
        assert np.all(np.diff(over_c) >= -1e-15)
        assert over_c[0] == 0.0 and over_c[-1] == 1.0


@given(
    st.lists(nck(max_n=80), min_size=0, max_size=30),
    st.sampled_from(["array_k", "scalar_k"]),
)
def test_vectorised_equals_plain_loop(items, k_kind):
    ns = np.array([n for n, _, _ in items], dtype=np.int64)
    cs = np.array([c for _, c, _ in items], dtype=np.int64)
    if k_kind == "array_k":
        ks = np.array([k for _, _, k in items], dtype=np.int64)
        loop = [float(exact(n, c, k)) for n, c, k in items]
    else:
        ks = 1 if not items else int(ns.min())
        loop = [float(exact(n, c, ks)) for n, c, _ in items]
    got = pass_at_k(ns, cs, ks)
    assert got.dtype == np.float64 and got.shape == ns.shape
    np.testing.assert_allclose(got, loop, rtol=1e-13, atol=1e-15)
    scalar = [float(pass_at_k(n, c, k)) for n, c, k in zip(ns, cs, np.broadcast_to(ks, ns.shape))]
    np.testing.assert_array_equal(got, scalar)


def test_chunked_path_equals_unchunked(monkeypatch):
    rng = np.random.default_rng(0)
    n = rng.integers(1, 3000, size=400)
    c = rng.integers(0, n + 1)
    k = rng.integers(1, n + 1)
    whole = pass_at_k(n, c, k)
    import e3core.metrics as metrics

    monkeypatch.setattr(metrics, "_CHUNK_TERMS", 37)
    np.testing.assert_allclose(pass_at_k(n, c, k), whole, rtol=1e-14, atol=0)
    loop = [float(exact(int(a), int(b), int(d))) for a, b, d in zip(n[:60], c[:60], k[:60])]
    np.testing.assert_allclose(whole[:60], loop, rtol=1e-12, atol=1e-15)


def test_broadcasting_shapes():
    got = pass_at_k(8, np.array([[0], [2], [8]]), np.array([1, 4, 8]))
    assert got.shape == (3, 3)
    for i, c in enumerate((0, 2, 8)):
        for j, k in enumerate((1, 4, 8)):
            assert got[i, j] == pytest.approx(float(exact(8, c, k)), abs=1e-15)
    assert pass_at_k(5, 2, 1).shape == ()
    assert pass_at_k([], [], 1).shape == (0,)


def test_mean_pass_at_k():
    n, c = [8, 8, 8, 8], [0, 1, 4, 8]
    assert mean_pass_at_k(n, c, 1) == pytest.approx(13 / 32)
    want = sum(float(exact(8, x, 4)) for x in c) / 4
    assert mean_pass_at_k(n, c, 4) == pytest.approx(want)
    assert isinstance(mean_pass_at_k(n, c, 4), float)
    with pytest.raises(ValueError, match="at least one prompt"):
        mean_pass_at_k([], [], 1)


@pytest.mark.parametrize(
    ("args", "error", "pattern"),
    [
        ((5, 6, 1), ValueError, r"num_correct must be <= num_samples, got 6"),
        ((5, -1, 1), ValueError, r"num_correct must be >= 0, got -1"),
        ((5, 2, 0), ValueError, r"k must be >= 1, got 0"),
        ((5, 2, 6), ValueError, r"k must be <= num_samples, got 6"),
        (([4, 5], [1, 9], 1), ValueError, r"num_correct .*got 9 at index \(1,\)"),
        ((0, 0, 1), ValueError, r"k must be <= num_samples, got 1"),
        ((5.0, 2, 1), TypeError, r"num_samples must be an integer"),
        ((5, 2.5, 1), TypeError, r"num_correct must be an integer"),
        ((5, 2, True), TypeError, r"k must be an integer"),
        ((5, "2", 1), TypeError, r"num_correct must be an integer"),
        (([1, 2], [1, 2, 0], 1), ValueError, r"must broadcast.*\(2,\), \(3,\)"),
    ],
)
def test_bad_inputs_raise_naming_the_argument(args, error, pattern):
    with pytest.raises(error, match=pattern):
        pass_at_k(*args)


def test_exported_from_package():
    assert e3core.pass_at_k is pass_at_k
    assert "pass_at_k" in e3core.__all__
