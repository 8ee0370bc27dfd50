r"""Per-prompt rollout counts under a fixed total budget.

Every allocator maps a batch posterior (see :mod:`e3core.posteriors`) and a :class:`Budget` to
integer counts :math:`n_i` with :math:`\sum_i n_i = N` and
:math:`n_\min \le n_i \le n_\max`, in the posterior's prompt order.

* :class:`UniformAllocator`: counts that differ by at most one.
* :class:`RankAllocator`: the E3 rule (Liao et al., arXiv 2505.18573),
  :math:`c_i = \lfloor n_\min + (N - B n_\min)\,k_i/\sum_j k_j \rfloor` in the difficulty
  rank :math:`k_i`, the rounding leftover to the hardest prompts, with :math:`n_\max` a hard cap.
* :class:`KnapsackAllocator`: maximises :math:`\sum_i E[v(n_i, p_i)]` under the posterior, where
  :math:`v(n, p) = (1 - p^n - (1-p)^n)\,w(p)` is the chance that a group of :math:`n` holds both a
  success and a failure (so GRPO gets a non-zero advantage), optionally weighted by Knapsack RL's
  :math:`w(p) = p(1-p)^2` (arXiv 2509.25849). The marginal gain
  :math:`E[w(p)(p^n(1-p) + p(1-p)^n)]` falls with :math:`n`, so filling the budget with the
  largest marginal gains is exactly optimal.
* :class:`ThompsonAllocator`: the knapsack with one hook changed: the objective is valued on one
  posterior draw of every :math:`p_i` instead of in expectation.

Strategies are named in two registries (:class:`~e3core._registry.Registry`), which settings
and adapters import instead of repeating the names: :data:`ALLOCATORS` (``"knapsack"``,
``"thompson"``, ``"rank"``, ``"uniform"``; build one with :func:`make_allocator`) and
:data:`VALUES` (``"mixed"``, ``"info_gain"``: the knapsack's per-rollout marginal gains).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from e3core._registry import Registry
from e3core._validation import check_int, check_rng
from e3core.posteriors import PosteriorLike, _exponent_table, _power_table

__all__ = [
    "ALLOCATORS",
    "VALUES",
    "Allocator",
    "Budget",
    "KnapsackAllocator",
    "RankAllocator",
    "ThompsonAllocator",
    "UniformAllocator",
    "make_allocator",
]

#: Knapsack values by name: each maps a posterior and rollout counts ``n`` to the marginal gain
#: of the ``(n+1)``-th rollout, and builds the whole gain table in one pass (see
#: :class:`_MomentSum`).
VALUES: Registry[_MomentSum] = Registry("value")
#: Allocator classes by name, in the order settings list them.
ALLOCATORS: Registry[type[Allocator]] = Registry("allocator")
# The knapsack builds a [B, n_max - n_min] table of marginal gains; above this many entries it
# fills the budget by bisection on the gain threshold instead.
_TABLE_LIMIT = 4_000_000
# The largest budget: every count stays exact in float64 (the allocators' arithmetic).
_MAX_TOTAL = 2**53


@dataclass(frozen=True)
class Budget:
    r"""The rollout budget of one step.

    Args:
        total: Total rollouts :math:`N` to spend on the batch (> 0).
        min_per_prompt: Lower bound :math:`n_\min \ge 1` per prompt (2 keeps every group able to
            produce a non-zero GRPO advantage).
        max_per_prompt: Optional upper bound :math:`n_\max \ge n_\min` per prompt.
    """

    total: int
    min_per_prompt: int = 2
    max_per_prompt: int | None = None

    def __post_init__(self) -> None:
        # stored as Python ints (numpy integers are accepted); counts are exact in float64
        total = check_int(
            "total",
            self.total,
            low=1,
            high=_MAX_TOTAL,
            hint="2**53, so counts stay exact in float64",
        )
        object.__setattr__(self, "total", total)
        low = check_int("min_per_prompt", self.min_per_prompt, low=1)
        object.__setattr__(self, "min_per_prompt", low)
        if self.max_per_prompt is not None:
            high = check_int(
                "max_per_prompt", self.max_per_prompt, low=low, low_name="min_per_prompt"
            )
            object.__setattr__(self, "max_per_prompt", high)

    def check(self, num_prompts: int) -> None:
        """Raise ``ValueError`` unless ``num_prompts`` prompts can share the budget in bounds."""
        check_int("num_prompts", num_prompts, low=1)
        if num_prompts * self.min_per_prompt > self.total:
            raise ValueError(
                f"budget infeasible: num_prompts={num_prompts} x min_per_prompt="
                f"{self.min_per_prompt} = {num_prompts * self.min_per_prompt} exceeds "
                f"total={self.total}"
            )
        if self.max_per_prompt is not None and num_prompts * self.max_per_prompt < self.total:
            raise ValueError(
                f"budget infeasible: num_prompts={num_prompts} x max_per_prompt="
                f"{self.max_per_prompt} = {num_prompts * self.max_per_prompt} is below "
                f"total={self.total}"
            )

    def cap(self, num_prompts: int) -> int:
        """The effective per-prompt maximum: ``max_per_prompt`` or what the others leave."""
        slack = self.total - (num_prompts - 1) * self.min_per_prompt
        return slack if self.max_per_prompt is None else min(self.max_per_prompt, slack)


def _check_inputs(posterior: Any, budget: Any, rng: Any = None) -> int:
    check_rng("rng", rng, optional=True)
    if not isinstance(budget, Budget):
        raise TypeError(f"budget must be a Budget, got {type(budget).__name__}")
    for member in ("mean", "variance", "moment", "sample", "expected_mixed"):
        if not hasattr(posterior, member):
            raise TypeError(
                f"posterior must provide {member!r} (a Posterior or GridPosterior), "
                f"got {type(posterior).__name__}"
            )
    num = len(posterior)
    budget.check(num)
    return num


class Allocator:
    """Base class: ``allocate(posterior, budget, *, rng=None) -> counts`` (int64).

    Attributes:
        uses_rank: Whether the allocator reads ``posterior.rank`` (so callers compute ranks only
            when they matter: a dataset-wide rank costs a pass over every tracked prompt).
    """

    uses_rank: ClassVar[bool] = False

    def allocate(
        self,
        posterior: PosteriorLike,
        budget: Budget,
        *,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """Counts per prompt, summing to ``budget.total``, inside the budget's bounds."""
        raise NotImplementedError


