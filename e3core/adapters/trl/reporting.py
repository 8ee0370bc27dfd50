"""Text tables and the learning-curve plot of an E3 GRPO run, for the command line and the demo.

* :func:`format_table`: evaluation rows (from
  :func:`e3core.adapters.trl.demo.evaluation.summarize`) as a fixed-width table, optionally
  before and after training side by side;
* :func:`trajectory_table`: the sampling temperature, target and measured entropy and the
  mixed-group share at five points of a run, from the trainer's
  :attr:`~e3core.adapters.trl.E3GRPOTrainer.e3_history`;
* :func:`save_plot`: entropy, temperature, reward and mixed-group share over the steps, as a PNG
  (needs ``matplotlib``, imported only when called).

The per-step metrics file ``e3_history.csv`` is written by the trainer as it goes
(:mod:`e3core.adapters.trl.history`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from e3core._validation import _show, check_int

__all__ = ["format_table", "save_plot", "trajectory_table"]

_TRAJECTORY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("temperature", "e3/sample_temperature"),
    ("target H", "e3/target_entropy"),
    ("entropy H", "e3/entropy"),
    ("mixed", "e3/mixed_share"),
)
"""The columns of :func:`trajectory_table` after ``step``: heading and history key."""


def _fmt(value: Any, precision: int) -> str:
    """A table cell: floats with ``precision`` decimals, anything else as ``str``."""
    if isinstance(value, float):
        return f"{value:.{precision}f}"
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]],
    after: Sequence[Mapping[str, Any]] | None = None,
    *,
    labels: tuple[str, str] = ("before", "after"),
    precision: int = 3,
) -> str:
    """A fixed-width text table of evaluation rows, optionally before and after side by side.

    Args:
        rows: rows as from :func:`summarize` (``bucket``, ``prompts``, then metric columns).
        after: optional second set of rows for the same buckets; each metric column is then
            shown twice, headed ``"<metric> <labels[0]>"`` and ``"<metric> <labels[1]>"``.
        labels: the two column suffixes when ``after`` is given.
        precision: decimals for float values.

    Returns:
        The table as lines joined by newlines (no trailing newline).

    Raises:
        ValueError: if ``rows`` is empty or ``after`` lacks a bucket of ``rows``.
    """
    if not rows:
        raise ValueError("rows must hold at least one row, got none")
    precision = check_int("precision", precision, low=0, high=12)
    keys = ["bucket", "prompts"]
    metrics = [key for key in rows[0] if key not in ("bucket", "prompts", "samples")]
    header = list(keys)
    table: list[list[str]] = []
    if after is None:
        header += metrics
        for row in rows:
            table.append([_fmt(row.get(key, ""), precision) for key in [*keys, *metrics]])
    else:
        later = {r["bucket"]: r for r in after}
        missing = [r["bucket"] for r in rows if r["bucket"] not in later]
        if missing:
            raise ValueError(f"after must have a row for every bucket of rows, missing {missing}")
        for m in metrics:
            header += [f"{m} {labels[0]}", f"{m} {labels[1]}"]
        for row in rows:
            cells = [_fmt(row.get(key, ""), precision) for key in keys]
            for m in metrics:
                cells += [
                    _fmt(row.get(m, ""), precision),
                    _fmt(later[row["bucket"]].get(m, ""), precision),
                ]
            table.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in table)) for i, h in enumerate(header)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(header, widths, strict=True))
        )
    ]
    lines.append("  ".join("-" * w for w in widths))
    for r in table:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _check_history(history: Any) -> Sequence[Mapping[str, Any]]:
    """``history`` if it is a sequence of mappings (one per step), or raise naming it."""
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise TypeError(
            f"history must be a sequence of mappings (one per step), got {_show(history)}"
        )
    bad = [i for i, row in enumerate(history) if not isinstance(row, Mapping)]
    if bad:
        raise TypeError(
            f"history must hold one mapping per step, got {type(history[bad[0]]).__name__} "
            f"at index {bad[0]}"
        )
    return history


def _fixed3(value: Any, width: int) -> str:
    """A finite float right-aligned in ``width`` with 3 decimals; ``-`` for anything else."""
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:>{width}.3f}"
    return "-".rjust(width)


def trajectory_table(history: Sequence[Mapping[str, Any]]) -> str:
    r"""Temperature, target and measured entropy and mixed-group share at five points of a run.

    The rows are the steps :math:`i + 1` for :math:`i \in \{0, \lfloor n/4 \rfloor,
    \lfloor n/2 \rfloor, \lfloor 3n/4 \rfloor, n - 1\}` of a history of :math:`n` steps
    (fewer when they coincide). The columns are the sampling temperature
    (``e3/sample_temperature``), the target entropy (``e3/target_entropy``), the measured entropy
    (``e3/entropy``) and the mixed-group share (``e3/mixed_share``); a value that is missing or
    not a finite float shows as ``-``.

    Args:
        history: one mapping of metrics per generation step, as the trainer's
            :attr:`~e3core.adapters.trl.E3GRPOTrainer.e3_history`.

    Returns:
        The table as lines joined by newlines (no trailing newline), or
        ``"(no generation steps)"`` for an empty history.

    Raises:
        TypeError: if ``history`` is not a sequence of mappings.
    """
    history = _check_history(history)
    if not history:
        return "(no generation steps)"
    n = len(history)
    picks = sorted({0, n // 4, n // 2, (3 * n) // 4, n - 1})
    lines = ["  ".join(["step".rjust(6), *(heading for heading, _ in _TRAJECTORY_COLUMNS)])]
    for i in picks:
        row = history[i]
        cells = [_fixed3(row.get(key), len(heading)) for heading, key in _TRAJECTORY_COLUMNS]
        lines.append("  ".join([f"{i + 1:>6}", *cells]))
    return "\n".join(lines)


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """Steps and finite values of ``key`` over ``history`` (rows without it are skipped)."""
    xs, ys = [], []
    for i, row in enumerate(history):
        value = row.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            step = row.get("step", i)
            xs.append(float(step) if isinstance(step, (int, float)) else float(i))
            ys.append(float(value))
    return xs, ys


def save_plot(history: Sequence[Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Plot a training history to a PNG: entropy, temperature, reward and mixed-group share.

    Three panels over ``"step"`` (the row index where absent): measured ``"entropy"`` and
    ``"e3/target_entropy"``; ``"e3/temperature"``; ``"reward"`` and ``"e3/mixed_share"``.
    Missing keys or non-finite values are skipped; a panel with nothing to show says so.

    Args:
        history: one mapping of logged metrics per step.
        path: the output file.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    panels = [
        ("entropy (nats)", [("entropy", "measured"), ("e3/target_entropy", "target")]),
        ("temperature", [("e3/temperature", "temperature")]),
        ("reward / share", [("reward", "mean reward"), ("e3/mixed_share", "mixed-group share")]),
    ]
    fig, axes = plt.subplots(len(panels), 1, figsize=(7, 7), sharex=True)
    try:
        for ax, (ylabel, series) in zip(axes, panels, strict=True):
            drawn = 0
            for key, label in series:
                xs, ys = _series(history, key)
                if xs:
                    ax.plot(xs, ys, label=label, linewidth=1.2)
                    drawn += 1
            if drawn:
                ax.legend(loc="best", fontsize=8)
            else:
                ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
            ax.set_ylabel(ylabel)
            ax.grid(alpha=0.3)
        axes[-1].set_xlabel("step")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=100)
    finally:
        plt.close(fig)
    return out
