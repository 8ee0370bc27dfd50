import itertools

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from e3core import (
    Budget,
    GridPosterior,
    KnapsackAllocator,
    Posterior,
    RankAllocator,
    ThompsonAllocator,
    UniformAllocator,
)
from e3core import allocation as allocation_module

shape = st.floats(0.05, 40.0)


@st.composite
def problems(draw, max_prompts=24):
    num = draw(st.integers(1, max_prompts))
    alpha = draw(st.lists(shape, min_size=num, max_size=num))
    beta = draw(st.lists(shape, min_size=num, max_size=num))
    n_min = draw(st.integers(1, 4))
    has_max = draw(st.booleans())
    n_max = draw(st.integers(n_min, n_min + 20)) if has_max else None
    hi = num * (n_max if n_max is not None else n_min + 20)
    total = draw(st.integers(num * n_min, hi))
    rank = draw(st.none() | st.lists(st.floats(0, 1), min_size=num, max_size=num))
    return Posterior(alpha, beta, rank=rank), Budget(total, n_min, n_max)


ALLOCATORS = [
    UniformAllocator(),
    RankAllocator(),
    KnapsackAllocator("mixed"),
    KnapsackAllocator("info_gain"),
    ThompsonAllocator("mixed"),
    ThompsonAllocator("info_gain"),
]


@pytest.mark.parametrize("allocator", ALLOCATORS, ids=repr)
@given(problem=problems(), seed=st.integers(0, 2**32 - 1))
def test_total_bounds_and_dtype(allocator, problem, seed):
    post, budget = problem
    counts = allocator.allocate(post, budget, rng=np.random.default_rng(seed))
    assert counts.dtype == np.int64
    assert counts.shape == (len(post),)
    assert counts.sum() == budget.total
    assert counts.min() >= budget.min_per_prompt
    if budget.max_per_prompt is not None:
        assert counts.max() <= budget.max_per_prompt


@pytest.mark.parametrize(
    "allocator", [UniformAllocator(), RankAllocator(), KnapsackAllocator("mixed")], ids=repr
)
@given(problem=problems(), perm_seed=st.integers(0, 1000))
def test_deterministic_allocators_are_permutation_equivariant(allocator, problem, perm_seed):
    post, budget = problem
    keys = list(zip(post.alpha, post.beta, post.rank if post.rank is not None else post.alpha))
    assume(len(set(keys)) == len(keys))
    if isinstance(allocator, RankAllocator):
        key = post.rank if post.rank is not None else post.mean
        assume(len(set(key.tolist())) == len(key))
    if isinstance(allocator, UniformAllocator):
        assume(len(set(post.mean.tolist())) == len(post))
    perm = np.random.default_rng(perm_seed).permutation(len(post))
    shuffled = Posterior(
        post.alpha[perm], post.beta[perm], rank=None if post.rank is None else post.rank[perm]
    )
    got, want = allocator.allocate(shuffled, budget), allocator.allocate(post, budget)[perm]
    if isinstance(allocator, KnapsackAllocator) and not np.array_equal(got, want):
        # marginal gains equal up to rounding: both allocations must be optimal (same value)
        np.testing.assert_allclose(
            shuffled.expected_mixed(got).sum(), shuffled.expected_mixed(want).sum(), rtol=1e-12
        )
        assert np.abs(got - want).sum() <= 2 * len(got)
        return
    np.testing.assert_array_equal(got, want)


@given(problem=problems())
def test_uniform_counts_differ_by_at_most_one(problem):
    post, budget = problem
    counts = UniformAllocator().allocate(post, budget)
    assert counts.max() - counts.min() <= 1


def paper_rule_loop(rank, total, n_min, n_max, enforce_cap):
    """The E3 rule as a plain loop; ``enforce_cap=False`` is the paper code's behaviour."""
    num = len(rank)
    rank_sum = sum(rank)
    counts = []
    for k in rank:
        c = int(np.floor(n_min + (total - num * n_min) * k / rank_sum))
        counts.append(min(c, n_max) if enforce_cap else c)
    left = total - sum(counts)
    order = sorted(range(num), key=lambda i: -rank[i])
    for i in order:
        if left <= 0:
            break
        add = max(0, min(left, n_max - counts[i]))
        counts[i] += add
        left -= add
    return counts


