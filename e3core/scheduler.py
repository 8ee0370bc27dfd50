r"""The per-step E3 loop behind two calls: ``plan`` before generation, ``observe`` after.

One training step (Liao et al., arXiv 2505.18573, Alg. 1, generalised):

1. ``plan(prompt_ids)``: the tracker's posterior of the batch goes to the allocator with the
   budget :math:`N = B\cdot G` inside ``[min_per_prompt, max_per_prompt]``; the plan holds the
   counts :math:`n_i` and the temperature :math:`T_t` to sample them at.
2. The trainer generates :math:`n_i` completions of prompt :math:`i` at :math:`T_t`, scores them
   and computes advantages (:func:`e3core.group_advantages`).
3. ``observe(prompt_ids, rewards, group_ids, entropy)``: rewards with
   :math:`r_j \ge` ``success_threshold`` count as successes for the tracker; the mean token
   entropy goes to the temperature controller, which sets :math:`T_{t+1}`; the prior is refitted
   every ``refit_every`` steps; at epoch ends (``steps_per_epoch``) the bounds widen by
   ``widen_per_epoch`` within ``widen_limits`` and rank snapshots are refreshed.

The per-step bookkeeping the adapters share lives here too: ``observe`` reports one metric set
(:meth:`E3Scheduler.observe`; documented once, in the logging guide), including the temperature
the step was sampled at (remembered by ``plan``), and a missing or invalid entropy is skipped
and counted (``e3/entropy_skipped``) with one warning (:meth:`E3Scheduler.observe_entropy`).

Everything a resumed run needs is in :meth:`E3Scheduler.state_dict`, as plain Python data
(numbers, strings, lists, dicts) that ``torch.load(..., weights_only=True)`` accepts. The
scheduler is deterministic given its inputs and seed, so ranks that call it with the same
inputs agree; the adapters still plan on rank 0 and broadcast.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from e3core._validation import _show, as_float_array, check_float, check_int, check_state_keys
from e3core.allocation import Allocator, Budget, KnapsackAllocator
from e3core.difficulty import PRIORS, RANK_BY, BetaDifficultyTracker, GridPosterior, Posterior
from e3core.temperature import PITemperatureController, TemperatureController

__all__ = ["STATE_VERSION", "E3Scheduler", "RolloutPlan"]

logger = logging.getLogger(__name__)

STATE_VERSION = 2
"""Layout version of :meth:`E3Scheduler.state_dict`, checked on load (2: targets are objects,
the state is plain data, the skipped-entropy count is kept)."""


@dataclass(frozen=True)
class RolloutPlan:
    """What to generate this step.

    Attributes:
        counts: int64 rollouts per prompt, in the order of the planned ``prompt_ids``.
        temperature: Sampling temperature for every rollout of this step.
    """

    counts: np.ndarray
    temperature: float

    @property
    def total(self) -> int:
        """Total number of rollouts."""
        return int(self.counts.sum())

    @property
    def group_ids(self) -> np.ndarray:
        """Position of each rollout's prompt when prompts are repeated in order (``repeat``)."""
        return np.repeat(np.arange(len(self.counts)), self.counts)


