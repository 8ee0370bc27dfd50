import contextlib
import math
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from e3core import (
    BetaDifficultyTracker,
    E3Scheduler,
    GridPosterior,
    Posterior,
    RankAllocator,
    difficulty,
    posteriors,
    priors,
)
from e3core.difficulty import RANK_BY, RANK_SCORES, RankRule, ResolvedIds
from e3core.priors import (
    PRIORS,
    BetaPrior,
    GridPrior,
    Prior,
    fit_beta_prior,
    fit_grid_prior,
    prior_from_state,
)


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


def _histogram_by_row_unique(s, f):
    """The fit histogram as it was built before the int64 keys: np.unique over rounded rows."""
    pairs = np.round(np.stack([s, f], axis=1), 2)
    uniq, weight = np.unique(pairs, axis=0, return_counts=True)
    return uniq[:, 0], uniq[:, 1], weight.astype(np.float64)


count_values = st.one_of(
    st.integers(0, 40).map(float),
    st.floats(0.0, 60.0, allow_nan=False, allow_infinity=False),
    st.sampled_from([0.005, 0.015, 0.125, 2.675, 1e-9, 7.0 * 0.9**3]),
)


@given(
    pairs=st.lists(st.tuples(count_values, count_values), min_size=1, max_size=60),
    huge=st.booleans(),
)
def test_fit_histogram_equals_row_unique_path(pairs, huge):
    s = np.array([a for a, _ in pairs])
    f = np.array([b for _, b in pairs])
    if huge:  # beyond the int64 key range: the row-wise fallback
        s[0] = 3e8
    fast = difficulty._count_histogram(s, f)
    for got, want in zip(fast, _histogram_by_row_unique(s, f), strict=True):
        np.testing.assert_array_equal(got, want)
    assert fast[2].sum() == len(s)


@given(calls=calls, decay=st.sampled_from([1.0, 0.9, 0.37]), kind=st.sampled_from(["beta", "grid"]))
def test_fit_prior_equals_the_row_unique_histogram_fit(calls, decay, kind):
    tracker = BetaDifficultyTracker(decay=decay)
    for call in calls:
        tracker.update([i for i, _, _ in call], [s for _, s, _ in call], [t for *_, t in call])
    s, f = tracker.counts(tracker.ids)
    seen = (s + f) > 0
    if not seen.any():
        return
    hs, hf, hc = _histogram_by_row_unique(s[seen], f[seen])
    if kind == "beta":
        want = fit_beta_prior(hs, hf, hc, start=BetaPrior()).state_dict()
    else:
        want = fit_grid_prior(hs, hf, hc, grid_size=11).state_dict()
    got = tracker.fit_prior(kind, grid_size=11)
    assert got.pop("kind") == want.pop("kind") == kind
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-12, atol=1e-12)


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
    with pytest.raises(ValueError, match=r"must have one entry per id, got lengths 1, 0 and 0"):
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


# ------------------------------------------------------------------ priors as objects
counts = st.lists(
    st.tuples(st.integers(0, 12), st.integers(0, 12)).map(lambda x: (float(x[0]), float(x[1]))),
    min_size=1,
    max_size=8,
)
# masses 0 or at least 1e-6, so that the float loop references do not underflow
mass = st.just(0.0) | st.floats(1e-6, 1.0)
grid_weights = st.lists(mass, min_size=5, max_size=5).filter(lambda w: sum(w) > 0.1)


@given(pairs=counts, a0=ab, b0=ab)
def test_beta_prior_posterior_and_marginal_match_loops(pairs, a0, b0):
    prior = BetaPrior(a0, b0)
    s, f = (np.array(x) for x in zip(*pairs))
    post = prior.posterior(s, f)
    assert isinstance(post, Posterior)
    np.testing.assert_allclose(post.alpha, [a0 + si for si in s])
    np.testing.assert_allclose(post.beta, [b0 + fi for fi in f])
    # beta-binomial marginal without the binomial coefficient, as a product loop
    ref = np.mean([math.log(_moment_loop(a0, b0, int(si), int(fi))) for si, fi in pairs])
    assert prior.log_marginal(s, f) == pytest.approx(ref, rel=1e-9, abs=1e-9)
    assert prior.mean == pytest.approx(a0 / (a0 + b0))