@given(
    rank=st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30).filter(lambda r: sum(r) > 0),
    n_min=st.integers(1, 4),
    extra=st.integers(0, 12),
    data=st.data(),
)
def test_rank_allocator_matches_loop_reference(rank, n_min, extra, data):
    num = len(rank)
    n_max = n_min + extra
    total = data.draw(st.integers(num * n_min, num * n_max))
    post = Posterior(np.ones(num), np.ones(num), rank=rank)
    got = RankAllocator().allocate(post, Budget(total, n_min, n_max))
    expected = paper_rule_loop(rank, total, n_min, n_max, enforce_cap=True)
    assert got.tolist() == expected
    # harder prompts never get fewer rollouts
    order = np.argsort(rank, kind="stable")
    assert all(
        got[order[i]] <= got[order[j]]
        for i in range(num)
        for j in range(i + 1, num)
        if rank[order[i]] < rank[order[j]]
    )


def test_rank_allocator_fixes_the_papers_cap_overflow():
    # One hard prompt in a batch of easy ones: the paper's code gives it far more than G_max.
    rank = [1.0] + [1.0 / 15888] * 63
    total, n_min, n_max = 64 * 8, 4, 12
    paper = paper_rule_loop(rank, total, n_min, n_max, enforce_cap=False)
    assert max(paper) > n_max
    post = Posterior(np.ones(64), np.ones(64), rank=rank)
    ours = RankAllocator().allocate(post, Budget(total, n_min, n_max))
    assert ours.max() <= n_max
    assert ours.sum() == total
    assert ours[0] == n_max


def test_rank_allocator_without_ranks_uses_batch_means():
    post = Posterior([9.0, 1.0, 5.0], [1.0, 9.0, 5.0])  # easy, hard, medium
    counts = RankAllocator().allocate(post, Budget(24, 2, 16))
    assert counts[1] > counts[2] > counts[0]
    flat = RankAllocator().allocate(Posterior([1.0] * 3, [1.0] * 3, rank=[0, 0, 0]), Budget(9, 2))
    assert flat.tolist() == [3, 3, 3]


def objective(post, counts, value):
    out = 0.0
    for i, n in enumerate(counts):
        if value == "mixed":
            out += post.expected_mixed(np.full(len(post), n))[i]
        else:
            moment = post.moment
            w = moment(1, 2) - moment(n + 1, 2) - moment(1, n + 2)
            out += w[i]
    return out


@pytest.mark.parametrize("value", ["mixed", "info_gain"])
@given(problem=problems(max_prompts=4))
def test_knapsack_is_optimal_by_brute_force(value, problem):
    post, budget = problem
    num = len(post)
    cap = budget.cap(num)
    assume((cap - budget.min_per_prompt + 1) ** num <= 20000)
    got = KnapsackAllocator(value).allocate(post, budget)
    best = -np.inf
    for combo in itertools.product(range(budget.min_per_prompt, cap + 1), repeat=num):
        if sum(combo) == budget.total:
            best = max(best, objective(post, combo, value))
    assert objective(post, got, value) == pytest.approx(best, rel=1e-9, abs=1e-12)


@given(problem=problems(), more=st.integers(1, 20))
def test_knapsack_counts_grow_with_budget(problem, more):
    post, budget = problem
    bigger = Budget(budget.total + more, budget.min_per_prompt, None)
    small = KnapsackAllocator().allocate(post, Budget(budget.total, budget.min_per_prompt))
    large = KnapsackAllocator().allocate(post, bigger)
    assert (large >= small).all()


@pytest.mark.parametrize("value", ["mixed", "info_gain"])
@given(problem=problems())
def test_bisection_path_matches_table_path(value, problem):
    post, budget = problem
    allocator = KnapsackAllocator(value)
    table = allocator.allocate(post, budget)
    old = allocation_module._TABLE_LIMIT
    allocation_module._TABLE_LIMIT = 0
    try:
        bisect = allocator.allocate(post, budget)
    finally:
        allocation_module._TABLE_LIMIT = old
    assert bisect.sum() == budget.total
    assert objective(post, bisect, value) == pytest.approx(
        objective(post, table, value), rel=1e-9, abs=1e-12
    )


def test_knapsack_prefers_uncertain_and_mid_prompts():
    # a surely-solved prompt, a surely-failed one, a coin flip, and an unknown one
    post = Posterior([500.0, 0.5, 50.0, 1.0], [0.5, 500.0, 50.0, 1.0])
    counts = KnapsackAllocator().allocate(post, Budget(20, 2, 16))
    assert counts[0] == counts[1] == 2
    # the unknown prompt (uniform posterior) needs more rollouts than the coin flip
    assert counts[3] > counts[2] > 2


