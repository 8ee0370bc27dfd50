import contextlib
import math
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from e3core import BetaDifficultyTracker, GridPosterior, Posterior


class LoopTracker:
    """Plain-Python reference of the tracker's update rule."""

    def __init__(self, a0, b0, decay):
        self.a0, self.b0, self.decay = a0, b0, decay
        self.counts = {}

    def update(self, ids, successes, trials):
        touched = {}
        for pid, s, t in zip(ids, successes, trials):
            acc = touched.setdefault(pid, [0.0, 0.0])
            acc[0] += s
            acc[1] += t - s
        for pid, (s, f) in touched.items():
            old = self.counts.get(pid, [0.0, 0.0])
            self.counts[pid] = [self.decay * old[0] + s, self.decay * old[1] + f]

    def posterior(self, ids):
        out = [self.counts.get(pid, [0.0, 0.0]) for pid in ids]
        return [self.a0 + s for s, _ in out], [self.b0 + f for _, f in out]


observation = st.tuples(st.integers(0, 12), st.integers(0, 10), st.integers(0, 10)).map(
    lambda x: (x[0], min(x[1], x[2]), x[2])
)
calls = st.lists(st.lists(observation, min_size=0, max_size=15), min_size=1, max_size=6)


@given(
    calls=calls,
    decay=st.floats(0.05, 1.0),
    a0=st.floats(0.05, 5),
    b0=st.floats(0.05, 5),
    as_strings=st.booleans(),
)
def test_update_matches_loop_reference(calls, decay, a0, b0, as_strings):
    tracker = BetaDifficultyTracker(a0, b0, decay)
    ref = LoopTracker(a0, b0, decay)
    for call in calls:
        ids = [f"p{i}" if as_strings else i for i, _, _ in call]
        succ = [s for _, s, _ in call]
        trials = [t for _, _, t in call]
        tracker.update(ids, succ, trials)
        ref.update(ids, succ, trials)
    query = [f"p{i}" if as_strings else i for i in range(15)]
    post = tracker.posterior(query)
    alpha, beta = ref.posterior(query)
    np.testing.assert_allclose(post.alpha, alpha, rtol=1e-12)
    np.testing.assert_allclose(post.beta, beta, rtol=1e-12)
    assert len(tracker) == len(ref.counts)


def test_decay_equals_mopps_form():
    # alpha <- lam*alpha + (1-lam)*alpha0 + s is the same as decayed counts.
    lam, a0, b0 = 0.7, 2.0, 3.0
    tracker = BetaDifficultyTracker(a0, b0, lam)
    alpha, beta = a0, b0
    for s, t in [(3, 8), (0, 4), (5, 5), (1.5, 2)]:
        tracker.update(["x"], [s], [t])
        alpha = lam * alpha + (1 - lam) * a0 + s
        beta = lam * beta + (1 - lam) * b0 + (t - s)
    post = tracker.posterior(["x"])
    assert post.alpha[0] == pytest.approx(alpha)
    assert post.beta[0] == pytest.approx(beta)


def test_mixed_type_ids_stay_distinct():
    tracker = BetaDifficultyTracker()
    tracker.update([1, "1", (2, 3)], [1, 0, 1], [1, 1, 1])
    assert len(tracker) == 3
    np.testing.assert_allclose(tracker.posterior([1, "1", (2, 3), "new"]).alpha, [2, 1, 2, 1])


def test_numpy_integer_ids_equal_python_ints():
    tracker = BetaDifficultyTracker()
    tracker.update(np.array([5, 5, 7]), [1, 1, 0], [2, 2, 1])
    np.testing.assert_allclose(tracker.posterior([5, 7]).alpha, [3, 1])
    np.testing.assert_allclose(tracker.posterior([5, 7]).beta, [3, 2])
    assert tracker.rows([7, 5, 99]).tolist() == [1, 0, -1]


ab = st.floats(0.05, 60)


@given(alpha=ab, beta=ab)
def test_beta_moments_against_scipy(alpha, beta):
    post = Posterior([alpha], [beta])
    dist = stats.beta(alpha, beta)
    assert post.mean[0] == pytest.approx(dist.mean(), rel=1e-10)
    assert post.variance[0] == pytest.approx(dist.var(), rel=1e-8)


def _moment_loop(alpha, beta, i, j):
    # E[p^i (1-p)^j] = prod_{k<i}(a+k) prod_{k<j}(b+k) / prod_{k<i+j}(a+b+k) for integers
    num = 1.0
    for k in range(i):
        num *= alpha + k
    for k in range(j):
        num *= beta + k
    den = 1.0
    for k in range(i + j):
        den *= alpha + beta + k
    return num / den


@given(alpha=ab, beta=ab, i=st.integers(0, 12), j=st.integers(0, 12))
def test_beta_moment_matches_product_formula(alpha, beta, i, j):
    post = Posterior([alpha], [beta])
    assert post.moment(i, j)[0] == pytest.approx(_moment_loop(alpha, beta, i, j), rel=1e-9)