@given(pairs=counts, weights=grid_weights)
def test_grid_prior_posterior_and_marginal_match_loops(pairs, weights):
    grid = np.linspace(0.0, 1.0, 5)
    pi = np.array(weights) / sum(weights)
    prior = GridPrior(grid, pi)
    s, f = (np.array(x) for x in zip(*pairs))
    liks = [[pk * gk**si * (1 - gk) ** fi for pk, gk in zip(pi, grid)] for si, fi in pairs]
    totals = [sum(lik) for lik in liks]  # 0**0 = 1
    marginal = sum(math.log(x) if x > 0 else -math.inf for x in totals) / len(pairs)
    assert prior.log_marginal(s, f) == pytest.approx(marginal, rel=1e-9, abs=1e-12)
    if min(totals) == 0:  # counts no rate with prior mass can produce: no posterior
        with pytest.raises(ValueError, match="impossible under this GridPrior"):
            prior.posterior(s, f)
        return
    post = prior.posterior(s, f)
    assert isinstance(post, GridPosterior)
    for row, (lik, total) in enumerate(zip(liks, totals)):
        np.testing.assert_allclose(post.weights[row], [x / total for x in lik], atol=1e-12)


def test_prior_objects_validate_their_arguments():
    with pytest.raises(ValueError, match="alpha must be > 0"):
        BetaPrior(0.0, 1.0)
    with pytest.raises(TypeError, match="beta must be a real number"):
        BetaPrior(1.0, "x")
    with pytest.raises(ValueError, match="grid must hold at least 2 strictly increasing"):
        GridPrior([0.5, 0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match=r"weights must have one entry per grid point \(3\)"):
        GridPrior([0.0, 0.5, 1.0], [0.5, 0.5])
    with pytest.raises(ValueError, match="weights must be >= 0 and sum to 1"):
        GridPrior([0.0, 1.0], [0.7, 0.7])
    with pytest.raises(ValueError, match="failures must be >= 0"):
        BetaPrior().posterior([1.0], [-1.0])
    with pytest.raises(ValueError, match="same length"):
        BetaPrior().posterior([1.0], [1.0, 2.0])
    prior = GridPrior([0.0, 1.0], [0.25, 0.75])
    with pytest.raises(ValueError, match="read-only"):
        prior.weights[0] = 1.0


def test_prior_registry_summary_and_state():
    assert PRIORS.names() == ("grid", "beta")
    assert PRIORS.get("grid") is GridPrior and PRIORS.get("beta") is BetaPrior
    for prior in (BetaPrior(0.5, 2.0), GridPrior([0.0, 0.5, 1.0], [0.2, 0.3, 0.5])):
        assert isinstance(prior, Prior) and PRIORS.get(prior.kind) is type(prior)
        again = prior_from_state(pickle.loads(pickle.dumps(prior.state_dict())))
        assert type(again) is type(prior)
        assert again.state_dict().keys() == prior.state_dict().keys()
        for key, value in prior.state_dict().items():
            np.testing.assert_array_equal(again.state_dict()[key], value)
    assert BetaPrior(0.5, 2.0).summary() == {"prior_alpha": 0.5, "prior_beta": 2.0}
    grid = GridPrior([0.0, 0.5, 1.0], [0.2, 0.3, 0.5]).summary()
    assert grid == pytest.approx(
        {"prior_mass_never": 0.2, "prior_mass_always": 0.5, "prior_mean": 0.65}
    )
    inner = GridPrior([0.25, 0.75], [0.5, 0.5]).summary()  # neither 0 nor 1 on the grid
    assert inner["prior_mass_never"] == inner["prior_mass_always"] == 0.0
    with pytest.raises(ValueError, match=r"must be one of \('grid', 'beta'\)"):
        prior_from_state({"kind": "normal"})


def test_fits_are_pure_functions_of_the_counts():
    rng = np.random.default_rng(4)
    p = rng.beta(0.4, 0.6, size=300)
    s = rng.binomial(8, p).astype(float)
    f = 8.0 - s
    s_in, f_in = s.copy(), f.copy()
    beta = fit_beta_prior(s, f)
    grid = fit_grid_prior(s, f, grid_size=11)
    np.testing.assert_array_equal(s, s_in)
    np.testing.assert_array_equal(f, f_in)
    assert fit_beta_prior(s, f) == beta  # same input, same prior
    np.testing.assert_array_equal(fit_grid_prior(s, f, grid_size=11).weights, grid.weights)
    # weights are multiplicities: pooled rows fit like repeated rows
    pairs, mult = np.unique(np.stack([s, f], axis=1), axis=0, return_counts=True)
    pooled = fit_beta_prior(pairs[:, 0], pairs[:, 1], mult)
    assert (pooled.alpha, pooled.beta) == pytest.approx((beta.alpha, beta.beta), rel=1e-5)
    pooled_grid = fit_grid_prior(pairs[:, 0], pairs[:, 1], mult, grid_size=11)
    np.testing.assert_allclose(pooled_grid.weights, grid.weights, atol=1e-9)
    # a fit is at least as likely as the prior it starts from
    assert beta.log_marginal(s, f) >= BetaPrior().log_marginal(s, f)
    flat = GridPrior(np.linspace(0, 1, 11), np.full(11, 1 / 11))
    assert grid.log_marginal(s, f) >= flat.log_marginal(s, f)


def test_fit_function_errors():
    with pytest.raises(ValueError, match="at least one prompt"):
        fit_beta_prior([], [])
    with pytest.raises(ValueError, match=r"weights must have one entry per prompt \(2\)"):
        fit_grid_prior([1.0, 2.0], [1.0, 0.0], [1.0])
    with pytest.raises(ValueError, match="weights must be >= 0 with a positive sum"):
        fit_grid_prior([1.0], [1.0], [0.0])
    with pytest.raises(TypeError, match="start must be a BetaPrior"):
        fit_beta_prior([1.0], [1.0], start=GridPrior([0.0, 1.0], [0.5, 0.5]))
    with pytest.raises(ValueError, match="tol must be >= 0"):
        fit_grid_prior([1.0], [1.0], tol=-1.0)


def test_tracker_holds_its_prior_as_an_object():
    tracker = BetaDifficultyTracker(2.0, 3.0)
    assert tracker.prior == BetaPrior(2.0, 3.0)
    tracker.update(["a", "b", "c"], [4, 0, 2], [4, 4, 4])
    before = tracker.rank(["a", "b", "c", "new"])
    fit = tracker.fit_prior("grid", grid_size=11)
    assert isinstance(tracker.prior, GridPrior) and fit["kind"] == "grid"
    np.testing.assert_array_equal(fit["weights"], tracker.prior.weights)
    assert fit["loglik"] == tracker.prior.log_marginal(*tracker.counts(tracker.ids))
    # a prior can be given or assigned; assignment refreshes the mean ranks
    flat = GridPrior([0.0, 1.0], [0.5, 0.5])
    tracker.prior = flat
    assert tracker.posterior(["a"]).weights.tolist() == [[0.0, 1.0]]
    tracker.prior = BetaPrior(2.0, 3.0)
    np.testing.assert_array_equal(tracker.rank(["a", "b", "c", "new"]), before)
    given_prior = BetaDifficultyTracker(prior=flat, decay=0.5)
    assert given_prior.prior is flat and given_prior.decay == 0.5
    with pytest.raises(TypeError, match="prior must be a Prior"):
        tracker.prior = {"kind": "beta"}
    with pytest.raises(ValueError, match="not both"):
        BetaDifficultyTracker(2.0, prior=flat)


def test_beta_refit_starts_from_the_current_beta_prior():
    rng = np.random.default_rng(2)
    tracker = _synthetic(rng, rng.beta(0.4, 0.6, size=500), 10)
    s, f = tracker.counts(tracker.ids)
    fit = tracker.fit_prior("beta")
    pairs, mult = np.unique(np.stack([s, f], axis=1), axis=0, return_counts=True)
    assert tracker.prior == fit_beta_prior(pairs[:, 0], pairs[:, 1], mult)
    again = tracker.fit_prior("beta")  # from the fitted prior: the same optimum
    assert (again["alpha"], again["beta"]) == pytest.approx((fit["alpha"], fit["beta"]), rel=1e-4)


# ------------------------------------------------------------------ state versions
def _v1_state(kind):
    """A tracker state as e3core 0.1 wrote it (flat prior keys, version 1)."""
    state = {
        "version": 1,
        "prior_alpha": 0.5,
        "prior_beta": 2.0,
        "decay": 0.9,
        "prior_kind": kind,
        "prior_grid": None,
        "prior_weights": None,
        "ids": ["a", 7],
        "successes": np.array([1.5, 0.0]),
        "failures": np.array([0.5, 3.0]),
    }
    if kind == "grid":
        state["prior_grid"] = np.linspace(0.0, 1.0, 3)
        state["prior_weights"] = np.array([0.25, 0.25, 0.5])
    return state


@pytest.mark.parametrize("kind", ["beta", "grid"])
def test_loads_version_1_states(kind):
    tracker = BetaDifficultyTracker()
    tracker.load_state_dict(_v1_state(kind))
    assert tracker.decay == 0.9 and tracker.ids == ["a", 7]
    np.testing.assert_array_equal(tracker.counts(["a", 7])[1], [0.5, 3.0])
    if kind == "beta":
        assert tracker.prior == BetaPrior(0.5, 2.0)
    else:
        np.testing.assert_array_equal(tracker.prior.weights, [0.25, 0.25, 0.5])
    state = tracker.state_dict()
    assert state["version"] == 2 and state["prior"]["kind"] == kind


@given(calls=calls, grid=st.booleans())
def test_state_dict_round_trip_is_exact_data(calls, grid):
    tracker = BetaDifficultyTracker(0.5, 2.0, 0.8)
    for call in calls:
        tracker.update([i for i, _, _ in call], [s for _, s, _ in call], [t for *_, t in call])
    if grid and len(tracker):
        with contextlib.suppress(ValueError):  # no prompt with trials yet
            tracker.fit_prior("grid", grid_size=7)
    state = tracker.state_dict()
    clone = BetaDifficultyTracker()
    clone.load_state_dict(pickle.loads(pickle.dumps(state)))
    again = clone.state_dict()
    assert again.keys() == state.keys() and again["prior"].keys() == state["prior"].keys()
    for key in ("version", "decay", "ids"):
        assert again[key] == state[key]
    for key in ("successes", "failures"):
        np.testing.assert_array_equal(again[key], state[key])
    for key, value in state["prior"].items():
        np.testing.assert_array_equal(again["prior"][key], value)


def test_load_state_checks_the_version_and_the_prior():
    tracker = BetaDifficultyTracker()
    state = tracker.state_dict()
    with pytest.raises(ValueError, match=r"state\['version'\] must be 1 or 2"):
        tracker.load_state_dict({**state, "version": 3})
    with pytest.raises(ValueError, match=r"missing keys \['prior'\]"):
        tracker.load_state_dict({k: v for k, v in state.items() if k != "prior"})
    with pytest.raises(ValueError, match="must be one of"):
        tracker.load_state_dict({**state, "prior": {"kind": "normal"}})
    with pytest.raises(ValueError, match=r"needs \['prior_grid'\] and \['prior_weights'\]"):
        tracker.load_state_dict({**_v1_state("grid"), "prior_weights": None})
    with pytest.raises(TypeError, match="state must be a mapping"):
        tracker.load_state_dict([("version", 2)])


# ------------------------------------------------------------------ ids resolved once
def test_resolved_ids_answer_every_query_like_the_ids():
    tracker = BetaDifficultyTracker()
    tracker.update([3, 1, 3, 2], [1, 0, 2, 1], [2, 2, 3, 1])
    query = [3, 9, 1, 3]
    ids = tracker.resolve(query)
    assert isinstance(ids, ResolvedIds) and len(ids) == 4
    assert tracker.resolve(ids) is ids
    np.testing.assert_array_equal(ids.rows, tracker.rows(query))
    for got, want in zip(tracker.counts(ids), tracker.counts(query)):
        np.testing.assert_array_equal(got, want)
    for by in RANK_SCORES:
        np.testing.assert_array_equal(tracker.rank(ids, by=by), tracker.rank(query, by=by))
        a = tracker.posterior(ids, with_rank=True, by=by)
        b = tracker.posterior(query, with_rank=True, by=by)
        np.testing.assert_array_equal(a.alpha, b.alpha)
        np.testing.assert_array_equal(a.rank, tracker.rank(query, by=by))
    with pytest.raises(ValueError, match="read-only"):
        ids.successes[0] = 5.0
    with pytest.raises(ValueError, match="by must be one of"):
        tracker.posterior(ids, with_rank=True, by="accuracy_epoch")


def test_stale_or_foreign_resolved_ids_are_refused():
    tracker = BetaDifficultyTracker()
    tracker.update([1], [1], [2])
    ids = tracker.resolve([1, 2])
    tracker.fit_prior("beta")  # counts unchanged: still valid
    assert tracker.posterior(ids).alpha[1] == tracker.prior.alpha
    other = BetaDifficultyTracker()
    with pytest.raises(ValueError, match="resolve the ids again"):
        other.posterior(ids)
    tracker.update([2], [1], [1])
    with pytest.raises(ValueError, match="resolve the ids again"):
        tracker.rank(ids)


def test_rank_rules_map_scheduler_names_to_tracker_scores():
    assert RANK_BY.names() == ("mean", "epoch_accuracy")
    assert RANK_BY.get("mean") == RankRule("mean", per_epoch=False)
    assert RANK_BY.get("epoch_accuracy") == RankRule("accuracy", per_epoch=True)
    assert RANK_SCORES == ("mean", "accuracy")
    with pytest.raises(ValueError, match=r"by must be one of \('mean', 'accuracy'\)"):
        RankRule("epoch_accuracy")


def _rank_scheduler(rank_by):
    return E3Scheduler(
        allocator=RankAllocator(),
        controller=None,
        refit_every=None,
        rank_by=rank_by,
        steps_per_epoch=2,
        rollouts_per_prompt=4,
        min_per_prompt=1,
        max_per_prompt=8,
    )


@pytest.mark.parametrize("rank_by", ["mean", "epoch_accuracy"])
def test_scheduler_posterior_looks_ids_up_once_and_matches_separate_queries(rank_by, monkeypatch):
    sched = _rank_scheduler(rank_by)
    rng = np.random.default_rng(0)
    calls = []
    unique = BetaDifficultyTracker._unique
    monkeypatch.setattr(
        BetaDifficultyTracker, "_unique", staticmethod(lambda ids: calls.append(1) or unique(ids))
    )
    for step in range(5):  # epoch ends after steps 2 and 4: snapshots, then new prompts
        ids = rng.choice(40 + 10 * step, 6, replace=False)
        calls.clear()
        post = sched.posterior(ids)
        assert len(calls) == 1
        # the reference: separate lookups, as the scheduler did before
        tracker = sched.tracker
        rule = RANK_BY.get(rank_by)
        live = tracker.rank(ids, by=rule.by)
        want = live
        if rule.per_epoch and sched._rank_snapshot is not None:
            snap = sched._rank_snapshot
            want = np.array(
                [snap[r] if 0 <= r < len(snap) else k for r, k in zip(tracker.rows(ids), live)]
            )
        np.testing.assert_array_equal(post.rank, want)
        np.testing.assert_array_equal(post.mean, tracker.posterior(ids).mean)
        calls.clear()
        plan = sched.plan(ids)
        assert len(calls) == 1
        groups = plan.group_ids
        sched.observe(ids, (rng.random(plan.total) < 0.4).astype(float), groups)


def test_difficulty_reexports_the_posterior_and_prior_modules():
    for module in (posteriors, priors):
        for name in module.__all__:
            assert getattr(difficulty, name) is getattr(module, name)
            assert name in difficulty.__all__
