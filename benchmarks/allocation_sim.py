r"""Rollout allocation on a real difficulty distribution: how many groups carry a GRPO signal.

A GRPO group teaches only when it is *mixed* (holds both a success and a failure). This script
replays three epochs of training on the 15,888 competition-math prompts of
``shared/data/difficulty_levels.csv`` (10 samples of Qwen2.5-Math-7B per prompt) with a static
policy: prompt :math:`i` has a true success rate :math:`p_i` drawn once per seed from its
10-sample record, by default the Jeffreys posterior

.. math:: p_i \sim \mathrm{Beta}(c_i + \tfrac12,\ 10 - c_i + \tfrac12),
          \qquad c_i = 10 - \text{wrong}_i,

and every rollout is Bernoulli(:math:`p_i`). Each epoch visits all prompts once in a fresh
shuffled order, 64 prompts per step, 8 rollouts per prompt on average (512 per step), counts
in ``[2, 32]``. The methods compared (same true rates, order and per-rollout random numbers for
all methods within a seed, so differences are paired):

* ``uniform``: 8 rollouts each (plain GRPO).
* ``e3-rank``: the E3 rank rule (arXiv 2505.18573) through :class:`e3core.E3Scheduler` with the
  all-time accuracy rank frozen at epoch ends, bounds 2..32; ``e3-rank paper-bounds``: the
  paper's own configuration (:meth:`e3core.E3Scheduler.paper`: 8..8, then 6..10, then 4..12).
* ``pk-info`` / ``pk-mixed``: Knapsack RL's point-estimate knapsack (arXiv 2509.25849), the
  peer baseline written in ``peers.py``: :math:`\hat p_i` is the success rate of the prompt's last
  group, the value is :math:`V(n,\hat p) = [1-\hat p^n-(1-\hat p)^n]\,\hat p(1-\hat p)^2`
  (``info``) or :math:`1-\hat p^n-(1-\hat p)^n` (``mixed``); :math:`\hat p\in\{0,1\}` gets the
  minimum and unseen prompts a uniform share.
* e3core's :class:`~e3core.KnapsackAllocator` (``mixed``, ``info_gain``) and
  :class:`~e3core.ThompsonAllocator` (``mixed``) over :class:`~e3core.BetaDifficultyTracker`
  posteriors with the Beta(1, 1) prior, a refitted Beta prior or a refitted grid prior
  (``fit_prior``, every 25 steps and at each epoch end), and :class:`~e3core.E3Scheduler`'s
  defaults (``e3core default scheduler``).
* ``bayes limit``: the same knapsack on the posterior under the *true* population prior (the
  mixture the rates are drawn from), the best any prior fit can do with the tracked counts.
* ``oracle``: the exact knapsack with value :math:`1-p^n-(1-p)^n` on the *true* rates (e3core's
  ``KnapsackAllocator("mixed")`` on a posterior concentrated at :math:`p_i`), the most mixed
  groups any allocation can expect.

Reported per method and epoch: the share of mixed groups and of all-wrong groups (mean ± standard
error over seeds), and for epoch 3 the share of the oracle's gain over uniform that the method
captures, :math:`(m - u)/(o - u)`, from the realised outcomes and from the expected mixed share
:math:`\frac1B\sum_i 1-p_i^{n_i}-(1-p_i)^{n_i}` of the chosen counts (free of outcome noise).

Run ``python benchmarks/allocation_sim.py`` (about 3-4 minutes on 2 cores), ``--quick`` for a
smoke test, ``--variants`` for the extra configurations used to pick the best one (refit
cadence, grid size, decay, Thompson info_gain, a grid prior per data source and per source x
response-length tercile; about 8 minutes), ``--only PREFIX,...`` to run a few methods,
``--replot`` to redraw the PNG from the CSV of an earlier run (no simulation, ~2 s).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _common import OUT_DIR, REPO, print_table, pyplot, read_csv, write_csv
from peers import PointKnapsack
from scipy import special

from e3core import (
    BetaDifficultyTracker,
    Budget,
    E3Scheduler,
    GridPosterior,
    KnapsackAllocator,
    RankAllocator,
    ThompsonAllocator,
    UniformAllocator,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "difficulty_levels.csv"
PAPER_VOCAB = 152_064  # Qwen2.5 vocabulary; only the (unused) temperature rule needs it
P_BUCKETS = np.linspace(0.0, 1.0, 11)


# --------------------------------------------------------------------------- data
def load_correct_counts(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the number of correct answers out of 10, the source and the length of every prompt.

    Args:
        path: CSV with columns ``data_source``, ``wrong_of_10``, ``mean_response_tokens``.

    Returns:
        ``(correct, source, length)``: int array of correct answers in ``0..10``, source labels
        and mean response tokens.

    Raises:
        SystemExit: the file is missing or lacks the ``wrong_of_10`` column.
    """
    if not path.is_file():
        raise SystemExit(
            f"error: difficulty data not found at {path}; pass --data PATH to "
            "difficulty_levels.csv (columns data_source, wrong_of_10, mean_response_tokens)"
        )
    rows = read_csv(path)
    if not rows or "wrong_of_10" not in rows[0]:
        raise SystemExit(f"error: {path} has no 'wrong_of_10' column")
    wrong = np.array([int(row["wrong_of_10"]) for row in rows], dtype=np.int64)
    if ((wrong < 0) | (wrong > 10)).any():
        raise SystemExit(f"error: {path}: wrong_of_10 must lie in 0..10")
    source = np.array([row.get("data_source", "") for row in rows])
    length = np.array([float(row.get("mean_response_tokens") or 0.0) for row in rows])
    return 10 - wrong, source, length


