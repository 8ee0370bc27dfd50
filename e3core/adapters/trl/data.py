"""Prompt datasets for TRL's ``GRPOTrainer``: a ``prompt`` column and a string ``answer`` column.

`load_prompt_dataset` reads a local ``.json`` / ``.jsonl`` / ``.parquet`` file, a local folder
of data files, or a Hugging Face Hub dataset, renames the prompt and answer columns to the names
TRL and `e3core.adapters.trl.rewards` expect, casts answers to strings, and can turn each prompt
into a chat conversation for chat models. Other columns are kept (TRL passes them to the reward
functions as keyword arguments).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from e3core._validation import _show

if TYPE_CHECKING:
    import datasets

__all__ = ["LOCAL_SUFFIXES", "load_prompt_dataset"]

LOCAL_SUFFIXES: dict[str, str] = {".json": "json", ".jsonl": "json", ".parquet": "parquet"}
"""Local file suffixes `load_prompt_dataset` reads, and the ``datasets`` builder for each."""

_PATH_PREFIXES = ("/", "./", "../", "~", ".\\", "..\\")


def _check_name(name: str, value: Any, *, optional: bool = False) -> str | None:
    """Return ``value`` if it is a non-empty string (or ``None`` when ``optional``), else raise."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        allowed = "a non-empty string or None" if optional else "a non-empty string"
        raise TypeError(f"{name} must be {allowed}, got {_show(value)}")
    if not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    return value


def _answer_to_str(value: Any, row: int, column: str) -> str:
    """Return an answer cell as a string: integral floats without ``.0``; raise on others.

    JSON readers store a column holding both ``2`` and ``0.5`` as float64, so ``2`` arrives as
    ``2.0``; it is written back as ``"2"`` (what the file said), not ``"2.0"``.
    """
    if isinstance(value, str):
        return value
    if value is None:
        raise ValueError(
            f"answer_column {column!r} is missing (None) at row {row}; every prompt needs an answer"
        )
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer():
            return str(int(value))
        return repr(value)
    raise TypeError(
        f"answer_column {column!r} must hold strings or numbers; row {row} holds a "
        f"{type(value).__name__}: {_show(value)}"
    )


def _read(name_or_path: str, split: str, config_name: str | None, cache_dir: str | None) -> Any:
    """Load ``name_or_path`` with ``datasets``: a local file, a local folder, or a hub id."""
    import datasets

    expanded = os.path.expanduser(name_or_path)
    path = Path(expanded)
    suffix = path.suffix.lower()
    if path.is_file():
        if suffix not in LOCAL_SUFFIXES:
            raise ValueError(
                f"name_or_path={name_or_path!r} is a file of an unsupported type {suffix!r}; "
                f"supported: {sorted(LOCAL_SUFFIXES)} (or a hub dataset id)"
            )
        if path.stat().st_size == 0:
            raise ValueError(f"name_or_path={name_or_path!r} is an empty file")
        try:
            return datasets.load_dataset(
                LOCAL_SUFFIXES[suffix],
                data_files={split.split("[")[0].strip(): str(path)},  # "train[:100]" slices
                split=split,
                cache_dir=cache_dir,
            )
        except OSError:
            raise
        except Exception as error:  # datasets' parse errors; StopIteration for blank JSONL
            if "corresponds to no data" in str(error):  # a file with zero records
                raise ValueError(
                    f"name_or_path={name_or_path!r} (split {split!r}) has no rows"
                ) from error
            raise ValueError(
                f"name_or_path={name_or_path!r}: could not read it as {LOCAL_SUFFIXES[suffix]} "
                f"({type(error).__name__}: {error})"
            ) from error
    if path.is_dir():
        return datasets.load_dataset(expanded, config_name, split=split, cache_dir=cache_dir)
    if suffix in LOCAL_SUFFIXES or name_or_path.startswith(_PATH_PREFIXES):
        raise FileNotFoundError(
            f"name_or_path={name_or_path!r} looks like a local path but no such file or folder "
            "exists"
        )
    return datasets.load_dataset(name_or_path, config_name, split=split, cache_dir=cache_dir)


def _rename(dataset: Any, source: str, target: str, argument: str) -> Any:
    """Rename existing column ``source`` to ``target``, refusing to overwrite another column."""
    columns = list(dataset.column_names)
    if source == target:
        return dataset
    if target in columns:
        raise ValueError(
            f"{argument}={source!r} would be renamed to {target!r}, but the dataset already has "
            f"a {target!r} column; drop or rename it first (columns: {columns})"
        )
    return dataset.rename_column(source, target)


