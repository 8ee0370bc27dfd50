r"""Population priors over prompts' success rates, and their empirical-Bayes fits.

A prior :math:`\pi(p)` says what the success rate of a prompt never seen is; with a prompt's
decayed counts :math:`(\tilde s, \tilde f)` it gives the prompt's posterior
:math:`\pi(p \mid \tilde s, \tilde f) \propto \pi(p)\,p^{\tilde s}(1-p)^{\tilde f}`. Priors
are immutable objects that build their own posteriors:

* :class:`BetaPrior` :math:`\mathrm{Beta}(\alpha_0, \beta_0)`, conjugate: posteriors are
  :class:`~e3core.posteriors.Posterior`;
* :class:`GridPrior`, masses :math:`\pi_k` on a grid of rates :math:`g_k`: posteriors are
  :class:`~e3core.posteriors.GridPosterior`.

Real difficulty is U-shaped (many prompts are always or never solved), so the prior is refitted
from the tracked counts by maximum marginal likelihood (empirical Bayes) with the pure functions
:func:`fit_beta_prior` (beta-binomial likelihood, L-BFGS-B) and :func:`fit_grid_prior` (EM on
the grid). :data:`PRIORS` names the kinds (``"grid"``, ``"beta"``) for settings, the
scheduler's ``refit_prior`` and :meth:`~e3core.BetaDifficultyTracker.fit_prior`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from scipy import optimize, special

from e3core._registry import Registry
from e3core._validation import _show, as_float_array, check_float, check_int, check_state_keys
from e3core.posteriors import GridPosterior, Posterior, _check_rank

__all__ = [
    "PRIORS",
    "BetaPrior",
    "GridPrior",
    "Prior",
    "fit_beta_prior",
    "fit_grid_prior",
    "prior_from_state",
]


def _log_grid_likelihood(grid: np.ndarray, s: np.ndarray, f: np.ndarray) -> np.ndarray:
    r"""``[N, K]`` log of :math:`g^s (1-g)^f` with :math:`0 \log 0 = 0`."""
    return special.xlogy(s[:, None], grid[None, :]) + special.xlogy(f[:, None], 1.0 - grid[None, :])


def _check_counts(successes: Any, failures: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_float_array("successes", successes)
    f = as_float_array("failures", failures)
    if len(s) != len(f):
        raise ValueError(
            f"successes and failures must have the same length, got {len(s)} and {len(f)}"
        )
    for name, arr in (("successes", s), ("failures", f)):
        if (arr < 0).any():
            raise ValueError(f"{name} must be >= 0, got {arr[arr < 0][0]}")
    return s, f


def _check_fit_data(
    successes: Any, failures: Any, weights: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Counts and per-row weights (multiplicities) of a prior fit, checked."""
    s, f = _check_counts(successes, failures)
    if len(s) == 0:
        raise ValueError("a prior fit needs at least one prompt's counts, got none")
    if weights is None:
        return s, f, np.ones(len(s))
    c = as_float_array("weights", weights)
    if len(c) != len(s):
        raise ValueError(f"weights must have one entry per prompt ({len(s)}), got {len(c)}")
    if (c < 0).any() or c.sum() <= 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    return s, f, c


def _frozen_copy(arr: np.ndarray) -> np.ndarray:
    out = np.array(arr, dtype=np.float64)
    out.flags.writeable = False
    return out


