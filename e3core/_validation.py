"""Shared input checks: errors name the argument, the value and what is allowed."""

from __future__ import annotations

import math
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
