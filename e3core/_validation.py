"""Shared input checks: errors name the argument, the value and what is allowed."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def _show(value: Any) -> str:
    """Return a short printable form of ``value`` for error messages."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_float(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    low_name: str | None = None,
    high_name: str | None = None,
    hint: str | None = None,
) -> float:
    """Return ``value`` as a finite float inside the given bounds, or raise naming ``name``.

    Args:
        name: The argument's name, for the message.
        value: The value to check.
        low: Lower bound (None: none).
        high: Upper bound (None: none).
        low_open: Exclude ``low`` itself.
        high_open: Exclude ``high`` itself.
        low_name: The setting ``low`` comes from; the message then reads
            ``must be >= low_name (low)`` instead of ``must be >= low``.
        high_name: The same for ``high``.
        hint: Appended in parentheses to an out-of-bounds message (e.g. another way out).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {_show(value)}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be finite, got {out}")
    if low is not None and (out < low or (low_open and out == low)):
        rel = ">" if low_open else ">="
        raise ValueError(f"{name} must be {rel} {_bound(low, low_name)}, got {out}{_hint(hint)}")
    if high is not None and (out > high or (high_open and out == high)):
        rel = "<" if high_open else "<="
        raise ValueError(f"{name} must be {rel} {_bound(high, high_name)}, got {out}{_hint(hint)}")
    return out


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    low_name: str | None = None,
    high_name: str | None = None,
    hint: str | None = None,
) -> int:
    """Return ``value`` as an int inside ``[low, high]``, or raise naming ``name``.

    Args:
        name: The argument's name, for the message.
        value: The value to check.
        low: Lower bound (None: none).
        high: Upper bound (None: none).
        low_name: The setting ``low`` comes from; the message then reads
            ``must be >= low_name (low)`` instead of ``must be >= low``.
        high_name: The same for ``high``.
        hint: Appended in parentheses to an out-of-bounds message (e.g. another way out).
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {_show(value)}")
    out = int(value)
    if low is not None and out < low:
        raise ValueError(f"{name} must be >= {_bound(low, low_name)}, got {out}{_hint(hint)}")
    if high is not None and out > high:
        raise ValueError(f"{name} must be <= {_bound(high, high_name)}, got {out}{_hint(hint)}")
    return out


def _bound(value: float, setting: str | None) -> str:
    """A bound as an error message shows it: ``8``, or ``num_generations (8)`` when named."""
    return str(value) if setting is None else f"{setting} ({value})"


def _hint(hint: str | None) -> str:
    return "" if hint is None else f" ({hint})"


def check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, or raise naming ``name``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {_show(value)}")
    return value


def as_float_array(name: str, value: Any, *, ndim: int = 1) -> np.ndarray:
    """Return ``value`` as a finite float64 array with ``ndim`` dimensions, or raise."""
    if hasattr(value, "detach"):  # a torch tensor, possibly requiring grad or on a GPU
        value = value.detach().to("cpu").double().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be an array of real numbers, got {_show(value)}") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimension(s), got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(
            f"{name} must be finite, got {arr[bad][0]} at index {int(np.flatnonzero(bad)[0])}"
        )
    return arr


def check_same_length(**arrays: Any) -> int:
    """Return the common length of the named arrays, or raise naming each length."""
    lengths = {name: len(arr) for name, arr in arrays.items()}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}={v}" for k, v in lengths.items())
        raise ValueError(f"arguments must have the same length, got {shown}")
    return next(iter(lengths.values())) if lengths else 0


def check_state_keys(
    where: str,
    state: Any,
    required: set[str] | frozenset[str],
    optional: set[str] | frozenset[str] = frozenset(),
) -> Mapping[str, Any]:
    """Return ``state`` if it is a mapping with exactly the ``required`` (and ``optional``) keys.

    Unknown keys are an error: a state written by another object (a PI controller's ``integral``
    in an E3 controller, say) would otherwise load silently and lose what it carried.

    Args:
        where: The state's name in messages, e.g. ``"state"`` or ``"state['tracker']"``.
        state: The state to check.
        required: Keys that must be present.
        optional: Keys that may be present.

    Raises:
        TypeError: ``state`` is not a mapping.
        ValueError: A key is missing or unknown (the message lists the allowed keys).
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"{where} must be a mapping, got {_show(state)}")
    keys = set(state)
    missing = sorted(set(required) - keys, key=str)
    if missing:
        raise ValueError(f"{where} is missing keys {missing}")
    unknown = sorted(keys - set(required) - set(optional), key=str)
    if unknown:
        allowed = sorted({*required, *optional})
        raise ValueError(f"{where} has unknown keys {unknown}; the keys are {allowed}")
    return state


def as_count_array(name: str, value: Any) -> np.ndarray:
    """Return ``value`` as a 1-D float64 array of finite counts >= 0, or raise naming ``name``.

    Numbers only: strings and booleans are refused (``np.asarray`` would convert them).
    """
    if isinstance(value, (str, bytes, Mapping)) or np.ndim(value) == 0:
        raise TypeError(f"{name} must be a 1-D array of counts, got {_show(value)}")
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D array of counts, got {_show(value)}") from exc
    if raw.size and raw.dtype.kind not in "iuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {raw.dtype}")
    arr = as_float_array(name, raw)
    negative = arr < 0
    if negative.any():
        k = int(np.flatnonzero(negative)[0])
        raise ValueError(f"{name} must be >= 0, got {arr[k]} at index {k}")
    return arr


def check_rng(name: str, rng: Any, *, optional: bool = False) -> Any:
    """Return ``rng`` if it is a ``numpy.random.Generator`` (or None when ``optional``)."""
    if rng is None and optional:
        return None
    if not isinstance(rng, np.random.Generator):
        allowed = "a numpy.random.Generator or None" if optional else "a numpy.random.Generator"
        raise TypeError(f"{name} must be {allowed}, got {_show(rng)}")
    return rng