def _hardest_first(posterior: PosteriorLike) -> np.ndarray:
    """Positions ordered hardest (lowest mean) first, the more uncertain first among ties."""
    return np.lexsort((-posterior.variance, posterior.mean))


@dataclass(frozen=True)
class UniformAllocator(Allocator):
    r"""Counts :math:`\lfloor N/B \rfloor` or :math:`\lceil N/B \rceil`: plain GRPO's spend.

    The :math:`N \bmod B` extra rollouts go to the hardest prompts (lowest posterior mean, the
    more uncertain among equals), or to random prompts when an ``rng`` is given.
    """

    def allocate(
        self,
        posterior: PosteriorLike,
        budget: Budget,
        *,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """See :class:`Allocator`."""
        num = _check_inputs(posterior, budget, rng)
        base, extra = divmod(budget.total, num)
        counts = np.full(num, base, dtype=np.int64)
        if extra:
            order = rng.permutation(num) if rng is not None else _hardest_first(posterior)
            counts[order[:extra]] += 1
        return counts


@dataclass(frozen=True)
class RankAllocator(Allocator):
    r"""The E3 paper's dynamic rollout rule with a real hard cap.

    With difficulty ranks :math:`k_i \in [0, 1]` (1 = hardest; the posterior's ``rank``, or the
    within-batch share of easier prompts by posterior mean when it has none):

    .. math::
        c_i = \min\Bigl(n_\max,\ \Bigl\lfloor n_\min + (N - B\,n_\min)
              \frac{k_i}{\sum_j k_j}\Bigr\rfloor\Bigr),

    then the leftover :math:`N - \sum_i c_i` tops prompts up to :math:`n_\max` one after another
    in order of descending :math:`k_i` (Liao et al., arXiv 2505.18573, Sec. 3.1). The paper's
    code enforces :math:`n_\max` only in that last step, so a skewed batch can give one prompt
    far more; here the cap always holds. When all ranks are 0 the counts are uniform.
    """

    uses_rank: ClassVar[bool] = True

    def allocate(
        self,
        posterior: PosteriorLike,
        budget: Budget,
        *,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """See :class:`Allocator`."""
        num = _check_inputs(posterior, budget, rng)
        if posterior.rank is not None:
            rank = np.asarray(posterior.rank, dtype=np.float64)
        else:
            mean = posterior.mean
            rank = (num - np.searchsorted(np.sort(mean), mean, side="right")) / num
        total_rank = math.fsum(rank)  # exactly rounded, so independent of prompt order
        if total_rank <= 0:
            return UniformAllocator().allocate(posterior, budget, rng=rng)
        n_min, cap = budget.min_per_prompt, budget.cap(num)
        spare = budget.total - num * n_min
        counts = np.floor(n_min + spare * (rank / total_rank)).astype(np.int64)
        counts = np.clip(counts, n_min, cap)
        leftover = budget.total - int(counts.sum())
        # Stable: among equal ranks, earlier positions first (as the paper's argsort).
        for pos in np.argsort(-rank, kind="stable"):
            if leftover <= 0:
                break
            add = min(leftover, cap - int(counts[pos]))
            counts[pos] += add
            leftover -= add
        return counts


@dataclass(frozen=True)
class _MomentSum:
    r"""A knapsack value's marginal gain, a sum of posterior moments in the rollout count ``n``.

    Each term ``(a, b, c, d)`` is :math:`E[p^{a n + b} (1-p)^{c n + d}]`; calling the object
    with a posterior and counts ``n`` gives the gain of the ``(n+1)``-th rollout per prompt,
    :meth:`table` the ``[B, len(ns)]`` table of them in one pass.
    """

    terms: tuple[tuple[float, float, float, float], ...]

    def __call__(self, posterior: PosteriorLike, n: np.ndarray) -> np.ndarray:
        """Gains at counts ``n`` (broadcast with the batch), one ``moment`` call per term."""
        out = None
        for a, b, c, d in self.terms:
            term = posterior.moment(a * n + b, c * n + d)
            out = term if out is None else out + term
        return out  # type: ignore[return-value]

    def table(self, posterior: PosteriorLike, ns: np.ndarray) -> np.ndarray:
        """``table[i, k]``: gain of prompt ``i`` going from ``ns[k]`` to ``ns[k] + 1`` rollouts.

        One ``posterior.moment_table`` call (a matmul for a grid posterior) where the posterior
        has it, else one :meth:`__call__` per column.
        """
        moment_table = getattr(posterior, "moment_table", None)
        if moment_table is not None:
            i = np.stack([a * ns + b for a, b, _, _ in self.terms])
            j = np.stack([c * ns + d for _, _, c, d in self.terms])
            return moment_table(i, j)  # type: ignore[no-any-return]
        num = len(posterior)
        cols = [self(posterior, np.full(num, n)) for n in ns]
        return np.stack(cols, axis=1)


#: ``"mixed"``, :math:`w = 1`: :math:`E[p^n(1-p) + p(1-p)^n]`.
_mixed_gains = VALUES.add("mixed", _MomentSum(((1.0, 0.0, 0.0, 1.0), (0.0, 1.0, 1.0, 0.0))))
#: ``"info_gain"``, :math:`w(p) = p(1-p)^2`: :math:`E[p^{n+1}(1-p)^3 + p^2(1-p)^{n+2}]`.
_info_gain_gains = VALUES.add("info_gain", _MomentSum(((1.0, 1.0, 0.0, 3.0), (0.0, 2.0, 1.0, 2.0))))


def _top_counts(table: np.ndarray, spare: int, tiebreak: np.ndarray) -> np.ndarray:
    """Per row, how many of the ``spare`` largest entries of ``table`` it holds.

    The order is that of ``np.lexsort((cols, tiebreak[rows], -table.ravel()))`` (larger
    entries first, ties to lower ``tiebreak``, then lower column, then earlier row), found with
    one partition: entries above the ``spare``-th largest value are all taken, and only the
    entries equal to it are sorted.
    """
    num, width = table.shape
    flat = table.ravel()
    rows = np.arange(num)
    if np.isnan(flat).any():  # NaN sorts last; keep the full sort for that corner
        all_rows = np.repeat(rows, width)
        cols = np.tile(np.arange(width), num)
        order = np.lexsort((cols, tiebreak[all_rows], -flat))
        return np.bincount(all_rows[order[:spare]], minlength=num)
    if spare >= flat.size:
        return np.full(num, width, dtype=np.int64)
    neg = -flat
    threshold = np.partition(neg, spare - 1)[spare - 1]
    above = neg < threshold
    counts = above.reshape(num, width).sum(axis=1)
    remaining = spare - int(counts.sum())
    tied = np.flatnonzero(neg == threshold)  # ascending: rows, then columns
    tied_rows, tied_cols = np.divmod(tied, width)
    order = np.lexsort((tied_cols, tiebreak[tied_rows]))[:remaining]
    return counts + np.bincount(tied_rows[order], minlength=num)


def _greedy_fill(
    posterior: PosteriorLike, budget: Budget, gains: _MomentSum, tiebreak: np.ndarray
) -> np.ndarray:
    """Start every prompt at ``min`` and spend the rest on the largest marginal gains.

    Gains fall with ``n`` in every row, so the largest ``spare`` entries of the gain table form a
    prefix of each row and the result is the exact knapsack optimum. Ties go to lower
    ``tiebreak``, then to earlier positions.
    """
    num = len(posterior)
    n_min, cap = budget.min_per_prompt, budget.cap(num)
    spare = budget.total - num * n_min
    counts = np.full(num, n_min, dtype=np.int64)
    width = cap - n_min
    if spare == 0 or width == 0:
        return counts
    if num * width <= _TABLE_LIMIT:
        n_grid = n_min + np.arange(width, dtype=np.float64)
        # table[i, k] = gain of prompt i going from n_min + k to n_min + k + 1 rollouts
        table = gains.table(posterior, n_grid)
        return counts + _top_counts(table, spare, tiebreak)
    return _bisect_fill(posterior, budget, gains, tiebreak)


def _bisect_fill(
    posterior: PosteriorLike, budget: Budget, gains: _MomentSum, tiebreak: np.ndarray
) -> np.ndarray:
    """Greedy optimum for very wide bounds: bisect on the gain threshold, count per row."""
    num = len(posterior)
    n_min, cap = budget.min_per_prompt, budget.cap(num)
    spare = budget.total - num * n_min

    def take(threshold: float) -> np.ndarray:
        # per row, how many steps k in [0, width) have gain >= threshold (gains fall with k)
        lo = np.zeros(num, dtype=np.int64)
        hi = np.full(num, cap - n_min, dtype=np.int64)
        active = lo < hi
        while active.any():
            mid = (lo + hi) // 2
            ok = gains(posterior, (n_min + mid).astype(np.float64)) >= threshold
            lo = np.where(active & ok, mid + 1, lo)
            hi = np.where(active & ~ok, mid, hi)
            active = lo < hi
        return lo

    low, high = 0.0, 1.0  # take(0) covers every step; no gain exceeds 1
    for _ in range(200):
        mid = 0.5 * (low + high)
        if mid in (low, high):
            break
        if take(mid).sum() >= spare:
            low = mid
        else:
            high = mid
    steps = take(high)
    remaining = spare - int(steps.sum())
    if remaining > 0:
        # entries with gain in [low, high): take the rest in tie-break order
        more = take(low) - steps
        order = np.lexsort((np.arange(num), tiebreak))
        for pos in order:
            if remaining == 0:
                break
            add = min(int(more[pos]), remaining)
            steps[pos] += add
            remaining -= add
    return n_min + steps


@dataclass(frozen=True)
class KnapsackAllocator(Allocator):
    r"""Exact expected-value knapsack over the posterior.

    Maximises :math:`\sum_i E_{p_i}[v(n_i, p_i)]` subject to the budget, with
    :math:`v(n,p) = (1 - p^n - (1-p)^n)\,w(p)`, :math:`w = 1` (``value="mixed"``: the expected
    number of groups with a non-zero GRPO signal) or :math:`w(p) = p(1-p)^2` (``value=
    "info_gain"``, the Knapsack RL value of arXiv 2509.25849 in expectation rather than at a point
    estimate). Expectations are closed form, e.g. for a Beta posterior
    :math:`E[p^a(1-p)^b] = B(\alpha+a, \beta+b)/B(\alpha,\beta)`. Every prompt keeps at least
    ``min_per_prompt``; ties go to the more uncertain prompt, then to the earlier position.

    Subclasses change what the objective is valued on through one hook, :meth:`_valued_on`
    (:class:`ThompsonAllocator` values it on a posterior draw).

    Args:
        value: A name in :data:`VALUES`: ``"mixed"`` or ``"info_gain"``.
    """

    value: str = "mixed"

    def __post_init__(self) -> None:
        VALUES.check("value", self.value)

    def _valued_on(
        self, posterior: PosteriorLike, rng: np.random.Generator | None
    ) -> PosteriorLike:
        """The distribution of the success rates whose moments value each rollout."""
        return posterior

    def allocate(
        self,
        posterior: PosteriorLike,
        budget: Budget,
        *,
        rng: np.random.Generator | None = None,
    ) -> np.ndarray:
        """See :class:`Allocator`."""
        _check_inputs(posterior, budget, rng)
        return _greedy_fill(
            self._valued_on(posterior, rng),
            budget,
            VALUES.get(self.value),
            -posterior.variance,
        )


class _PointPosterior:
    """A posterior concentrated on given success rates (moments are plain powers)."""

    rank = None

    def __init__(self, p: np.ndarray):
        self.p = p

    def __len__(self) -> int:
        return len(self.p)

    def moment(self, i: Any, j: Any) -> np.ndarray:
        return np.power(self.p, i) * np.power(1.0 - self.p, j)

    def moment_table(self, i: Any, j: Any) -> np.ndarray:
        i_t, j_t = _exponent_table(i, j)
        return _power_table(self.p, i_t, j_t)


@dataclass(frozen=True)
class ThompsonAllocator(KnapsackAllocator):
    r"""The knapsack objective on one posterior draw :math:`\tilde p_i \sim P(p_i\mid\text{data})`.

    Maximises :math:`\sum_i v(n_i, \tilde p_i)`; randomisation explores prompts whose rate is
    uncertain. A :class:`KnapsackAllocator` whose objective is valued on the draw instead of in
    expectation (ties still go to the more uncertain prompt). Needs ``rng`` (randomness only
    through an explicit generator).

    Args:
        value: A name in :data:`VALUES`, as for :class:`KnapsackAllocator`.
    """

    def _valued_on(
        self, posterior: PosteriorLike, rng: np.random.Generator | None
    ) -> PosteriorLike:
        """One draw of every prompt's success rate, as a point posterior."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"ThompsonAllocator needs rng=numpy.random.Generator, got {type(rng).__name__}"
            )
        return _PointPosterior(posterior.sample(rng))  # type: ignore[return-value]


ALLOCATORS.add("knapsack", KnapsackAllocator)
ALLOCATORS.add("thompson", ThompsonAllocator)
ALLOCATORS.add("rank", RankAllocator)
ALLOCATORS.add("uniform", UniformAllocator)


def make_allocator(name: str, *, value: str = "mixed") -> Allocator:
    """The allocator registered under ``name`` in :data:`ALLOCATORS`.

    Args:
        name: ``"knapsack"``, ``"thompson"``, ``"rank"`` or ``"uniform"``.
        value: The knapsack value (a name in :data:`VALUES`) for allocators that value rollouts
            (knapsack, thompson); checked for all, used by those.

    Raises:
        ValueError: An unknown ``name`` or ``value`` (the message lists the known ones).
    """
    cls = ALLOCATORS.get(name, argument="allocator")
    VALUES.check("value", value)
    if issubclass(cls, KnapsackAllocator):
        return cls(value=value)
    return cls()