@given(alpha=ab, beta=ab, n=st.integers(1, 64))
def test_expected_mixed_closed_form(alpha, beta, n):
    post = Posterior([alpha], [beta])
    ref = 1 - _moment_loop(alpha, beta, n, 0) - _moment_loop(alpha, beta, 0, n)
    got = post.expected_mixed(n)[0]
    assert got == pytest.approx(max(ref, 0.0), abs=1e-10)
    assert 0.0 <= got <= 1.0
    # more rollouts never make a mixed group less likely
    assert post.expected_mixed(n + 1)[0] >= got - 1e-12


def test_expected_mixed_edges():
    post = Posterior([2.0, 0.5], [3.0, 0.5])
    np.testing.assert_array_equal(post.expected_mixed(1), [0.0, 0.0])
    np.testing.assert_array_equal(post.expected_mixed(0), [0.0, 0.0])
    # per-prompt n
    assert post.expected_mixed(np.array([2, 4])).shape == (2,)
    with pytest.raises(ValueError, match="n must be"):
        post.expected_mixed(-1)


def test_expected_mixed_monte_carlo():
    rng = np.random.default_rng(0)
    post = Posterior([0.4], [0.7])
    p = rng.beta(0.4, 0.7, size=400_000)
    k = rng.binomial(6, p)
    mc = np.mean((k > 0) & (k < 6))
    assert post.expected_mixed(6)[0] == pytest.approx(mc, abs=4e-3)


@given(
    weights=st.lists(st.floats(0.0, 1.0), min_size=5, max_size=5).filter(lambda w: sum(w) > 0.1),
    i=st.integers(0, 6),
    j=st.integers(0, 6),
)
def test_grid_posterior_matches_loop(weights, i, j):
    grid = np.linspace(0, 1, 5)
    w = np.array(weights) / sum(weights)
    post = GridPosterior(grid, w[None, :])
    ref = sum(wk * gk**i * (1 - gk) ** j for wk, gk in zip(w, grid))
    assert post.moment(i, j)[0] == pytest.approx(ref, abs=1e-12)
    assert post.mean[0] == pytest.approx(sum(wk * gk for wk, gk in zip(w, grid)))
    var = sum(wk * gk**2 for wk, gk in zip(w, grid)) - post.mean[0] ** 2
    assert post.variance[0] == pytest.approx(max(var, 0), abs=1e-12)
    draws = post.sample(np.random.default_rng(1))
    assert draws[0] in grid


def test_grid_sample_frequencies():
    grid = np.array([0.0, 0.5, 1.0])
    post = GridPosterior(grid, np.tile([0.2, 0.5, 0.3], (20000, 1)))
    draws = post.sample(np.random.default_rng(0))
    freq = [(draws == g).mean() for g in grid]
    np.testing.assert_allclose(freq, [0.2, 0.5, 0.3], atol=0.015)


def test_posterior_sample_needs_generator():
    with pytest.raises(TypeError, match=r"rng must be a numpy\.random\.Generator"):
        Posterior([1.0], [1.0]).sample(42)


@given(calls=calls)
def test_rank_matches_loop(calls):
    tracker = BetaDifficultyTracker()
    for call in calls:
        tracker.update([i for i, _, _ in call], [s for _, s, _ in call], [t for *_, t in call])
    if len(tracker) == 0:
        return
    ids = tracker.ids
    means = dict(zip(ids, tracker.mean(ids)))
    query = [*ids, 999]
    q_means = tracker.mean(query)
    expected = [sum(means[j] > m for j in ids) / len(ids) for m in q_means]
    np.testing.assert_allclose(tracker.rank(query), expected)
    acc = {pid: (s / (s + f) if s + f > 0 else 0.0) for pid, s, f in zip(ids, *tracker.counts(ids))}
    exp_acc = [sum(acc[j] > acc.get(pid, 0.0) for j in ids) / len(ids) for pid in query]
    np.testing.assert_allclose(tracker.rank(query, by="accuracy"), exp_acc)


def _synthetic(rng, p, trials):
    tracker = BetaDifficultyTracker()
    k = rng.binomial(trials, p)
    tracker.update(np.arange(len(p)), k, np.full(len(p), trials))
    return tracker


def test_fit_beta_recovers_parameters_and_is_a_maximum():
    rng = np.random.default_rng(0)
    p = rng.beta(0.4, 0.6, size=4000)
    tracker = _synthetic(rng, p, 20)
    fit = tracker.fit_prior("beta")
    assert fit["alpha"] == pytest.approx(0.4, rel=0.15)
    assert fit["beta"] == pytest.approx(0.6, rel=0.15)
    s, f = tracker.counts(np.arange(4000))
    from scipy.special import betaln

    def loglik(a, b):
        return np.mean(betaln(a + s, b + f) - betaln(a, b))

    best = loglik(fit["alpha"], fit["beta"])
    assert best == pytest.approx(fit["loglik"], rel=1e-9)
    for da, db in [(1.05, 1), (0.95, 1), (1, 1.05), (1, 0.95)]:
        assert loglik(fit["alpha"] * da, fit["beta"] * db) <= best + 1e-12
    post = tracker.posterior([0])
    assert post.alpha[0] == pytest.approx(fit["alpha"] + s[0])


