r"""Sampling-temperature controllers that hold the policy entropy at a target.

RL with verifiable rewards collapses the policy entropy within a few hundred steps. E3 (Liao et
al., arXiv 2505.18573, Sec. 3.2) raises the sampling temperature :math:`T` when the measured
token entropy :math:`H_t` falls below a target :math:`H^*`:

.. math:: T_{t+1} = T_t\Bigl(1 + T_t\,\frac{\ln(H^*/H_t)}{\ln V + \ln\ln V}\Bigr),

with :math:`H^*` the entropy of the first step(s) and, late in training, a cosine-annealed target.
:class:`E3TemperatureController` is that rule, bounded to ``[min_temperature,
max_temperature]``. In :math:`\ln T` the E3 rule is an integral controller whose gain
:math:`T_t/(\ln V + \ln\ln V)` (about 0.07 at :math:`T=1`, :math:`V=152\text{k}`) depends on
the temperature and the vocabulary; :class:`PITemperatureController` is a
proportional-integral controller of :math:`\ln T` on the error :math:`e_t = \ln(H^*/H_t)` with
gains you set, a proportional term that answers a sudden entropy drop at once, and anti-windup
at the bounds.

The target is an object of its own, passed to any controller as ``target=``, and targets
compose: :class:`FixedTarget` (a number), :class:`WarmupMeanTarget` (the mean of the first
``steps`` measured entropies, the paper's choice with one step; the default) and
:class:`CosineAnnealedTarget` (the paper's annealing of another target). A controller calls
``target.observe(entropy)`` with each measured entropy and asks ``target.value(step)`` for the
target of its step :math:`s = 1, 2, \dots`; a stateful target is saved inside the controller's
:meth:`~TemperatureController.state_dict`. A target belongs to one controller.

Each ``update(entropy)`` is called once per step with the mean token entropy of that step's
rollouts (measured at the temperature they were sampled with) and returns the temperature for
the next step's rollouts. The controllers are registered by name in :data:`CONTROLLERS`
(``"pi"``, ``"e3"``), which :class:`~e3core.settings.E3Settings` and the adapters read.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from e3core._registry import Registry
from e3core._validation import _show, check_float, check_int, check_state_keys

__all__ = [
    "CONTROLLERS",
    "CosineAnnealedTarget",
    "E3TemperatureController",
    "EntropyTarget",
    "FixedTarget",
    "PITemperatureController",
    "TemperatureController",
    "WarmupMeanTarget",
]

CONTROLLERS: Registry[type[TemperatureController]] = Registry("controller")
"""Temperature controllers by name: ``"pi"`` (:class:`PITemperatureController`, e3core's
default) and ``"e3"`` (:class:`E3TemperatureController`, the paper's rule)."""


def _commit_all(*commits: Callable[[], None]) -> Callable[[], None]:
    """One function that runs the ``commits`` of a staged load in order."""

    def commit() -> None:
        for run in commits:
            run()

    return commit


def _finite_product(gain: float, value: float) -> float:
    """``gain * value``, saturated to the largest float instead of overflowing (0 * x = 0)."""
    if gain == 0.0 or value == 0.0:
        return 0.0
    out = gain * value
    return out if math.isfinite(out) else math.copysign(1e308, out)


# ---------------------------------------------------------------------------- targets
class EntropyTarget:
    r"""The entropy target :math:`H^*_s` a controller steers toward (the base of all targets).

    A target answers :meth:`value` for step :math:`s \ge 1` (the controller's count of
    measured entropies, the current one included) and may learn from the measured entropies
    through :meth:`observe`, which the controller calls before asking for the value of the same
    step. Stateful targets keep their state in :meth:`state_dict` (plain Python data).
    """

    def value(self, step: int) -> float | None:
        """The target at ``step``, or ``None`` while it is still being measured."""
        raise NotImplementedError

    def observe(self, entropy: float) -> None:
        """Learn from one step's measured entropy (checked > 0 by the controller)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (empty for a stateless target)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly; a bad state raises and changes nothing."""
        self._staged_load(state, "state")()

    def _staged_load(self, state: Any, where: str) -> Callable[[], None]:
        """Check ``state`` whole; return the function that assigns it (which cannot fail).

        A subclass that overrides only :meth:`load_state_dict` is checked by loading into a
        copy first, so its load is transactional inside a controller's too.
        """
        if type(self).load_state_dict is not EntropyTarget.load_state_dict:
            copy.deepcopy(self).load_state_dict(state)
            return lambda: self.load_state_dict(state)
        check_state_keys(where, state, set())
        return lambda: None


@dataclass(frozen=True)
class FixedTarget(EntropyTarget):
    r"""A constant target, :math:`H^*_s = H^*`.

    Args:
        entropy: :math:`H^* > 0`, in nats per token.
    """

    entropy: float

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "entropy", check_float("entropy", self.entropy, low=0.0, low_open=True)
        )

    def value(self, step: int) -> float:
        """The constant :math:`H^*`."""
        return self.entropy


