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

The tracker holds the population prior as an object (``tracker.prior``: a
:class:`~e3core.priors.BetaPrior` or :class:`~e3core.priors.GridPrior`, see :mod:`e3core.priors`)
that builds the posteriors (:mod:`e3core.posteriors`) of the tracked counts, and refits it by
empirical Bayes (:meth:`~BetaDifficultyTracker.fit_prior`). :data:`RANK_BY` names the
scheduler's ``rank_by`` rules (``"mean"``, ``"epoch_accuracy"``) and maps each to the tracker
score (:data:`RANK_SCORES`) it ranks by. This module also re-exports the names of
:mod:`e3core.posteriors` and :mod:`e3core.priors`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from e3core._registry import Registry
from e3core._validation import (
    _show,
    as_count_array,
    as_float_array,
    check_choice,
    check_float,
    check_int,
    check_state_keys,
)
from e3core.posteriors import GridPosterior, Posterior, PosteriorLike
from e3core.priors import (
    PRIORS,
    BetaPrior,
    GridPrior,
    Prior,
    fit_beta_prior,
    fit_grid_prior,
    prior_from_state,
)

__all__ = [
    "PRIORS",
    "RANK_BY",
    "RANK_SCORES",
    "BetaDifficultyTracker",
    "BetaPrior",
    "GridPosterior",
    "GridPrior",
    "Posterior",
    "PosteriorLike",
    "Prior",
    "RankRule",
    "ResolvedIds",
    "fit_beta_prior",
    "fit_grid_prior",
    "prior_from_state",
]


#: The scores :meth:`BetaDifficultyTracker.rank` ranks by (its ``by=``).
RANK_SCORES = ("mean", "accuracy")


@dataclass(frozen=True)
class RankRule:
    """How a scheduler ranks prompts by difficulty: what a ``rank_by`` name means.

    Args:
        by: The tracker's score, passed to :meth:`BetaDifficultyTracker.rank` as ``by``:
            ``"mean"`` (posterior mean) or ``"accuracy"`` (raw accuracy, the E3 paper's).
        per_epoch: Freeze the tracked prompts' ranks at each epoch end (the paper) instead of
            ranking live; prompts first seen since the last epoch end are ranked live.
    """

    by: str
    per_epoch: bool = False

    def __post_init__(self) -> None:
        check_choice("by", self.by, RANK_SCORES)


#: The scheduler's (and settings') ``rank_by`` names and what each means; the one place that maps
#: them to the tracker's :data:`RANK_SCORES`.
RANK_BY: Registry[RankRule] = Registry("rank rule")
RANK_BY.add("mean", RankRule("mean"))
RANK_BY.add("epoch_accuracy", RankRule("accuracy", per_epoch=True))


@dataclass(frozen=True, eq=False)
class ResolvedIds:
    """A batch of prompt ids looked up in a tracker once, for several queries on that batch.

    Made by :meth:`BetaDifficultyTracker.resolve`; every query of the tracker (:meth:`~
    BetaDifficultyTracker.posterior`, :meth:`~BetaDifficultyTracker.rank`, :meth:`~
    BetaDifficultyTracker.counts`, :meth:`~BetaDifficultyTracker.rows`, ...) accepts one in place
    of the ids and then skips the lookup. It is valid until the tracker's counts change
    (:meth:`~BetaDifficultyTracker.update`, :meth:`~BetaDifficultyTracker.load_state_dict`); a
    stale one, or one from another tracker, is refused. The arrays are read-only.

    Attributes:
        rows: Storage row per position, ``-1`` for ids never observed.
        successes: Decayed success count per position (0 for unseen ids).
        failures: Decayed failure count per position (0 for unseen ids).
    """

    rows: np.ndarray
    successes: np.ndarray
    failures: np.ndarray
    _token: object = field(repr=False)

    def __len__(self) -> int:
        """Number of positions (ids, repeats included)."""
        return len(self.rows)