class Prior:
    r"""A population prior over prompts' success rates :math:`p`, before any prompt is seen.

    A prior turns a prompt's decayed counts :math:`(\tilde s, \tilde f)` into its posterior
    :math:`\pi(p \mid \tilde s, \tilde f) \propto \pi(p)\,p^{\tilde s}(1-p)^{\tilde f}`. Priors are
    immutable values; :class:`~e3core.BetaDifficultyTracker` holds one as ``tracker.prior`` and
    replaces it when it refits. Each kind is registered in :data:`PRIORS` under its
    :attr:`kind`.
    """

    kind: ClassVar[str]
    #: The keys of :meth:`state_dict` (``kind`` included); :func:`prior_from_state` checks them.
    state_keys: ClassVar[frozenset[str]]

    def posterior(
        self, successes: Any, failures: Any, *, rank: Any = None
    ) -> Posterior | GridPosterior:
        r"""The posterior of prompts with these (decayed) success and failure counts.

        Args:
            successes: Non-negative finite counts :math:`\tilde s`, one per prompt.
            failures: Non-negative finite counts :math:`\tilde f`, same length.
            rank: Optional difficulty percentile per prompt, passed to the posterior.
        """
        s, f = _check_counts(successes, failures)
        return self._posterior(s, f, _check_rank(rank, len(s)))

    def _posterior(
        self, s: np.ndarray, f: np.ndarray, rank: np.ndarray | None
    ) -> Posterior | GridPosterior:
        raise NotImplementedError

    def log_marginal(self, successes: Any, failures: Any, weights: Any = None) -> float:
        r"""Mean marginal log-likelihood per prompt of counts under this prior.

        :math:`\frac{1}{\sum_i c_i}\sum_i c_i \log \int \pi(p)\,p^{\tilde s_i}
        (1-p)^{\tilde f_i}\,dp`, binomial coefficients left out (they do not depend on the
        prior): what :func:`fit_beta_prior` and :func:`fit_grid_prior` maximise.

        Args:
            successes: Non-negative counts per prompt.
            failures: Non-negative counts per prompt, same length.
            weights: Multiplicity :math:`c_i \ge 0` of each row (None: 1 each).
        """
        s, f, c = _check_fit_data(successes, failures, weights)
        return self._log_marginal(s, f, c)

    def _log_marginal(self, s: np.ndarray, f: np.ndarray, c: np.ndarray) -> float:
        raise NotImplementedError

    @property
    def mean(self) -> float:
        """The prior mean success rate."""
        raise NotImplementedError

    def summary(self) -> dict[str, float]:
        """A few numbers that describe the prior, for logging (the scheduler's ``e3/`` metrics)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The prior as plain data, ``{"kind": ..., ...}``; :func:`prior_from_state` inverts it."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Prior:
        """The prior a :meth:`state_dict` describes."""
        raise NotImplementedError


@dataclass(frozen=True)
class BetaPrior(Prior):
    r"""The conjugate prior :math:`p \sim \mathrm{Beta}(\alpha_0, \beta_0)`.

    The posterior of counts :math:`(\tilde s, \tilde f)` is
    :math:`\mathrm{Beta}(\alpha_0 + \tilde s, \beta_0 + \tilde f)` (a :class:`Posterior`).

    Args:
        alpha: :math:`\alpha_0 > 0`.
        beta: :math:`\beta_0 > 0`.
    """

    alpha: float = 1.0
    beta: float = 1.0
    kind: ClassVar[str] = "beta"
    state_keys: ClassVar[frozenset[str]] = frozenset({"kind", "alpha", "beta"})

    def __post_init__(self) -> None:
        object.__setattr__(self, "alpha", check_float("alpha", self.alpha, low=0.0, low_open=True))
        object.__setattr__(self, "beta", check_float("beta", self.beta, low=0.0, low_open=True))

    def _posterior(self, s: np.ndarray, f: np.ndarray, rank: np.ndarray | None) -> Posterior:
        return Posterior(self.alpha + s, self.beta + f, rank=rank)

    def _log_marginal(self, s: np.ndarray, f: np.ndarray, c: np.ndarray) -> float:
        r""":math:`\log B(\alpha_0+\tilde s, \beta_0+\tilde f) - \log B(\alpha_0, \beta_0)`."""
        a, b = self.alpha, self.beta
        return float(c @ (special.betaln(a + s, b + f) - special.betaln(a, b)) / c.sum())

    @property
    def mean(self) -> float:
        r""":math:`\alpha_0 / (\alpha_0 + \beta_0)`."""
        return self.alpha / (self.alpha + self.beta)

    def summary(self) -> dict[str, float]:
        """``prior_alpha`` and ``prior_beta``."""
        return {"prior_alpha": self.alpha, "prior_beta": self.beta}

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "beta", "alpha": ..., "beta": ...}``."""
        return {"kind": self.kind, "alpha": self.alpha, "beta": self.beta}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> BetaPrior:
        """See :meth:`Prior.from_state`."""
        return cls(state["alpha"], state["beta"])


