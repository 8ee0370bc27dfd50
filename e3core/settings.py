r"""``E3Settings``: every E3 knob as plain, validated data, and the scheduler it describes.

Framework adapters read their users' configuration (TRL's ``e3_`` config fields, a Hydra ``e3:``
group in verl, ``--e3.*`` flags in OpenRLHF) into one :class:`E3Settings` and call
:meth:`E3Settings.build_scheduler`, so that the same names mean the same thing everywhere and bad
values fail with one message naming the setting as the user spelled it. Each field's help text
lives here once, in its metadata (:meth:`E3Settings.help`); TRL's config fields are generated from
these fields. Named strategies come from their modules' registries
(:data:`~e3core.allocation.ALLOCATORS`, :data:`~e3core.allocation.VALUES`,
:data:`~e3core.difficulty.PRIORS`, :data:`~e3core.difficulty.RANK_BY`,
:data:`~e3core.temperature.CONTROLLERS`), so an unknown name lists the known ones.

The defaults are e3core's recommended configuration: knapsack allocation of the expected number
of mixed groups under a refitted grid prior, and PI control of the token entropy at its
first-step value. :meth:`E3Settings.paper` is the E3 paper's exact setting (Liao et al., arXiv
2505.18573: rank allocation with bounds widened by 2 per epoch within 4..12, the E3 temperature
rule with the target cosine-annealed to 0.9 over the last 40 % of training).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from e3core._validation import check_choice, check_float, check_int
from e3core.advantages import BASELINES, LOSS_WEIGHTINGS
from e3core.allocation import ALLOCATORS, VALUES, Allocator, make_allocator
from e3core.difficulty import PRIORS, RANK_BY, BetaDifficultyTracker
from e3core.scheduler import E3Scheduler
from e3core.temperature import (
    CONTROLLERS,
    CosineAnnealedTarget,
    E3TemperatureController,
    EntropyTarget,
    FixedTarget,
    PITemperatureController,
    TemperatureController,
    WarmupMeanTarget,
)

__all__ = ["E3Settings"]

_NO_CONTROLLER = "none"
_RENAMED = {"prior_kind": "refit_prior"}  # old setting name -> new, for a helpful message
_ROLLOUTS = "rollouts_per_prompt"
_REFERENCE = re.compile(r"`(\w+)`")


def _controller_names() -> tuple[str, ...]:
    """The registered controllers, and ``none`` (a fixed temperature)."""
    names = CONTROLLERS.names()
    return names if _NO_CONTROLLER in names else (*names, _NO_CONTROLLER)


def _setting(default: Any, text: str) -> Any:
    """A settings field with its help text (the one source every adapter shows)."""
    return dataclasses.field(default=default, metadata={"help": text})


def _speller(prefix: str, names: Mapping[str, str] | None) -> Callable[[str], str]:
    """How the user spells a setting (or ``rollouts_per_prompt``): ``names``, else prefixed."""
    given = dict(names or {})

    def spell(name: str) -> str:
        if name in given:
            return given[name]
        return name if name == _ROLLOUTS else prefix + name

    return spell


@dataclass(frozen=True)
class E3Settings:
    r"""The E3 settings of one training run (see the module docstring for the defaults).

    Every field's meaning is its help text, ``E3Settings.help(name)`` (also in
    ``dataclasses.fields(E3Settings)[i].metadata["help"]``): the one text that TRL's config
    fields and ``--help`` and the API reference's settings table show. In it,
    ``rollouts_per_prompt`` is :math:`G` (TRL's ``num_generations``, verl's ``rollout.n``,
    OpenRLHF's ``--rollout.n_samples_per_prompt``): every step spends :math:`B\,G` rollouts on
    :math:`B` prompts.
    """

    enabled: bool = _setting(
        True,
        "Turn E3 on. False is plain GRPO at the same budget: every prompt gets "
        "`rollouts_per_prompt` completions at the fixed `initial_temperature`; the difficulty "
        "tracker still observes, so the e3/ metrics stay comparable in A/B runs.",
    )
    allocator: str = _setting(
        "knapsack",
        f"Rollout allocator, one of {ALLOCATORS.names()} (rank: the paper's rule; uniform: "
        "plain GRPO's counts).",
    )
    value: str = _setting(
        "mixed",
        f"What the knapsack and thompson allocators maximise, one of {VALUES.names()} (mixed: "
        "the expected number of groups with both a success and a failure).",
    )
    min_per_prompt: int = _setting(
        2, "Fewest completions per prompt, from 1 to `rollouts_per_prompt`."
    )
    max_per_prompt: int | None = _setting(
        None,
        "Most completions per prompt, >= `rollouts_per_prompt` (None: 4 x `rollouts_per_prompt`).",
    )
    success_threshold: float = _setting(
        0.5, "A reward >= this counts as a success for the difficulty tracker."
    )
    prior_alpha: float = _setting(1.0, "Initial Beta prior alpha_0 > 0 of every prompt.")
    prior_beta: float = _setting(1.0, "Initial Beta prior beta_0 > 0 of every prompt.")
    decay: float = _setting(
        1.0, "Per-update decay, in (0, 1], of a prompt's success and failure counts."
    )
    refit_prior: str = _setting(
        "grid",
        f"Kind of the population prior refitted every `refit_every` steps, one of "
        f"{PRIORS.names()}.",
    )
    refit_every: int | None = _setting(
        25, "Refit the population prior every this many steps (None: never)."
    )
    refit_min_prompts: int = _setting(
        64, "Skip prior refits until this many prompts have been observed."
    )
    rank_by: str = _setting(
        "mean",
        f"Difficulty rank for the rank allocator, one of {RANK_BY.names()} (mean: the live "
        "posterior mean; epoch_accuracy: the paper's accuracy rank, frozen at each epoch end).",
    )
    steps_per_epoch: int | None = _setting(
        None,
        "Steps per epoch, for widening and epoch ranks (None: the framework's, from the "
        "dataset size).",
    )
    widen_per_epoch: int = _setting(
        0,
        "Widen the bounds by this much at each epoch end: `min_per_prompt` goes down and "
        "`max_per_prompt` up by it (paper: 2).",
    )
    widen_min: int | None = _setting(
        None, "The lowest `min_per_prompt` widening may reach (None: 1; paper: 4)."
    )
    widen_max: int | None = _setting(
        None,
        "The highest `max_per_prompt` widening may reach (None: `max_per_prompt`; paper: 12).",
    )
    controller: str = _setting(
        "pi",
        f"Temperature controller, one of {_controller_names()} (pi: e3core's; e3: the paper's "
        "rule; none: a fixed temperature).",
    )
    target_entropy: float | None = _setting(
        None,
        "Target token entropy, > 0 (None: the mean of the first `warmup_steps` measured "
        "entropies).",
    )
    warmup_steps: int = _setting(1, "Steps averaged into the target when `target_entropy` is None.")
    kp: float = _setting(0.1, "PI controller proportional gain, >= 0.")
    ki: float = _setting(0.1, "PI controller integral gain, >= 0.")
    initial_temperature: float = _setting(
        1.0,
        "The first step's sampling temperature (and the fixed one with controller none or E3 "
        "off); within [`min_temperature`, `max_temperature`] while a controller runs.",
    )
    min_temperature: float = _setting(0.5, "Lowest sampling temperature, > 0.")
    max_temperature: float = _setting(1.5, "Highest sampling temperature, >= `min_temperature`.")
    anneal_final_ratio: float | None = _setting(
        None,
        "Cosine-anneal the target entropy over the last 40% of training to this fraction of it "
        "(paper: 0.9; None: no annealing; needs the run's length).",
    )
    loss_weighting: str = _setting(
        "sample",
        f"One of {LOSS_WEIGHTINGS}: sample (every completion weighs the same) or prompt "
        "(advantages scaled by N/(G n_g), so every prompt weighs the same whatever its count).",
    )
    baseline: str = _setting(
        "mean",
        f"Baseline of the group advantages, one of {BASELINES} (mean: GRPO; leave_one_out: RLOO).",
    )
    seed: int | None = _setting(
        None, "Seed of the scheduler's random generator (None: the framework's seed, else 0)."
    )
    resume_fresh: bool = _setting(
        False,
        "Resume from a checkpoint with a fresh E3 scheduler (step, epoch, counts, prior and "
        "temperature start anew), not reading its E3 state. False: resuming from a checkpoint "
        "without E3 state (plain GRPO's) is an error.",
    )

    # ------------------------------------------------------------------ help
    @classmethod
    def help(cls, name: str, *, prefix: str = "", names: Mapping[str, str] | None = None) -> str:
        """The help text of setting ``name``, with the settings it mentions spelled for a user.

        Args:
            name: A field name.
            prefix: How the user's configuration prefixes setting names (``"e3_"`` in TRL).
            names: Settings (and ``rollouts_per_prompt``) the user spells otherwise, e.g.
                TRL's ``{"initial_temperature": "temperature",
                "rollouts_per_prompt": "num_generations"}``.

        Raises:
            ValueError: ``name`` is not a setting (the message lists them).
        """
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if name not in fields:
            raise ValueError(f"name must be one of {sorted(fields)}, got {name!r}")
        spell = _speller(prefix, names)
        known = {*fields, _ROLLOUTS}

        def respell(match: re.Match[str]) -> str:
            word = match.group(1)
            return f"`{spell(word)}`" if word in known else match.group(0)

        return _REFERENCE.sub(respell, str(fields[name].metadata["help"]))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None, *, prefix: str = "e3.") -> E3Settings:
        """Settings from a mapping (a dict, an OmegaConf node); unknown keys raise.

        Args:
            mapping: Setting names to values; missing names keep their defaults.
            prefix: How the settings are spelled in the user's configuration, for messages.

        Raises:
            TypeError: ``mapping`` is not a mapping.
            ValueError: An unknown key (the message lists the known ones).
        """
        is_mapping = isinstance(mapping, Mapping) or (
            hasattr(mapping, "keys") and hasattr(mapping, "__getitem__")
        )
        if mapping is not None and not is_mapping:
            raise TypeError(
                f"mapping must be a mapping of setting names to values (a dict, an "
                f"OmegaConf node) or None, got {type(mapping).__name__}: {mapping!r:.80}"
            )
        data = dict(mapping or {})
        cls._check_names(data, prefix)
        return cls(**data)

    @classmethod
    def _check_names(cls, data: Mapping[str, Any], prefix: str) -> None:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        renamed = [name for name in unknown if name in _RENAMED]
        if renamed:
            old = renamed[0]
            raise ValueError(
                f"{prefix}{old} is now {prefix}{_RENAMED[old]}: rename it (got "
                f"{prefix}{old}={data[old]!r})"
            )
        if unknown:
            raise ValueError(
                f"unknown E3 setting(s) {[prefix + k for k in unknown]}; the settings are "
                f"{sorted(prefix + k for k in known)}"
            )

    @classmethod
    def paper(cls, rollouts_per_prompt: int, **overrides: Any) -> E3Settings:
        r"""The E3 paper's setting for :math:`G` = ``rollouts_per_prompt`` (arXiv 2505.18573).

        The paper's scripts use :math:`G = 8`, :math:`u = 2`, bounds 4..12 and :math:`B = 64`.
        Rank allocation on the epoch-frozen accuracy rank with
        :math:`n_{\min} = n_{\max} = G` in epoch 1 (uniform), widened by :math:`u = 2` per epoch
        within :math:`[\min(4, G), \max(12, G)]`; the E3 temperature rule with the first step's
        entropy as target, cosine-annealed to 0.9 of it over the last 40 % of training; a beta
        prior that is never refitted. The temperature is bounded to [0.1, 10] (the paper's code
        has no bound). This is the one place the paper's configuration is written:
        :meth:`E3Scheduler.paper <e3core.E3Scheduler.paper>` builds through it and the
        adapters' paper recipes are tested against it.

        Args:
            rollouts_per_prompt: :math:`G`, the framework's rollouts per prompt.
            **overrides: Settings that replace the paper's (unknown names raise).

        Raises:
            TypeError, ValueError: A bad ``rollouts_per_prompt``, or an unknown override (the
                message lists the settings).
        """
        g = check_int(_ROLLOUTS, rollouts_per_prompt, low=1)
        cls._check_names(overrides, "")
        base: dict[str, Any] = {
            "allocator": "rank",
            "min_per_prompt": g,
            "max_per_prompt": g,
            "refit_prior": "beta",
            "refit_every": None,
            "rank_by": "epoch_accuracy",
            "widen_per_epoch": 2,
            "widen_min": min(4, g),
            "widen_max": max(12, g),
            "controller": "e3",
            "min_temperature": 0.1,
            "max_temperature": 10.0,
            "anneal_final_ratio": 0.9,
        }
        base.update(overrides)
        return cls(**base)

    # ------------------------------------------------------------------ validation
    def validate(
        self,
        rollouts_per_prompt: int,
        *,
        prefix: str = "e3.",
        names: Mapping[str, str] | None = None,
    ) -> E3Settings:
        r"""Check every setting against :math:`G` = ``rollouts_per_prompt``.

        Args:
            rollouts_per_prompt: :math:`G`, the framework's rollouts per prompt.
            prefix: How the user's configuration prefixes setting names, for messages.
            names: Settings (and ``rollouts_per_prompt``) the user spells otherwise, for
                messages (see :meth:`help`); a bound set by another setting is named too, e.g.
                ``e3_min_per_prompt must be <= num_generations (8), got 100``.

        Returns:
            The settings with ``max_per_prompt`` resolved (None becomes :math:`4G`).

        Raises:
            TypeError, ValueError: A bad setting, named as the user spells it.
        """
        s = _speller(prefix, names)
        g = check_int(s(_ROLLOUTS), rollouts_per_prompt, low=1)
        self._check_strategies(s)
        RANK_BY.check(s("rank_by"), self.rank_by)
        check_choice(s("loss_weighting"), self.loss_weighting, LOSS_WEIGHTINGS)
        check_choice(s("baseline"), self.baseline, BASELINES)
        check_int(s("min_per_prompt"), self.min_per_prompt, low=1, high=g, high_name=s(_ROLLOUTS))
        max_per = 4 * g if self.max_per_prompt is None else self.max_per_prompt
        check_int(s("max_per_prompt"), max_per, low=g, low_name=s(_ROLLOUTS))
        check_float(s("success_threshold"), self.success_threshold)
        check_float(s("prior_alpha"), self.prior_alpha, low=0.0, low_open=True)
        check_float(s("prior_beta"), self.prior_beta, low=0.0, low_open=True)
        check_float(s("decay"), self.decay, low=0.0, high=1.0, low_open=True)
        if self.refit_every is not None:
            check_int(s("refit_every"), self.refit_every, low=1)
        check_int(s("refit_min_prompts"), self.refit_min_prompts, low=1)
        if self.steps_per_epoch is not None:
            check_int(s("steps_per_epoch"), self.steps_per_epoch, low=1)
        check_int(s("widen_per_epoch"), self.widen_per_epoch, low=0)
        if self.widen_min is not None:
            check_int(
                s("widen_min"),
                self.widen_min,
                low=1,
                high=self.min_per_prompt,
                high_name=s("min_per_prompt"),
            )
        if self.widen_max is not None:
            check_int(s("widen_max"), self.widen_max, low=max_per, low_name=s("max_per_prompt"))
        if self.target_entropy is not None:
            check_float(s("target_entropy"), self.target_entropy, low=0.0, low_open=True)
        check_int(s("warmup_steps"), self.warmup_steps, low=1)
        check_float(s("kp"), self.kp, low=0.0)
        check_float(s("ki"), self.ki, low=0.0)
        check_float(s("min_temperature"), self.min_temperature, low=0.0, low_open=True)
        check_float(
            s("max_temperature"),
            self.max_temperature,
            low=self.min_temperature,
            low_name=s("min_temperature"),
        )
        if self.controller != _NO_CONTROLLER and self.enabled:
            check_float(
                s("initial_temperature"),
                self.initial_temperature,
                low=self.min_temperature,
                high=self.max_temperature,
                low_name=s("min_temperature"),
                high_name=s("max_temperature"),
                hint=f"or set {s('controller')} {_NO_CONTROLLER}",
            )
        else:
            check_float(s("initial_temperature"), self.initial_temperature, low=0.0, low_open=True)
        if self.anneal_final_ratio is not None:
            check_float(
                s("anneal_final_ratio"),
                self.anneal_final_ratio,
                low=0.0,
                high=1.0,
                low_open=True,
            )
        if self.seed is not None:
            check_int(s("seed"), self.seed, low=0, hint="numpy seeds are non-negative")
        if not isinstance(self.resume_fresh, bool):
            raise TypeError(f"{s('resume_fresh')} must be a bool, got {self.resume_fresh!r}")
        return dataclasses.replace(self, max_per_prompt=max_per)

    def _check_strategies(self, spell: Callable[[str], str]) -> None:
        """``enabled`` is a bool and every strategy name is registered (the known ones listed)."""
        if not isinstance(self.enabled, bool):
            raise TypeError(f"{spell('enabled')} must be a bool, got {self.enabled!r}")
        ALLOCATORS.check(spell("allocator"), self.allocator)
        VALUES.check(spell("value"), self.value)
        check_choice(spell("controller"), self.controller, _controller_names())
        PRIORS.check(spell("refit_prior"), self.refit_prior)

    # ------------------------------------------------------------------ building
    def allocator_object(self, *, prefix: str = "e3.") -> Allocator:
        """The allocator these settings name (uniform when E3 is disabled).

        Args:
            prefix: How the settings are spelled in the user's configuration, for messages.

        Raises:
            TypeError, ValueError: ``enabled`` is not a bool, or ``allocator``/``value`` is not
                a registered name (the message lists the known ones).
        """
        self._check_strategies(_speller(prefix, None))
        return make_allocator("uniform" if not self.enabled else self.allocator, value=self.value)

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
        controller = s._build_controller(vocab_size, total_steps, prefix)
        assert s.max_per_prompt is not None
        min_per, max_per = (g, g) if not s.enabled else (s.min_per_prompt, s.max_per_prompt)
        widen = None
        if s.enabled and (s.widen_min is not None or s.widen_max is not None):
            widen = (s.widen_min or 1, s.widen_max or max_per)
        if s.seed is not None:
            seed_value = s.seed
        else:
            seed_value = 0 if seed is None else check_int("seed", seed, low=0)
        return E3Scheduler(
            tracker=BetaDifficultyTracker(s.prior_alpha, s.prior_beta, decay=s.decay),
            allocator=s.allocator_object(prefix=prefix),
            controller=controller,
            rollouts_per_prompt=g,
            min_per_prompt=min_per,
            max_per_prompt=max_per,
            success_threshold=s.success_threshold,
            refit_every=s.refit_every,
            refit_prior=s.refit_prior,
            refit_min_prompts=s.refit_min_prompts,
            rank_by=s.rank_by,
            steps_per_epoch=s.steps_per_epoch or steps_per_epoch,
            widen_per_epoch=s.widen_per_epoch if s.enabled else 0,
            widen_limits=widen,
            temperature=s.initial_temperature,
            seed=seed_value,
        )

    def _build_controller(
        self, vocab_size: int | None, total_steps: int | None, prefix: str
    ) -> TemperatureController | None:
        r"""The temperature controller of validated settings (None: a fixed temperature).

        The target is :class:`~e3core.FixedTarget` (``target_entropy``) or
        :class:`~e3core.WarmupMeanTarget` (``warmup_steps``), wrapped in the paper's
        :class:`~e3core.CosineAnnealedTarget` when ``anneal_final_ratio`` is set.
        """
        if not self.enabled or self.controller == _NO_CONTROLLER:
            return None
        target: EntropyTarget = (
            WarmupMeanTarget(self.warmup_steps)
            if self.target_entropy is None
            else FixedTarget(self.target_entropy)
        )
        if self.anneal_final_ratio is not None:
            if total_steps is None:
                raise ValueError(
                    f"{prefix}anneal_final_ratio needs the run's total number of steps"
                )
            target = CosineAnnealedTarget.paper(
                target, check_int("total_steps", total_steps, low=1), self.anneal_final_ratio
            )
        bounds: dict[str, Any] = {
            "target": target,
            "initial_temperature": self.initial_temperature,
            "min_temperature": self.min_temperature,
            "max_temperature": self.max_temperature,
        }
        if self.controller == "pi":
            return PITemperatureController(kp=self.kp, ki=self.ki, **bounds)
        if vocab_size is None:
            raise ValueError(f"{prefix}controller='e3' needs the model's vocabulary size")
        return E3TemperatureController(check_int("vocab_size", vocab_size, low=2), **bounds)