def load_prompt_dataset(
    name_or_path: str,
    *,
    split: str = "train",
    prompt_column: str = "prompt",
    answer_column: str | None = "answer",
    system_prompt: str | None = None,
    chat: bool = False,
    config_name: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> datasets.Dataset:
    """Load a prompt dataset for GRPO training, with ``prompt`` and ``answer`` columns.

    Args:
        name_or_path: A local ``.json`` (a list of records, or JSON lines), ``.jsonl`` or
            ``.parquet`` file; a local folder of data files; or else a Hugging Face Hub dataset
            id. A name with one of those suffixes, or starting with ``/``, ``./``, ``../`` or
            ``~``, is taken as a local path and must exist.
        split: The split to return, slices included (``"train[:100]"``). For a local file, the
            name given to its single split.
        prompt_column: The column holding the prompt strings; renamed to ``prompt``.
        answer_column: The column holding the reference answers; renamed to ``answer`` and cast
            to strings (an integral number becomes ``"2"``, not ``"2.0"``). ``None`` when the
            dataset has no answers (a reward that needs none).
        system_prompt: With ``chat=True``, a system message put before every prompt.
        chat: Turn each prompt string ``p`` into the conversation
            ``[{"role": "system", "content": system_prompt}, {"role": "user", "content": p}]``
            (the system message only when ``system_prompt`` is given), for chat models.
        config_name: The dataset configuration of a hub dataset or folder (e.g. ``"main"`` for
            ``openai/gsm8k``); ``None`` for the default.
        cache_dir: Where ``datasets`` caches the converted data; ``None`` for its default.

    Returns:
        A ``datasets.Dataset`` with ``prompt`` (strings, or conversations when ``chat``),
        ``answer`` (strings, unless ``answer_column`` is ``None``) and the other columns kept.

    Raises:
        TypeError: If an argument has the wrong type, a prompt is not a string (naming its
            row), or an answer is neither a string nor a number (naming its row).
        ValueError: If a column is missing (listing those there are), a rename would clash with
            an existing column, the dataset or a prompt is empty, an answer is missing, the
            file cannot be read, or ``system_prompt`` is given without ``chat=True``.
        FileNotFoundError: If ``name_or_path`` looks like a local path that does not exist.
    """
    import datasets

    _check_name("name_or_path", name_or_path)
    _check_name("split", split)
    _check_name("prompt_column", prompt_column)
    _check_name("answer_column", answer_column, optional=True)
    _check_name("config_name", config_name, optional=True)
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"system_prompt must be a string or None, got {_show(system_prompt)}")
    if not isinstance(chat, bool):
        raise TypeError(f"chat must be a bool, got {_show(chat)}")
    if system_prompt is not None and not chat:
        raise ValueError(
            "system_prompt is only used with chat=True (it becomes the system message); "
            f"got system_prompt={_show(system_prompt)} with chat=False"
        )
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(f"cache_dir must be a path or None, got {_show(cache_dir)}")
    if answer_column is not None and answer_column == prompt_column:
        raise ValueError(f"prompt_column and answer_column must differ, both are {prompt_column!r}")

    dataset = _read(name_or_path, split, config_name, None if cache_dir is None else str(cache_dir))
    if not isinstance(dataset, datasets.Dataset):
        raise TypeError(
            f"name_or_path={name_or_path!r} with split={split!r} gave a "
            f"{type(dataset).__name__}, expected a datasets.Dataset (one split, not streaming)"
        )
    if len(dataset) == 0:
        raise ValueError(f"name_or_path={name_or_path!r} (split {split!r}) has no rows")

    columns = list(dataset.column_names)
    for argument, column in (("prompt_column", prompt_column), ("answer_column", answer_column)):
        if column is not None and column not in columns:
            raise ValueError(
                f"{argument}={column!r} is not a column of the dataset; columns: {columns}"
            )
    dataset = _rename(dataset, prompt_column, "prompt", "prompt_column")
    if answer_column is not None:
        dataset = _rename(dataset, answer_column, "answer", "answer_column")

    for row, prompt in enumerate(dataset["prompt"]):
        if not isinstance(prompt, str):
            raise TypeError(
                f"prompt_column {prompt_column!r} must hold strings; row {row} holds a "
                f"{type(prompt).__name__}: {_show(prompt)}"
            )
        if not prompt.strip():
            raise ValueError(f"prompt_column {prompt_column!r} is empty at row {row}")

    if answer_column is not None:
        column = answer_column
        features = dataset.features.copy()
        features["answer"] = datasets.Value("string")
        dataset = dataset.map(
            lambda example, row: {"answer": _answer_to_str(example["answer"], row, column)},
            with_indices=True,
            features=features,
            load_from_cache_file=False,
            desc="answers to strings",
        )

    if chat:
        head = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        dataset = dataset.map(
            lambda example: {"prompt": [*head, {"role": "user", "content": example["prompt"]}]},
            load_from_cache_file=False,
            desc="prompts to conversations",
        )
    return dataset