class WarmupMeanTarget(EntropyTarget):
    r"""The mean of the first ``steps`` measured entropies, :math:`H^* = \frac1k\sum_{s\le k} H_s`.

    ``None`` until :math:`k` entropies have been observed, so a controller keeps its initial
    temperature over the first :math:`k-1` steps. The E3 paper's target is this with
    :math:`k = 1`: the first step's entropy (arXiv 2505.18573).

    Args:
        steps: :math:`k \ge 1`.
    """

    def __init__(self, steps: int = 1):
        self.steps = check_int("steps", steps, low=1)
        self.count = 0
        self.total = 0.0

    def __repr__(self) -> str:
        return f"WarmupMeanTarget(steps={self.steps})"

    def observe(self, entropy: float) -> None:
        """Add ``entropy`` to the mean while fewer than ``steps`` have been seen."""
        if self.count < self.steps:
            self.total += entropy
            self.count += 1

    def value(self, step: int) -> float | None:
        """The warm-up mean once ``steps`` entropies are in, else ``None``."""
        if self.count < self.steps:
            return None
        return self.total / self.steps

    def state_dict(self) -> dict[str, Any]:
        """The entropies seen so far (their count and sum)."""
        return {"count": self.count, "total": self.total}

    def _staged_load(self, state: Any, where: str) -> Callable[[], None]:
        check_state_keys(where, state, {"count", "total"})
        count = check_int(f"{where}['count']", state["count"], low=0, high=self.steps)
        total = check_float(f"{where}['total']", state["total"], low=0.0)
        if (count == 0) != (total == 0.0):
            raise ValueError(
                f"{where}['total'] must be 0 exactly when ['count'] is 0 (a sum of entropies "
                f"> 0), got count={count}, total={total}"
            )

        def commit() -> None:
            self.count, self.total = count, total

        return commit


@dataclass(frozen=True)
class CosineAnnealedTarget(EntropyTarget):
    r"""The E3 paper's cosine annealing of another target :math:`H_0 = ` ``base``.

    .. math::
        H^*(s) = H_0(s)\Bigl[\eta + (1-\eta)\,\tfrac12\Bigl(1 + \cos\frac{\pi(s - s_a)}
        {s_e - s_a}\Bigr)\Bigr] \quad (s_a \le s \le s_e),

    :math:`H_0(s)` before :math:`s_a` and :math:`\eta H_0(s)` after :math:`s_e` (the paper's code
    lets the cosine rise again past its end). The paper uses :math:`s_a = t_\max - \lfloor
    0.4\,t_\max\rfloor`, :math:`s_e = t_\max`, :math:`\eta = 0.9` on the first step's entropy;
    see :meth:`paper`. The state is the base's.

    Args:
        base: The annealed target (e.g. :class:`WarmupMeanTarget`).
        start_step: :math:`s_a \ge 0`, the first annealed step.
        end_step: :math:`s_e > s_a`, where the target reaches :math:`\eta H_0`.
        final_ratio: :math:`\eta \in (0, 1]`.
    """

    base: EntropyTarget
    start_step: int
    end_step: int
    final_ratio: float = 0.9

    def __post_init__(self) -> None:
        if not isinstance(self.base, EntropyTarget):
            raise TypeError(
                f"base must be an EntropyTarget (FixedTarget, WarmupMeanTarget, ...), got "
                f"{_show(self.base)}"
            )
        check_int("start_step", self.start_step, low=0)
        check_int("end_step", self.end_step, low=self.start_step + 1)
        check_float("final_ratio", self.final_ratio, low=0.0, high=1.0, low_open=True)

    @classmethod
    def paper(
        cls, base: EntropyTarget, total_steps: int, final_ratio: float = 0.9
    ) -> CosineAnnealedTarget:
        """The paper's schedule: anneal ``base`` over the last 40% of ``total_steps``."""
        total_steps = check_int("total_steps", total_steps, low=2)
        start = total_steps - math.floor(0.4 * total_steps)
        return cls(base, min(start, total_steps - 1), total_steps, final_ratio)

    def value(self, step: int) -> float | None:
        """The base's target at ``step``, annealed (``None`` while the base has none)."""
        base = self.base.value(step)
        if base is None or step <= self.start_step:
            return base
        if step >= self.end_step:
            return self.final_ratio * base
        frac = (step - self.start_step) / (self.end_step - self.start_step)
        cos = 0.5 * (1.0 + math.cos(math.pi * frac))
        return base * (self.final_ratio + (1.0 - self.final_ratio) * cos)

    def observe(self, entropy: float) -> None:
        """Passed on to the base."""
        self.base.observe(entropy)

    def state_dict(self) -> dict[str, Any]:
        """The base's state."""
        return {"base": self.base.state_dict()}

    def _staged_load(self, state: Any, where: str) -> Callable[[], None]:
        check_state_keys(where, state, {"base"})
        return self.base._staged_load(state["base"], f"{where}['base']")


