"""Checkpoint files that are either absent or whole: :func:`atomic_torch_save`.

Shared by the adapters (which never import each other); imports only the standard library and
torch.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

__all__ = ["atomic_torch_save", "load_state_file"]


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` that leaves either the old file or the complete new one.

    The data goes to a temporary file in the same folder (named ``.<name>.<random>.tmp``, which
    no loader reads), is flushed and ``fsync``-ed, then ``os.replace`` puts it in place in one
    step and the folder is synced; a crash at any point leaves no partial file under ``path``.
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable (not possible on every platform)
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def load_state_file(path: str | os.PathLike[str], *, fresh_option: str) -> Any:
    """Read an E3 state file written by :func:`atomic_torch_save` (``weights_only=True``).

    Args:
        path: The state file.
        fresh_option: How the user spells the opt-out that starts the scheduler afresh
            (``e3_resume_fresh=True``, ``e3.resume_fresh=true``), for the messages.

    Raises:
        FileNotFoundError: The file does not exist (a checkpoint without E3 state).
        ValueError: The file is corrupt, truncated or not a torch file.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} does not exist: the checkpoint has no E3 state (a checkpoint of plain "
            f"GRPO, or one written before its E3 state). Set {fresh_option} to resume it with "
            "a fresh E3 scheduler (step, epoch, counts, prior and temperature start anew)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: torch raises many kinds
        raise ValueError(
            f"{path} cannot be read as an E3 state ({type(exc).__name__}: {exc}); it is "
            f"corrupt or truncated: resume from another checkpoint, or set {fresh_option} to "
            "start the E3 scheduler afresh"
        ) from exc
