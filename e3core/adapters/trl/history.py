"""The per-generation-step metrics file ``e3_history.csv``, written as training goes.

One row per generation step, keyed by ``global_step`` (the trainer's optimizer step when the
step generated) and ``generation`` (a running index over generation steps, kept across resumes).
A row is appended and flushed as soon as the step is scored, so a crash leaves every row so far.
Columns may grow (the first step has no entropy yet): a row with a new key rewrites the file
with the wider header through a temporary file and ``os.replace``, so a rewrite never leaves a
half-written file. A resumed run first drops the rows at or after the checkpoint's ``global_step``
(they are generated again), so after a crash and a resume the file holds every step once, in
order.
"""

from __future__ import annotations

import csv
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["KEY_COLUMNS", "HistoryCsv", "history_record"]

KEY_COLUMNS = ("global_step", "generation")
"""The leading columns that identify a row."""


def _cell(value: Any) -> str:
    """One CSV cell: lists space-separated (the per-prompt counts), floats round-trippable."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value)
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def history_record(row: Mapping[str, Any]) -> dict[str, str]:
    """A history row as CSV cells (``counts`` as a space-separated string)."""
    return {str(key): _cell(value) for key, value in row.items()}


class HistoryCsv:
    """Append-only CSV of per-step metrics that survives crashes and resumes.

    Args:
        path: The CSV file.

    The file is opened, appended to and closed at every row; nothing is held open between
    steps. Only one process should write it (the trainer's main process).
    """

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)
        self.fields: list[str] | None = None

    def start(self, resume_step: int | None) -> None:
        """Begin a run: a fresh run (None) removes the file; a resumed one trims it.

        Args:
            resume_step: The ``global_step`` the run resumes at: rows with ``global_step`` at
                or past it are dropped (they will be generated again). None: a fresh run,
                whose rows replace whatever the file held.
        """
        self.fields = None
        if resume_step is None:
            self.path.unlink(missing_ok=True)
            return
        if not self.path.is_file():
            return
        fields, rows = self._read()
        if not fields:
            self.path.unlink(missing_ok=True)
            return
        kept = [row for row in rows if _step_of(row) < resume_step]
        self._rewrite(fields, kept)
        self.fields = fields

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row; a key not in the header rewrites the file with a wider header."""
        record = history_record(row)
        if self.fields is None and self.path.is_file():
            self.fields, _ = self._read()
        if not self.fields:
            self.fields = [k for k in KEY_COLUMNS if k in record]
            self.fields += [k for k in record if k not in self.fields]
            self._rewrite(self.fields, [record])
            return
        new = [k for k in record if k not in self.fields]
        if new:
            _, rows = self._read()
            self.fields = self.fields + new
            self._rewrite(self.fields, [*rows, record])
            return
        with self.path.open("a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=self.fields).writerow(record)
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, str]]:
        """The rows on disk, as strings (empty if there is no file)."""
        if not self.path.is_file():
            return []
        return self._read()[1]

    # ------------------------------------------------------------------ internals
    def _read(self) -> tuple[list[str], list[dict[str, str]]]:
        with self.path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [dict(row) for row in reader]
            return list(reader.fieldnames or []), rows

    def _rewrite(self, fields: Sequence[str], rows: Sequence[Mapping[str, str]]) -> None:
        """Write ``rows`` under ``fields`` to a temporary file and move it over the file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o644
            os.chmod(tmp, mode)
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=list(fields), restval="")
                writer.writeheader()
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _step_of(row: Mapping[str, str]) -> int:
    """A row's ``global_step``; a row without a readable one is dropped on resume."""
    try:
        return int(float(row.get("global_step") or "inf"))
    except (TypeError, ValueError, OverflowError):
        return 2**62
