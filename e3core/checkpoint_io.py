"""Checkpoint files that are either absent or whole: :func:`atomic_torch_save`.

Shared by the adapters (which never import each other); imports only the standard library and
torch.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import torch

__all__ = ["atomic_torch_save"]


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
