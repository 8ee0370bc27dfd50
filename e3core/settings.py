r"""``E3Settings``: every E3 knob as plain, validated data, and the scheduler it describes.

Framework adapters read their users' configuration (a Hydra ``e3:`` group in verl, flags in
OpenRLHF) into one :class:`E3Settings` and call :meth:`E3Settings.build_scheduler`, so that the
same names mean the same thing everywhere and bad values fail with one message naming the
setting. The defaults are e3core's recommended configuration: knapsack allocation of the
expected number of mixed groups under a refitted grid prior, and PI control of the token
entropy at its first-step value. :meth:`E3Settings.paper` is the E3 paper's exact setting (Liao
et al., arXiv 2505.18573: rank allocation with bounds widened by 2 per epoch within 4..12, the
E3 temperature rule with the target cosine-annealed to 0.9 over the last 40 % of training).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from e3core._validation import check_choice, check_float, check_int
from e3core.allocation import (
    Allocator,
    KnapsackAllocator,
    RankAllocator,
    ThompsonAllocator,
    UniformAllocator,
)
from e3core.difficulty import BetaDifficultyTracker
from e3core.scheduler import E3Scheduler
from e3core.temperature import (
    CosineAnnealedTarget,
    E3TemperatureController,
    PITemperatureController,
    TemperatureController,
)

__all__ = ["E3Settings"]

ALLOCATORS = ("knapsack", "thompson", "rank", "uniform")
VALUES = ("mixed", "info_gain")
CONTROLLERS = ("pi", "e3", "none")
PRIORS = ("grid", "beta")
RANK_BY = ("mean", "epoch_accuracy")
WEIGHTING = ("sample", "prompt")
BASELINES = ("mean", "leave_one_out")


@dataclass(frozen=True)
class E3Settings:
    r"""The E3 settings of one training run (see the module docstring for the defaults).

    Attributes:
        enabled: False gives plain GRPO at the same budget: every prompt gets
            :math:`G` completions at the fixed ``initial_temperature``; the tracker still
            observes, so the ``e3/`` metrics stay comparable in A/B runs.
        allocator: ``knapsack``, ``thompson``, ``rank`` (the paper) or ``uniform``.
        value: What knapsack/thompson maximise: ``mixed`` (expected number of groups with both
            a success and a failure) or ``info_gain``.
        min_per_prompt: Fewest completions per prompt, :math:`1 \le n_{\min} \le G`.
        max_per_prompt: Most completions per prompt, :math:`\ge G` (None: :math:`4G`).
        success_threshold: A reward :math:`\ge` this counts as a success for the tracker.
        prior_alpha: Initial Beta prior :math:`\alpha_0 > 0`.
        prior_beta: Initial Beta prior :math:`\beta_0 > 0`.
        decay: Per-update decay :math:`\lambda \in (0, 1]` of a prompt's counts.
        prior_kind: The refitted population prior, ``grid`` or ``beta``.
        refit_every: Refit the prior every this many steps (None: never).
        refit_min_prompts: Skip refits until this many prompts have been observed.
        rank_by: Difficulty rank for the rank allocator: ``mean`` (live) or
            ``epoch_accuracy`` (the paper: frozen at each epoch end).
        steps_per_epoch: Steps per epoch for widening and epoch ranks (None: the framework's).
        widen_per_epoch: :math:`u`: at each epoch end ``min -= u``, ``max += u``.
        widen_min: The lowest ``min_per_prompt`` widening may reach (None: 1).
        widen_max: The highest ``max_per_prompt`` widening may reach (None: ``max_per_prompt``).
        controller: ``pi`` (e3core), ``e3`` (the paper's rule) or ``none`` (fixed temperature).
        target_entropy: Target token entropy :math:`H^*` (None: the mean of the first
            ``warmup_steps`` measured entropies).
        warmup_steps: Steps averaged into the target when ``target_entropy`` is None.
        kp: PI proportional gain.
        ki: PI integral gain.
        initial_temperature: The first step's sampling temperature (and the fixed one).
        min_temperature: Lowest sampling temperature, > 0.
        max_temperature: Highest sampling temperature.
        anneal_final_ratio: Cosine-anneal :math:`H^*` over the last 40 % of training to this
            fraction of it (paper: 0.9; None: no annealing; needs the run's length).
        loss_weighting: ``sample`` (every completion weighs the same) or ``prompt`` (advantages
            scaled by :math:`N/(G\,n_g)` so every prompt weighs the same).
        baseline: ``mean`` (GRPO) or ``leave_one_out`` (RLOO) for group advantages.
        seed: Seed of the scheduler's generator (None: the framework's seed, else 0).
    """

    enabled: bool = True
    allocator: str = "knapsack"
    value: str = "mixed"
    min_per_prompt: int = 2
    max_per_prompt: int | None = None
    success_threshold: float = 0.5
    prior_alpha: float = 1.0
    prior_beta: float = 1.0
    decay: float = 1.0
    prior_kind: str = "grid"
    refit_every: int | None = 25
    refit_min_prompts: int = 64
    rank_by: str = "mean"
    steps_per_epoch: int | None = None
    widen_per_epoch: int = 0
    widen_min: int | None = None
    widen_max: int | None = None
    controller: str = "pi"
    target_entropy: float | None = None
    warmup_steps: int = 1
    kp: float = 0.1
    ki: float = 0.1
    initial_temperature: float = 1.0
    min_temperature: float = 0.5
    max_temperature: float = 1.5
    anneal_final_ratio: float | None = None
    loss_weighting: str = "sample"
    baseline: str = "mean"
    seed: int | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, *, prefix: str = "e3.") -> E3Settings:
        """Settings from a mapping (a dict, an OmegaConf node); unknown keys raise.

        Args:
            mapping: Setting names to values; missing names keep their defaults.
            prefix: How the settings are spelled in the user's configuration, for messages.

        Raises:
            ValueError: An unknown key (the message lists the known ones).
        """
        data = dict(mapping or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown E3 setting(s) {[prefix + k for k in unknown]}; the settings are "
                f"{sorted(prefix + k for k in known)}"
            )
        return cls(**data)

    @classmethod
    def paper(cls, **overrides: Any) -> E3Settings:
        """The E3 paper's setting (arXiv 2505.18573; its scripts: G=8, u=2, 4..12, B=64).

        Rank allocation on the epoch-frozen accuracy rank with ``min = max = G`` in epoch 1
        (give ``min_per_prompt``/``max_per_prompt`` equal to your ``G``), widened by 2 per
        epoch within 4..12; the E3 temperature rule with the first step's entropy as target,
        cosine-annealed to 0.9. The temperature is bounded to [0.1, 10] (the paper's code has
        no bound).
        """
        base: dict[str, Any] = {
            "allocator": "rank",
            "min_per_prompt": 8,
            "max_per_prompt": 8,
            "prior_kind": "beta",
            "refit_every": None,
            "rank_by": "epoch_accuracy",
            "widen_per_epoch": 2,
            "widen_min": 4,
            "widen_max": 12,
            "controller": "e3",
            "min_temperature": 0.1,
            "max_temperature": 10.0,
            "anneal_final_ratio": 0.9,
        }
        base.update(overrides)
        return cls(**base)

    # ------------------------------------------------------------------ validation
    def validate(self, rollouts_per_prompt: int, *, prefix: str = "e3.") -> E3Settings:
        r"""Check every setting against :math:`G` = ``rollouts_per_prompt``.

        Returns:
            The settings with ``max_per_prompt`` resolved (None becomes :math:`4G`).

        Raises:
            TypeError, ValueError: A bad setting; the message names it as ``prefix + name``.
        """
        p = prefix
        g = check_int("rollouts_per_prompt", rollouts_per_prompt, low=1)
        if not isinstance(self.enabled, bool):
            raise TypeError(f"{p}enabled must be a bool, got {self.enabled!r}")
        check_choice(f"{p}allocator", self.allocator, ALLOCATORS)
        check_choice(f"{p}value", self.value, VALUES)
        check_choice(f"{p}controller", self.controller, CONTROLLERS)
        check_choice(f"{p}prior_kind", self.prior_kind, PRIORS)
        check_choice(f"{p}rank_by", self.rank_by, RANK_BY)
        check_choice(f"{p}loss_weighting", self.loss_weighting, WEIGHTING)
        check_choice(f"{p}baseline", self.baseline, BASELINES)
        check_int(f"{p}min_per_prompt", self.min_per_prompt, low=1, high=g)
        max_per = 4 * g if self.max_per_prompt is None else self.max_per_prompt
        check_int(f"{p}max_per_prompt", max_per, low=g)
        check_float(f"{p}success_threshold", self.success_threshold)
        check_float(f"{p}prior_alpha", self.prior_alpha, low=0.0, low_open=True)
        check_float(f"{p}prior_beta", self.prior_beta, low=0.0, low_open=True)
        check_float(f"{p}decay", self.decay, low=0.0, high=1.0, low_open=True)
        if self.refit_every is not None:
            check_int(f"{p}refit_every", self.refit_every, low=1)
        check_int(f"{p}refit_min_prompts", self.refit_min_prompts, low=1)
        if self.steps_per_epoch is not None:
            check_int(f"{p}steps_per_epoch", self.steps_per_epoch, low=1)
        check_int(f"{p}widen_per_epoch", self.widen_per_epoch, low=0)
        if self.widen_min is not None:
            check_int(f"{p}widen_min", self.widen_min, low=1, high=self.min_per_prompt)
        if self.widen_max is not None:
            check_int(f"{p}widen_max", self.widen_max, low=max_per)
        if self.target_entropy is not None:
            check_float(f"{p}target_entropy", self.target_entropy, low=0.0, low_open=True)
        check_int(f"{p}warmup_steps", self.warmup_steps, low=1)
        check_float(f"{p}kp", self.kp, low=0.0)
        check_float(f"{p}ki", self.ki, low=0.0)
        check_float(f"{p}min_temperature", self.min_temperature, low=0.0, low_open=True)
        check_float(f"{p}max_temperature", self.max_temperature, low=self.min_temperature)
        if self.controller != "none" and self.enabled:
            check_float(
                f"{p}initial_temperature",
                self.initial_temperature,
                low=self.min_temperature,
                high=self.max_temperature,
            )
        else:
            check_float(f"{p}initial_temperature", self.initial_temperature, low=0.0, low_open=True)
        if self.anneal_final_ratio is not None:
            check_float(
                f"{p}anneal_final_ratio", self.anneal_final_ratio, low=0.0, high=1.0, low_open=True
            )
        if self.seed is not None:
            check_int(f"{p}seed", self.seed)
        return dataclasses.replace(self, max_per_prompt=max_per)

    # ------------------------------------------------------------------ building
    def allocator_object(self) -> Allocator:
        """The allocator these settings name (uniform when E3 is disabled)."""
        if not self.enabled or self.allocator == "uniform":
            return UniformAllocator()
        if self.allocator == "knapsack":
            return KnapsackAllocator(value=self.value)
        if self.allocator == "thompson":
            return ThompsonAllocator(value=self.value)
        return RankAllocator()

    def build_scheduler(
        self,
        rollouts_per_prompt: int,
        *,
        vocab_size: int | None = None,
        total_steps: int | None = None,
        steps_per_epoch: int | None = None,
        seed: int | None = None,
        prefix: str = "e3.",
    ) -> E3Scheduler:
        r"""The :class:`~e3core.E3Scheduler` these settings describe.

        Args:
            rollouts_per_prompt: :math:`G`; each step spends :math:`B\cdot G` rollouts.
            vocab_size: The model's vocabulary size :math:`V` (needed by ``controller="e3"``).
            total_steps: Steps in the run (needed by ``anneal_final_ratio``).
            steps_per_epoch: The framework's steps per epoch (``self.steps_per_epoch`` wins).
            seed: The framework's seed (``self.seed`` wins; None and None give 0).
            prefix: How the settings are spelled in the user's configuration, for messages.

        Raises:
            ValueError: A bad setting, or a missing ``vocab_size``/``total_steps`` that the
                settings need.
        """
        s = self.validate(rollouts_per_prompt, prefix=prefix)
        g = int(rollouts_per_prompt)
        controller: TemperatureController | None = None
        if s.enabled and s.controller != "none":
            schedule = None
            if s.anneal_final_ratio is not None:
                if total_steps is None:
                    raise ValueError(
                        f"{prefix}anneal_final_ratio needs the run's total number of steps"
                    )
                schedule = CosineAnnealedTarget.paper(
                    check_int("total_steps", total_steps, low=1), s.anneal_final_ratio
                )
            common: dict[str, Any] = {
                "initial_temperature": s.initial_temperature,
                "min_temperature": s.min_temperature,
                "max_temperature": s.max_temperature,
                "target_entropy": s.target_entropy,
                "warmup_steps": s.warmup_steps,
                "target_schedule": schedule,
            }
            if s.controller == "pi":
                controller = PITemperatureController(kp=s.kp, ki=s.ki, **common)
            else:
                if vocab_size is None:
                    raise ValueError(f"{prefix}controller='e3' needs the model's vocabulary size")
                controller = E3TemperatureController(
                    check_int("vocab_size", vocab_size, low=2), **common
                )
        assert s.max_per_prompt is not None
        min_per, max_per = (g, g) if not s.enabled else (s.min_per_prompt, s.max_per_prompt)
        widen = None
        if s.enabled and (s.widen_min is not None or s.widen_max is not None):
            widen = (s.widen_min or 1, s.widen_max or max_per)
        if s.seed is not None:
            seed_value = s.seed
        else:
            seed_value = 0 if seed is None else check_int("seed", seed)
        return E3Scheduler(
            BetaDifficultyTracker(s.prior_alpha, s.prior_beta, decay=s.decay),
            s.allocator_object(),
            controller,
            g,
            min_per,
            max_per,
            s.success_threshold,
            refit_every=s.refit_every,
            prior_kind=s.prior_kind,
            refit_min_prompts=s.refit_min_prompts,
            rank_by=s.rank_by,
            steps_per_epoch=s.steps_per_epoch or steps_per_epoch,
            widen_per_epoch=s.widen_per_epoch if s.enabled else 0,
            widen_limits=widen,
            temperature=s.initial_temperature,
            seed=seed_value,
        )
