r"""Batch posteriors over prompts' success rates: what allocators consume.

A batch posterior describes the unknown success rates :math:`p_i` of the :math:`B` prompts of a
step. Allocators (:mod:`e3core.allocation`) need its mean, variance, draws and the moments
:math:`E[p^a(1-p)^b]`, from which the probability that :math:`n` rollouts hold both a success
and a failure follows in closed form (:class:`PosteriorLike`). Two kinds exist:
:class:`Posterior` (a Beta per prompt, under a :class:`~e3core.priors.BetaPrior`) and
:class:`GridPosterior` (weights on a grid of rates, under a :class:`~e3core.priors.GridPrior`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import special

from e3core._validation import as_float_array, check_rng

__all__ = ["GridPosterior", "Posterior", "PosteriorLike"]


@runtime_checkable
class PosteriorLike(Protocol):
    """What allocators need from a batch posterior over success rates."""

    rank: np.ndarray | None

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean success rate per prompt."""
        ...

    @property
    def variance(self) -> np.ndarray:
        """Posterior variance of the success rate per prompt."""
        ...

    def __len__(self) -> int:
        """Number of prompts."""
        ...

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One draw of every prompt's success rate."""
        ...

    def moment(self, i: Any, j: Any) -> np.ndarray:
        r"""Return :math:`E[p^i (1-p)^j]` per prompt."""
        ...

    def expected_mixed(self, n: Any) -> np.ndarray:
        """Probability that ``n`` rollouts hold both a success and a failure."""
        ...


def _check_rng(rng: Any) -> np.random.Generator:
    return check_rng("rng", rng)


def _check_rank(rank: Any, length: int) -> np.ndarray | None:
    if rank is None:
        return None
    arr = as_float_array("rank", rank)
    if len(arr) != length:
        raise ValueError(f"rank must have length {length}, got {len(arr)}")
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"rank must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]")
    return arr


# The Beta moment table chains columns by exact ratios of Beta functions; a fresh betaln anchor
# every this many columns bounds the rounding the chained products accumulate.
_ANCHOR_EVERY = 64


def _exponent_table(i: Any, j: Any) -> tuple[np.ndarray, np.ndarray]:
    """Exponents as ``[T, n]`` float arrays (``T`` summed terms of ``n`` columns each)."""
    i_arr = np.asarray(i, dtype=np.float64)
    j_arr = np.asarray(j, dtype=np.float64)
    if i_arr.ndim > 2 or j_arr.ndim > 2:
        raise ValueError(
            f"moment_table exponents must be 1-D or 2-D, got shapes {i_arr.shape}, {j_arr.shape}"
        )
    shape = np.broadcast_shapes(np.atleast_2d(i_arr).shape, np.atleast_2d(j_arr).shape)
    return np.broadcast_to(np.atleast_2d(i_arr), shape), np.broadcast_to(
        np.atleast_2d(j_arr), shape
    )