def _to_numpy(name: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().to("cpu").double().numpy()
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an array of real numbers, got {_show(value)}")
    return as_float_array(name, value)


def _check_prompt_ids(prompt_ids: Any) -> int:
    """The number of ``prompt_ids`` (a sequence or 1-D array of ids), or raise naming it."""
    if isinstance(prompt_ids, (str, bytes, Mapping)) or not (
        isinstance(prompt_ids, (Sequence, np.ndarray)) or hasattr(prompt_ids, "__getitem__")
    ):
        raise TypeError(
            f"prompt_ids must be a sequence (list, tuple, array) of hashable ids, got "
            f"{_show(prompt_ids)}"
        )
    if getattr(prompt_ids, "ndim", 1) != 1:
        raise ValueError(f"prompt_ids must be one-dimensional, got shape {tuple(prompt_ids.shape)}")
    return len(prompt_ids)


def _group_positions(group_ids: Any, num_rewards: int, num_prompts: int) -> np.ndarray:
    """``group_ids`` as int64 positions in ``[0, num_prompts)``, one per reward, or raise."""
    if isinstance(group_ids, (str, bytes, Mapping)) or np.ndim(group_ids) == 0:
        raise TypeError(f"group_ids must be a 1-D array of integers, got {_show(group_ids)}")
    g = np.asarray(group_ids.detach().cpu().numpy() if hasattr(group_ids, "detach") else group_ids)
    if g.ndim != 1 or len(g) != num_rewards:
        raise ValueError(
            f"group_ids must be one-dimensional with one entry per reward ({num_rewards}), "
            f"got shape {g.shape}"
        )
    if not len(g):
        return g.astype(np.int64)
    if g.dtype.kind not in "iu":
        raise TypeError(
            f"group_ids must be integers (positions in prompt_ids), got dtype {g.dtype}"
        )
    if g.min() < 0 or g.max() >= num_prompts:
        raise ValueError(
            f"group_ids must be integers in [0, {num_prompts}) (positions in prompt_ids), got "
            f"range [{g.min()}, {g.max()}]"
        )
    return g.astype(np.int64, copy=False)


def _plain(value: Any) -> Any:
    """``value`` with numpy arrays as lists and numpy scalars as Python scalars, recursively.

    Checkpoints then hold only what ``torch.load(..., weights_only=True)`` accepts; float64
    arrays round-trip exactly through Python floats.
    """
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        items = [_plain(item) for item in value]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def _entropy_or_none(entropy: Any) -> float | None:
    """The entropy as a float when it is finite and > 0; None when missing or invalid.

    Raises:
        TypeError: ``entropy`` is neither None nor one real number (a 0-d or one-element
            tensor or array counts as one number).
    """
    if entropy is None:
        return None
    if hasattr(entropy, "item") and not isinstance(entropy, (int, float)):
        try:
            entropy = entropy.item()
        except (ValueError, RuntimeError) as exc:
            raise TypeError(
                f"entropy must be one real number or None, got {_show(entropy)}"
            ) from exc
    if isinstance(entropy, bool) or not isinstance(entropy, (int, float)):
        raise TypeError(f"entropy must be a real number or None, got {_show(entropy)}")
    value = float(entropy)
    return value if math.isfinite(value) and value > 0 else None


class E3Scheduler:
    r"""Difficulty tracking, rollout allocation and temperature control for one training run.

    Every argument is keyword-only. A scheduler from named settings is
    :meth:`E3Settings.build_scheduler <e3core.settings.E3Settings.build_scheduler>`'s; the
    paper's is :meth:`paper`.

    Args:
        tracker: The difficulty tracker (default: ``BetaDifficultyTracker()``).
        allocator: The allocator (default: ``KnapsackAllocator("mixed")``, the best configuration
            in ``benchmarks/allocation_sim.py`` together with the grid prior refits below).
        controller: A temperature controller; a callable without arguments that returns one
            (the default, :class:`~e3core.PITemperatureController`, so every scheduler gets a
            fresh PI controller with its defaults: the first step's entropy as target, bounds
            0.5..1.5); or ``None`` for a fixed ``temperature``.
        rollouts_per_prompt: :math:`G`; each step spends :math:`N = B\cdot G` rollouts.
        min_per_prompt: Lower bound per prompt.
        max_per_prompt: Upper bound per prompt (None: no bound beyond the budget).
        success_threshold: A reward :math:`\ge` this counts as a success.
        refit_every: Refit the tracker's prior every this many steps (None: never).
        refit_prior: The kind of prior each refit fits, a name in
            :data:`~e3core.priors.PRIORS`: ``"grid"`` or ``"beta"`` (the tracker's current
            prior is ``tracker.prior``, an object).
        refit_min_prompts: Skip refits until this many prompts have been observed.
        rank_by: A name in :data:`~e3core.difficulty.RANK_BY`: ``"mean"`` (live
            posterior-mean rank, the tracker's ``rank(by="mean")``) or ``"epoch_accuracy"`` (the
            paper: the tracker's ``rank(by="accuracy")`` over all tracked prompts, frozen at each
            epoch end). Used by allocators that read ``posterior.rank``.
        steps_per_epoch: Steps per epoch, for epoch-end events (None: call :meth:`end_epoch`).
        widen_per_epoch: :math:`u`: at each epoch end ``min -= u`` and ``max += u``.
        widen_limits: ``(n_low, n_high)`` that widening stays within.
        temperature: The fixed temperature when ``controller`` is None.
        seed: Seed of the scheduler's generator (Thompson sampling, random tie-breaks).

    Attributes:
        entropy_skipped: Entropies skipped so far because they were missing or invalid (see
            :meth:`observe_entropy`); saved with the state.
    """

    def __init__(
        self,
        *,
        tracker: BetaDifficultyTracker | None = None,
        allocator: Allocator | None = None,
        controller: TemperatureController
        | Callable[[], TemperatureController]
        | None = PITemperatureController,
        rollouts_per_prompt: int = 8,
        min_per_prompt: int = 2,
        max_per_prompt: int | None = 32,
        success_threshold: float = 0.5,
        refit_every: int | None = 25,
        refit_prior: str = "grid",
        refit_min_prompts: int = 64,
        rank_by: str = "mean",
        steps_per_epoch: int | None = None,
        widen_per_epoch: int = 0,
        widen_limits: tuple[int, int] | None = None,
        temperature: float = 1.0,
        seed: int = 0,
    ):
        self.tracker = BetaDifficultyTracker() if tracker is None else tracker
        if not isinstance(self.tracker, BetaDifficultyTracker):
            raise TypeError(
                f"tracker must be a BetaDifficultyTracker, got {type(self.tracker).__name__}"
            )
        self.allocator = KnapsackAllocator("mixed") if allocator is None else allocator
        if not hasattr(self.allocator, "allocate"):
            raise TypeError(f"allocator must have allocate(), got {type(allocator).__name__}")
        self.controller = self._make_controller(controller)
        self.rollouts_per_prompt = check_int("rollouts_per_prompt", rollouts_per_prompt, low=1)
        self.min_per_prompt = check_int(
            "min_per_prompt", min_per_prompt, low=1, high=self.rollouts_per_prompt
        )
        self.max_per_prompt = (
            None
            if max_per_prompt is None
            else check_int(
                "max_per_prompt",
                max_per_prompt,
                low=self.rollouts_per_prompt,
                low_name="rollouts_per_prompt",
            )
        )
        self.success_threshold = check_float("success_threshold", success_threshold)
        self.refit_every = (
            None if refit_every is None else check_int("refit_every", refit_every, low=1)
        )
        self.refit_prior = PRIORS.check("refit_prior", refit_prior)
        self.refit_min_prompts = check_int("refit_min_prompts", refit_min_prompts, low=1)
        self.rank_by = RANK_BY.check("rank_by", rank_by)
        self.steps_per_epoch = (
            None
            if steps_per_epoch is None
            else check_int("steps_per_epoch", steps_per_epoch, low=1)
        )
        self.widen_per_epoch = check_int("widen_per_epoch", widen_per_epoch, low=0)
        if widen_limits is None:
            widen_limits = (1, self.max_per_prompt or max(2**31 - 1, self.rollouts_per_prompt))
        if isinstance(widen_limits, (str, bytes, Mapping)) or np.ndim(widen_limits) != 1:
            raise TypeError(
                f"widen_limits must be a pair (n_low, n_high) of integers or None, got "
                f"{_show(widen_limits)}"
            )
        if len(widen_limits) != 2:
            raise ValueError(
                f"widen_limits must be a pair (n_low, n_high), got {len(widen_limits)} values: "
                f"{_show(widen_limits)}"
            )
        low, high = widen_limits
        low = check_int(
            "widen_limits[0]", low, low=1, high=self.min_per_prompt, high_name="min_per_prompt"
        )
        high = check_int(
            "widen_limits[1]",
            high,
            low=self.max_per_prompt or self.rollouts_per_prompt,
            low_name="max_per_prompt" if self.max_per_prompt else "rollouts_per_prompt",
        )
        self.widen_limits = (low, high)
        self.fixed_temperature = check_float("temperature", temperature, low=0, low_open=True)
        self.seed = check_int("seed", seed, low=0, hint="numpy seeds are non-negative")
        self._rng = np.random.default_rng(self.seed)
        self.step = 0
        self.epoch = 0
        self.entropy_skipped = 0
        self._rank_snapshot: np.ndarray | None = None
        self._planned_temperature: float | None = None
        self._warned_entropy = False

    @staticmethod
    def _make_controller(
        controller: TemperatureController | Callable[[], TemperatureController] | None,
    ) -> TemperatureController | None:
        """The controller, built first when a factory (e.g. a controller class) is given."""
        if controller is None or isinstance(controller, TemperatureController):
            return controller
        if isinstance(controller, str) or not callable(controller):
            raise TypeError(
                f"controller must be a TemperatureController, a callable without arguments "
                f"that returns one, or None, got {_show(controller)} (to choose a controller "
                f"by name, use E3Settings(controller=...).build_scheduler)"
            )
        built = controller()
        if not isinstance(built, TemperatureController):
            raise TypeError(f"controller() must return a TemperatureController, got {_show(built)}")
        return built

    # ------------------------------------------------------------ factory
    @classmethod
    def paper(
        cls,
        vocab_size: int,
        *,
        steps_per_epoch: int,
        total_steps: int,
        rollouts_per_prompt: int = 8,
        seed: int = 0,
        **overrides: Any,
    ) -> E3Scheduler:
        r"""The E3 paper's configuration (arXiv 2505.18573; scripts: G=8, u=2, 4..12, B=64).

        Built from :meth:`E3Settings.paper <e3core.settings.E3Settings.paper>`, the one place
        the paper's configuration is written: rank allocation on the all-time accuracy rank
        frozen at each epoch end; bounds ``min = max = G`` in epoch 1 (so allocation is
        uniform), widened by ``u`` per epoch within ``widen_min..widen_max``; the E3 temperature
        rule with the first step's entropy as target, cosine-annealed over the last 40% of
        ``total_steps`` to ``anneal_final_ratio``. Differences from the paper's code (its flaws,
        see the docs): the cap is enforced, the temperature is bounded (here loosely, to
        ``[0.1, 10]``), the state is checkpointed.

        Args:
            vocab_size: :math:`V`, the policy's vocabulary size (the E3 rule's).
            steps_per_epoch: Steps per epoch (widening and rank snapshots).
            total_steps: Steps in the run (the annealing).
            rollouts_per_prompt: :math:`G`.
            seed: Seed of the scheduler's generator.
            **overrides: :class:`~e3core.settings.E3Settings` fields that replace the paper's
                (e.g. ``widen_min=2, widen_max=6``, ``anneal_final_ratio=0.8``).
        """
        from e3core.settings import E3Settings  # settings builds schedulers: import late

        settings = E3Settings.paper(rollouts_per_prompt, **{"seed": seed, **overrides})
        return settings.build_scheduler(
            rollouts_per_prompt,
            vocab_size=vocab_size,
            total_steps=total_steps,
            steps_per_epoch=steps_per_epoch,
            prefix="",
        )

    # ------------------------------------------------------------ step API
    @property
    def temperature(self) -> float:
        """The temperature the next plan samples at."""
        return self.fixed_temperature if self.controller is None else self.controller.temperature

    def budget(self, num_prompts: int) -> Budget:
        """This step's budget for ``num_prompts`` prompts."""
        budget = Budget(
            num_prompts * self.rollouts_per_prompt, self.min_per_prompt, self.max_per_prompt
        )
        budget.check(num_prompts)
        return budget

    def posterior(self, prompt_ids: Any) -> Posterior | GridPosterior:
        """The batch posterior handed to the allocator (with ranks if it uses them).

        The ids are looked up in the tracker once (:meth:`BetaDifficultyTracker.resolve`) for
        the posterior, the live rank and the rows of the epoch snapshot.
        """
        if not getattr(self.allocator, "uses_rank", True):
            return self.tracker.posterior(prompt_ids)
        rule = RANK_BY.get(self.rank_by)
        ids = self.tracker.resolve(prompt_ids)
        post = self.tracker.posterior(ids, with_rank=True, by=rule.by)
        snapshot = self._rank_snapshot
        if not rule.per_epoch or snapshot is None:
            return post
        # prompts first seen since the last epoch end keep their live rank
        known = (ids.rows >= 0) & (ids.rows < len(snapshot))
        rank = np.where(known, snapshot[np.where(known, ids.rows, 0)], post.rank)
        return replace(post, rank=rank)

    def plan(self, prompt_ids: Any) -> RolloutPlan:
        """Rollout counts and temperature for this step's prompts (in their order).

        The plan's temperature is remembered until the next :meth:`observe`, which reports it
        as ``e3/sample_temperature``. A step may be planned in several calls (a refill of a
        few prompts): they share the step's temperature.
        """
        num = _check_prompt_ids(prompt_ids)
        if num == 0:
            raise ValueError("prompt_ids must not be empty")
        budget = self.budget(num)
        counts = self.allocator.allocate(self.posterior(prompt_ids), budget, rng=self._rng)
        plan = RolloutPlan(counts=counts, temperature=self.temperature)
        self._planned_temperature = plan.temperature
        return plan

    def observe(
        self,
        prompt_ids: Any,
        rewards: Any,
        group_ids: Any,
        entropy: float | None = None,
    ) -> dict[str, float]:
        r"""Feed one step's outcome; return the step's metrics (keys prefixed ``e3/``).

        The metrics, one set for every adapter (their table is in the logging guide):
        ``e3/temperature`` (for the next plan), ``e3/sample_temperature`` (the temperature of
        this step's :meth:`plan`, or the current one when the step was not planned here),
        ``e3/step``, ``e3/epoch``, ``e3/success_rate``, ``e3/mixed_share``,
        ``e3/all_correct_share``, ``e3/all_wrong_share``, ``e3/count_min``, ``e3/count_max``,
        ``e3/count_mean``, ``e3/count_std``, ``e3/count_median`` (completions observed per
        prompt; ``count_min`` over the prompts that have any, the others over all of
        ``prompt_ids``), ``e3/min_per_prompt``, ``e3/max_per_prompt``, ``e3/tracked_prompts``,
        ``e3/entropy_skipped``, the prior's (``e3/prior_alpha`` and ``e3/prior_beta``, or
        ``e3/prior_mass_never``, ``e3/prior_mass_always`` and ``e3/prior_mean``), and, when
        ``entropy`` is given, those of :meth:`observe_entropy`.

        Args:
            prompt_ids: The step's ``B`` prompt ids.
            rewards: One float reward per completion (numpy, list or tensor).
            group_ids: Integers in ``[0, B)``: ``rewards[j]`` belongs to
                ``prompt_ids[group_ids[j]]``.
            entropy: Mean token entropy of the step's completions at the sampled temperature,
                handed to :meth:`observe_entropy` (invalid values are skipped and counted
                there). None: no entropy in this call (the temperature is left as it is); give
                it to :meth:`observe_entropy` when it comes.
        """
        # Everything is checked before anything changes: a call that raises can be retried.
        if entropy is not None:
            _entropy_or_none(entropy)  # a wrong type raises; NaN etc. are skipped later
        sample_temperature = (
            self.temperature if self._planned_temperature is None else self._planned_temperature
        )
        num = _check_prompt_ids(prompt_ids)
        r = _to_numpy("rewards", rewards)
        g = _group_positions(group_ids, len(r), num)
        trials = np.bincount(g, minlength=num).astype(np.float64)
        successes = np.bincount(g, weights=r >= self.success_threshold, minlength=num)
        seen = trials > 0
        observed = [prompt_ids[k] for k in np.flatnonzero(seen)]
        self.tracker.update(observed, successes[seen], trials[seen])

        metrics: dict[str, float] = {}
        if entropy is not None:
            metrics.update(self.observe_entropy(entropy))
        self.step += 1
        if (
            self.refit_every is not None
            and self.step % self.refit_every == 0
            and len(self.tracker) >= self.refit_min_prompts
        ):
            self.tracker.fit_prior(self.refit_prior)
        if self.steps_per_epoch is not None and self.step % self.steps_per_epoch == 0:
            self.end_epoch()
        self._planned_temperature = None

        groups = max(int(seen.sum()), 1)
        mixed = (successes > 0) & (successes < trials)
        metrics.update(
            {
                "e3/temperature": self.temperature,
                "e3/sample_temperature": float(sample_temperature),
                "e3/step": float(self.step),
                "e3/epoch": float(self.epoch),
                "e3/success_rate": float(successes.sum() / max(trials.sum(), 1.0)),
                "e3/mixed_share": float(mixed.sum() / groups),
                "e3/all_correct_share": float(((successes == trials) & seen).sum() / groups),
                "e3/all_wrong_share": float(((successes == 0) & seen).sum() / groups),
                "e3/count_min": float(trials[seen].min()) if seen.any() else 0.0,
                "e3/count_max": float(trials.max()) if num else 0.0,
                "e3/count_mean": float(trials.sum() / max(num, 1)),
                "e3/count_std": float(trials.std()) if num else 0.0,
                "e3/count_median": float(np.median(trials)) if num else 0.0,
                "e3/min_per_prompt": float(self.min_per_prompt),
                "e3/max_per_prompt": float(self.max_per_prompt or 0),
                "e3/tracked_prompts": float(len(self.tracker)),
                "e3/entropy_skipped": float(self.entropy_skipped),
            }
        )
        # the prior: e3/prior_alpha, e3/prior_beta (Beta) or e3/prior_mass_never,
        # e3/prior_mass_always, e3/prior_mean (grid)
        metrics.update({f"e3/{k}": v for k, v in self.tracker.prior.summary().items()})
        return metrics

    def observe_entropy(
        self, entropy: float | None, *, hint: str | None = None
    ) -> dict[str, float]:
        r"""Feed a step's mean token entropy to the temperature controller; the one entropy rule.

        A finite entropy > 0 goes to the controller, which sets :math:`T_{t+1}` from
        :math:`H_t`. A missing (None) or invalid (NaN, infinite, <= 0) one is skipped: the
        temperature is left as it is, :attr:`entropy_skipped` counts it, and the first skip
        logs a warning (with a controller). For trainers that learn a step's entropy only after
        its rewards (TRL, verl and OpenRLHF: the entropy comes out of the policy update that
        follows generation), call :meth:`observe` without ``entropy`` when the rewards arrive,
        then this once the update has run: the controller ends where
        ``observe(..., entropy=H_t)`` would leave it; the tracker and step count are untouched.

        Args:
            entropy: Mean token entropy of the last update's completions at the temperature
                they were sampled at: a real number (a one-element tensor or array counts), or
                None when the framework reported none.
            hint: Appended to the warning: how to make the framework report the entropy.

        Returns:
            ``e3/entropy`` (when valid), ``e3/target_entropy`` (once the controller has a
            target), ``e3/temperature`` (for the next plan) and ``e3/entropy_skipped``.

        Raises:
            TypeError: ``entropy`` is not None and not one real number.
        """
        value = _entropy_or_none(entropy)
        metrics: dict[str, float] = {}
        if value is None:
            self.entropy_skipped += 1
            if self.controller is not None and not self._warned_entropy:
                self._warned_entropy = True
                logger.warning(
                    "e3: no valid entropy for the temperature controller (got %s; it must be "
                    "finite and > 0): the temperature is left as it is. Further skips are "
                    "counted in e3/entropy_skipped without a warning.%s",
                    _show(entropy),
                    "" if hint is None else f" {hint}",
                )
        else:
            if self.controller is not None:
                self.controller.update(value)
            metrics["e3/entropy"] = value
        if self.controller is not None:
            target = self.controller.target_entropy
            if target is not None:
                metrics["e3/target_entropy"] = float(target)
        metrics["e3/temperature"] = self.temperature
        metrics["e3/entropy_skipped"] = float(self.entropy_skipped)
        return metrics

    def end_epoch(self) -> None:
        """Epoch-end events: widen the bounds and refresh the rank snapshot."""
        self.epoch += 1
        if self.widen_per_epoch:
            low, high = self.widen_limits
            self.min_per_prompt = max(low, self.min_per_prompt - self.widen_per_epoch)
            if self.max_per_prompt is not None:
                self.max_per_prompt = min(high, self.max_per_prompt + self.widen_per_epoch)
        rule = RANK_BY.get(self.rank_by)
        if rule.per_epoch:
            self._rank_snapshot = self.tracker.rank(self.tracker.ids, by=rule.by)

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly, as plain Python data.

        The tracker, controller, bounds, epoch, skipped-entropy count and generator, with numpy
        arrays as lists: ``torch.save`` it and ``torch.load(path, weights_only=True)`` reads it
        back (prompt ids must then be numbers, strings or tuples of them). ``version`` is
        :data:`STATE_VERSION`, checked by :meth:`load_state_dict`.
        """
        return _plain(
            {
                "version": STATE_VERSION,
                "step": self.step,
                "epoch": self.epoch,
                "min_per_prompt": self.min_per_prompt,
                "max_per_prompt": self.max_per_prompt,
                "entropy_skipped": self.entropy_skipped,
                "tracker": self.tracker.state_dict(),
                "controller": None if self.controller is None else self.controller.state_dict(),
                "rng": self._rng.bit_generator.state,
                "rank_snapshot": self._rank_snapshot,
            }
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly (into a scheduler of the same configuration).

        Transactional: the whole state (tracker, controller and the scheduler's own fields) is
        checked first, and a state that fails leaves the scheduler, its tracker and its
        controller exactly as they were. The bounds must fit this scheduler's configuration
        (``widen_limits[0] <= min_per_prompt <= rollouts_per_prompt <= max_per_prompt <=
        widen_limits[1]``, and ``max_per_prompt`` None exactly when configured None).

        Raises:
            TypeError, ValueError: A bad field, named as ``state['...']``; another
                :data:`STATE_VERSION`; missing or unknown keys; disagreement with this
                scheduler on having a controller.
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state must be a mapping, got {_show(state)}")
        version = state.get("version")
        if isinstance(version, bool) or version != STATE_VERSION:
            raise ValueError(
                f"the scheduler state has version {version!r}, this e3core reads version "
                f"{STATE_VERSION}: it was written by another e3core release; resume with that "
                f"release or start the E3 state afresh"
            )
        required = {"version", "step", "epoch", "min_per_prompt", "max_per_prompt"}
        required |= {"entropy_skipped", "tracker", "controller", "rng"}
        check_state_keys("state", state, required, {"rank_snapshot"})
        if (state["controller"] is None) != (self.controller is None):
            raise ValueError(
                "state and scheduler disagree on having a temperature controller: build the "
                "scheduler with the same configuration before loading"
            )
        step = check_int("state['step']", state["step"], low=0)
        epoch = check_int("state['epoch']", state["epoch"], low=0)
        low, high = self.widen_limits
        g = self.rollouts_per_prompt
        min_per = check_int(
            "state['min_per_prompt']",
            state["min_per_prompt"],
            low=low,
            high=g,
            low_name="widen_limits[0]",
            high_name="rollouts_per_prompt",
        )
        mx = state["max_per_prompt"]
        if (mx is None) != (self.max_per_prompt is None):
            raise ValueError(
                f"state['max_per_prompt'] is {mx!r} but this scheduler's max_per_prompt is "
                f"{self.max_per_prompt!r}: both must be None or both a bound"
            )
        max_per = (
            None
            if mx is None
            else check_int(
                "state['max_per_prompt']",
                mx,
                low=g,
                high=high,
                low_name="rollouts_per_prompt",
                high_name="widen_limits[1]",
            )
        )
        skipped = check_int("state['entropy_skipped']", state["entropy_skipped"], low=0)
        rng = _rng_from_state(state["rng"])
        commit_tracker = self.tracker._staged_load(state["tracker"], "state['tracker']")
        commit_controller = (
            None
            if self.controller is None
            else self.controller._staged_load(state["controller"], "state['controller']")
        )
        snap = state.get("rank_snapshot")
        snapshot = None if snap is None else _rank_snapshot(snap, len(state["tracker"]["ids"]))

        commit_tracker()
        if commit_controller is not None:
            commit_controller()
        self.step, self.epoch, self.entropy_skipped = step, epoch, skipped
        self.min_per_prompt, self.max_per_prompt = min_per, max_per
        self._rng = rng
        self._rank_snapshot = snapshot
        self._planned_temperature = None


def _rng_from_state(value: Any) -> np.random.Generator:
    """A generator in the bit-generator state ``value`` (a ``state['rng']``), or raise."""
    if not isinstance(value, Mapping):
        raise TypeError(
            f"state['rng'] must be a numpy bit-generator state (a mapping), got {_show(value)}"
        )
    rng = np.random.default_rng()
    kind = type(rng.bit_generator).__name__
    given = value.get("bit_generator")
    if given != kind:
        raise ValueError(f"state['rng']['bit_generator'] must be {kind!r}, got {_show(given)}")
    try:
        rng.bit_generator.state = dict(value)
    except (TypeError, ValueError, KeyError, OverflowError) as exc:
        raise ValueError(f"state['rng'] is not a valid {kind} state: {exc!r}") from exc
    return rng


def _rank_snapshot(value: Any, num_ids: int) -> np.ndarray:
    """``state['rank_snapshot']``: ranks in [0, 1], at most one per tracked id, or raise."""
    name = "state['rank_snapshot']"
    if isinstance(value, (str, bytes, Mapping)) or np.ndim(value) != 1:
        raise TypeError(f"{name} must be a list of ranks in [0, 1] or None, got {_show(value)}")
    arr = as_float_array(name, value)
    if ((arr < 0) | (arr > 1)).any():
        raise ValueError(f"{name} must lie in [0, 1], got values in [{arr.min()}, {arr.max()}]")
    if len(arr) > num_ids:
        raise ValueError(
            f"{name} has {len(arr)} ranks but state['tracker'] tracks {num_ids} prompts (a "
            f"snapshot ranks the prompts tracked at an epoch end, so at most that many)"
        )
    return arr