@dataclass(frozen=True, eq=False)
class GridPrior(Prior):
    r"""A nonparametric prior: mass :math:`\pi_k` on success rate :math:`g_k` of a fixed grid.

    The posterior of counts :math:`(\tilde s, \tilde f)` puts weight
    :math:`w_k \propto \pi_k\, g_k^{\tilde s} (1-g_k)^{\tilde f}` on :math:`g_k` (a
    :class:`GridPosterior`). With 0 and 1 on the grid, "never solved" and "always solved" get
    point masses, which the U-shaped difficulty of real datasets needs. The arrays are stored
    read-only.

    Args:
        grid: The ``K`` success rates, strictly increasing inside ``[0, 1]``.
        weights: The ``K`` prior masses, non-negative, summing to 1.
    """

    grid: np.ndarray
    weights: np.ndarray
    kind: ClassVar[str] = "grid"
    state_keys: ClassVar[frozenset[str]] = frozenset({"kind", "grid", "weights"})

    def __post_init__(self) -> None:
        grid = as_float_array("grid", self.grid)
        weights = as_float_array("weights", self.weights)
        if len(grid) < 2 or ((grid < 0) | (grid > 1)).any() or (np.diff(grid) <= 0).any():
            raise ValueError(
                f"grid must hold at least 2 strictly increasing rates inside [0, 1], got {grid}"
            )
        if len(weights) != len(grid):
            raise ValueError(
                f"weights must have one entry per grid point ({len(grid)}), got {len(weights)}"
            )
        if (weights < 0).any() or not np.isclose(weights.sum(), 1.0, rtol=0.0, atol=1e-8):
            raise ValueError(f"weights must be >= 0 and sum to 1, got sum {weights.sum()}")
        object.__setattr__(self, "grid", _frozen_copy(grid))
        object.__setattr__(self, "weights", _frozen_copy(weights))

    def _posterior(self, s: np.ndarray, f: np.ndarray, rank: np.ndarray | None) -> GridPosterior:
        log_w = _log_grid_likelihood(self.grid, s, f) + special.xlogy(1.0, self.weights)
        top = log_w.max(axis=1, keepdims=True)
        impossible = np.isneginf(top[:, 0])
        if impossible.any():
            k = int(np.flatnonzero(impossible)[0])
            raise ValueError(
                f"successes={s[k]}, failures={f[k]} (position {k}) are impossible under this "
                f"GridPrior: every rate with prior mass gives them probability 0"
            )
        log_w -= top
        w = np.exp(log_w)
        w /= w.sum(axis=1, keepdims=True)
        return GridPosterior(self.grid, w, rank=rank)

    def _log_marginal(self, s: np.ndarray, f: np.ndarray, c: np.ndarray) -> float:
        r""":math:`\log \sum_k \pi_k\, g_k^{\tilde s}(1-g_k)^{\tilde f}`."""
        log_joint = _log_grid_likelihood(self.grid, s, f) + special.xlogy(1.0, self.weights)
        top = log_joint.max(axis=1)
        possible = np.isfinite(top)  # else no rate with prior mass gives the counts: -inf
        shift = np.where(possible, top, 0.0)
        with np.errstate(divide="ignore"):
            log_mix = np.log(np.exp(log_joint - shift[:, None]).sum(axis=1)) + shift
        return float(c @ np.where(possible, log_mix, -np.inf) / c.sum())

    @property
    def mean(self) -> float:
        r""":math:`\sum_k \pi_k g_k`."""
        return float(self.weights @ self.grid)

    def summary(self) -> dict[str, float]:
        """``prior_mass_never`` (mass at rate 0), ``prior_mass_always`` (at 1), ``prior_mean``."""
        return {
            "prior_mass_never": float(self.weights[self.grid == 0.0].sum()),
            "prior_mass_always": float(self.weights[self.grid == 1.0].sum()),
            "prior_mean": self.mean,
        }

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "grid", "grid": ..., "weights": ...}`` (writable copies)."""
        return {"kind": self.kind, "grid": self.grid.copy(), "weights": self.weights.copy()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> GridPrior:
        """See :meth:`Prior.from_state`."""
        return cls(state["grid"], state["weights"])


#: Prior kinds by name (the ``kind`` of :meth:`~e3core.BetaDifficultyTracker.fit_prior`, the
#: scheduler's ``refit_prior``, the settings' ``refit_prior``), in the order settings list them.
PRIORS: Registry[type[Prior]] = Registry("prior")
PRIORS.add("grid", GridPrior)
PRIORS.add("beta", BetaPrior)


def prior_from_state(state: Mapping[str, Any], *, where: str = "prior state") -> Prior:
    """The prior a :meth:`Prior.state_dict` describes (its ``kind`` names it in :data:`PRIORS`).

    Args:
        state: ``{"kind": ..., ...}`` with exactly the keys of that kind's state.
        where: The state's name in messages (e.g. ``"state['prior']"``).

    Raises:
        TypeError, ValueError: A missing, unknown or bad field, named under ``where``.
    """
    if not isinstance(state, Mapping) or "kind" not in state:
        raise ValueError(f"{where} must be a mapping with a 'kind', got {_show(state)}")
    cls = PRIORS.get(state["kind"], argument=f"{where}['kind']")
    check_state_keys(where, state, cls.state_keys)
    try:
        return cls.from_state(state)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from exc


def fit_beta_prior(
    successes: Any,
    failures: Any,
    weights: Any = None,
    *,
    start: BetaPrior | None = None,
    max_iter: int = 2000,
) -> BetaPrior:
    r"""The Beta prior of maximum marginal (beta-binomial) likelihood: empirical Bayes.

    Maximises :math:`\sum_i c_i \bigl[\log B(\alpha_0+\tilde s_i, \beta_0+\tilde f_i) -
    \log B(\alpha_0,\beta_0)\bigr]` over :math:`\alpha_0,\beta_0 \in [10^{-3}, 10^4]` by L-BFGS-B
    on :math:`\log\alpha_0, \log\beta_0` with the exact gradient. A pure function of its inputs.

    Args:
        successes: Non-negative counts :math:`\tilde s_i`.
        failures: Non-negative counts :math:`\tilde f_i`, same length.
        weights: Multiplicity :math:`c_i \ge 0` of each row (None: 1 each).
        start: Where the optimiser starts (None: Beta(1, 1)).
        max_iter: Iteration cap of the optimiser.
    """
    s, f, c = _check_fit_data(successes, failures, weights)
    max_iter = check_int("max_iter", max_iter, low=1)
    if start is None:
        start = BetaPrior()
    if not isinstance(start, BetaPrior):
        raise TypeError(f"start must be a BetaPrior or None, got {type(start).__name__}")
    total = c.sum()

    def neg(theta: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = np.exp(theta)
        ll = c @ (special.betaln(a + s, b + f) - special.betaln(a, b))
        dig_ab = special.digamma(a + b + s + f) - special.digamma(a + b)
        da = c @ (special.digamma(a + s) - special.digamma(a) - dig_ab)
        db = c @ (special.digamma(b + f) - special.digamma(b) - dig_ab)
        return -ll / total, -np.array([da * a, db * b]) / total

    x0 = np.log([start.alpha, start.beta])
    bounds = [(np.log(1e-3), np.log(1e4))] * 2
    res = optimize.minimize(
        neg,
        np.clip(x0, *bounds[0]),
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        options={"maxiter": max_iter},
    )
    alpha, beta = (float(v) for v in np.exp(res.x))
    return BetaPrior(alpha, beta)


def fit_grid_prior(
    successes: Any,
    failures: Any,
    weights: Any = None,
    *,
    grid_size: int = 101,
    max_iter: int = 2000,
    tol: float = 1e-9,
) -> GridPrior:
    r"""The grid prior of maximum marginal likelihood, by EM: empirical Bayes, nonparametric.

    Mixing weights :math:`\pi_k` on ``grid_size`` evenly spaced rates (0 and 1 included, so
    "never" and "always solved" get point masses), from uniform weights:
    :math:`\pi_k \leftarrow \frac{1}{\sum_i c_i}\sum_i c_i\, \pi_k L_{ik}/\sum_{k'}\pi_{k'}L_{ik'}`
    with :math:`L_{ik} = g_k^{\tilde s_i}(1-g_k)^{\tilde f_i}`. A pure function of its inputs.

    Args:
        successes: Non-negative counts :math:`\tilde s_i`.
        failures: Non-negative counts :math:`\tilde f_i`, same length.
        weights: Multiplicity :math:`c_i \ge 0` of each row (None: 1 each).
        grid_size: Number of grid points, at least 3.
        max_iter: Iteration cap of EM.
        tol: Stop when the mean log-likelihood improves by less than this.
    """
    s, f, c = _check_fit_data(successes, failures, weights)
    grid_size = check_int("grid_size", grid_size, low=3)
    max_iter = check_int("max_iter", max_iter, low=1)
    tol = check_float("tol", tol, low=0.0)
    total = c.sum()
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
    return GridPrior(grid, pi)
