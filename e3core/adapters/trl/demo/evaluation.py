r"""The demo's evaluation: sampled pass@1 and pass@k per difficulty bucket.

:func:`evaluate` samples ``k`` completions per held-out prompt, scores them with
:data:`e3core.adapters.trl.rewards.exact_reward` (the reward the demo trains with) and
:func:`summarize` averages the unbiased pass@j estimator per bucket (``"1-digit"``,
``"2-digit"``, ...) and overall. :func:`e3core.adapters.trl.reporting.format_table` prints the
rows.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

from e3core._validation import check_float, check_int
from e3core.adapters.trl.rewards import exact_reward
from e3core.metrics import pass_at_k

__all__ = ["EvalResult", "evaluate", "summarize"]


@dataclass(frozen=True)
class EvalResult:
    """What :func:`evaluate` measured.

    Attributes:
        rows: per-bucket summaries, then an ``"all"`` row (see :func:`summarize`).
        prompts: the evaluated prompts, in dataset order.
        buckets: their buckets.
        num_samples: samples per prompt (all equal to ``k``), int64.
        num_correct: correct samples per prompt, int64; with ``num_samples`` enough to compute
            pass@j for any ``j <= k`` with :func:`e3core.metrics.pass_at_k`.
        k: the samples per prompt.
        temperature: the sampling temperature.
        seconds: wall time of the evaluation.
    """

    rows: list[dict[str, Any]]
    prompts: list[str]
    buckets: list[str]
    num_samples: np.ndarray
    num_correct: np.ndarray
    k: int
    temperature: float
    seconds: float


def _bucket_sort_key(name: str) -> tuple[int, float, str]:
    """Order ``"2-digit"`` before ``"10-digit"``, non-numeric names after, ``"all"`` last."""
    head = name.split("-", 1)[0]
    if name == "all":
        return (2, 0.0, name)
    return (0, float(head), name) if head.isdigit() else (1, 0.0, name)


def summarize(
    buckets: Sequence[str], num_samples: Any, num_correct: Any, ks: Sequence[int] = (1,)
) -> list[dict[str, Any]]:
    """Per-bucket mean pass@j for each ``j`` in ``ks``, and an overall ``"all"`` row.

    Each row is ``{"bucket", "prompts", "samples", "pass@j" for j in ks}``; pass@j is the mean
    over the bucket's prompts of the unbiased estimator :func:`e3core.metrics.pass_at_k`
    (Chen et al. 2021, arXiv 2107.03374). Buckets are ordered by their leading number.

    Args:
        buckets: the bucket of each prompt.
        num_samples: samples per prompt (integers).
        num_correct: correct samples per prompt (integers).
        ks: the ``j`` values, each between 1 and every prompt's sample count.

    Returns:
        The rows, the ``"all"`` row last.

    Raises:
        ValueError: if the lengths differ, there are no prompts, or as :func:`pass_at_k`.
    """
    n = np.asarray(num_samples)
    c = np.asarray(num_correct)
    if n.ndim != 1 or c.ndim != 1 or len(buckets) != len(n) or len(n) != len(c):
        raise ValueError(
            "buckets, num_samples and num_correct must be one-dimensional of one length, got "
            f"{len(buckets)}, {n.shape} and {c.shape}"
        )
    if not len(n):
        raise ValueError("num_samples must hold at least one prompt, got an empty array")
    ks = tuple(dict.fromkeys(check_int("ks", j, low=1) for j in ks))
    if not ks:
        raise ValueError("ks must hold at least one value, got ()")
    scores = {j: pass_at_k(n, c, j) for j in ks}
    labels = np.asarray(list(buckets), dtype=object)
    rows = []
    names = sorted(set(labels.tolist()), key=_bucket_sort_key)
    for name in [*names, "all"]:
        sel = np.ones(len(n), dtype=bool) if name == "all" else labels == name
        row: dict[str, Any] = {
            "bucket": name,
            "prompts": int(sel.sum()),
            "samples": int(n[sel].sum()),
        }
        for j in ks:
            row[f"pass@{j}"] = float(scores[j][sel].mean())
        rows.append(row)
    return rows


def _column(dataset: Any, name: str) -> list[Any]:
    """Column ``name`` of a ``Dataset``, a mapping of lists, or a sequence of row mappings."""
    if isinstance(dataset, (Dataset, Mapping)):
        if name not in (dataset.column_names if isinstance(dataset, Dataset) else dataset):
            raise ValueError(f"dataset must have a {name!r} column")
        return list(dataset[name])
    if isinstance(dataset, Sequence) and all(isinstance(r, Mapping) for r in dataset):
        if any(name not in r for r in dataset):
            raise ValueError(f"dataset rows must all have a {name!r} key")
        return [r[name] for r in dataset]
    raise TypeError(
        "dataset must be a datasets.Dataset, a mapping of columns or a list of row dicts, got "
        f"{type(dataset).__name__}"
    )


@torch.no_grad()
def evaluate(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    dataset: Any,
    *,
    k: int = 8,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    max_new_tokens: int | None = None,
) -> EvalResult:
    """Sample ``k`` completions per prompt and report pass@1 and pass@k per bucket.

    Prompts are encoded as TRL encodes them (left-padded, with bos), ``batch_size`` prompts per
    ``model.generate`` call with ``num_return_sequences=k``; completions are decoded with
    ``skip_special_tokens=True`` and scored by :data:`~e3core.adapters.trl.rewards.exact_reward`
    (so eos is dropped and surrounding whitespace ignored, as in training). ``temperature=0``
    decodes greedily once and counts that completion ``k`` times. Sampling is seeded by ``seed``
    inside a forked RNG, so the global torch RNG is left as it was.

    Args:
        model: the causal LM (its train/eval mode is restored afterwards).
        tokenizer: its tokenizer.
        dataset: rows with ``prompt``, ``answer`` and ``bucket`` (a ``datasets.Dataset``, a
            mapping of columns, or a list of dicts).
        k: samples per prompt, >= 1.
        temperature: sampling temperature, >= 0.
        batch_size: prompts per generate call, >= 1.
        seed: the sampling seed.
        max_new_tokens: generation limit; ``None`` uses the longest answer plus one (for eos).

    Returns:
        An :class:`EvalResult` whose rows hold ``pass@1`` and ``pass@{k}`` per bucket and overall.

    Raises:
        TypeError, ValueError: on a bad argument (the message names it).
    """
    k = check_int("k", k, low=1)
    temperature = check_float("temperature", temperature, low=0.0)
    batch_size = check_int("batch_size", batch_size, low=1)
    seed = check_int("seed", seed, low=0)
    prompts = [str(p) for p in _column(dataset, "prompt")]
    answers = [str(a) for a in _column(dataset, "answer")]
    buckets = [str(b) for b in _column(dataset, "bucket")]
    if not prompts:
        raise ValueError("dataset must hold at least one row, got none")
    if max_new_tokens is None:
        max_new_tokens = max(len(a) for a in answers) + 1
    max_new_tokens = check_int("max_new_tokens", max_new_tokens, low=1)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    correct = np.zeros(len(prompts), dtype=np.int64)
    start = time.perf_counter()
    devices = [device.index or 0] if device.type == "cuda" else []
    greedy = temperature == 0.0
    reps = 1 if greedy else k
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            for lo in range(0, len(prompts), batch_size):
                chunk = prompts[lo : lo + batch_size]
                enc = tokenizer(chunk, padding=True, padding_side="left", return_tensors="pt")
                gen_kwargs: dict[str, Any] = (
                    {"do_sample": False}
                    if greedy
                    else {"do_sample": True, "temperature": temperature}
                )
                out = model.generate(
                    input_ids=enc["input_ids"].to(device),
                    attention_mask=enc["attention_mask"].to(device),
                    max_new_tokens=max_new_tokens,
                    num_return_sequences=reps,
                    pad_token_id=tokenizer.pad_token_id,
                    eos_token_id=tokenizer.eos_token_id,
                    **gen_kwargs,
                )
                texts = tokenizer.batch_decode(
                    out[:, enc["input_ids"].shape[1] :], skip_special_tokens=True
                )
                targets = [a for a in answers[lo : lo + batch_size] for _ in range(reps)]
                scores = exact_reward(prompts=None, completions=texts, answer=targets)
                hits = np.asarray(scores, dtype=np.float64).reshape(len(chunk), reps)
                correct[lo : lo + len(chunk)] = hits.sum(axis=1).astype(np.int64) * (k // reps)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - start
    samples = np.full(len(prompts), k, dtype=np.int64)
    return EvalResult(
        rows=summarize(buckets, samples, correct, ks=(1, k)),
        prompts=prompts,
        buckets=buckets,
        num_samples=samples,
        num_correct=correct,
        k=k,
        temperature=temperature,
        seconds=seconds,
    )
