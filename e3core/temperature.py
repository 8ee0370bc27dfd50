r"""Sampling-temperature controllers that hold the policy entropy at a target.

RL with verifiable rewards collapses the policy entropy within a few hundred steps. E3 (Liao et
al., arXiv 2505.18573, Sec. 3.2) raises the sampling temperature :math:`T` when the measured
token entropy :math:`H_t` falls below a target :math:`H^*`:

.. math:: T_{t+1} = T_t\Bigl(1 + T_t\,\frac{\ln(H^*/H_t)}{\ln V + \ln\ln V}\Bigr),

with :math:`H^*` the entropy of the first step(s) and, late in training, a cosine-annealed target
(:class:`CosineAnnealedTarget`). :class:`E3TemperatureController` is that rule, bounded to
``[min_temperature, max_temperature]``. In :math:`\ln T` the E3 rule is an integral controller
whose gain :math:`T_t/(\ln V + \ln\ln V)` (about 0.07 at :math:`T=1`, :math:`V=152\text{k}`)
depends on the temperature and the vocabulary; :class:`PITemperatureController` is a
proportional-integral controller of :math:`\ln T` on the error :math:`e_t = \ln(H^*/H_t)` with
gains you set, a proportional term that answers a sudden entropy drop at once, and anti-windup
at the bounds.

Each ``update(entropy)`` is called once per step with the mean token entropy of that step's
rollouts (measured at the temperature they were sampled with) and returns the temperature for
the next step's rollouts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from e3core._validation import check_float, check_int

__all__ = [
    "CosineAnnealedTarget",
    "E3TemperatureController",
    "PITemperatureController",
    "TemperatureController",
]

TargetSchedule = Callable[[int, float], float]


@dataclass(frozen=True)
class CosineAnnealedTarget:
    r"""The E3 paper's annealing of the entropy target.

    .. math::
        H^*(s) = H_0\Bigl[\eta + (1-\eta)\,\tfrac12\Bigl(1 + \cos\frac{\pi(s - s_a)}{s_e - s_a}
        \Bigr)\Bigr] \quad (s_a \le s \le s_e),

    :math:`H_0` before :math:`s_a` and :math:`\eta H_0` after :math:`s_e` (the paper's code lets
    the cosine rise again past its end). The paper uses :math:`s_a = t_\max - \lfloor
    0.4\,t_\max\rfloor`, :math:`s_e = t_\max`, :math:`\eta = 0.9`; see :meth:`paper`.

    Args:
        start_step: :math:`s_a \ge 0`, the first annealed step.
        end_step: :math:`s_e > s_a`, where the target reaches :math:`\eta H_0`.
        final_ratio: :math:`\eta \in (0, 1]`.
    """

    start_step: int
    end_step: int
    final_ratio: float = 0.9

    def __post_init__(self) -> None:
        check_int("start_step", self.start_step, low=0)
        check_int("end_step", self.end_step, low=self.start_step + 1)
        check_float("final_ratio", self.final_ratio, low=0.0, high=1.0, low_open=True)

    @classmethod
    def paper(cls, total_steps: int, final_ratio: float = 0.9) -> CosineAnnealedTarget:
        """The paper's schedule: anneal over the last 40% of ``total_steps``."""
        total_steps = check_int("total_steps", total_steps, low=2)
        start = total_steps - math.floor(0.4 * total_steps)
        return cls(min(start, total_steps - 1), total_steps, final_ratio)

    def __call__(self, step: int, base_target: float) -> float:
        """Target at ``step`` for the initial target ``base_target``."""
        if step <= self.start_step:
            return base_target
        if step >= self.end_step:
            return self.final_ratio * base_target
        frac = (step - self.start_step) / (self.end_step - self.start_step)
        cos = 0.5 * (1.0 + math.cos(math.pi * frac))
        return base_target * (self.final_ratio + (1.0 - self.final_ratio) * cos)