def draw_true_rates(correct: np.ndarray, rng: np.random.Generator, how: str) -> np.ndarray:
    r"""Draw each prompt's static true success rate from its 10-sample record.

    Args:
        correct: Correct answers out of 10 per prompt.
        rng: Generator.
        how: ``"jeffreys"`` (:math:`\mathrm{Beta}(c+\frac12, 10-c+\frac12)`), ``"uniform"``
            (:math:`\mathrm{Beta}(c+1, 11-c)`, the posterior under a flat prior) or ``"point"``
            (:math:`c/10`: 0 and 1 stay exact, so those prompts can never be mixed).

    Returns:
        The true rates, one per prompt.
    """
    c = correct.astype(np.float64)
    if how == "jeffreys":
        return rng.beta(c + 0.5, 10.0 - c + 0.5)
    if how == "uniform":
        return rng.beta(c + 1.0, 11.0 - c)
    return c / 10.0


# ----------------------------------------------------------------------- policies
def rollout_mask(outcomes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``[B, max]`` bool: rollout ``k`` of prompt ``i`` was generated (``k < counts[i]``)."""
    return np.arange(outcomes.shape[1])[None, :] < counts[:, None]


def successes(outcomes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Successes of each prompt's group: the true ``outcomes`` among its ``counts`` rollouts."""
    return (outcomes & rollout_mask(outcomes, counts)).sum(axis=1)


class Policy:
    """One allocation method: counts before generation, outcomes after."""

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """Rollout counts for the prompts ``ids`` (summing to ``budget.total``)."""
        raise NotImplementedError

    def observe(self, ids: np.ndarray, counts: np.ndarray, outcomes: np.ndarray) -> None:
        """Feed one step's outcomes.

        Args:
            ids: Prompt ids of the step.
            counts: The planned counts.
            outcomes: ``[B, max]`` bool, rollout ``k < counts[i]`` of prompt ``i`` succeeded.
        """

    def end_epoch(self) -> None:
        """Called after the last step of every epoch."""


class UniformPolicy(Policy):
    """Plain GRPO: e3core's :class:`~e3core.UniformAllocator` (counts differ by at most one)."""

    def __init__(self) -> None:
        self._alloc = UniformAllocator()
        self._tracker = BetaDifficultyTracker()

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """See :class:`Policy`."""
        return self._alloc.allocate(self._tracker.posterior(ids), budget)


class SchedulerPolicy(Policy):
    """Drives an :class:`e3core.E3Scheduler` (its own bounds, epochs and refits)."""

    def __init__(self, scheduler: E3Scheduler) -> None:
        self.scheduler = scheduler

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """See :class:`Policy`; the scheduler's own bounds replace ``budget``'s."""
        return self.scheduler.plan(ids).counts

    def observe(self, ids: np.ndarray, counts: np.ndarray, outcomes: np.ndarray) -> None:
        """See :class:`Policy`."""
        rewards = outcomes[rollout_mask(outcomes, counts)].astype(np.float64)  # prompt by prompt
        group_ids = np.repeat(np.arange(len(ids)), counts)
        self.scheduler.observe(ids, rewards, group_ids)


class RefittingPolicy(Policy):
    """A policy that learns from each step's successes and refits a prior on a cadence.

    ``observe`` hands the successes to :meth:`record`, then refits every ``refit_every`` steps;
    ``end_epoch`` refits too. Subclasses implement :meth:`record` and :meth:`refit`.

    Args:
        refit_every: Refit cadence in steps (also at every epoch end); ``None``: epoch ends only.
    """

    def __init__(self, refit_every: int | None) -> None:
        self.refit_every = refit_every
        self.step = 0

    def record(self, ids: np.ndarray, succ: np.ndarray, counts: np.ndarray) -> None:
        """Learn from one step: ``succ`` successes out of ``counts`` rollouts per prompt."""
        raise NotImplementedError

    def refit(self) -> None:
        """Refit the prior(s) from what was recorded."""
        raise NotImplementedError

    def observe(self, ids: np.ndarray, counts: np.ndarray, outcomes: np.ndarray) -> None:
        """See :class:`Policy`."""
        self.record(ids, successes(outcomes, counts), counts)
        self.step += 1
        if self.refit_every is not None and self.step % self.refit_every == 0:
            self.refit()

    def end_epoch(self) -> None:
        """See :class:`Policy`."""
        self.refit()


class TrackerPolicy(RefittingPolicy):
    r"""e3core's tracker and an allocator, with prior refits every ``refit_every`` steps.

    Args:
        allocator: An e3core allocator.
        prior: ``None`` (keep Beta(1, 1)), ``"beta"`` or ``"grid"`` (``fit_prior`` kind).
        refit_every: Refit cadence in steps (also at every epoch end); ``None``: epoch ends only.
        decay: The tracker's :math:`\lambda`.
        grid_size: Grid points of the grid prior.
        seed: Seed of the allocator's generator (Thompson sampling).
    """

    def __init__(
        self,
        allocator: Any,
        prior: str | None,
        *,
        refit_every: int | None = 25,
        decay: float = 1.0,
        grid_size: int = 101,
        seed: int = 0,
    ) -> None:
        super().__init__(refit_every)
        self.allocator = allocator
        self.prior = prior
        self.grid_size = grid_size
        self.tracker = BetaDifficultyTracker(decay=decay)
        self.rng = np.random.default_rng(seed)

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """See :class:`Policy`."""
        return self.allocator.allocate(self.tracker.posterior(ids), budget, rng=self.rng)

    def record(self, ids: np.ndarray, succ: np.ndarray, counts: np.ndarray) -> None:
        """See :class:`RefittingPolicy`."""
        self.tracker.update(ids, succ, counts)

    def refit(self) -> None:
        """See :class:`RefittingPolicy`: no refit with the Beta(1, 1) prior or under 64 prompts."""
        if self.prior is not None and len(self.tracker) >= 64:
            self.tracker.fit_prior(self.prior, grid_size=self.grid_size)


class PointKnapsackPolicy(PointKnapsack, Policy):
    """Knapsack RL's rule (:class:`peers.PointKnapsack`, the peer baseline) as a policy."""

    def observe(self, ids: np.ndarray, counts: np.ndarray, outcomes: np.ndarray) -> None:
        """See :class:`Policy`: each prompt's last group sets its point estimate."""
        self.record(ids, successes(outcomes, counts), counts)


class TruePosterior:
    """A posterior concentrated at known rates (implements e3core's ``PosteriorLike``)."""

    rank = None

    def __init__(self, p: np.ndarray) -> None:
        self.p = p

    def __len__(self) -> int:
        return len(self.p)

    @property
    def mean(self) -> np.ndarray:
        """The rates themselves."""
        return self.p

    @property
    def variance(self) -> np.ndarray:
        """Zero."""
        return np.zeros_like(self.p)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """The rates themselves."""
        return self.p.copy()

    def moment(self, i: Any, j: Any) -> np.ndarray:
        """:math:`p^i (1-p)^j`."""
        return np.power(self.p, i) * np.power(1.0 - self.p, j)

    def expected_mixed(self, n: Any) -> np.ndarray:
        """:math:`1 - p^n - (1-p)^n`."""
        return 1.0 - self.moment(n, 0.0) - self.moment(0.0, n)


class OraclePolicy(Policy):
    """e3core's ``KnapsackAllocator("mixed")`` on the true rates: the best expected mixed share."""

    def __init__(self, p: np.ndarray) -> None:
        self.p = p
        self._alloc = KnapsackAllocator("mixed")

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """See :class:`Policy`."""
        return self._alloc.allocate(TruePosterior(self.p[ids]), budget)


def grid_posterior_weights(
    grid: np.ndarray, prior: np.ndarray, s: np.ndarray, f: np.ndarray
) -> np.ndarray:
    r"""``[B, K]`` posterior weights :math:`\propto \pi_k g_k^{s} (1-g_k)^{f}` on a grid."""
    with np.errstate(divide="ignore"):
        log_w = (
            np.log(prior)[None, :]
            + special.xlogy(s[:, None], grid[None, :])
            + special.xlogy(f[:, None], 1.0 - grid[None, :])
        )
    log_w -= log_w.max(axis=1, keepdims=True)
    w = np.exp(log_w)
    return w / w.sum(axis=1, keepdims=True)


def true_prior_grid(correct: np.ndarray, how: str, bins: int = 200) -> tuple[np.ndarray, ...]:
    """The population distribution the true rates are drawn from, on a grid.

    For ``jeffreys`` / ``uniform`` draws it is a mixture of Betas (one per record ``c``, weighted
    by how often ``c`` occurs), discretised to ``bins`` equal cells (mass = CDF difference, at the
    cell centre); for ``point`` draws the 11 rates ``c/10``.
    """
    freq = np.bincount(correct, minlength=11) / len(correct)
    if how == "point":
        keep = freq > 0
        return np.arange(11)[keep] / 10.0, freq[keep]
    edges = np.linspace(0.0, 1.0, bins + 1)
    half = 0.5 if how == "jeffreys" else 1.0
    c = np.arange(11, dtype=np.float64)[:, None]
    cdf = special.betainc(c + half, 10.0 - c + half, edges[None, :])
    mass = freq @ np.diff(cdf, axis=1)
    keep = mass > 0
    return (0.5 * (edges[1:] + edges[:-1]))[keep], mass[keep] / mass[keep].sum()


class BayesLimitPolicy(Policy):
    """Knapsack (mixed) on the posterior under the *true* population prior: the information limit.

    What a prior fit could reach at best: the tracker's counts are the only per-prompt data, and
    the prior is the exact distribution the rates were drawn from (not available in practice).
    """

    def __init__(self, grid: np.ndarray, prior: np.ndarray) -> None:
        self.grid, self.prior = grid, prior
        self.tracker = BetaDifficultyTracker()
        self._alloc = KnapsackAllocator("mixed")

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """See :class:`Policy`."""
        s, f = self.tracker.counts(ids)
        w = grid_posterior_weights(self.grid, self.prior, s, f)
        return self._alloc.allocate(GridPosterior(self.grid, w), budget)

    def observe(self, ids: np.ndarray, counts: np.ndarray, outcomes: np.ndarray) -> None:
        """See :class:`Policy`."""
        self.tracker.update(ids, successes(outcomes, counts), counts)


class StratifiedGridPolicy(RefittingPolicy):
    """One tracker and fitted grid prior per stratum (e.g. data source), knapsack (mixed).

    Args:
        strata: Stratum label of every prompt id.
        refit_every: Refit cadence in steps (also at epoch ends).
        value: Knapsack value.
    """

    def __init__(self, strata: np.ndarray, refit_every: int = 25, value: str = "mixed") -> None:
        super().__init__(refit_every)
        self.labels, self.codes = np.unique(strata, return_inverse=True)
        self.trackers = [BetaDifficultyTracker() for _ in self.labels]
        self._alloc = KnapsackAllocator(value)
        self.grid = np.linspace(0.0, 1.0, 101)

    def plan(self, ids: np.ndarray, budget: Budget) -> np.ndarray:
        """See :class:`Policy`."""
        w = np.empty((len(ids), len(self.grid)))
        codes = self.codes[ids]
        for k in np.unique(codes):
            sel = codes == k
            tracker = self.trackers[k]
            prior = tracker.prior.weights if tracker.prior.kind == "grid" else None
            if prior is None:  # before the first fit: flat, like Beta(1, 1)
                prior = np.full(len(self.grid), 1.0 / len(self.grid))
            s, f = tracker.counts(ids[sel])
            w[sel] = grid_posterior_weights(self.grid, prior, s, f)
        return self._alloc.allocate(GridPosterior(self.grid, w), budget)

    def record(self, ids: np.ndarray, succ: np.ndarray, counts: np.ndarray) -> None:
        """See :class:`RefittingPolicy`: each prompt's counts go to its stratum's tracker."""
        codes = self.codes[ids]
        for k in np.unique(codes):
            sel = codes == k
            self.trackers[k].update(ids[sel], succ[sel], counts[sel])

    def refit(self) -> None:
        """See :class:`RefittingPolicy`: each stratum of at least 64 prompts refits its grid."""
        for tracker in self.trackers:
            if len(tracker) >= 64:
                tracker.fit_prior("grid", grid_size=len(self.grid))


# ------------------------------------------------------------------------ methods
@dataclass(frozen=True)
class World:
    """What the method factories may use: the true rates (oracles only) and prompt covariates."""

    p: np.ndarray
    correct: np.ndarray
    source: np.ndarray
    length: np.ndarray
    p_draw: str
    steps_per_epoch: int


@dataclass(frozen=True)
class Method:
    """A named policy factory: ``make(seed, world)``."""

    name: str
    make: Callable[[int, World], Policy]
    group: str = "main"


def _sched(**kwargs: Any) -> Callable[[int, World], Policy]:
    def make(seed: int, world: World) -> Policy:
        return SchedulerPolicy(
            E3Scheduler(controller=None, steps_per_epoch=world.steps_per_epoch, seed=seed, **kwargs)
        )

    return make


def _tracker(alloc: Callable[[], Any], prior: str | None, **kwargs: Any) -> Callable[..., Policy]:
    def make(seed: int, world: World) -> Policy:
        return TrackerPolicy(alloc(), prior, seed=seed, **kwargs)

    return make


def _paper(seed: int, world: World) -> Policy:
    spe = world.steps_per_epoch
    sched = E3Scheduler.paper(PAPER_VOCAB, steps_per_epoch=spe, total_steps=3 * spe, seed=seed)
    return SchedulerPolicy(sched)  # entropy is never passed, so the temperature stays 1


def _length_tercile(length: np.ndarray) -> np.ndarray:
    return np.digitize(length, np.quantile(length, [1 / 3, 2 / 3])).astype(str)


def methods(variants: bool) -> list[Method]:
    """The methods to run; ``variants`` adds the configurations used to pick the best one."""
    v = "variant"
    out = [
        Method("uniform", lambda s, w: UniformPolicy()),
        Method(
            "e3-rank (E3Scheduler, 2..32)",
            _sched(
                allocator=RankAllocator(),
                min_per_prompt=2,
                max_per_prompt=32,
                refit_every=None,
                rank_by="epoch_accuracy",
            ),
        ),
        Method("e3-rank paper (8..8, 6..10, 4..12)", _paper),
        Method(
            "pk-info (Knapsack RL, point p)", lambda s, w: PointKnapsackPolicy("info", len(w.p))
        ),
        Method("pk-mixed (point p, V=mixed)", lambda s, w: PointKnapsackPolicy("mixed", len(w.p))),
    ]
    for prior, label in ((None, "Beta(1,1)"), ("beta", "fit beta"), ("grid", "fit grid")):
        for name, alloc in (
            ("knapsack mixed", KnapsackAllocator),
            ("knapsack info_gain", lambda: KnapsackAllocator("info_gain")),
            ("thompson mixed", ThompsonAllocator),
        ):
            out.append(Method(f"{name}, {label}", _tracker(alloc, prior)))
    out.append(
        Method("e3core default E3Scheduler (2..32)", _sched(min_per_prompt=2, max_per_prompt=32))
    )
    grid_variants: list[tuple[str, dict[str, Any]]] = [
        (", refit every 1", {"refit_every": 1}),
        (", refit epoch ends", {"refit_every": None}),
        (" 21 pts", {"grid_size": 21}),
        (" 201 pts", {"grid_size": 201}),
        (", decay 0.9", {"decay": 0.9}),
        (", decay 0.5", {"decay": 0.5}),
    ]
    out += [
        Method(f"knapsack mixed, fit grid{suffix}", _tracker(KnapsackAllocator, "grid", **kw), v)
        for suffix, kw in grid_variants
    ]
    out += [
        Method(
            "thompson info_gain, fit grid",
            _tracker(lambda: ThompsonAllocator("info_gain"), "grid"),
            v,
        ),
        Method(
            "knapsack mixed, grid prior per source",
            lambda s, w: StratifiedGridPolicy(w.source),
            v,
        ),
        Method(
            "knapsack mixed, grid prior per source x length tercile",
            lambda s, w: StratifiedGridPolicy(np.char.add(w.source, _length_tercile(w.length))),
            v,
        ),
        Method(
            "bayes limit: knapsack mixed, TRUE prior",
            lambda s, w: BayesLimitPolicy(*true_prior_grid(w.correct, w.p_draw)),
        ),
        Method("oracle (true p, V=mixed)", lambda s, w: OraclePolicy(w.p)),
    ]
    return [m for m in out if variants or m.group == "main"]


# ----------------------------------------------------------------------- simulate
@dataclass
class RunStats:
    """Per-epoch sums of one (method, seed) run."""

    prompts: np.ndarray  # [E]
    mixed: np.ndarray  # [E] realised mixed groups
    all_wrong: np.ndarray  # [E]
    all_right: np.ndarray  # [E]
    expected_mixed: np.ndarray  # [E] sum of 1 - p^n - (1-p)^n over prompts
    bucket_counts: np.ndarray  # [E, buckets] rollouts given to prompts per true-p bucket
    bucket_prompts: np.ndarray  # [E, buckets]
    seconds: float


def simulate(
    method: Method,
    world: World,
    orders: list[np.ndarray],
    uniforms: np.ndarray,
    *,
    batch: int,
    per_prompt: int,
    bounds: tuple[int, int],
    seed: int,
) -> RunStats:
    """Run one method over all epochs with shared randomness; return its per-epoch sums."""
    epochs = len(orders)
    p = world.p
    spe = world.steps_per_epoch
    policy = method.make(seed, world)
    nb = len(P_BUCKETS) - 1
    bucket_of = np.minimum(np.digitize(p, P_BUCKETS[1:-1]), nb - 1)
    stats = RunStats(
        *(np.zeros(epochs) for _ in range(5)),
        bucket_counts=np.zeros((epochs, nb)),
        bucket_prompts=np.zeros((epochs, nb)),
        seconds=0.0,
    )
    start = time.perf_counter()
    width = uniforms.shape[2]
    for e in range(epochs):
        for b in range(spe):
            ids = orders[e][b * batch : (b + 1) * batch]
            budget = Budget(len(ids) * per_prompt, bounds[0], bounds[1])
            counts = np.asarray(policy.plan(ids, budget), dtype=np.int64)
            if counts.sum() != budget.total or counts.min() < 1 or counts.max() > width:
                raise RuntimeError(f"{method.name}: invalid counts {counts}")
            pi = p[ids]
            outcomes = uniforms[e, ids, :] < pi[:, None]
            s = successes(outcomes, counts)
            policy.observe(ids, counts, outcomes)
            stats.prompts[e] += len(ids)
            stats.mixed[e] += np.count_nonzero((s > 0) & (s < counts))
            stats.all_wrong[e] += np.count_nonzero(s == 0)
            stats.all_right[e] += np.count_nonzero(s == counts)
            stats.expected_mixed[e] += float((1.0 - pi**counts - (1.0 - pi) ** counts).sum())
            np.add.at(stats.bucket_counts[e], bucket_of[ids], counts)
            np.add.at(stats.bucket_prompts[e], bucket_of[ids], 1)
        policy.end_epoch()
    stats.seconds = time.perf_counter() - start
    return stats


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run every method on every seed, print the table, write CSV and PNG."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="difficulty_levels.csv")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="folder for the CSVs")
    parser.add_argument(
        "--plot",
        type=str,
        default=str(REPO / "benchmarks" / "allocation_sim.png"),
        help="PNG path ('' to skip)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--per-prompt", type=int, default=8)
    parser.add_argument("--min", dest="lo", type=int, default=2)
    parser.add_argument("--max", dest="hi", type=int, default=32)
    parser.add_argument(
        "--p-draw",
        choices=("jeffreys", "uniform", "point"),
        default="jeffreys",
        help="true rate per prompt from its c/10 record: Beta(c+1/2, 10-c+1/2) (default), "
        "Beta(c+1, 11-c), or c/10",
    )
    parser.add_argument("--prompts", type=int, default=0, help="use a random subset (0 = all)")
    parser.add_argument("--variants", action="store_true", help="also run tuning variants")
    parser.add_argument(
        "--only", default="", help="comma-separated name prefixes to run (uniform, oracle kept)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke test (< 30 s)")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only redraw --plot from OUT/allocation_sim.csv of an earlier run",
    )
    args = parser.parse_args(argv)
    if args.replot:
        rows = _read_rows(args.out / "allocation_sim.csv")
        epochs = sum(1 for key in rows[0] if key.startswith("mixed_e") and key[7:].isdigit())
        _plot(rows, Path(args.plot), _best(rows)["method"], rows[-1]["method"], epochs)
        print(f"wrote {args.plot}", file=sys.stderr)
        return 0
    if args.quick:
        args.seeds, args.prompts = 2, args.prompts or 1536

    correct_all, source_all, length_all = load_correct_counts(args.data)
    out_dir: Path = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    all_methods = methods(args.variants)
    if args.quick:
        keep = ("uniform", "e3-rank (", "pk-info", "knapsack mixed, fit grid", "bayes", "oracle")
        all_methods = [m for m in all_methods if m.name.startswith(keep)]
    if args.only:
        keep = ("uniform", "oracle", *[k.strip() for k in args.only.split(",") if k.strip()])
        all_methods = [m for m in all_methods if m.name.startswith(keep)]
    width = max(args.hi, 12)  # the paper schedule reaches 12
    per_method: dict[str, list[RunStats]] = {m.name: [] for m in all_methods}
    for seed in range(args.seeds):
        rng = np.random.default_rng([20250518, seed])
        pick = np.arange(len(correct_all))
        if args.prompts:
            pick = rng.choice(len(correct_all), size=args.prompts, replace=False)
        p = draw_true_rates(correct_all[pick], rng, args.p_draw)
        orders = [rng.permutation(len(p)) for _ in range(args.epochs)]
        uniforms = rng.random((args.epochs, len(p), width))
        world = World(
            p=p,
            correct=correct_all[pick],
            source=source_all[pick],
            length=length_all[pick],
            p_draw=args.p_draw,
            steps_per_epoch=math.ceil(len(p) / args.batch),
        )
        for method in all_methods:
            per_method[method.name].append(
                simulate(
                    method,
                    world,
                    orders,
                    uniforms,
                    batch=args.batch,
                    per_prompt=args.per_prompt,
                    bounds=(args.lo, args.hi),
                    seed=seed,
                )
            )

    # -------------------------------------------------------------- summarise
    def share(stats: list[RunStats], field: str) -> np.ndarray:  # [seeds, E]
        return np.array([getattr(s, field) / s.prompts for s in stats])

    uni = share(per_method["uniform"], "mixed")[:, -1]
    ora_name = all_methods[-1].name
    ora = share(per_method[ora_name], "mixed")[:, -1]
    uni_x = share(per_method["uniform"], "expected_mixed")[:, -1]
    ora_x = share(per_method[ora_name], "expected_mixed")[:, -1]
    rows: list[dict[str, Any]] = []
    for method in all_methods:
        stats = per_method[method.name]
        mixed = share(stats, "mixed")
        wrong = share(stats, "all_wrong")
        right = share(stats, "all_right")
        exp_m = share(stats, "expected_mixed")
        captured = (mixed[:, -1] - uni) / (ora - uni)
        captured_x = (exp_m[:, -1] - uni_x) / (ora_x - uni_x)
        row: dict[str, Any] = {"method": method.name}
        for e in range(args.epochs):
            for key, arr in (
                ("mixed", mixed),
                ("all_wrong", wrong),
                ("all_right", right),
                ("expected_mixed", exp_m),
            ):
                mean, se = _mean_se(arr[:, e])
                row[f"{key}_e{e + 1}"] = mean
                row[f"{key}_e{e + 1}_se"] = se
        row["captured_last"], row["captured_last_se"] = _mean_se(captured)
        row["captured_expected_last"], row["captured_expected_last_se"] = _mean_se(captured_x)
        counts = np.array([s.bucket_counts[-1] for s in stats]).sum(axis=0)
        prompts = np.array([s.bucket_prompts[-1] for s in stats]).sum(axis=0)
        for k in range(len(prompts)):
            row[f"mean_count_p{P_BUCKETS[k]:.1f}"] = counts[k] / max(prompts[k], 1)
        row["seconds_per_seed"] = float(np.mean([s.seconds for s in stats]))
        rows.append(row)

    last = args.epochs
    num_prompts = args.prompts or len(correct_all)
    print(
        f"allocation_sim: {num_prompts} prompts, {args.epochs} epochs x "
        f"{math.ceil(num_prompts / args.batch)} steps "
        f"of {args.batch} prompts x {args.per_prompt} rollouts (bounds {args.lo}..{args.hi}), "
        f"{args.seeds} seeds; true p from the 10-sample record: {args.p_draw}"
        + (" Beta(c+1/2, 10-c+1/2)" if args.p_draw == "jeffreys" else "")
    )
    print(
        "cells: mean ± s.e. over seeds, % of groups; captured = (method - uniform)/(oracle - "
        f"uniform) in epoch {last}, realised | expected (1-p^n-(1-p)^n)"
    )
    numbers = range(1, args.epochs + 1)
    columns = [
        "method",
        *(f"mixed e{e}" for e in numbers),
        *(f"all-wrong e{e}" for e in numbers),
        f"captured e{last}",
        "capt. exp.",
        "s/seed",
    ]
    table = []
    for row in rows:
        cells = [row["method"]]
        for key in ("mixed", "all_wrong"):
            for e in numbers:
                mean, se = row[f"{key}_e{e}"], row[f"{key}_e{e}_se"]
                cells.append(f"{100 * mean:.2f} ± {100 * se:.2f}")
        cells.append(f"{row['captured_last']:+.3f} ± {row['captured_last_se']:.3f}")
        cells.append(f"{row['captured_expected_last']:+.3f}")
        cells.append(f"{row['seconds_per_seed']:.1f}")
        table.append(cells)
    print_table(columns, table)

    csv_path = write_csv(rows, out_dir / "allocation_sim.csv")
    best = _best(rows)
    print(
        f"best non-oracle method by expected capture: {best['method']} "
        f"({best['captured_last']:+.3f} realised, {best['captured_expected_last']:+.3f} expected)"
    )
    print(f"wrote {csv_path}", file=sys.stderr)
    if args.plot:
        _plot(rows, Path(args.plot), best["method"], ora_name, args.epochs)
        print(f"wrote {args.plot}", file=sys.stderr)
    return 0