# ---------------------------------------------------------------------------- controllers
@dataclass(eq=False, kw_only=True)
class TemperatureController:
    r"""What every controller shares: the target, the bounds, the temperature and the step count.

    Subclasses implement :meth:`_next` (the rule) and add their own settings; the constructor
    arguments below are keyword-only in every controller.

    Args:
        target: The entropy target (default: ``WarmupMeanTarget(1)``, the first step's
            entropy). A target belongs to one controller: it may hold state.
        initial_temperature: :math:`T_1`, inside the bounds.
        min_temperature: Lower bound (> 0).
        max_temperature: Upper bound (>= ``min_temperature``).

    Attributes:
        temperature: The temperature for the next step's rollouts.
        step: Entropies fed so far.
        last_entropy: The last entropy fed (None before the first).
    """

    target: EntropyTarget = field(default_factory=WarmupMeanTarget)
    initial_temperature: float = 1.0
    min_temperature: float = 0.5
    max_temperature: float = 1.5
    temperature: float = field(init=False)
    step: int = field(init=False, default=0)
    last_entropy: float | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if not isinstance(self.target, EntropyTarget):
            raise TypeError(
                f"target must be an EntropyTarget (FixedTarget(h) for a number, "
                f"WarmupMeanTarget, CosineAnnealedTarget), got {_show(self.target)}"
            )
        self.min_temperature = check_float(
            "min_temperature", self.min_temperature, low=0.0, low_open=True
        )
        self.max_temperature = check_float(
            "max_temperature", self.max_temperature, low=self.min_temperature
        )
        self.initial_temperature = check_float(
            "initial_temperature",
            self.initial_temperature,
            low=self.min_temperature,
            high=self.max_temperature,
        )
        self.temperature = self.initial_temperature

    @property
    def target_entropy(self) -> float | None:
        """The target of the current step (``None`` while it is still being measured)."""
        value = self.target.value(max(self.step, 1))
        return None if value is None else float(value)

    def update(self, entropy: float) -> float:
        r"""Feed one step's mean token entropy; return the next step's temperature.

        The target observes ``entropy`` first; while it has no value yet the temperature is
        kept, else the rule moves it on the error :math:`e_t = \ln(H^*_t/H_t)`.

        Raises:
            ValueError: ``entropy`` is not finite and > 0 (nothing changes).
        """
        h = check_float("entropy", entropy, low=0.0, low_open=True)
        step = self.step + 1
        saved = self.target.state_dict()
        self.target.observe(h)
        try:
            target = self._checked_target(step)
            temperature = self.temperature if target is None else self._next(target, h)
        except BaseException:
            self.target._staged_load(saved, "the target's own state")()
            raise
        self.step, self.last_entropy, self.temperature = step, h, temperature
        return self.temperature

    def _checked_target(self, step: int) -> float | None:
        """The target's value at ``step``: None, or a finite float > 0 (else it raises)."""
        value = self.target.value(step)
        if value is None:
            return None
        return check_float(
            f"{type(self.target).__name__}.value({step})", value, low=0.0, low_open=True
        )

    def _next(self, target: float, entropy: float) -> float:
        r"""The next temperature for target :math:`H^*_t` and entropy :math:`H_t`.

        The error :math:`e_t = \ln H^*_t - \ln H_t` is taken as a difference of logs (finite
        for any positive floats, where :math:`\ln(H^*_t/H_t)` overflows at :math:`H_t \approx
        10^{-320}`); the rule's result is checked finite.
        """
        temperature = self._rule(math.log(target) - math.log(entropy))
        if not math.isfinite(temperature):  # the rules clamp, so this is a bug, not bad input
            raise RuntimeError(
                f"{type(self).__name__} computed a non-finite temperature {temperature} for "
                f"target {target} and entropy {entropy}"
            )
        return temperature

    def _rule(self, error: float) -> float:
        r"""The rule: the next temperature (inside the bounds) for the error :math:`e_t`.

        Called with a finite error; may update the rule's own state (the PI integral), and is
        only called once the step is known to be accepted.
        """
        raise NotImplementedError

    def _clamp(self, temperature: float) -> float:
        return min(max(temperature, self.min_temperature), self.max_temperature)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly (plain Python data)."""
        return {
            "temperature": self.temperature,
            "step": self.step,
            "last_entropy": self.last_entropy,
            "target": self.target.state_dict(),
        }

    #: Keys of :meth:`state_dict` beyond the shared ones (the PI controller's ``integral``).
    _extra_state_keys: ClassVar[frozenset[str]] = frozenset()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly (into a controller of the same configuration).

        Transactional: the whole state (the target's included) is checked first, against this
        controller's bounds and kind (another controller's state has other keys and is
        refused), and a state that fails leaves the controller and its target as they were.

        Raises:
            TypeError, ValueError: A bad field, named as ``state['...']``.
        """
        self._staged_load(state, "state")()

    def _staged_load(self, state: Any, where: str) -> Callable[[], None]:
        """Check ``state`` whole; return the function that assigns it (which cannot fail)."""
        check_state_keys(
            where,
            state,
            {"temperature", "step", "target", *self._extra_state_keys},
            {"last_entropy"},
        )
        temperature = check_float(
            f"{where}['temperature']",
            state["temperature"],
            low=self.min_temperature,
            high=self.max_temperature,
            low_name="min_temperature",
            high_name="max_temperature",
        )
        step = check_int(f"{where}['step']", state["step"], low=0)
        last = state.get("last_entropy")
        if last is not None:
            last = check_float(f"{where}['last_entropy']", last, low=0, low_open=True)
        commit_target = self.target._staged_load(state["target"], f"{where}['target']")
        commit_own = self._staged_extra(state, where)

        def commit() -> None:
            commit_target()
            commit_own()
            self.temperature, self.step, self.last_entropy = temperature, step, last

        return commit

    def _staged_extra(self, state: Mapping[str, Any], where: str) -> Callable[[], None]:
        """Check and stage the subclass's own keys (:attr:`_extra_state_keys`)."""
        return lambda: None