def _power_table(rates: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    r"""``[len(rates), n]`` table of :math:`\sum_t r^{i_{tc}} (1-r)^{j_{tc}}` (``0**0 = 1``)."""
    r = rates[:, None]
    out = np.power(r, i[0]) * np.power(1.0 - r, j[0])
    for t in range(1, len(i)):
        out += np.power(r, i[t]) * np.power(1.0 - r, j[t])
    return out


def _mixed_from_moments(post: PosteriorLike, n: Any) -> np.ndarray:
    n_arr = np.asarray(n, dtype=np.float64)
    if not np.isfinite(n_arr).all() or (n_arr < 0).any():
        raise ValueError(f"n must be finite and >= 0, got {n}")
    out = 1.0 - post.moment(n_arr, 0.0) - post.moment(0.0, n_arr)
    # 1 - E[p^n] - E[(1-p)^n] is 0 at n = 1 and -1 at n = 0; round-off can dip below 0.
    return np.where(n_arr >= 1, np.clip(out, 0.0, 1.0), 0.0)


@dataclass(frozen=True, eq=False)
class Posterior:
    r"""Beta posteriors :math:`p_i \sim \mathrm{Beta}(\alpha_i, \beta_i)` of a batch of prompts.

    Args:
        alpha: Positive finite first shape parameters, one per prompt.
        beta: Positive finite second shape parameters, same length.
        rank: Optional difficulty percentile in ``[0, 1]`` per prompt (1 = hardest) over all
            tracked prompts, as used by the E3 rank rule (arXiv 2505.18573).
    """

    alpha: np.ndarray
    beta: np.ndarray
    rank: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        alpha = as_float_array("alpha", self.alpha)
        beta = as_float_array("beta", self.beta)
        if len(alpha) != len(beta):
            raise ValueError(
                f"alpha and beta must have the same length, got {len(alpha)} and {len(beta)}"
            )
        for name, arr in (("alpha", alpha), ("beta", beta)):
            if (arr <= 0).any():
                raise ValueError(f"{name} must be > 0, got {arr[arr <= 0][0]}")
        with np.errstate(over="ignore"):
            overflow = ~np.isfinite(alpha + beta)
        if overflow.any():
            k = int(np.flatnonzero(overflow)[0])
            raise ValueError(
                f"alpha + beta must be finite (below about 1.8e308), got alpha={alpha[k]}, "
                f"beta={beta[k]} at index {k}"
            )
        object.__setattr__(self, "alpha", alpha)
        object.__setattr__(self, "beta", beta)
        object.__setattr__(self, "rank", _check_rank(self.rank, len(alpha)))

    def __len__(self) -> int:
        """Number of prompts."""
        return len(self.alpha)

    @property
    def mean(self) -> np.ndarray:
        r""":math:`\alpha / (\alpha + \beta)`."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def variance(self) -> np.ndarray:
        r""":math:`\alpha\beta / ((\alpha+\beta)^2 (\alpha+\beta+1))`.

        Computed as :math:`\mu(1-\mu)/(\alpha+\beta+1)` with :math:`1-\mu =
        \beta/(\alpha+\beta)`, which cannot overflow for any valid posterior.
        """
        total = self.alpha + self.beta
        return (self.alpha / total) * (self.beta / total) / (total + 1.0)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one success rate per prompt from its Beta posterior."""
        return _check_rng(rng).beta(self.alpha, self.beta)

    def moment(self, i: Any, j: Any) -> np.ndarray:
        r"""Return :math:`E[p^i(1-p)^j] = B(\alpha+i, \beta+j) / B(\alpha, \beta)` per prompt."""
        i_arr = np.asarray(i, dtype=np.float64)
        j_arr = np.asarray(j, dtype=np.float64)
        log_m = special.betaln(self.alpha + i_arr, self.beta + j_arr) - special.betaln(
            self.alpha, self.beta
        )
        return np.exp(log_m)

    def moment_table(self, i: Any, j: Any) -> np.ndarray:
        r"""Return the ``[B, n]`` table :math:`\sum_t E[p^{i_{tc}}(1-p)^{j_{tc}}]` in one pass.

        ``i`` and ``j`` are ``[n]`` or ``[T, n]`` exponents (``T`` terms summed per column);
        column ``c`` equals ``sum(moment(i[t, c], j[t, c]) for t)`` up to rounding. Where a
        column raises one exponent of the previous by exactly 1, it is the previous column
        times the exact ratio :math:`B(\alpha+i+1,\beta+j)/B(\alpha+i,\beta+j) =
        (\alpha+i)/(\alpha+\beta+i+j)` (likewise for ``j``); other columns, and every
        64th, are evaluated with ``betaln`` as :meth:`moment` does.
        """
        i_t, j_t = _exponent_table(i, j)
        a, b = self.alpha[:, None], self.beta[:, None]
        log_norm = special.betaln(self.alpha, self.beta)[:, None]
        out = np.zeros((len(self), i_t.shape[1]))
        for i_row, j_row in zip(i_t, j_t, strict=True):
            out += self._moment_chain(i_row, j_row, a, b, log_norm)
        return out

    @staticmethod
    def _moment_chain(
        i: np.ndarray, j: np.ndarray, a: np.ndarray, b: np.ndarray, log_norm: np.ndarray
    ) -> np.ndarray:
        """One term of :meth:`moment_table`: betaln anchors, exact ratios between them."""
        n = len(i)
        di, dj = np.diff(i), np.diff(j)
        step_i = np.zeros(n, dtype=bool)  # column c is column c-1 with i raised by 1
        step_i[1:] = (di == 1.0) & (dj == 0.0)
        chained = step_i.copy()
        chained[1:] |= (di == 0.0) & (dj == 1.0)
        chained[::_ANCHOR_EVERY] = False
        prev_i = np.concatenate((i[:1], i[:-1]))
        prev_j = np.concatenate((j[:1], j[:-1]))
        # every column as the ratio to its predecessor; anchors are overwritten below
        table = np.where(step_i, a, b) + np.where(step_i, prev_i, prev_j)
        table /= (a + b) + (prev_i + prev_j)
        anchors = np.flatnonzero(~chained)
        table[:, anchors] = np.exp(special.betaln(a + i[anchors], b + j[anchors]) - log_norm)
        ends = np.append(anchors[1:], n)
        for start, end in zip(anchors, ends, strict=True):
            if end - start > 1:
                np.cumprod(table[:, start:end], axis=1, out=table[:, start:end])
        return table

    def expected_mixed(self, n: Any) -> np.ndarray:
        r"""Probability that ``n`` i.i.d. rollouts hold both a success and a failure.

        .. math:: P_\text{mixed}(n) = 1 - \frac{B(\alpha+n,\beta)}{B(\alpha,\beta)}
                  - \frac{B(\alpha,\beta+n)}{B(\alpha,\beta)}

        Args:
            n: Rollout count(s), a scalar or an array broadcastable to the batch; 0 for ``n < 1``.
        """
        return _mixed_from_moments(self, n)


@dataclass(frozen=True, eq=False)
class GridPosterior:
    r"""Posteriors on a fixed grid of success rates (a nonparametric population prior).

    Args:
        grid: The ``K`` success rates in ``[0, 1]``, increasing.
        weights: ``[B, K]`` posterior probabilities per prompt; each row sums to 1.
        rank: Optional difficulty percentile in ``[0, 1]`` (1 = hardest).
    """

    grid: np.ndarray
    weights: np.ndarray
    rank: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        grid = as_float_array("grid", self.grid)
        weights = as_float_array("weights", self.weights, ndim=2)
        if weights.shape[1] != len(grid):
            raise ValueError(
                f"weights must have {len(grid)} columns (one per grid point), "
                f"got shape {weights.shape}"
            )
        if ((grid < 0) | (grid > 1)).any() or (np.diff(grid) <= 0).any():
            raise ValueError("grid must be strictly increasing inside [0, 1]")
        if (weights < 0).any() or not np.allclose(weights.sum(axis=1), 1.0, atol=1e-8):
            raise ValueError("weights must be non-negative with rows summing to 1")
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "rank", _check_rank(self.rank, len(weights)))

    def __len__(self) -> int:
        """Number of prompts."""
        return self.weights.shape[0]

    @property
    def mean(self) -> np.ndarray:
        """Posterior mean success rate per prompt."""
        return self.weights @ self.grid

    @property
    def variance(self) -> np.ndarray:
        """Posterior variance of the success rate per prompt."""
        mean = self.mean
        return np.maximum(self.weights @ (self.grid * self.grid) - mean * mean, 0.0)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """Draw one grid success rate per prompt from its posterior."""
        u = _check_rng(rng).random(len(self))[:, None]
        idx = (np.cumsum(self.weights, axis=1) < u).sum(axis=1)
        return self.grid[np.minimum(idx, len(self.grid) - 1)]

    def moment(self, i: Any, j: Any) -> np.ndarray:
        r"""Return :math:`E[p^i(1-p)^j] = \sum_k w_{ik}\, g_k^i (1-g_k)^j` per prompt."""
        i_arr = np.asarray(i, dtype=np.float64)
        j_arr = np.asarray(j, dtype=np.float64)
        shape = np.broadcast_shapes(i_arr.shape, j_arr.shape, (len(self),))
        i_b = np.broadcast_to(i_arr, shape)[..., None]
        j_b = np.broadcast_to(j_arr, shape)[..., None]
        # 0**0 = 1 by numpy's convention, which is the right limit here.
        vals = np.power(self.grid, i_b) * np.power(1.0 - self.grid, j_b)
        return (vals * self.weights).sum(axis=-1)

    def moment_table(self, i: Any, j: Any) -> np.ndarray:
        r"""Return the ``[B, n]`` table :math:`\sum_t E[p^{i_{tc}}(1-p)^{j_{tc}}]` as one matmul.

        ``i`` and ``j`` are ``[n]`` or ``[T, n]`` exponents (``T`` terms summed per column): the
        weights ``[B, K]`` times the ``[K, n]`` table of :math:`\sum_t g_k^{i_{tc}}
        (1-g_k)^{j_{tc}}`. Column ``c`` equals ``sum(moment(i[t, c], j[t, c]) for t)`` up to
        rounding.
        """
        i_t, j_t = _exponent_table(i, j)
        return self.weights @ _power_table(self.grid, i_t, j_t)

    def expected_mixed(self, n: Any) -> np.ndarray:
        r"""Probability that ``n`` rollouts hold both outcomes: :math:`1 - E[p^n] - E[(1-p)^n]`."""
        return _mixed_from_moments(self, n)
