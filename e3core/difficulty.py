r"""Per-prompt difficulty as a Bayesian posterior over the success rate.

Each prompt :math:`i` has an unknown success rate :math:`p_i` under the current policy. The
tracker keeps decayed success and failure counts and returns the conjugate posterior

.. math::

    \tilde s_i \leftarrow \lambda \tilde s_i + s, \qquad
    \tilde f_i \leftarrow \lambda \tilde f_i + (t - s), \qquad
    p_i \mid \text{data} \sim \mathrm{Beta}(\alpha_0 + \tilde s_i,\ \beta_0 + \tilde f_i),

which equals the MoPPS update :math:`\alpha \leftarrow \lambda\alpha + (1-\lambda)\alpha_0 + s`
(arXiv 2507.04632). E3 (Liao et al., arXiv 2505.18573) uses the undecayed accuracy
:math:`\tilde s_i / (\tilde s_i + \tilde f_i)` and its rank over the dataset, which
:meth:`BetaDifficultyTracker.rank` provides with ``by="accuracy"``.

Real difficulty is U-shaped (many prompts are always or never solved), so the population prior
:math:`(\alpha_0, \beta_0)` can be refitted by empirical Bayes (:meth:`~BetaDifficultyTracker.
fit_prior`): a Beta by maximum marginal (beta-binomial) likelihood, or a nonparametric prior on a
grid of success rates by EM, whose posteriors are :class:`GridPosterior`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy import optimize, special

from e3core._validation import as_float_array, check_choice, check_float, check_int

__all__ = [
    "BetaDifficultyTracker",
    "GridPosterior",
    "Posterior",
    "PosteriorLike",
]


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
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def _check_rank(rank: Any, length: int) -> np.ndarray | None:
    if rank is None:
        return None
    arr = as_float_array("rank", rank)
    if len(arr) != length:
        raise ValueError(f"rank must have length {length}, got {len(arr)}")
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"rank must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]")
    return arr


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
        r""":math:`\alpha\beta / ((\alpha+\beta)^2 (\alpha+\beta+1))`."""
        total = self.alpha + self.beta
        return self.alpha * self.beta / (total * total * (total + 1.0))

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

    def expected_mixed(self, n: Any) -> np.ndarray:
        r"""Probability that ``n`` rollouts hold both outcomes: :math:`1 - E[p^n] - E[(1-p)^n]`."""
        return _mixed_from_moments(self, n)


def _log_grid_likelihood(grid: np.ndarray, s: np.ndarray, f: np.ndarray) -> np.ndarray:
    r"""``[N, K]`` log of :math:`g^s (1-g)^f` with :math:`0 \log 0 = 0`."""
    return special.xlogy(s[:, None], grid[None, :]) + special.xlogy(f[:, None], 1.0 - grid[None, :])


class BetaDifficultyTracker:
    r"""Decayed success/failure counts per prompt and their Beta (or grid) posteriors.

    Per prompt id (any hashable; unseen ids get the prior) an update with :math:`s` successes out
    of :math:`t` trials does :math:`\tilde s \leftarrow \lambda\tilde s + s`,
    :math:`\tilde f \leftarrow \lambda\tilde f + (t-s)`; the posterior is
    :math:`\mathrm{Beta}(\alpha_0+\tilde s, \beta_0+\tilde f)`. Repeated ids in one call
    accumulate (decayed once, then all their counts added). Storage is two float64 arrays and an
    id-to-row dictionary, so a million prompts cost about 16 MB plus the ids.

    Args:
        prior_alpha: :math:`\alpha_0 > 0` of the population prior.
        prior_beta: :math:`\beta_0 > 0` of the population prior.
        decay: :math:`\lambda \in (0, 1]`; 1 keeps all history (the E3 paper's cumulative accuracy).
    """

    def __init__(self, prior_alpha: float = 1.0, prior_beta: float = 1.0, decay: float = 1.0):
        self.prior_alpha = check_float("prior_alpha", prior_alpha, low=0.0, low_open=True)
        self.prior_beta = check_float("prior_beta", prior_beta, low=0.0, low_open=True)
        self.decay = check_float("decay", decay, low=0.0, high=1.0, low_open=True)
        self.prior_kind = "beta"
        self.prior_grid: np.ndarray | None = None
        self.prior_weights: np.ndarray | None = None
        self._index: dict[Hashable, int] = {}
        self._ids: list[Hashable] = []
        self._s = np.zeros(0, dtype=np.float64)
        self._f = np.zeros(0, dtype=np.float64)
        self._sorted_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ ids
    def __len__(self) -> int:
        """Number of tracked prompts."""
        return len(self._ids)

    def __contains__(self, prompt_id: Hashable) -> bool:
        """Whether ``prompt_id`` has been observed."""
        return prompt_id in self._index

    @property
    def ids(self) -> list[Hashable]:
        """Tracked prompt ids in the order they were first seen."""
        return list(self._ids)

    @staticmethod
    def _unique(prompt_ids: Any) -> tuple[list[Hashable], np.ndarray]:
        """Unique ids (first-seen order not guaranteed) and the inverse index into them."""
        if isinstance(prompt_ids, (str, bytes)) or not isinstance(
            prompt_ids, (Sequence, np.ndarray, Iterable)
        ):
            raise TypeError(
                f"prompt_ids must be a sequence of hashable ids, got {type(prompt_ids).__name__}"
            )
        arr = prompt_ids if isinstance(prompt_ids, np.ndarray) else None
        if arr is None:
            seq = list(prompt_ids)
            try:
                arr = np.asarray(seq)
            except (ValueError, TypeError):
                arr = None
            if arr is not None and (arr.ndim != 1 or arr.dtype.kind not in "iuUSb"):
                arr = None
            # numpy turns [1, "1"] into two equal strings: only all-str lists take that path.
            if (
                arr is not None
                and arr.dtype.kind in "US"
                and not all(isinstance(pid, (str, bytes)) for pid in seq)
            ):
                arr = None
            if arr is None:
                lookup: dict[Hashable, int] = {}
                inverse = np.empty(len(seq), dtype=np.int64)
                for pos, pid in enumerate(seq):
                    try:
                        inverse[pos] = lookup.setdefault(pid, len(lookup))
                    except TypeError as exc:
                        raise TypeError(f"prompt_ids[{pos}] = {pid!r} is not hashable") from exc
                return list(lookup), inverse
        if arr.ndim != 1:
            raise ValueError(f"prompt_ids must be one-dimensional, got shape {arr.shape}")
        if arr.dtype.kind not in "iuUSb":
            return BetaDifficultyTracker._unique(arr.tolist())
        uniq, inverse = np.unique(arr, return_inverse=True)
        return uniq.tolist(), inverse.astype(np.int64)

    def _rows(self, prompt_ids: Any, *, create: bool) -> tuple[np.ndarray, np.ndarray]:
        """Rows (``-1`` for unseen unless ``create``) of the unique ids, and the inverse index."""
        uniq, inverse = self._unique(prompt_ids)
        index = self._index
        if create:
            new = [pid for pid in uniq if pid not in index]
            if new:
                start = len(self._ids)
                for offset, pid in enumerate(new):
                    index[pid] = start + offset
                self._ids.extend(new)
                self._grow(len(self._ids))
        rows = np.fromiter((index.get(pid, -1) for pid in uniq), dtype=np.int64, count=len(uniq))
        return rows, inverse

    def rows(self, prompt_ids: Any) -> np.ndarray:
        """Storage row of each id, ``-1`` for ids never observed (rows are stable)."""
        rows, inverse = self._rows(prompt_ids, create=False)
        return rows[inverse]

    def _grow(self, size: int) -> None:
        if size > len(self._s):
            cap = max(size, 2 * len(self._s), 1024)
            for name in ("_s", "_f"):
                old = getattr(self, name)
                new = np.zeros(cap, dtype=np.float64)
                new[: len(old)] = old
                setattr(self, name, new)

    # --------------------------------------------------------------- update
    def update(self, prompt_ids: Any, successes: Any, trials: Any) -> None:
        r"""Record ``successes[k]`` out of ``trials[k]`` for ``prompt_ids[k]``.

        Args:
            prompt_ids: Hashable ids, one per observation (repeats accumulate).
            successes: Finite success counts in ``[0, trials]`` (fractional allowed).
            trials: Finite, non-negative trial counts.
        """
        s = as_float_array("successes", successes)
        t = as_float_array("trials", trials)
        n_ids = len(prompt_ids) if hasattr(prompt_ids, "__len__") else None
        if n_ids is None or not (n_ids == len(s) == len(t)):
            raise ValueError(
                "prompt_ids, successes and trials must have the same length, got "
                f"{n_ids}, {len(s)} and {len(t)}"
            )
        if (t < 0).any():
            raise ValueError(f"trials must be >= 0, got {t[t < 0][0]}")
        if (s < 0).any():
            raise ValueError(f"successes must be >= 0, got {s[s < 0][0]}")
        over = s > t
        if over.any():
            k = int(np.flatnonzero(over)[0])
            raise ValueError(f"successes must be <= trials, got {s[k]} > {t[k]} at index {k}")
        if len(s) == 0:
            return
        rows, inverse = self._rows(prompt_ids, create=True)
        add_s = np.bincount(inverse, weights=s, minlength=len(rows))
        add_f = np.bincount(inverse, weights=t - s, minlength=len(rows))
        if self.decay != 1.0:
            self._s[rows] *= self.decay
            self._f[rows] *= self.decay
        self._s[rows] += add_s
        self._f[rows] += add_f
        self._sorted_cache.clear()

    # ----------------------------------------------------------- posteriors
    def counts(self, prompt_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Decayed success and failure counts of ``prompt_ids`` (0 for unseen ids)."""
        rows, inverse = self._rows(prompt_ids, create=False)
        known = rows >= 0
        if not known.any():
            zeros = np.zeros(len(inverse))
            return zeros, zeros.copy()
        safe = np.maximum(rows, 0)
        s = np.where(known, self._s[safe], 0.0)
        f = np.where(known, self._f[safe], 0.0)
        return s[inverse], f[inverse]

    def _posterior_from_counts(
        self, s: np.ndarray, f: np.ndarray, rank: np.ndarray | None
    ) -> Posterior | GridPosterior:
        if self.prior_kind == "beta":
            return Posterior(self.prior_alpha + s, self.prior_beta + f, rank=rank)
        assert self.prior_grid is not None and self.prior_weights is not None
        log_w = _log_grid_likelihood(self.prior_grid, s, f) + special.xlogy(1.0, self.prior_weights)
        log_w -= log_w.max(axis=1, keepdims=True)
        w = np.exp(log_w)
        w /= w.sum(axis=1, keepdims=True)
        return GridPosterior(self.prior_grid, w, rank=rank)

    def posterior(
        self, prompt_ids: Any, *, with_rank: bool = False, rank_by: str = "mean"
    ) -> Posterior | GridPosterior:
        """Posterior of each id in order (the prior for unseen ids).

        Args:
            prompt_ids: Hashable ids.
            with_rank: Also fill ``rank`` (see :meth:`rank`).
            rank_by: ``"mean"`` or ``"accuracy"``, passed to :meth:`rank`.

        Returns:
            A :class:`Posterior`, or a :class:`GridPosterior` after ``fit_prior(kind="grid")``.
        """
        s, f = self.counts(prompt_ids)
        rank = self.rank(prompt_ids, by=rank_by) if with_rank else None
        return self._posterior_from_counts(s, f, rank)

    def mean(self, prompt_ids: Any) -> np.ndarray:
        """Posterior mean success rate of each id."""
        return self.posterior(prompt_ids).mean

    def variance(self, prompt_ids: Any) -> np.ndarray:
        """Posterior variance of each id's success rate."""
        return self.posterior(prompt_ids).variance

    def sample(self, prompt_ids: Any, rng: np.random.Generator) -> np.ndarray:
        """One posterior draw of each id's success rate."""
        return self.posterior(prompt_ids).sample(rng)

    def _all_scores(self, by: str) -> np.ndarray:
        n = len(self)
        s, f = self._s[:n], self._f[:n]
        if by == "accuracy":
            total = s + f
            return np.divide(s, total, out=np.zeros(n), where=total > 0)
        chunks = [
            self._posterior_from_counts(s[k : k + 65536], f[k : k + 65536], None).mean
            for k in range(0, n, 65536)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0)

    def rank(self, prompt_ids: Any, *, by: str = "mean") -> np.ndarray:
        r"""Difficulty percentile of each id over all tracked prompts (1 = hardest).

        :math:`k_i = |\{j : a_j > a_i\}| / N`, the share of the :math:`N` tracked prompts that are
        easier, where :math:`a` is the posterior mean (``by="mean"``) or the raw accuracy
        :math:`\tilde s/(\tilde s+\tilde f)` with unseen prompts at 0 (``by="accuracy"``, the E3
        paper's "position / |D|" with ties sharing the lowest position).
        """
        check_choice("by", by, ("mean", "accuracy"))
        n = len(self)
        if n == 0:
            return np.zeros(len(self._unique(prompt_ids)[1]))
        if by not in self._sorted_cache:
            self._sorted_cache[by] = np.sort(self._all_scores(by))
        ordered = self._sorted_cache[by]
        if by == "accuracy":
            s, f = self.counts(prompt_ids)
            total = s + f
            score = np.divide(s, total, out=np.zeros(len(s)), where=total > 0)
        else:
            score = self.posterior(prompt_ids).mean
        easier = n - np.searchsorted(ordered, score, side="right")
        return easier / n

    # --------------------------------------------------------- prior refits
    def _fit_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self)
        s, f = self._s[:n], self._f[:n]
        seen = (s + f) > 0
        if not seen.any():
            raise ValueError("fit_prior needs at least one tracked prompt with trials > 0")
        # Counts at 0.01 resolution: exact for integer (undecayed) counts, and it bounds the
        # number of distinct rows for decayed ones.
        pairs = np.round(np.stack([s[seen], f[seen]], axis=1), 2)
        uniq, weight = np.unique(pairs, axis=0, return_counts=True)
        return uniq[:, 0], uniq[:, 1], weight.astype(np.float64)

    def fit_prior(
        self,
        kind: str = "beta",
        *,
        grid_size: int = 101,
        max_iter: int = 2000,
        tol: float = 1e-9,
    ) -> dict[str, Any]:
        r"""Refit the population prior by maximum marginal likelihood (empirical Bayes).

        ``"beta"`` maximises :math:`\sum_i \log B(\alpha_0+\tilde s_i, \beta_0+\tilde f_i) -
        \log B(\alpha_0,\beta_0)` over :math:`\alpha_0,\beta_0 \in [10^{-3}, 10^4]`. ``"grid"``
        fits mixing weights :math:`\pi_k` on ``grid_size`` evenly spaced rates (0 and 1 included,
        so "never" and "always solved" get point masses) by EM:
        :math:`\pi_k \leftarrow \frac1N\sum_i \pi_k L_{ik}/\sum_{k'}\pi_{k'}L_{ik'}` with
        :math:`L_{ik} = g_k^{\tilde s_i}(1-g_k)^{\tilde f_i}`.

        Args:
            kind: ``"beta"`` or ``"grid"``.
            grid_size: Number of grid points (``"grid"`` only), at least 3.
            max_iter: Iteration cap of the optimiser or of EM.
            tol: Stop EM when the mean log-likelihood improves by less than this.

        Returns:
            The fitted prior: ``{"kind", "alpha", "beta"}`` or ``{"kind", "grid", "weights"}``,
            with the mean marginal log-likelihood per prompt as ``"loglik"``.
        """
        check_choice("kind", kind, ("beta", "grid"))
        grid_size = check_int("grid_size", grid_size, low=3)
        max_iter = check_int("max_iter", max_iter, low=1)
        tol = check_float("tol", tol, low=0.0)
        s, f, c = self._fit_data()
        total = c.sum()
        if kind == "beta":

            def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
                a, b = np.exp(theta)
                ll = c @ (special.betaln(a + s, b + f) - special.betaln(a, b))
                dig_ab = special.digamma(a + b + s + f) - special.digamma(a + b)
                da = c @ (special.digamma(a + s) - special.digamma(a) - dig_ab)
                db = c @ (special.digamma(b + f) - special.digamma(b) - dig_ab)
                return -ll / total, -np.array([da * a, db * b]) / total

            x0 = np.log([self.prior_alpha, self.prior_beta])
            bounds = [(np.log(1e-3), np.log(1e4))] * 2
            res = optimize.minimize(
                neg, np.clip(x0, *bounds[0]), jac=True, method="L-BFGS-B", bounds=bounds
            )
            self.prior_alpha, self.prior_beta = (float(v) for v in np.exp(res.x))
            self.prior_kind = "beta"
            self.prior_grid = self.prior_weights = None
            self._sorted_cache.clear()
            return {
                "kind": "beta",
                "alpha": self.prior_alpha,
                "beta": self.prior_beta,
                "loglik": float(-res.fun),
            }
        grid = np.linspace(0.0, 1.0, grid_size)
        log_l = _log_grid_likelihood(grid, s, f)
        row_max = log_l.max(axis=1, keepdims=True)
        lik = np.exp(log_l - row_max)
        pi = np.full(grid_size, 1.0 / grid_size)
        prev = -np.inf
        for _ in range(max_iter):
            mix = lik @ pi
            ll = (c @ (np.log(mix) + row_max[:, 0])) / total
            pi = pi * (lik.T @ (c / mix)) / total
            pi /= pi.sum()
            if ll - prev < tol:
                break
            prev = ll
        self.prior_kind = "grid"
        self.prior_grid = grid
        self.prior_weights = pi
        self._sorted_cache.clear()
        return {"kind": "grid", "grid": grid.copy(), "weights": pi.copy(), "loglik": float(ll)}

    # ----------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (numpy arrays and plain Python values)."""
        n = len(self)
        return {
            "version": 1,
            "prior_alpha": self.prior_alpha,
            "prior_beta": self.prior_beta,
            "decay": self.decay,
            "prior_kind": self.prior_kind,
            "prior_grid": None if self.prior_grid is None else self.prior_grid.copy(),
            "prior_weights": None if self.prior_weights is None else self.prior_weights.copy(),
            "ids": list(self._ids),
            "successes": self._s[:n].copy(),
            "failures": self._f[:n].copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly."""
        required = {"prior_alpha", "prior_beta", "decay", "prior_kind", "ids", "successes"}
        missing = required - set(state) - {"failures"}
        if missing or "failures" not in state:
            raise ValueError(
                f"state is missing keys {sorted(missing | ({'failures'} - set(state)))}"
            )
        ids = list(state["ids"])
        s = np.array(state["successes"], dtype=np.float64)
        f = np.array(state["failures"], dtype=np.float64)
        if not (len(ids) == len(s) == len(f)):
            raise ValueError(
                f"state ids, successes and failures differ in length: {len(ids)}, {len(s)}, "
                f"{len(f)}"
            )
        kind = check_choice("state['prior_kind']", state["prior_kind"], ("beta", "grid"))
        self.prior_alpha = check_float("prior_alpha", state["prior_alpha"], low=0, low_open=True)
        self.prior_beta = check_float("prior_beta", state["prior_beta"], low=0, low_open=True)
        self.decay = check_float("decay", state["decay"], low=0, high=1, low_open=True)
        self.prior_kind = kind
        grid, weights = state.get("prior_grid"), state.get("prior_weights")
        self.prior_grid = None if grid is None else np.array(grid, dtype=np.float64)
        self.prior_weights = None if weights is None else np.array(weights, dtype=np.float64)
        if kind == "grid" and (self.prior_grid is None or self.prior_weights is None):
            raise ValueError("a grid prior state needs prior_grid and prior_weights")
        self._ids = ids
        self._index = {pid: row for row, pid in enumerate(ids)}
        if len(self._index) != len(ids):
            raise ValueError("state ids must be unique")
        self._s, self._f = s.copy(), f.copy()
        self._sorted_cache.clear()