@CONTROLLERS.register("pi")
@dataclass(eq=False, kw_only=True)
class PITemperatureController(TemperatureController):
    r"""Proportional-integral control of :math:`\ln T` toward the entropy target.

    .. math::
        e_t = \ln\frac{H^*_t}{H_t},\qquad I_t = I_{t-1} + e_t,\qquad
        \ln T_{t+1} = \mathrm{clip}\bigl(\ln T_1 + k_p e_t + k_i I_t\bigr)

    Anti-windup by clamping: when the error pushes the output past a bound, :math:`I` grows only
    until the output reaches the bound, so the controller leaves a bound as soon as the error
    changes sign. On a plant :math:`H \propto T^{\gamma}` (locally,
    :math:`\gamma = d\ln H/d\ln T > 0`) the closed loop has characteristic polynomial
    :math:`z^2 + (\gamma(k_p + k_i) - 1)z - \gamma k_p` and is stable, with zero steady-state
    error, when :math:`\gamma k_p < 1` and :math:`\gamma(2k_p + k_i) < 2`; the defaults
    (:math:`k_p = k_i = 0.1`) are stable up to :math:`\gamma \approx 6.6`. An extension of the E3
    rule (arXiv 2505.18573), which is the pure-integral case with :math:`k_i = T_t/(\ln V +
    \ln\ln V)`.

    Args:
        kp: Proportional gain :math:`k_p \ge 0`.
        ki: Integral gain :math:`k_i \ge 0`.
        target: The entropy target (see :class:`TemperatureController`).
        initial_temperature: :math:`T_1`.
        min_temperature: Lower bound.
        max_temperature: Upper bound.

    Attributes:
        integral: :math:`I_t`.
    """

    kp: float = 0.1
    ki: float = 0.1
    integral: float = field(init=False, default=0.0)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.kp = check_float("kp", self.kp, low=0.0)
        self.ki = check_float("ki", self.ki, low=0.0)

    _extra_state_keys: ClassVar[frozenset[str]] = frozenset({"integral"})

    def _rule(self, error: float) -> float:
        # All in log space, clamped before exp: huge gains or errors saturate at a bound instead
        # of overflowing exp (kp = 1000, H = 1e-300) or making inf - inf = NaN.
        base = math.log(self.initial_temperature)
        log_lo, log_hi = math.log(self.min_temperature), math.log(self.max_temperature)
        p_term = _finite_product(self.kp, error)
        integral = self.integral + error
        if self.ki > 0:
            # Clamping anti-windup: integrate only as far as the output reaching the bound.
            at_hi = (log_hi - base - p_term) / self.ki
            at_lo = (log_lo - base - p_term) / self.ki
            if error > 0 and integral > at_hi:
                integral = max(self.integral, at_hi)
            elif error < 0 and integral < at_lo:
                integral = min(self.integral, at_lo)
        if math.isfinite(integral):
            self.integral = integral
        log_t = base + p_term + _finite_product(self.ki, self.integral)
        return self._clamp(math.exp(min(max(log_t, log_lo), log_hi)))  # exp(log x) may miss x

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        return {**super().state_dict(), "integral": self.integral}

    def _staged_extra(self, state: Mapping[str, Any], where: str) -> Callable[[], None]:
        integral = check_float(f"{where}['integral']", state["integral"])

        def commit() -> None:
            self.integral = integral

        return commit


