r"""Resuming a scheduler under the current settings: the one rule every adapter applies.

A checkpoint carries the scheduler's *state* (counts, temperature, integral, step, epoch,
generator) and the :class:`~e3core.settings.E3Settings` it was written under (as a plain dict);
the run that resumes it has its own settings. The rule (:func:`load_scheduler_state`):

* the **settings come from the current configuration**: bounds, decay, prior, gains,
  temperature bounds, target, allocator, refit cadence;
* the **state comes from the checkpoint**, carried on under those settings;
* a change that makes the state meaningless (the controller kind: one controller's state means
  nothing to another) is an error listing every difference;
* every applied difference is logged once.

The TRL, verl and OpenRLHF adapters call it; a checkpoint without E3 state is refused by them
unless ``resume_fresh`` is set. Imports only the standard library and the core.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

from e3core._validation import _show
from e3core.priors import BetaPrior
from e3core.scheduler import E3Scheduler
from e3core.settings import E3Settings, _speller

__all__ = ["describe_changes", "load_scheduler_state", "settings_changes"]

logger = logging.getLogger(__name__)

RUN_CONTROL = frozenset({"resume_fresh"})
"""Settings that say how a run starts, not what its state means: never compared on resume."""

_BOUNDS = frozenset(
    {"min_per_prompt", "max_per_prompt", "widen_per_epoch", "widen_min", "widen_max"}
)
_TARGET = frozenset({"target_entropy", "warmup_steps", "anneal_final_ratio"})
_TEMPERATURE_BOUNDS = frozenset({"min_temperature", "max_temperature"})
_PRIOR = frozenset({"prior_alpha", "prior_beta"})
_NO_CONTROLLER = "none"


def settings_changes(
    saved: Mapping[str, Any] | None, current: E3Settings | None
) -> dict[str, tuple[Any, Any]]:
    """The settings that differ between a checkpoint's and the current ones.

    Args:
        saved: The settings saved with the state (``dataclasses.asdict`` of an
            :class:`E3Settings`), or None (a checkpoint written before settings were saved, or a
            scheduler not built from settings).
        current: The current settings, or None (a scheduler not built from settings).

    Returns:
        ``{name: (saved value, current value)}`` for every setting in both that differs, except
        :data:`RUN_CONTROL` (empty when either side is None).

    Raises:
        TypeError: ``saved`` is not a mapping, or ``current`` not an :class:`E3Settings`.
    """
    if saved is None or current is None:
        return {}
    if not isinstance(saved, Mapping):
        raise TypeError(f"saved settings must be a mapping of setting names, got {_show(saved)}")
    if not isinstance(current, E3Settings):
        raise TypeError(f"current must be an E3Settings or None, got {_show(current)}")
    now = dataclasses.asdict(current)
    return {
        name: (saved[name], value)
        for name, value in now.items()
        if name in saved and name not in RUN_CONTROL and saved[name] != value
    }


def describe_changes(
    changes: Mapping[str, tuple[Any, Any]],
    *,
    prefix: str = "e3.",
    names: Mapping[str, str] | None = None,
) -> str:
    """``"e3.decay: 1.0 -> 0.5, ..."``: the changes by name, spelled as the user spells them."""
    spell = _speller(prefix, names)
    return ", ".join(f"{spell(k)}: {old!r} -> {new!r}" for k, (old, new) in sorted(changes.items()))


def _controller_kind(settings: Mapping[str, Any]) -> str:
    """The controller a settings dict builds (``none`` when E3 is off)."""
    if settings.get("enabled", True) is False:
        return _NO_CONTROLLER
    return str(settings.get("controller", _NO_CONTROLLER))


def load_scheduler_state(
    scheduler: E3Scheduler,
    state: Mapping[str, Any],
    *,
    saved_settings: Mapping[str, Any] | None,
    settings: E3Settings | None,
    prefix: str = "e3.",
    names: Mapping[str, str] | None = None,
    log: logging.Logger | None = None,
) -> dict[str, tuple[Any, Any]]:
    r"""Load a checkpoint's scheduler state under the current settings (the module's rule).

    ``scheduler`` was just built from ``settings`` (not yet stepped). With :math:`u` =
    ``widen_per_epoch``, :math:`e` the checkpoint's epoch count and :math:`[n_\mathrm{lo},
    n_\mathrm{hi}]` = ``widen_limits``, all the config's, the state is loaded with

    .. math::
        n_{\min} = \max(n_\mathrm{lo},\, n^{\mathrm{cfg}}_{\min} - u\,e), \qquad
        n_{\max} = \min(n_\mathrm{hi},\, n^{\mathrm{cfg}}_{\max} + u\,e)

    when a bound setting changed (set before the load, which checks the bounds against the
    scheduler's own), the saved temperature clamped into the config's
    ``[min_temperature, max_temperature]`` when those changed, and the config's entropy
    target started afresh when ``target_entropy``, ``warmup_steps`` or ``anneal_final_ratio``
    changed. After the load the tracker takes the config's ``decay`` and, when ``prior_alpha``
    or ``prior_beta`` changed, the config's Beta prior. Gains, allocator, refit cadence and
    the other settings are the scheduler's own already. The counts, the rest of the
    controller's state (integral, step), step, epoch and generator are the checkpoint's.

    Args:
        scheduler: The scheduler built from ``settings``.
        state: The checkpoint's ``scheduler.state_dict()``.
        saved_settings: The settings saved with it, as a dict (None: unknown, loaded as is).
        settings: The current settings (None: a scheduler not built from settings, loaded as
            is).
        prefix: How the user spells a setting, for messages (``e3_``, ``e3.``, ``--e3.``).
        names: Settings the user spells otherwise (see :meth:`E3Settings.help`).
        log: Where the applied differences are logged once (default: this module's logger).

    Returns:
        The applied differences, ``{name: (saved, current)}``.

    Raises:
        ValueError: The controller kind differs (the message lists every difference and names
            ``resume_fresh``), or the state is invalid (the scheduler is then unchanged).
        TypeError: A badly typed state or saved settings.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a scheduler state (a mapping), got {_show(state)}")
    changes = settings_changes(saved_settings, settings)
    spell = _speller(prefix, names)
    listing = describe_changes(changes, prefix=prefix, names=names)
    if settings is not None and saved_settings is not None:
        now = _as_dict(settings)
        if _controller_kind(saved_settings) != _controller_kind(now):
            raise ValueError(
                f"the checkpoint's E3 state was written with {_kind_text(saved_settings, spell)}, "
                f"the config has {_kind_text(now, spell)}: one controller's "
                f"state means nothing to another. Resume with the saved controller, or set "
                f"{spell('resume_fresh')}=True to start the E3 scheduler afresh. The settings "
                f"that differ: {listing}"
            )
    sched_state = dict(state)
    if _BOUNDS & set(changes):
        low, high = scheduler.widen_limits
        epoch = sched_state.get("epoch", 0)
        widen = scheduler.widen_per_epoch * (epoch if isinstance(epoch, int) and epoch > 0 else 0)
        min0, max0 = scheduler.min_per_prompt, scheduler.max_per_prompt
        sched_state["min_per_prompt"] = max(low, min0 - widen)
        sched_state["max_per_prompt"] = None if max0 is None else min(high, max0 + widen)
    ctrl_state = sched_state.get("controller")
    controller = scheduler.controller
    if controller is not None and isinstance(ctrl_state, Mapping):
        ctrl = dict(ctrl_state)
        if _TARGET & set(changes):
            ctrl["target"] = controller.target.state_dict()
        temperature = ctrl.get("temperature")
        if _TEMPERATURE_BOUNDS & set(changes) and isinstance(temperature, (int, float)):
            ctrl["temperature"] = min(
                max(float(temperature), controller.min_temperature), controller.max_temperature
            )
        sched_state["controller"] = ctrl
    scheduler.load_state_dict(sched_state)
    if changes and settings is not None:
        scheduler.tracker.decay = float(settings.decay)
        if _PRIOR & set(changes):
            scheduler.tracker.prior = BetaPrior(settings.prior_alpha, settings.prior_beta)
        (log or logger).warning(
            "resuming with E3 settings that differ from the checkpoint's; the config's "
            "settings apply, the checkpoint's state is kept: %s",
            listing,
        )
    return changes


def _as_dict(settings: E3Settings) -> dict[str, Any]:
    """``settings`` as the dict a checkpoint saves (:func:`dataclasses.asdict`)."""
    return dataclasses.asdict(settings)


def _kind_text(settings: Mapping[str, Any], spell: Callable[[str], str]) -> str:
    """How the user spells the controller a settings dict builds."""
    if settings.get("enabled", True) is False:
        return f"{spell('enabled')}=False"
    return f"{spell('controller')}={settings.get('controller')!r}"