def _best(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row of the non-reference method with the highest expected capture in the last epoch."""
    candidates = [
        r
        for r in rows
        if not r["method"].startswith(
            ("oracle", "uniform", "bayes", "knapsack mixed, grid prior per")
        )
    ]
    return max(candidates, key=lambda r: r["captured_expected_last"])


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a CSV written by :func:`main`, numbers as floats.

    Raises:
        SystemExit: the CSV does not exist (run the simulation first).
    """
    if not path.is_file():
        raise SystemExit(f"error: {path} not found; run without --replot first")
    rows: list[dict[str, Any]] = list(read_csv(path))
    for row in rows:
        for key, value in row.items():
            if key != "method":
                row[key] = float(value) if value else float("nan")
    return rows


# Line styles of the plotted methods: a colour per family (rank rules, point-estimate
# knapsacks, e3core's Bayesian allocators), solid for the main variant; black for the oracle.
# e3core's default is drawn wide and underneath, so the lines it overlaps stay visible.
_STYLES: dict[str, dict[str, Any]] = {
    "uniform": {"color": "0.45", "marker": "x"},
    "e3-rank (E3Scheduler, 2..32)": {"color": "tab:orange"},
    "e3-rank paper (8..8, 6..10, 4..12)": {"color": "tab:orange", "ls": "--"},
    "pk-info (Knapsack RL, point p)": {"color": "tab:red"},
    "pk-mixed (point p, V=mixed)": {"color": "tab:red", "ls": "--"},
    "knapsack mixed, Beta(1,1)": {"color": "tab:brown", "ls": ":"},
    "knapsack mixed, fit beta": {"color": "tab:pink", "ls": "--"},
    "knapsack mixed, fit grid": {"color": "tab:green"},
    "thompson mixed, fit grid": {"color": "tab:olive", "ls": "--"},
    "bayes limit: knapsack mixed, TRUE prior": {"color": "tab:purple", "ls": "-."},
    "e3core default E3Scheduler (2..32)": {"color": "tab:blue", "lw": 3, "alpha": 0.7, "zorder": 1},
    "oracle (true p, V=mixed)": {"color": "black", "ls": "--"},
}


def _plot(rows: list[dict[str, Any]], path: Path, best: str, oracle: str, epochs: int) -> None:
    """Draw the mixed share per epoch and the rollouts per difficulty bucket; save to ``path``.

    Each panel's legend sits below its axes, outside the data, in a font as large as the tick
    labels'.
    """
    plt = pyplot()
    wanted = [*_STYLES, best, oracle]
    show = [r for r in rows if r["method"] in wanted]
    plt.rcParams.update({"font.size": 10, "legend.fontsize": 9.5})
    fig, (ax1, ax2) = plt.subplots(
        1,
        2,
        figsize=(12, 7.2),
        dpi=100,
        layout="constrained",
        gridspec_kw={"width_ratios": [1.15, 1]},
    )
    x = np.arange(1, epochs + 1)
    for r in show:
        y = [100 * r[f"mixed_e{e}"] for e in x]
        err = [100 * r[f"mixed_e{e}_se"] for e in x]
        style = {"marker": "o", "lw": 1.4, **_STYLES.get(r["method"], {})}
        ax1.errorbar(x, y, yerr=err, ms=4, capsize=2, label=r["method"], **style)
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("mixed groups (%)")
    ax1.set_xticks(x)
    ax1.set_title("groups with a GRPO signal (mean ± s.e. over seeds)")
    ax1.grid(alpha=0.3)
    ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, frameon=False)
    centres = 0.5 * (P_BUCKETS[1:] + P_BUCKETS[:-1])
    for name, marker in ((best, "o"), (oracle, "s"), ("uniform", "x")):
        r = next(r for r in rows if r["method"] == name)
        y = [r[f"mean_count_p{P_BUCKETS[k]:.1f}"] for k in range(len(centres))]
        style = {"lw": 1.4, **_STYLES.get(name, {}), "marker": marker}
        ax2.plot(centres, y, label=name, **style)
    ax2.set_xlabel("true success rate p (bucket centre)")
    ax2.set_ylabel(f"mean rollouts per prompt, epoch {epochs}")
    ax2.set_title("where the budget goes")
    ax2.grid(alpha=0.3)
    ax2.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=1, frameon=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
