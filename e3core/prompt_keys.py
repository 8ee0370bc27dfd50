"""Stable prompt ids for the difficulty tracker when a dataset has no id column."""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["prompt_key"]


def _plain(value: Any) -> Any:
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and scalars, torch tensors
        return tolist()
    return str(value)


def prompt_key(prompt: Any) -> int:
    """A 63-bit id of a prompt: BLAKE2b of its canonical JSON (keys sorted), as an ``int``.

    The same prompt (a string, or a chat as a list of ``{"role", "content"}`` dicts) gets the
    same id in every process and every run, so a tracker restored from a checkpoint recognises
    it. NumPy arrays and scalars are encoded as the lists and numbers they hold (verl's collate
    turns a batch of chats into an object array), other objects JSON cannot encode by ``str``.

    Args:
        prompt: The prompt as the dataset holds it.

    Returns:
        An integer in ``[0, 2**63)``.
    """
    text = json.dumps(prompt, sort_keys=True, default=_plain, ensure_ascii=False)
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1