class TemperatureController:
    """Shared state and checks: bounds, warm-up target, step count and the annealed target.

    Args:
        initial_temperature: :math:`T_1`, inside the bounds.
        min_temperature: Lower bound (> 0).
        max_temperature: Upper bound (>= ``min_temperature``).
        target_entropy: :math:`H^* > 0`, or ``None`` for the mean of the first ``warmup_steps``.
        warmup_steps: Steps whose mean entropy becomes the target when ``target_entropy`` is None.
        target_schedule: Optional ``(step, base_target) -> target``, e.g. CosineAnnealedTarget.
    """

    def __init__(
        self,
        *,
        initial_temperature: float = 1.0,
        min_temperature: float = 0.5,
        max_temperature: float = 1.5,
        target_entropy: float | None = None,
        warmup_steps: int = 1,
        target_schedule: TargetSchedule | None = None,
    ):
        self.min_temperature = check_float(
            "min_temperature", min_temperature, low=0.0, low_open=True
        )
        self.max_temperature = check_float(
            "max_temperature", max_temperature, low=self.min_temperature
        )
        self.initial_temperature = check_float(
            "initial_temperature",
            initial_temperature,
            low=self.min_temperature,
            high=self.max_temperature,
        )
        self.base_target: float | None = (
            None
            if target_entropy is None
            else check_float("target_entropy", target_entropy, low=0.0, low_open=True)
        )
        self.warmup_steps = check_int("warmup_steps", warmup_steps, low=1)
        if target_schedule is not None and not callable(target_schedule):
            raise TypeError(
                f"target_schedule must be callable (step, base) -> target, got {target_schedule!r}"
            )
        self.target_schedule = target_schedule
        self.temperature = self.initial_temperature
        self.step = 0
        self._warmup_sum = 0.0
        self.last_entropy: float | None = None

    @property
    def target_entropy(self) -> float | None:
        """The target of the current step (``None`` while it is still being measured)."""
        if self.base_target is None:
            return None
        if self.target_schedule is None:
            return self.base_target
        return float(self.target_schedule(max(self.step, 1), self.base_target))

    def _observe(self, entropy: Any) -> float | None:
        """Validate, count the step, learn the warm-up target; return the error or None."""
        h = check_float("entropy", entropy, low=0.0, low_open=True)
        self.step += 1
        self.last_entropy = h
        if self.base_target is None:
            self._warmup_sum += h
            if self.step < self.warmup_steps:
                return None
            self.base_target = self._warmup_sum / self.warmup_steps
        target = self.target_entropy
        assert target is not None
        return math.log(target / h)

    def _clamp(self, temperature: float) -> float:
        return min(max(temperature, self.min_temperature), self.max_temperature)

    def update(self, entropy: float) -> float:
        """Feed one step's mean token entropy; return the next step's temperature."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        return {
            "temperature": self.temperature,
            "step": self.step,
            "base_target": self.base_target,
            "warmup_sum": self._warmup_sum,
            "last_entropy": self.last_entropy,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly."""
        missing = {"temperature", "step", "base_target", "warmup_sum"} - set(state)
        if missing:
            raise ValueError(f"state is missing keys {sorted(missing)}")
        self.temperature = check_float(
            "temperature",
            state["temperature"],
            low=self.min_temperature,
            high=self.max_temperature,
        )
        self.step = check_int("step", state["step"], low=0)
        base = state["base_target"]
        self.base_target = (
            None if base is None else check_float("base_target", base, low=0, low_open=True)
        )
        self._warmup_sum = check_float("warmup_sum", state["warmup_sum"], low=0.0)
        self.last_entropy = state.get("last_entropy")