class BetaDifficultyTracker:
    r"""Decayed success/failure counts per prompt and their posteriors under a population prior.

    Per prompt id (any hashable; unseen ids get the prior) an update with :math:`s` successes out
    of :math:`t` trials does :math:`\tilde s \leftarrow \lambda\tilde s + s`,
    :math:`\tilde f \leftarrow \lambda\tilde f + (t-s)`; the posterior is the prior's posterior
    of :math:`(\tilde s, \tilde f)`, :math:`\mathrm{Beta}(\alpha_0+\tilde s, \beta_0+\tilde f)`
    under the initial :class:`BetaPrior`. Repeated ids in one call accumulate (decayed once,
    then all their counts added). Storage is two float64 arrays and an id-to-row dictionary, so a
    million prompts cost about 16 MB plus the ids.

    Args:
        prior_alpha: :math:`\alpha_0 > 0` of the initial Beta population prior.
        prior_beta: :math:`\beta_0 > 0` of the initial Beta population prior.
        decay: :math:`\lambda \in (0, 1]`; 1 keeps all history (the E3 paper's cumulative accuracy).
        prior: The initial population prior as an object instead (a :class:`BetaPrior` or
            :class:`GridPrior`); then ``prior_alpha`` and ``prior_beta`` must stay at 1.

    Attributes:
        prior: The current population prior (a :class:`Prior`); :meth:`fit_prior` replaces it,
            and it may be assigned.
    """

    def __init__(
        self,
        prior_alpha: float = 1.0,
        prior_beta: float = 1.0,
        decay: float = 1.0,
        *,
        prior: Prior | None = None,
    ):
        alpha = check_float("prior_alpha", prior_alpha, low=0.0, low_open=True)
        beta = check_float("prior_beta", prior_beta, low=0.0, low_open=True)
        self.decay = check_float("decay", decay, low=0.0, high=1.0, low_open=True)
        if prior is not None and (alpha, beta) != (1.0, 1.0):
            raise ValueError(
                f"give the initial prior as prior_alpha/prior_beta or as prior, not both; got "
                f"prior_alpha={alpha}, prior_beta={beta} and prior={prior!r}"
            )
        self._sorted_cache: dict[str, np.ndarray] = {}
        self.prior = BetaPrior(alpha, beta) if prior is None else prior
        self._index: dict[Hashable, int] = {}
        self._ids: list[Hashable] = []
        self._s = np.zeros(0, dtype=np.float64)
        self._f = np.zeros(0, dtype=np.float64)
        self._token = object()  # replaced whenever counts change: ResolvedIds check it

    @property
    def prior(self) -> Prior:
        """The current population prior."""
        return self._prior

    @prior.setter
    def prior(self, prior: Prior) -> None:
        if not isinstance(prior, Prior):
            raise TypeError(
                f"prior must be a Prior (e.g. "
                f"{', '.join(PRIORS.get(name).__name__ for name in PRIORS)}), "
                f"got {type(prior).__name__}"
            )
        self._prior = prior
        self._sorted_cache.clear()  # mean ranks depend on the prior

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

    def resolve(self, prompt_ids: Any) -> ResolvedIds:
        """Look ``prompt_ids`` up once; pass the result to several queries on the same batch.

        Args:
            prompt_ids: Hashable ids (repeats allowed), or a :class:`ResolvedIds` of this tracker
                (returned as it is if still valid).

        Raises:
            ValueError: A :class:`ResolvedIds` from before the last change of the counts, or
                from another tracker.
        """
        if isinstance(prompt_ids, ResolvedIds):
            if prompt_ids._token is not self._token:
                raise ValueError(
                    "prompt_ids is a ResolvedIds from another tracker or from before this "
                    "tracker's last update/load_state_dict: resolve the ids again"
                )
            return prompt_ids
        rows, inverse = self._rows(prompt_ids, create=False)
        known = rows >= 0
        if known.any():
            safe = np.maximum(rows, 0)
            s = np.where(known, self._s[safe], 0.0)[inverse]
            f = np.where(known, self._f[safe], 0.0)[inverse]
        else:
            s = np.zeros(len(inverse))
            f = np.zeros(len(inverse))
        rows = rows[inverse]
        for arr in (rows, s, f):
            arr.flags.writeable = False
        return ResolvedIds(rows, s, f, self._token)

    def rows(self, prompt_ids: Any) -> np.ndarray:
        """Storage row of each id, ``-1`` for ids never observed (rows are stable)."""
        return self.resolve(prompt_ids).rows.copy()

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
        self._counts_changed()

    def _counts_changed(self) -> None:
        self._sorted_cache.clear()
        self._token = object()

    # ----------------------------------------------------------- posteriors
    def counts(self, prompt_ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """Decayed success and failure counts of ``prompt_ids`` (0 for unseen ids)."""
        ids = self.resolve(prompt_ids)
        return ids.successes.copy(), ids.failures.copy()

    def posterior(
        self, prompt_ids: Any, *, with_rank: bool = False, by: str = "mean"
    ) -> Posterior | GridPosterior:
        """Posterior of each id in order (the prior for unseen ids), from :attr:`prior`.

        Args:
            prompt_ids: Hashable ids, or a :class:`ResolvedIds` of this tracker.
            with_rank: Also fill ``rank`` (see :meth:`rank`); the ids are looked up once for
                both.
            by: The rank's score, ``"mean"`` or ``"accuracy"``, as for :meth:`rank`.

        Returns:
            A :class:`Posterior` under a :class:`BetaPrior`, a :class:`GridPosterior` under a
            :class:`GridPrior` (after ``fit_prior(kind="grid")``).
        """
        if with_rank:
            check_choice("by", by, RANK_SCORES)
        ids = self.resolve(prompt_ids)
        post = self._prior._posterior(ids.successes, ids.failures, None)
        if not with_rank:
            return post
        return dataclasses.replace(post, rank=self._rank(ids, by, post))

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
            self._prior._posterior(s[k : k + 65536], f[k : k + 65536], None).mean
            for k in range(0, n, 65536)
        ]
        return np.concatenate(chunks) if chunks else np.zeros(0)

    def rank(self, prompt_ids: Any, *, by: str = "mean") -> np.ndarray:
        r"""Difficulty percentile of each id over all tracked prompts (1 = hardest).

        :math:`k_i = |\{j : a_j > a_i\}| / N`, the share of the :math:`N` tracked prompts that are
        easier, where :math:`a` is the posterior mean (``by="mean"``) or the raw accuracy
        :math:`\tilde s/(\tilde s+\tilde f)` with unseen prompts at 0 (``by="accuracy"``, the E3
        paper's "position / |D|" with ties sharing the lowest position). The scheduler's
        ``rank_by`` names map to these scores in :data:`RANK_BY`.

        Args:
            prompt_ids: Hashable ids, or a :class:`ResolvedIds` of this tracker.
            by: A name in :data:`RANK_SCORES`: ``"mean"`` or ``"accuracy"``.
        """
        check_choice("by", by, RANK_SCORES)
        return self._rank(self.resolve(prompt_ids), by, None)

    def _rank(
        self, ids: ResolvedIds, by: str, post: Posterior | GridPosterior | None
    ) -> np.ndarray:
        """:meth:`rank` of resolved ids; ``post``: their posterior, if already built."""
        n = len(self)
        if n == 0:
            return np.zeros(len(ids))
        if by not in self._sorted_cache:
            self._sorted_cache[by] = np.sort(self._all_scores(by))
        ordered = self._sorted_cache[by]
        if by == "accuracy":
            s, f = ids.successes, ids.failures
            total = s + f
            score = np.divide(s, total, out=np.zeros(len(s)), where=total > 0)
        else:
            if post is None:
                post = self._prior._posterior(ids.successes, ids.failures, None)
            score = post.mean
        easier = n - np.searchsorted(ordered, score, side="right")
        return easier / n

    # --------------------------------------------------------- prior refits
    def _fit_data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = len(self)
        s, f = self._s[:n], self._f[:n]
        seen = (s + f) > 0
        if not seen.any():
            raise ValueError("fit_prior needs at least one tracked prompt with trials > 0")
        return _count_histogram(s[seen], f[seen])

    def fit_prior(
        self,
        kind: str = "beta",
        *,
        grid_size: int = 101,
        max_iter: int = 2000,
        tol: float = 1e-9,
    ) -> dict[str, Any]:
        r"""Refit the population prior by maximum marginal likelihood (empirical Bayes).

        Replaces :attr:`prior` with :func:`fit_beta_prior` (``"beta"``, started from the current
        prior when that is a Beta) or :func:`fit_grid_prior` (``"grid"``) of all tracked counts
        (prompts with trials, counts rounded to 0.01 and pooled):
        ``"beta"`` maximises :math:`\sum_i \log B(\alpha_0+\tilde s_i, \beta_0+\tilde f_i) -
        \log B(\alpha_0,\beta_0)` over :math:`\alpha_0,\beta_0 \in [10^{-3}, 10^4]`; ``"grid"``
        fits mixing weights :math:`\pi_k` on ``grid_size`` evenly spaced rates (0 and 1 included,
        so "never" and "always solved" get point masses) by EM:
        :math:`\pi_k \leftarrow \frac1N\sum_i \pi_k L_{ik}/\sum_{k'}\pi_{k'}L_{ik'}` with
        :math:`L_{ik} = g_k^{\tilde s_i}(1-g_k)^{\tilde f_i}`.

        Args:
            kind: A name in :data:`PRIORS`: ``"beta"`` or ``"grid"``.
            grid_size: Number of grid points (``"grid"`` only), at least 3.
            max_iter: Iteration cap of the optimiser or of EM.
            tol: Stop EM when the mean log-likelihood improves by less than this.

        Returns:
            The fitted prior as data: ``{"kind", "alpha", "beta"}`` or ``{"kind", "grid",
            "weights"}`` (its :meth:`~Prior.state_dict`), with the mean marginal log-likelihood
            per prompt of the fitted prior (:meth:`Prior.log_marginal`) as ``"loglik"``.
        """
        PRIORS.check("kind", kind)
        grid_size = check_int("grid_size", grid_size, low=3)
        max_iter = check_int("max_iter", max_iter, low=1)
        tol = check_float("tol", tol, low=0.0)
        s, f, c = self._fit_data()
        prior: Prior
        if kind == "beta":
            start = self._prior if isinstance(self._prior, BetaPrior) else None
            prior = fit_beta_prior(s, f, c, start=start, max_iter=max_iter)
        else:
            prior = fit_grid_prior(s, f, c, grid_size=grid_size, max_iter=max_iter, tol=tol)
        self.prior = prior
        return {**prior.state_dict(), "loglik": prior._log_marginal(s, f, c)}

    # ----------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (numpy arrays and plain Python values).

        ``{"version": 2, "decay", "prior": prior.state_dict(), "ids", "successes",
        "failures"}``; :meth:`load_state_dict` also reads version 1 (flat ``prior_*`` keys).
        """
        n = len(self)
        return {
            "version": _STATE_VERSION,
            "decay": self.decay,
            "prior": self._prior.state_dict(),
            "ids": list(self._ids),
            "successes": self._s[:n].copy(),
            "failures": self._f[:n].copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly (version 2, or version 1 of e3core 0.1).

        Transactional: the whole state is checked first (keys, unique hashable ids, finite
        counts >= 0 of one length per id, a valid prior and decay), and a state that fails
        leaves the tracker exactly as it was.

        Raises:
            TypeError, ValueError: A bad field, named as ``state['...']``.
        """
        self._staged_load(state, "state")()

    def _staged_load(self, state: Any, where: str) -> Callable[[], None]:
        """Check ``state`` whole; return the function that assigns it (which cannot fail)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"{where} must be a mapping, got {_show(state)}")
        if "version" not in state and "prior" in state:  # version 1 has flat prior_* keys
            raise ValueError(f"{where} is missing keys ['version'] (it has a version-2 'prior')")
        version = state.get("version", 1)
        if isinstance(version, bool) or version not in (1, _STATE_VERSION):
            raise ValueError(
                f"{where}['version'] must be 1 or {_STATE_VERSION} (a BetaDifficultyTracker "
                f"state), got {_show(version)}"
            )
        if version == 1:
            required = {"prior_alpha", "prior_beta", "decay", "prior_kind", "ids", "successes"}
            optional = {"version", "prior_grid", "prior_weights"}
        else:
            required = {"version", "decay", "prior", "ids", "successes"}
            optional = set()
        check_state_keys(where, state, required | {"failures"}, optional)
        ids = _state_ids(f"{where}['ids']", state["ids"])
        s = as_count_array(f"{where}['successes']", state["successes"])
        f = as_count_array(f"{where}['failures']", state["failures"])
        if not (len(ids) == len(s) == len(f)):
            raise ValueError(
                f"{where}['ids'], ['successes'] and ['failures'] must have one entry per id, "
                f"got lengths {len(ids)}, {len(s)} and {len(f)}"
            )
        prior = (
            _prior_from_v1(state, where)
            if version == 1
            else prior_from_state(state["prior"], where=f"{where}['prior']")
        )
        decay = check_float(f"{where}['decay']", state["decay"], low=0, high=1, low_open=True)
        index = {pid: row for row, pid in enumerate(ids)}
        if len(index) != len(ids):
            dup = next(pid for row, pid in enumerate(ids) if index[pid] != row)
            raise ValueError(f"{where}['ids'] must be unique, got {_show(dup)} twice")

        def commit() -> None:
            self.decay = decay
            self.prior = prior
            self._ids = ids
            self._index = index
            self._s, self._f = s.copy(), f.copy()
            self._counts_changed()

        return commit


#: Largest count times 100 that :func:`_count_histogram` keys as an integer (far below 2**53,
#: so the scaled counts and their products with the key stride stay exact in int64).
_KEY_LIMIT = 2.0**31


def _count_histogram(s: np.ndarray, f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct ``(s, f)`` pairs at 0.01 resolution (sorted by s, then f) and their multiplicity.

    Counts at 0.01 resolution are exact for integer (undecayed) counts and bound the number of
    distinct rows for decayed ones. Equal to :func:`_count_histogram_pairs` (``np.unique`` over
    rows), but each pair is keyed as one int64 ``round(100 s) * stride + round(100 f)``, so the
    histogram is one sort of a 1-D integer array (about 30x faster at 1M prompts):
    ``np.round(x, 2)`` is ``rint(100 x) / 100``, so the key order is the pairs' order and
    ``k / 100`` rebuilds the rounded values bit for bit. Counts of 2**31 / 100 or more take the
    row-wise path.
    """
    ks = np.rint(s * 100.0)
    kf = np.rint(f * 100.0)
    top_s = float(ks.max()) if len(ks) else 0.0
    top_f = float(kf.max()) if len(kf) else 0.0
    if not (top_s < _KEY_LIMIT and top_f < _KEY_LIMIT):
        return _count_histogram_pairs(s, f)
    stride = int(top_f) + 1
    key = ks.astype(np.int64) * stride + kf.astype(np.int64)
    uniq, weight = np.unique(key, return_counts=True)
    key_s, key_f = np.divmod(uniq, stride)
    return key_s / 100.0, key_f / 100.0, weight.astype(np.float64)


