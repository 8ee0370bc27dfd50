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

Everything a resumed run needs is in :meth:`E3Scheduler.state_dict`. The scheduler is
deterministic given its inputs and seed, so ranks that call it with the same inputs agree; the
adapters still plan on rank 0 and broadcast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from e3core._validation import as_float_array, check_choice, check_float, check_int
from e3core.allocation import Allocator, Budget, KnapsackAllocator, RankAllocator
from e3core.difficulty import BetaDifficultyTracker, GridPosterior, Posterior
from e3core.temperature import (
    CosineAnnealedTarget,
    E3TemperatureController,
    PITemperatureController,
    TemperatureController,
)

__all__ = ["E3Scheduler", "RolloutPlan"]


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
    return as_float_array(name, value)


class E3Scheduler:
    r"""Difficulty tracking, rollout allocation and temperature control for one training run.

    Args:
        tracker: The difficulty tracker (default: ``BetaDifficultyTracker()``).
        allocator: The allocator (default: ``KnapsackAllocator("mixed")``, the best configuration
            in ``benchmarks/allocation_sim.py`` together with the grid prior refits below).
        controller: A temperature controller, or ``None`` for a fixed ``temperature``
            (default: ``PITemperatureController()`` with the first step's entropy as target).
        rollouts_per_prompt: :math:`G`; each step spends :math:`N = B\cdot G` rollouts.
        min_per_prompt: Lower bound per prompt.
        max_per_prompt: Upper bound per prompt (None: no bound beyond the budget).
        success_threshold: A reward :math:`\ge` this counts as a success.
        refit_every: Refit the tracker's prior every this many steps (None: never).
        prior_kind: ``"beta"`` or ``"grid"``, the refitted prior.
        refit_min_prompts: Skip refits until this many prompts have been observed.
        rank_by: ``"mean"`` (live posterior-mean rank) or ``"epoch_accuracy"`` (the paper:
            accuracy rank over all tracked prompts, frozen at each epoch end). Used by allocators
            that read ``posterior.rank``.
        steps_per_epoch: Steps per epoch, for epoch-end events (None: call :meth:`end_epoch`).
        widen_per_epoch: :math:`u`: at each epoch end ``min -= u`` and ``max += u``.
        widen_limits: ``(n_low, n_high)`` that widening stays within.
        temperature: The fixed temperature when ``controller`` is None.
        seed: Seed of the scheduler's generator (Thompson sampling, random tie-breaks).
    """

    def __init__(
        self,
        tracker: BetaDifficultyTracker | None = None,
        allocator: Allocator | None = None,
        controller: TemperatureController | str | None = "default",
        rollouts_per_prompt: int = 8,
        min_per_prompt: int = 2,
        max_per_prompt: int | None = 32,
        success_threshold: float = 0.5,
        *,
        refit_every: int | None = 25,
        prior_kind: str = "grid",
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
        if isinstance(controller, str):
            if controller != "default":
                raise ValueError(
                    f"controller must be a TemperatureController, None or 'default', "
                    f"got {controller!r}"
                )
            controller = PITemperatureController()
        if controller is not None and not isinstance(controller, TemperatureController):
            raise TypeError(
                f"controller must be a TemperatureController or None, got "
                f"{type(controller).__name__}"
            )
        self.controller = controller
        self.rollouts_per_prompt = check_int("rollouts_per_prompt", rollouts_per_prompt, low=1)
        self.min_per_prompt = check_int(
            "min_per_prompt", min_per_prompt, low=1, high=self.rollouts_per_prompt
        )
        self.max_per_prompt = (
            None
            if max_per_prompt is None
            else check_int("max_per_prompt", max_per_prompt, low=self.rollouts_per_prompt)
        )
        self.success_threshold = check_float("success_threshold", success_threshold)
        self.refit_every = (
            None if refit_every is None else check_int("refit_every", refit_every, low=1)
        )
        self.prior_kind = check_choice("prior_kind", prior_kind, ("beta", "grid"))
        self.refit_min_prompts = check_int("refit_min_prompts", refit_min_prompts, low=1)
        self.rank_by = check_choice("rank_by", rank_by, ("mean", "epoch_accuracy"))
        self.steps_per_epoch = (
            None
            if steps_per_epoch is None
            else check_int("steps_per_epoch", steps_per_epoch, low=1)
        )
        self.widen_per_epoch = check_int("widen_per_epoch", widen_per_epoch, low=0)
        if widen_limits is None:
            widen_limits = (1, self.max_per_prompt or 2**31 - 1)
        low, high = widen_limits
        check_int("widen_limits[0]", low, low=1, high=self.min_per_prompt)
        check_int("widen_limits[1]", high, low=self.max_per_prompt or self.rollouts_per_prompt)
        self.widen_limits = (int(low), int(high))
        self.fixed_temperature = check_float("temperature", temperature, low=0, low_open=True)
        self.seed = check_int("seed", seed)
        self._rng = np.random.default_rng(self.seed)
        self.step = 0
        self.epoch = 0
        self._rank_snapshot: np.ndarray | None = None
        self._last_counts: np.ndarray | None = None

    # ------------------------------------------------------------ factory
    @classmethod
    def paper(
        cls,
        vocab_size: int,
        *,
        steps_per_epoch: int,
        total_steps: int,
        rollouts_per_prompt: int = 8,
        widen_per_epoch: int = 2,
        widen_limits: tuple[int, int] = (4, 12),
        final_ratio: float = 0.9,
        min_temperature: float = 0.1,
        max_temperature: float = 10.0,
        success_threshold: float = 0.5,
        seed: int = 0,
    ) -> E3Scheduler:
        r"""The E3 paper's configuration (arXiv 2505.18573; scripts: G=8, u=2, 4..12, B=64).

        Rank allocation on the all-time accuracy rank frozen at each epoch end; bounds
        ``min = max = G`` in epoch 1 (so allocation is uniform), widened by ``u`` per epoch
        within ``widen_limits``; the E3 temperature rule with the first step's entropy as
        target, cosine-annealed over the last 40% of ``total_steps`` to ``final_ratio``.
        Differences from the paper's code (its flaws, see the docs): the cap is enforced, the
        temperature is bounded (here loosely, to ``[0.1, 10]``), the state is checkpointed.
        """
        controller = E3TemperatureController(
            vocab_size,
            initial_temperature=1.0,
            warmup_steps=1,
            min_temperature=min_temperature,
            max_temperature=max_temperature,
            target_schedule=CosineAnnealedTarget.paper(total_steps, final_ratio),
        )
        return cls(
            BetaDifficultyTracker(decay=1.0),
            RankAllocator(),
            controller,
            rollouts_per_prompt,
            rollouts_per_prompt,
            rollouts_per_prompt,
            success_threshold,
            refit_every=None,
            rank_by="epoch_accuracy",
            steps_per_epoch=steps_per_epoch,
            widen_per_epoch=widen_per_epoch,
            widen_limits=widen_limits,
            seed=seed,
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
        """The batch posterior handed to the allocator (with ranks if it uses them)."""
        if not getattr(self.allocator, "uses_rank", True):
            return self.tracker.posterior(prompt_ids)
        if self.rank_by == "mean":
            return self.tracker.posterior(prompt_ids, with_rank=True, rank_by="mean")
        post = self.tracker.posterior(prompt_ids)
        live = self.tracker.rank(prompt_ids, by="accuracy")
        if self._rank_snapshot is None:
            rank = live
        else:
            rows = self.tracker.rows(prompt_ids)
            known = (rows >= 0) & (rows < len(self._rank_snapshot))
            rank = np.where(known, self._rank_snapshot[np.where(known, rows, 0)], live)
        if isinstance(post, Posterior):
            return Posterior(post.alpha, post.beta, rank=rank)
        return GridPosterior(post.grid, post.weights, rank=rank)

    def plan(self, prompt_ids: Any) -> RolloutPlan:
        """Rollout counts and temperature for this step's prompts (in their order)."""
        num = len(prompt_ids)
        if num == 0:
            raise ValueError("prompt_ids must not be empty")
        budget = self.budget(num)
        counts = self.allocator.allocate(self.posterior(prompt_ids), budget, rng=self._rng)
        self._last_counts = counts
        return RolloutPlan(counts=counts, temperature=self.temperature)

    def observe(
        self,
        prompt_ids: Any,
        rewards: Any,
        group_ids: Any,
        entropy: float | None = None,
    ) -> dict[str, float]:
        r"""Feed one step's outcome; return metrics (keys prefixed ``e3/``).

        Args:
            prompt_ids: The step's ``B`` prompt ids.
            rewards: One float reward per completion (numpy, list or tensor).
            group_ids: Integers in ``[0, B)``: ``rewards[j]`` belongs to
                ``prompt_ids[group_ids[j]]``.
            entropy: Mean token entropy of the step's completions at the sampled temperature,
                for the controller (None: the temperature is left as it is).
        """
        num = len(prompt_ids)
        r = _to_numpy("rewards", rewards)
        g = np.asarray(
            group_ids.detach().cpu().numpy() if hasattr(group_ids, "detach") else group_ids
        )
        if g.ndim != 1 or len(g) != len(r):
            raise ValueError(
                f"group_ids must be one-dimensional with one entry per reward ({len(r)}), "
                f"got shape {g.shape}"
            )
        if len(g) and (g.dtype.kind not in "iu" or g.min() < 0 or g.max() >= num):
            raise ValueError(
                f"group_ids must be integers in [0, {num}) (positions in prompt_ids), got "
                f"dtype {g.dtype} with range [{g.min()}, {g.max()}]"
            )
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
            self.tracker.fit_prior(self.prior_kind)
        if self.steps_per_epoch is not None and self.step % self.steps_per_epoch == 0:
            self.end_epoch()

        groups = max(int(seen.sum()), 1)
        mixed = (successes > 0) & (successes < trials)
        metrics.update(
            {
                "e3/temperature": self.temperature,
                "e3/step": float(self.step),
                "e3/epoch": float(self.epoch),
                "e3/success_rate": float(successes.sum() / max(trials.sum(), 1.0)),
                "e3/mixed_share": float(mixed.sum() / groups),
                "e3/all_correct_share": float(((successes == trials) & seen).sum() / groups),
                "e3/all_wrong_share": float(((successes == 0) & seen).sum() / groups),
                "e3/count_min": float(trials[seen].min()) if seen.any() else 0.0,
                "e3/count_max": float(trials.max()) if num else 0.0,
                "e3/count_mean": float(trials.sum() / max(num, 1)),
                "e3/min_per_prompt": float(self.min_per_prompt),
                "e3/max_per_prompt": float(self.max_per_prompt or 0),
                "e3/tracked_prompts": float(len(self.tracker)),
            }
        )
        if self.tracker.prior_kind == "beta":
            metrics["e3/prior_alpha"] = self.tracker.prior_alpha
            metrics["e3/prior_beta"] = self.tracker.prior_beta
        else:
            assert self.tracker.prior_grid is not None and self.tracker.prior_weights is not None
            w, grid = self.tracker.prior_weights, self.tracker.prior_grid
            metrics["e3/prior_mass_never"] = float(w[0])
            metrics["e3/prior_mass_always"] = float(w[-1])
            metrics["e3/prior_mean"] = float(w @ grid)
        return metrics

    def observe_entropy(self, entropy: float) -> dict[str, float]:
        r"""Feed a mean token entropy to the temperature controller alone.

        For trainers that learn a step's entropy only after its rewards (TRL, verl: the entropy
        comes out of the policy update that follows generation): call :meth:`observe` with
        ``entropy=None`` when the rewards arrive, then this once the update has run. The
        controller then sets :math:`T_{t+1}` from :math:`H_t` exactly as
        ``observe(..., entropy=H_t)`` would; the tracker and step count are untouched.

        Args:
            entropy: Mean token entropy (> 0, finite) of the last update's completions at the
                temperature they were sampled at.

        Returns:
            ``e3/entropy`` and, once the controller has a target, ``e3/target_entropy``.
        """
        value = check_float("entropy", entropy, low=0.0, low_open=True)
        metrics: dict[str, float] = {}
        if self.controller is not None:
            self.controller.update(value)
            target = self.controller.target_entropy
            if target is not None:
                metrics["e3/target_entropy"] = float(target)
        metrics["e3/entropy"] = float(value)
        return metrics

    def end_epoch(self) -> None:
        """Epoch-end events: widen the bounds and refresh the rank snapshot."""
        self.epoch += 1
        if self.widen_per_epoch:
            low, high = self.widen_limits
            self.min_per_prompt = max(low, self.min_per_prompt - self.widen_per_epoch)
            if self.max_per_prompt is not None:
                self.max_per_prompt = min(high, self.max_per_prompt + self.widen_per_epoch)
        if self.rank_by == "epoch_accuracy":
            self._rank_snapshot = self.tracker.rank(self.tracker.ids, by="accuracy")

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: tracker, controller, bounds, epoch, generator."""
        return {
            "version": 1,
            "step": self.step,
            "epoch": self.epoch,
            "min_per_prompt": self.min_per_prompt,
            "max_per_prompt": self.max_per_prompt,
            "tracker": self.tracker.state_dict(),
            "controller": None if self.controller is None else self.controller.state_dict(),
            "rng": self._rng.bit_generator.state,
            "rank_snapshot": None if self._rank_snapshot is None else self._rank_snapshot.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly."""
        missing = {"step", "epoch", "min_per_prompt", "max_per_prompt", "tracker", "rng"} - set(
            state
        )
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        if (state.get("controller") is None) != (self.controller is None):
            raise ValueError(
                "state and scheduler disagree on having a temperature controller: build the "
                "scheduler with the same configuration before loading"
            )
        self.tracker.load_state_dict(state["tracker"])
        if self.controller is not None:
            self.controller.load_state_dict(state["controller"])
        self.step = check_int("step", state["step"], low=0)
        self.epoch = check_int("epoch", state["epoch"], low=0)
        self.min_per_prompt = check_int("min_per_prompt", state["min_per_prompt"], low=1)
        mx = state["max_per_prompt"]
        self.max_per_prompt = None if mx is None else check_int("max_per_prompt", mx, low=1)
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        snap = state.get("rank_snapshot")
        self._rank_snapshot = None if snap is None else np.array(snap, dtype=np.float64)