@CONTROLLERS.register("e3")
@dataclass(eq=False)
class E3TemperatureController(TemperatureController):
    r"""The E3 temperature rule, kept inside ``[min_temperature, max_temperature]``.

    .. math:: T_{t+1} = \mathrm{clip}\Bigl(T_t\Bigl(1 + T_t\,\frac{\ln(H^*_t/H_t)}
              {\ln V + \ln\ln V}\Bigr)\Bigr)

    (Liao et al., arXiv 2505.18573, Eq. 5; for :math:`V \approx 152\text{k}` the denominator is
    about 14.4). With the default target (:class:`WarmupMeanTarget`) the target is the mean
    entropy of the first ``steps`` steps, during which the temperature stays at
    ``initial_temperature`` (the paper: one step, :math:`T_1 = 1`); the paper anneals it with
    :class:`CosineAnnealedTarget`.

    Args:
        vocab_size: :math:`V \ge 3`, the policy's vocabulary size (the only positional
            argument; the others are keyword-only).
        target: The entropy target (see :class:`TemperatureController`).
        initial_temperature: :math:`T_1`.
        min_temperature: Lower bound (the paper has none).
        max_temperature: Upper bound (the paper has none).
    """

    vocab_size: int
    denominator: float = field(init=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        self.vocab_size = check_int("vocab_size", self.vocab_size, low=3)
        self.denominator = math.log(self.vocab_size) + math.log(math.log(self.vocab_size))

    def _rule(self, error: float) -> float:
        t = self.temperature  # finite and bounded, the error finite: the result is +-inf at worst
        return self._clamp(t * (1.0 + t * error / self.denominator))
