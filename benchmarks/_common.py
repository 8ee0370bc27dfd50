"""The harness every benchmark script shares: paths, a timer, a CSV writer and a table printer.

Each script in ``benchmarks/`` is run as ``python benchmarks/<script>.py``, so this folder is on
``sys.path`` and the scripts import ``_common`` (and :mod:`peers`, the peer baselines) by name.
Nothing here measures or computes a result; it only times, writes and prints, so that every
script does those the same way.
"""

from __future__ import annotations

import csv
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
"""This folder, ``benchmarks/``."""
REPO = BENCH_DIR.parent
"""The repository root."""
OUT_DIR = BENCH_DIR / "out"
"""Where the scripts write their CSVs by default (ignored by git)."""

MAX_LOOPS = 1 << 20
"""The most calls one timed repeat may loop (a call too fast to time stops growing here)."""
SLOW_CALL_SECONDS = 1.0
"""A call whose warm-up takes longer than this is timed with at most three repeats."""


# ----------------------------------------------------------------------- timing
def _check_timing(repeats: int, min_time: float) -> None:
    if repeats < 1:
        raise ValueError(f"repeats must be a positive number of timed repeats; got {repeats}")
    if not min_time >= 0.0:
        raise ValueError(f"min_time must be >= 0 seconds per repeat; got {min_time}")


def _calibrate(fn: Callable[[], Any], min_time: float) -> tuple[int, float]:
    r"""Find how many calls one repeat loops so that it lasts at least ``min_time``.

    The loop count grows (x2 while a repeat reads zero time, else x2..x10 toward
    :math:`1.2\,t_{\min}`) until a repeat lasts ``min_time`` or reaches :data:`MAX_LOOPS`.

    Returns:
        ``(loops, seconds)``: the loop count and the duration of its (last) calibration repeat.
    """
    loops = 1
    while True:
        elapsed = _loop(fn, loops)
        if elapsed >= min_time or loops >= MAX_LOOPS:
            return loops, elapsed
        loops *= 2 if elapsed == 0 else max(2, min(10, int(1.2 * min_time / elapsed) + 1))


def _loop(fn: Callable[[], Any], loops: int) -> float:
    """Seconds one repeat takes that calls ``fn`` ``loops`` times."""
    start = time.perf_counter()
    for _ in range(loops):
        fn()
    return time.perf_counter() - start


def median_seconds(fn: Callable[[], Any], repeats: int, min_time: float) -> float:
    r"""Median seconds per call of ``fn``, timeit-style.

    One untimed warm-up call (caches, lazy imports, allocator pools); then each repeat loops
    ``fn`` :math:`L` times, :math:`L` chosen once so that a repeat lasts at least ``min_time``
    (the calibrating repeat counts as the first), and the result is

    .. math:: \operatorname{median}_{r=1..R}\ t_r / L .

    Args:
        fn: The call to time (its result is discarded).
        repeats: Number of timed repeats :math:`R` (at most 3 when the warm-up call took over
            :data:`SLOW_CALL_SECONDS`).
        min_time: Seconds each repeat lasts at least (0: one call per repeat).

    Returns:
        The median over repeats of (repeat time / calls in the repeat).

    Raises:
        ValueError: ``repeats`` < 1 or ``min_time`` < 0.
    """
    _check_timing(repeats, min_time)
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start > SLOW_CALL_SECONDS:
        repeats = min(repeats, 3)  # slow calls: three repeats are enough for a median
    loops, elapsed = _calibrate(fn, min_time)
    times = [elapsed / loops] + [_loop(fn, loops) / loops for _ in range(repeats - 1)]
    return statistics.median(times)


def median_seconds_interleaved(
    fns: Sequence[Callable[[], Any]], repeats: int, min_time: float
) -> list[float]:
    """Median seconds per call of each of ``fns``, their repeats taken in turn.

    Each call is warmed up and calibrated as in :func:`median_seconds` (the calibrating repeat
    is not kept here); then repeat :math:`r` of every candidate runs before repeat :math:`r+1`
    of any. Round-robin repeats make load from other processes hit every candidate alike, so the
    ratios between them hold up better than separately timed medians on a shared machine.

    Args:
        fns: The calls to time.
        repeats: Timed repeats per call.
        min_time: Seconds each repeat lasts at least.

    Returns:
        One median per call, in the order of ``fns``.

    Raises:
        ValueError: ``repeats`` < 1 or ``min_time`` < 0.
    """
    _check_timing(repeats, min_time)
    loops = []
    for fn in fns:
        fn()
        loops.append(_calibrate(fn, min_time)[0])
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            times[k].append(_loop(fn, loops[k]) / loops[k])
    return [statistics.median(t) for t in times]


# ----------------------------------------------------------------------- output
def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of the CSV file at ``path``, each a mapping from column title to cell text."""
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_csv(rows: Iterable[Mapping[str, Any]], path: Path) -> Path:
    """Write ``rows`` to ``path`` as CSV, creating its folder.

    The columns are the union of the rows' keys in the order they are first seen; a row
    lacking a column leaves its cell empty.

    Args:
        rows: One mapping per CSV row.
        path: The file to (over)write.

    Returns:
        ``path``, for the caller's "wrote ..." line.
    """
    rows = list(rows)
    columns: dict[str, None] = {}
    for row in rows:
        columns.update(dict.fromkeys(row))
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path


def table_lines(
    columns: Sequence[str], rows: Iterable[Sequence[object]], *, spaced_rule: bool = False
) -> list[str]:
    """A Markdown table: a header line, a rule line, then one line per row.

    Cells are printed with ``str`` and separated by ``" | "``; a line is
    ``| cell | ... | cell |``.

    Args:
        columns: The column titles.
        rows: The rows' cells, already formatted (as many as ``columns``).
        spaced_rule: Rule ``| --- | --- |`` instead of ``|---|---|``.

    Returns:
        The lines, without line ends.

    Raises:
        ValueError: a row has another number of cells than ``columns``.
    """

    def line(cells: Sequence[object]) -> str:
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    rule = line(["---"] * len(columns)) if spaced_rule else "|" + "---|" * len(columns)
    lines = [line(columns), rule]
    for k, cells in enumerate(rows):
        if len(cells) != len(columns):
            raise ValueError(
                f"rows[{k}] has {len(cells)} cells, but the table has {len(columns)} columns "
                f"({', '.join(columns)})"
            )
        lines.append(line(cells))
    return lines


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[object]], *, spaced_rule: bool = False
) -> None:
    """Print the Markdown table of :func:`table_lines` (same arguments) to stdout."""
    for text in table_lines(columns, rows, spaced_rule=spaced_rule):
        print(text)


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` on the file-only Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