def _count_histogram_pairs(
    s: np.ndarray, f: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_count_histogram` by ``np.unique`` over the rounded rows (slower, any size)."""
    pairs = np.round(np.stack([s, f], axis=1), 2)
    uniq, weight = np.unique(pairs, axis=0, return_counts=True)
    return uniq[:, 0], uniq[:, 1], weight.astype(np.float64)


def _state_ids(name: str, value: Any) -> list[Hashable]:
    """The ids of a tracker state as a list, each hashable, or raise naming ``name``."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple, np.ndarray)):
        raise TypeError(f"{name} must be a list of hashable prompt ids, got {_show(value)}")
    ids = value.tolist() if isinstance(value, np.ndarray) else list(value)
    for pos, pid in enumerate(ids):
        try:
            hash(pid)
        except TypeError as exc:
            raise TypeError(f"{name}[{pos}] = {_show(pid)} is not hashable") from exc
        if isinstance(pid, float) and pid != pid:
            raise ValueError(f"{name}[{pos}] is NaN, which never equals itself as an id")
    return ids


_STATE_VERSION = 2


def _prior_from_v1(state: Mapping[str, Any], where: str = "state") -> Prior:
    """The prior of a version-1 tracker state (flat ``prior_kind``/``prior_*`` keys)."""
    kind = check_choice(f"{where}['prior_kind']", state["prior_kind"], ("beta", "grid"))
    if kind == "beta":
        return BetaPrior(
            check_float(f"{where}['prior_alpha']", state["prior_alpha"], low=0, low_open=True),
            check_float(f"{where}['prior_beta']", state["prior_beta"], low=0, low_open=True),
        )
    grid, weights = state.get("prior_grid"), state.get("prior_weights")
    if grid is None or weights is None:
        raise ValueError(
            f"{where}: a grid prior state needs ['prior_grid'] and ['prior_weights'], got "
            f"{_show(grid)} and {_show(weights)}"
        )
    return prior_from_state({"kind": "grid", "grid": grid, "weights": weights}, where=where)