def test_knapsack_with_grid_posterior():
    grid = np.linspace(0, 1, 11)
    weights = np.zeros((3, 11))
    weights[0, 0] = 1.0  # never solvable
    weights[1, 5] = 1.0  # p = 0.5
    weights[2, 1] = 1.0  # p = 0.1: needs many rollouts to see a success
    post = GridPosterior(grid, weights)
    counts = KnapsackAllocator().allocate(post, Budget(30, 2, 20))
    assert counts[0] == 2
    assert counts[2] > counts[1]


def test_thompson_needs_rng_and_is_reproducible():
    post = Posterior([1.0, 2.0, 3.0], [3.0, 2.0, 1.0])
    budget = Budget(24, 2, 12)
    with pytest.raises(TypeError, match="needs rng"):
        ThompsonAllocator().allocate(post, budget)
    a = ThompsonAllocator().allocate(post, budget, rng=np.random.default_rng(3))
    b = ThompsonAllocator().allocate(post, budget, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        ((0,), ValueError, "total must be >= 1"),
        ((10, 0), ValueError, "min_per_prompt must be >= 1"),
        ((10, 3, 2), ValueError, r"max_per_prompt must be >= min_per_prompt \(3\)"),
        ((10.5,), TypeError, "total must be an integer"),
    ],
)
def test_budget_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        Budget(*args)


def test_infeasible_budgets_raise_for_every_allocator():
    post = Posterior([1.0] * 4, [1.0] * 4)
    for allocator in ALLOCATORS:
        with pytest.raises(ValueError, match="exceeds total"):
            allocator.allocate(post, Budget(7, 2), rng=np.random.default_rng(0))
        with pytest.raises(ValueError, match="is below total"):
            allocator.allocate(post, Budget(40, 2, 8), rng=np.random.default_rng(0))


def test_bad_allocator_arguments():
    with pytest.raises(ValueError, match="value must be one of"):
        KnapsackAllocator("entropy")
    with pytest.raises(ValueError, match="value must be one of"):
        ThompsonAllocator("x")
    with pytest.raises(TypeError, match="budget must be a Budget"):
        UniformAllocator().allocate(Posterior([1.0], [1.0]), 8)
    with pytest.raises(TypeError, match="posterior must provide"):
        KnapsackAllocator().allocate([0.5, 0.5], Budget(8))


def test_registries_name_every_strategy_in_settings_order():
    assert allocation_module.ALLOCATORS.names() == ("knapsack", "thompson", "rank", "uniform")
    assert allocation_module.VALUES.names() == ("mixed", "info_gain")
    make = allocation_module.make_allocator
    assert make("knapsack", value="info_gain") == KnapsackAllocator("info_gain")
    assert make("thompson") == ThompsonAllocator("mixed")
    assert make("rank", value="info_gain") == RankAllocator()
    assert make("uniform") == UniformAllocator()
    for name in allocation_module.ALLOCATORS:
        assert isinstance(make(name), allocation_module.Allocator)


def test_unknown_names_list_the_known_ones():
    make = allocation_module.make_allocator
    with pytest.raises(ValueError, match=r"allocator must be one of \('knapsack', 'thompson'"):
        make("greedy")
    with pytest.raises(ValueError, match=r"value must be one of \('mixed', 'info_gain'\)"):
        make("knapsack", value="entropy")
    with pytest.raises(ValueError, match="value must be one of"):
        make("rank", value="entropy")  # checked even where unused


@pytest.mark.parametrize("value", ["mixed", "info_gain"])
@given(problem=problems(max_prompts=6), n=st.integers(1, 30))
def test_value_gains_are_the_objectives_increments(value, problem, n):
    # the registered gain of the (n+1)-th rollout is v(n+1) - v(n), per prompt
    post, _ = problem
    gains = allocation_module.VALUES.get(value)(post, np.full(len(post), float(n)))
    for i in range(len(post)):
        one_hot = np.zeros(len(post), dtype=np.int64)
        one_hot[i] = 1
        with_n = objective(post, n * one_hot, value) - objective(post, 0 * one_hot, value)
        with_n1 = objective(post, (n + 1) * one_hot, value) - objective(post, 0 * one_hot, value)
        assert gains[i] == pytest.approx(with_n1 - with_n, rel=1e-7, abs=1e-12)