class E3TemperatureController(TemperatureController):
    r"""The E3 temperature rule, kept inside ``[min_temperature, max_temperature]``.

    .. math:: T_{t+1} = \mathrm{clip}\Bigl(T_t\Bigl(1 + T_t\,\frac{\ln(H^*_t/H_t)}
              {\ln V + \ln\ln V}\Bigr)\Bigr)

    (Liao et al., arXiv 2505.18573, Eq. 5; for :math:`V \approx 152\text{k}` the denominator is
    about 14.4). With ``target_entropy=None`` the target is the mean entropy of the first
    ``warmup_steps`` steps, during which the temperature stays at ``initial_temperature`` (the
    paper: one step, :math:`T_1 = 1`).

    Args:
        vocab_size: :math:`V \ge 3`, the policy's vocabulary size.
        initial_temperature: :math:`T_1`.
        target_entropy: :math:`H^*`, or None to measure it during warm-up.
        warmup_steps: Warm-up length when ``target_entropy`` is None.
        min_temperature: Lower bound (the paper has none).
        max_temperature: Upper bound (the paper has none).
        target_schedule: e.g. :class:`CosineAnnealedTarget`.
    """

    def __init__(
        self,
        vocab_size: int,
        initial_temperature: float = 1.0,
        target_entropy: float | None = None,
        warmup_steps: int = 1,
        min_temperature: float = 0.5,
        max_temperature: float = 1.5,
        target_schedule: TargetSchedule | None = None,
    ):
        super().__init__(
            initial_temperature=initial_temperature,
            min_temperature=min_temperature,
            max_temperature=max_temperature,
            target_entropy=target_entropy,
            warmup_steps=warmup_steps,
            target_schedule=target_schedule,
        )
        self.vocab_size = check_int("vocab_size", vocab_size, low=3)
        self.denominator = math.log(self.vocab_size) + math.log(math.log(self.vocab_size))

    def update(self, entropy: float) -> float:
        """Feed one step's mean token entropy; return the next step's temperature."""
        error = self._observe(entropy)
        if error is not None:
            t = self.temperature
            self.temperature = self._clamp(t * (1.0 + t * error / self.denominator))
        return self.temperature


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
        target_entropy: :math:`H^*`, or None to measure it over ``warmup_steps``.
        kp: Proportional gain :math:`k_p \ge 0`.
        ki: Integral gain :math:`k_i \ge 0`.
        initial_temperature: :math:`T_1`.
        min_temperature: Lower bound.
        max_temperature: Upper bound.
        warmup_steps: Warm-up length when ``target_entropy`` is None.
        target_schedule: e.g. :class:`CosineAnnealedTarget`.
    """

    def __init__(
        self,
        target_entropy: float | None = None,
        kp: float = 0.1,
        ki: float = 0.1,
        initial_temperature: float = 1.0,
        min_temperature: float = 0.5,
        max_temperature: float = 1.5,
        warmup_steps: int = 1,
        target_schedule: TargetSchedule | None = None,
    ):
        super().__init__(
            initial_temperature=initial_temperature,
            min_temperature=min_temperature,
            max_temperature=max_temperature,
            target_entropy=target_entropy,
            warmup_steps=warmup_steps,
            target_schedule=target_schedule,
        )
        self.kp = check_float("kp", kp, low=0.0)
        self.ki = check_float("ki", ki, low=0.0)
        self.integral = 0.0

    def update(self, entropy: float) -> float:
        """Feed one step's mean token entropy; return the next step's temperature."""
        error = self._observe(entropy)
        if error is None:
            return self.temperature
        base = math.log(self.initial_temperature)
        log_lo, log_hi = math.log(self.min_temperature), math.log(self.max_temperature)
        integral = self.integral + error
        if self.ki > 0:
            # Clamping anti-windup: integrate only as far as the output reaching the bound.
            at_hi = (log_hi - base - self.kp * error) / self.ki
            at_lo = (log_lo - base - self.kp * error) / self.ki
            if error > 0 and integral > at_hi:
                integral = max(self.integral, at_hi)
            elif error < 0 and integral < at_lo:
                integral = min(self.integral, at_lo)
        self.integral = integral
        out = base + self.kp * error + self.ki * self.integral
        self.temperature = self._clamp(math.exp(out))
        return self.temperature

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly."""
        return {**super().state_dict(), "integral": self.integral}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly."""
        super().load_state_dict(state)
        if "integral" not in state:
            raise ValueError("state is missing keys ['integral']")
        self.integral = check_float("integral", state["integral"])