def test_fit_grid_recovers_u_shape():
    rng = np.random.default_rng(1)
    n = 5000
    kind = rng.choice(3, size=n, p=[0.3, 0.2, 0.5])
    p = np.where(kind == 0, 0.0, np.where(kind == 1, 1.0, rng.uniform(0.1, 0.9, n)))
    tracker = _synthetic(rng, p, 16)
    beta_ll = tracker.fit_prior("beta")["loglik"]
    fit = tracker.fit_prior("grid", grid_size=21)
    w = fit["weights"]
    assert w.sum() == pytest.approx(1.0)
    assert w[0] == pytest.approx(0.3, abs=0.03)
    assert w[-1] == pytest.approx(0.2, abs=0.03)
    assert fit["loglik"] > beta_ll  # a U-shaped truth is fitted better by the grid
    post = tracker.posterior([0, 1, 2])
    assert isinstance(post, GridPosterior)
    never = np.flatnonzero(tracker.counts(np.arange(n))[0] == 0)[0]
    assert tracker.posterior([never]).weights[0, 0] > 0.5


def test_fit_prior_errors():
    with pytest.raises(ValueError, match="at least one tracked prompt"):
        BetaDifficultyTracker().fit_prior("beta")
    tracker = BetaDifficultyTracker()
    tracker.update([1], [1], [2])
    with pytest.raises(ValueError, match="kind must be one of"):
        tracker.fit_prior("gaussian")
    with pytest.raises(ValueError, match="grid_size must be >= 3"):
        tracker.fit_prior("grid", grid_size=2)


@given(calls=calls, decay=st.floats(0.1, 1.0), grid=st.booleans())
def test_state_round_trip_is_exact(calls, decay, grid):
    tracker = BetaDifficultyTracker(0.5, 2.0, decay)
    for call in calls[:-1]:
        tracker.update([i for i, _, _ in call], [s for _, s, _ in call], [t for *_, t in call])
    if grid and len(tracker) and tracker.counts(tracker.ids)[0].sum() + 1 > 0:
        with contextlib.suppress(ValueError):
            tracker.fit_prior("grid", grid_size=11)
    state = pickle.loads(pickle.dumps(tracker.state_dict()))
    clone = BetaDifficultyTracker()
    clone.load_state_dict(state)
    last = calls[-1]
    for t in (tracker, clone):
        t.update([i for i, _, _ in last], [s for _, s, _ in last], [t_ for *_, t_ in last])
    query = list(range(14))
    a, b = tracker.posterior(query), clone.posterior(query)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.variance, b.variance)
    assert tracker.ids == clone.ids


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prior_alpha": 0}, "prior_alpha must be > 0"),
        ({"prior_beta": -1}, "prior_beta must be > 0"),
        ({"decay": 0}, "decay must be > 0"),
        ({"decay": 1.5}, "decay must be <= 1"),
        ({"prior_alpha": math.nan}, "prior_alpha must be finite"),
    ],
)
def test_constructor_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BetaDifficultyTracker(**kwargs)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (([1], [math.nan], [1]), ValueError, "successes must be finite"),
        (([1], [1], [math.inf]), ValueError, "trials must be finite"),
        (([1], [1], [-1]), ValueError, "trials must be >= 0"),
        (([1], [-1], [1]), ValueError, "successes must be >= 0"),
        (([1], [3], [2]), ValueError, "successes must be <= trials"),
        (([1, 2], [1], [2]), ValueError, "same length"),
        (([[1]], [1], [1]), TypeError, "not hashable"),
        (("ab", [1, 1], [1, 1]), TypeError, "prompt_ids must be a sequence"),
    ],
)
def test_update_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        BetaDifficultyTracker().update(*args)


def test_posterior_validation():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        Posterior([0.0], [1.0])
    with pytest.raises(ValueError, match="same length"):
        Posterior([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="beta must be finite"):
        Posterior([1.0], [math.nan])
    with pytest.raises(ValueError, match=r"rank must lie in \[0, 1\]"):
        Posterior([1.0], [1.0], rank=[1.5])
    with pytest.raises(ValueError, match="rows summing to 1"):
        GridPosterior([0.0, 1.0], [[0.2, 0.2]])


def test_load_state_errors():
    tracker = BetaDifficultyTracker()
    with pytest.raises(ValueError, match="missing keys"):
        tracker.load_state_dict({"ids": []})
    state = BetaDifficultyTracker().state_dict()
    state["ids"] = [1]
    with pytest.raises(ValueError, match="differ in length"):
        tracker.load_state_dict(state)


def test_scales_to_many_prompts():
    tracker = BetaDifficultyTracker()
    n = 200_000
    ids = np.arange(n)
    tracker.update(ids, np.zeros(n), np.full(n, 2.0))
    tracker.update(ids[::2], np.ones(n // 2), np.ones(n // 2))
    assert len(tracker) == n
    assert tracker.posterior(ids[:4]).alpha.tolist() == [2.0, 1.0, 2.0, 1.0]
    assert tracker.rank([1])[0] > tracker.rank([0])[0]