@pytest.mark.parametrize("value", ["mixed", "info_gain"])
@given(
    cells=st.lists(st.integers(0, 10), min_size=1, max_size=12),
    n_min=st.integers(1, 3),
    extra=st.integers(0, 40),
    seed=st.integers(0, 1000),
)
def test_thompson_is_the_knapsack_valued_on_a_draw(value, cells, n_min, extra, seed):
    # on point-mass posteriors the draw is the posterior itself: both allocators agree
    weights = np.zeros((len(cells), 11))
    weights[np.arange(len(cells)), cells] = 1.0
    post = GridPosterior(np.linspace(0.0, 1.0, 11), weights)
    budget = Budget(len(cells) * n_min + extra, n_min)
    thompson = ThompsonAllocator(value)
    assert isinstance(thompson, KnapsackAllocator)
    got = thompson.allocate(post, budget, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(got, KnapsackAllocator(value).allocate(post, budget))


def per_n_moment_table(post, value, ns):
    """The old gain table: one ``moment`` call per term per column (the plain path)."""
    gains = allocation_module.VALUES.get(value)
    return np.stack([gains(post, np.full(len(post), n)) for n in ns], axis=1)


@st.composite
def any_posteriors(draw, max_prompts=12):
    num = draw(st.integers(1, max_prompts))
    if draw(st.booleans()):
        wide = st.floats(0.01, 1000.0)
        alpha = draw(st.lists(wide, min_size=num, max_size=num))
        beta = draw(st.lists(wide, min_size=num, max_size=num))
        return Posterior(alpha, beta)
    k = draw(st.integers(2, 30))
    grid = (
        np.linspace(0.0, 1.0, k)
        if draw(st.booleans())
        else np.sort(np.unique(draw(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=k))))
    )
    assume(len(grid) >= 2)
    raw = np.array(
        draw(st.lists(st.floats(0.0, 1.0), min_size=num * len(grid), max_size=num * len(grid)))
    ).reshape(num, len(grid))
    raw[:, 0] += 1e-3  # rows never all zero
    return GridPosterior(grid, raw / raw.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("value", ["mixed", "info_gain"])
@given(post=any_posteriors(), n_min=st.integers(1, 4), width=st.integers(1, 140))
def test_gain_table_equals_the_per_n_moment_path(value, post, n_min, width):
    # the one-pass table (a matmul for a grid, chained Beta ratios) equals per-column moments
    ns = n_min + np.arange(width, dtype=np.float64)
    fast = allocation_module.VALUES.get(value).table(post, ns)
    assert fast.shape == (len(post), width)
    np.testing.assert_allclose(fast, per_n_moment_table(post, value, ns), rtol=1e-12, atol=1e-12)


@given(
    post=any_posteriors(),
    exps=st.lists(st.tuples(st.floats(0.0, 20.0), st.floats(0.0, 20.0)), min_size=1, max_size=9),
)
def test_moment_table_with_irregular_exponents(post, exps):
    # columns that do not raise one exponent by exactly 1 are evaluated directly
    i = np.array([e[0] for e in exps])
    j = np.array([e[1] for e in exps])
    want = np.stack([post.moment(i[c], j[c]) + post.moment(j[c], i[c]) for c in range(len(i))], 1)
    got = post.moment_table(np.stack([i, j]), np.stack([j, i]))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@given(
    cells=st.lists(st.integers(0, 3), min_size=1, max_size=60),
    width=st.integers(1, 6),
    ties=st.lists(st.integers(0, 2), min_size=60, max_size=60),
    data=st.data(),
)
def test_top_counts_match_the_full_lexsort(cells, width, ties, data):
    # a table full of ties: the partition + tie sort equals the full lexsort of the old code
    num = max(1, len(cells) // width)
    table = np.array(cells[: num * width] + [0] * (num * width - len(cells[: num * width])))
    table = table.reshape(num, width).astype(np.float64)
    tiebreak = np.array(ties[:num], dtype=np.float64)
    spare = data.draw(st.integers(1, num * width))
    flat = table.ravel()
    rows = np.repeat(np.arange(num), width)
    cols = np.tile(np.arange(width), num)
    order = np.lexsort((cols, tiebreak[rows], -flat))
    want = np.bincount(rows[order[:spare]], minlength=num)
    got = allocation_module._top_counts(table, spare, tiebreak)
    np.testing.assert_array_equal(got, want)
    table[0, 0] = np.nan  # the NaN corner keeps the full sort
    flat = table.ravel()
    order = np.lexsort((cols, tiebreak[rows], -flat))
    want = np.bincount(rows[order[:spare]], minlength=num)
    np.testing.assert_array_equal(allocation_module._top_counts(table, spare, tiebreak), want)
