r"""The embedded demo's task: integer addition with a real spread of difficulty, built locally.

Everything here runs on a CPU with no model hub: a character-level tokenizer
(:func:`build_tokenizer`), a tiny randomly initialised Qwen2 (:func:`build_model`), prompts
``"a+b="`` whose answer is the decimal sum (:func:`make_dataset`), the exact-match reward in TRL's
reward-function signature (:func:`exact_match_reward`), a supervised warm start
(:func:`warm_start`) that leaves 1-digit sums solved, 2-digit sums mostly solved, 3-digit sums
anywhere from rarely to mostly solved (it depends on the seed) and 4-digit sums unsolved, and a
sampled evaluation reporting pass@1 and pass@k per difficulty bucket (:func:`evaluate`,
:func:`format_table`, :func:`save_plot`).

Difficulty is the digit count :math:`d = \max(\lvert a \rvert, \lvert b \rvert)` of the larger
addend; the bucket of ``"123+45="`` is ``"3-digit"``. That spread (always solved, mixed, never
solved) is what E3's per-prompt rollout allocation and entropy control act on (Liao et al.,
arXiv 2505.18573).

Held out: every unordered pair :math:`\{a, b\}` belongs to exactly one of the ``"train"`` and
``"eval"`` splits by a fixed hash (one pair in five is ``"eval"``), so the RL training set and
the evaluation set never share a problem, whatever the seeds. The supervised warm start also
draws its problems of two or more digits from the train split only; the 100 one-digit sums are
too few to hold out and it learns them all, as the "known facts" of the easy bucket.

Tokenization matches TRL: ``GRPOTrainer`` tokenizes a plain-string prompt with
``processing_class(text=prompts)``, i.e. with the default special tokens, which for
:func:`build_tokenizer` prepend ``<s>`` (bos). The warm start encodes its prompts the same way, so
the supervised and RL prompts are the same token sequences.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from e3core._validation import _show, check_choice, check_float, check_int
from e3core.metrics import pass_at_k

__all__ = [
    "ALPHABET",
    "BOS_TOKEN",
    "DEFAULT_WARM_START_WEIGHTS",
    "DEFAULT_WEIGHTS",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "EvalResult",
    "bucket_of",
    "build_model",
    "build_tokenizer",
    "evaluate",
    "exact_match_reward",
    "format_table",
    "in_eval_split",
    "make_dataset",
    "sample_problems",
    "save_plot",
    "summarize",
    "warm_start",
]

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
#: The 12 ordinary symbols; with the four specials the vocabulary has 16 entries.
ALPHABET = "0123456789+="
#: Default share of prompts per digit count 1..4 in :func:`make_dataset`: few easy, many mixed,
#: a hard tail.
DEFAULT_WEIGHTS = (0.15, 0.25, 0.35, 0.25)
#: Default share of problems per digit count 1..4 in :func:`warm_start` after its easy phase:
#: 1-3 digits emphasised, a little 4-digit so that the hard tail is not entirely unknown.
DEFAULT_WARM_START_WEIGHTS = (0.1, 0.25, 0.6, 0.05)
_MAX_DIGITS = 8
_EVAL_MODULUS = 5  # one unordered pair in this many belongs to the eval split
_SPLITS = ("train", "eval")


# --------------------------------------------------------------------------------------------
# tokenizer and model


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer over digits, ``+`` and ``=`` with four special tokens.

    Ids: ``<pad>`` 0, ``<s>`` (bos) 1, ``</s>`` (eos) 2, ``<unk>`` 3, then ``0``-``9`` as 4-13,
    ``+`` 14 and ``=`` 15. Every character is one token (anything outside the alphabet becomes
    ``<unk>``); decoding joins tokens with no separator. With the default
    ``add_special_tokens=True`` (what TRL's ``GRPOTrainer`` uses for string prompts) a text is
    encoded as ``<s>`` followed by its characters; no eos is appended, so a prompt ends where the
    completion starts.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``pad``/``bos``/``eos``/``unk`` set, ``model_max_length``
        64, and ``decode(ids, skip_special_tokens=True)`` inverting the encoding of any string
        over :data:`ALPHABET`.
    """
    specials = [PAD_TOKEN, BOS_TOKEN, EOS_TOKEN, UNK_TOKEN]
    vocab = {token: i for i, token in enumerate([*specials, *ALPHABET])}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS_TOKEN} $A",
        pair=f"{BOS_TOKEN} $A $B",
        special_tokens=[(BOS_TOKEN, vocab[BOS_TOKEN])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD_TOKEN,
        bos_token=BOS_TOKEN,
        eos_token=EOS_TOKEN,
        unk_token=UNK_TOKEN,
        model_max_length=64,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


def build_model(
    tokenizer: PreTrainedTokenizerFast,
    seed: int = 0,
    *,
    hidden_size: int = 128,
    num_layers: int = 3,
    initializer_range: float = 0.08,
) -> Qwen2ForCausalLM:
    r"""A tiny randomly initialised float32 Qwen2 for ``tokenizer``'s vocabulary.

    Three layers of width 128 (4 attention heads, 2 key-value heads, MLP width 512), rotary
    positions up to 64, tied input and output embeddings; about 0.74M parameters. The pad, bos
    and eos ids are set in both ``model.config`` and ``model.generation_config``. Initialisation
    is seeded without touching the global torch RNG.

    Weights are drawn with standard deviation ``initializer_range`` = 0.08 (about
    :math:`1/\sqrt{128}`) rather than Qwen2's 0.02: at 0.02 the attention logits start near zero
    and the warm start sat on a loss plateau (2-digit sums unsolved) for 1,000 to 2,500 steps,
    depending on the seed; at 0.06 to 0.1 it leaves the plateau within about 500 steps.

    Args:
        tokenizer: the tokenizer from :func:`build_tokenizer` (or any with pad/bos/eos ids).
        seed: the initialisation seed.
        hidden_size: model width, a positive multiple of 8 (4 heads of even size).
        num_layers: number of decoder layers, >= 1.
        initializer_range: standard deviation of the initial weights, > 0.

    Returns:
        The model in eval mode.

    Raises:
        TypeError: if ``tokenizer`` lacks pad, bos or eos ids, or an argument has the wrong type.
        ValueError: if ``hidden_size`` or ``num_layers`` is out of range.
    """
    seed = check_int("seed", seed, low=0)
    hidden_size = check_int("hidden_size", hidden_size, low=8)
    if hidden_size % 8:
        raise ValueError(f"hidden_size must be a multiple of 8, got {hidden_size}")
    num_layers = check_int("num_layers", num_layers, low=1)
    initializer_range = check_float("initializer_range", initializer_range, low=0.0, low_open=True)
    ids = {}
    for name in ("pad_token_id", "bos_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if not isinstance(value, int):
            raise TypeError(f"tokenizer must define {name}, got {_show(value)}")
        ids[name] = value
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        initializer_range=initializer_range,
        use_cache=True,
        **ids,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config).to(torch.float32)
    for name, value in ids.items():
        setattr(model.generation_config, name, value)
    return model.eval()


# --------------------------------------------------------------------------------------------
# problems and datasets


def bucket_of(digits: int) -> str:
    """The bucket name of problems whose larger addend has ``digits`` digits, e.g. ``"3-digit"``."""
    return f"{check_int('digits', digits, low=1)}-digit"


def _mix64(x: np.ndarray) -> np.ndarray:
    """A fixed 64-bit integer hash (the splitmix64 finaliser), elementwise on uint64."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint64(30))
        x = x * np.uint64(0xBF58476D1CE4E5B9)
        x = x ^ (x >> np.uint64(27))
        x = x * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return x


def in_eval_split(a: Any, b: Any) -> np.ndarray:
    """Whether the problem ``a+b`` belongs to the held-out eval split (elementwise).

    The split depends only on the unordered pair, so ``a+b`` and ``b+a`` always share a split,
    and one pair in five is held out.

    Args:
        a: first addends, non-negative integers below :math:`10^8`.
        b: second addends, broadcastable with ``a``.

    Returns:
        A boolean array of the broadcast shape.
    """
    lo = np.minimum(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    hi = np.maximum(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    if lo.size and (int(lo.min()) < 0 or int(hi.max()) >= 10**_MAX_DIGITS):
        raise ValueError(
            f"a and b must be in [0, 10**{_MAX_DIGITS}), got values {lo.min()}..{hi.max()}"
        )
    key = lo.astype(np.uint64) * np.uint64(10**_MAX_DIGITS) + hi.astype(np.uint64)
    return (_mix64(key) % np.uint64(_EVAL_MODULUS)) == 0


def _check_digits_weights(
    digits: Sequence[int], weights: Sequence[float] | None, default: Sequence[float]
) -> tuple[tuple[int, ...], np.ndarray]:
    """Validate ``digits`` and ``weights`` and return them normalised."""
    if isinstance(digits, (str, bytes)) or not isinstance(digits, Sequence) or not digits:
        raise TypeError(f"digits must be a non-empty sequence of integers, got {_show(digits)}")
    ds = tuple(check_int("digits", d, low=1, high=_MAX_DIGITS) for d in digits)
    if len(set(ds)) != len(ds):
        raise ValueError(f"digits must not repeat, got {ds}")
    if weights is None:
        w = np.asarray(default if ds == (1, 2, 3, 4) else [1.0] * len(ds), dtype=np.float64)
    else:
        if not isinstance(weights, Sequence) or isinstance(weights, (str, bytes)):
            raise TypeError(f"weights must be a sequence of numbers, got {_show(weights)}")
        w = np.asarray([check_float("weights", x, low=0.0) for x in weights], dtype=np.float64)
        if len(w) != len(ds):
            raise ValueError(
                f"weights must have one entry per digit count ({len(ds)}), got {len(w)}"
            )
        if w.sum() <= 0:
            raise ValueError(f"weights must have a positive sum, got {list(weights)}")
    return ds, w / w.sum()


def sample_problems(
    rng: np.random.Generator, digits: Any, split: str | None = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Random addends whose larger one has exactly ``digits[i]`` digits, from one split.

    For :math:`d` digits one addend is uniform on :math:`[10^{d-1}, 10^d)` (on :math:`[0, 10)`
    for :math:`d = 1`), the other uniform on :math:`[0, 10^d)`, in random order; pairs from the
    other split are redrawn.

    Args:
        rng: the random source.
        digits: digit count per problem, integers in 1..8.
        split: ``"train"``, ``"eval"``, or ``None`` for problems of either split.

    Returns:
        ``(a, b)``, two int64 arrays shaped like ``digits``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    if split is not None:
        check_choice("split", split, _SPLITS)
    d = np.asarray(digits, dtype=np.int64).ravel()
    if d.size and (int(d.min()) < 1 or int(d.max()) > _MAX_DIGITS):
        raise ValueError(f"digits must be in 1..{_MAX_DIGITS}, got {d.min()}..{d.max()}")
    a = np.zeros(d.size, dtype=np.int64)
    b = np.zeros(d.size, dtype=np.int64)
    todo = np.arange(d.size)
    want_eval = split == "eval"
    while todo.size:
        dd = d[todo]
        top = 10**dd
        low = np.where(dd == 1, 0, 10 ** (dd - 1))
        big = low + np.floor(rng.random(todo.size) * (top - low)).astype(np.int64)
        small = np.floor(rng.random(todo.size) * top).astype(np.int64)
        swap = rng.random(todo.size) < 0.5
        a[todo] = np.where(swap, small, big)
        b[todo] = np.where(swap, big, small)
        if split is None:
            break
        todo = todo[in_eval_split(a[todo], b[todo]) != want_eval]
    shape = np.shape(digits)
    return a.reshape(shape), b.reshape(shape)


def make_dataset(
    num_prompts: int,
    seed: int = 0,
    *,
    digits: Sequence[int] = (1, 2, 3, 4),
    weights: Sequence[float] | None = None,
    split: str = "train",
) -> Dataset:
    """Addition prompts with a spread of difficulty, as a ``datasets.Dataset``.

    Bucket sizes follow ``weights`` exactly (largest remainders), rows are shuffled. Small
    buckets may repeat a problem (there are only 100 one-digit problems); the ``"train"`` and
    ``"eval"`` splits never share one (see :func:`in_eval_split`).

    Args:
        num_prompts: number of rows, >= 1.
        seed: the sampling seed (the two splits draw from different streams).
        digits: the digit counts (difficulty levels) to include, each in 1..8.
        weights: the share of each digit count; ``None`` gives :data:`DEFAULT_WEIGHTS` for
            ``digits=(1, 2, 3, 4)`` and equal shares otherwise.
        split: ``"train"`` or ``"eval"``.

    Returns:
        A dataset with columns ``prompt`` (``"123+45="``), ``answer`` (``"168"``), ``bucket``
        (``"3-digit"``) and ``digits`` (3).

    Raises:
        TypeError, ValueError: on a bad argument (the message names it).
    """
    num_prompts = check_int("num_prompts", num_prompts, low=1)
    seed = check_int("seed", seed, low=0)
    check_choice("split", split, _SPLITS)
    ds, w = _check_digits_weights(digits, weights, DEFAULT_WEIGHTS)
    raw = w * num_prompts
    counts = np.floor(raw).astype(np.int64)
    order = np.argsort(-(raw - counts), kind="stable")
    counts[order[: num_prompts - int(counts.sum())]] += 1
    rng = np.random.default_rng([seed, _SPLITS.index(split)])
    per_row = np.repeat(np.asarray(ds, dtype=np.int64), counts)
    per_row = per_row[rng.permutation(per_row.size)]
    a, b = sample_problems(rng, per_row, split)
    return Dataset.from_dict(
        {
            "prompt": [f"{x}+{y}=" for x, y in zip(a.tolist(), b.tolist(), strict=True)],
            "answer": [str(x + y) for x, y in zip(a.tolist(), b.tolist(), strict=True)],
            "bucket": [bucket_of(int(x)) for x in per_row],
            "digits": per_row.tolist(),
        }
    )


def _text_of(completion: Any) -> str:
    """The text of a TRL completion: a string, or the last message of a conversation."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], Mapping):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    raise TypeError(
        f"completions must hold strings or message lists, got {type(completion).__name__}"
    )


def exact_match_reward(
    completions: Sequence[Any], answer: Sequence[Any], **kwargs: Any
) -> list[float]:
    """TRL reward function: 1.0 when a completion, stripped, equals its answer, else 0.0.

    Args:
        completions: the decoded completions (strings, or message lists for conversational
            prompts, whose last message's content is scored).
        answer: the dataset's ``answer`` column, aligned with ``completions``.
        **kwargs: the other columns and trainer fields TRL passes; ignored.

    Returns:
        One float per completion.

    Raises:
        ValueError: if the two lists differ in length.
    """
    if len(completions) != len(answer):
        raise ValueError(
            f"completions and answer must have the same length, got {len(completions)} and "
            f"{len(answer)}"
        )
    return [
        1.0 if _text_of(c).strip() == str(a).strip() else 0.0
        for c, a in zip(completions, answer, strict=True)
    ]


# --------------------------------------------------------------------------------------------
# supervised warm start


def _sft_batch(
    tokenizer: PreTrainedTokenizerFast, prompts: list[str], answers: list[str]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and next-token ``labels`` for SFT.

    A row is the prompt encoded as TRL encodes it (with bos), then the answer and eos; labels are
    the answer and eos tokens, ``-100`` elsewhere, aligned with the input (shift inside the loss).
    """
    prompt_ids = tokenizer(prompts)["input_ids"]
    answer_ids = tokenizer(answers, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    rows = [p + q + [eos] for p, q in zip(prompt_ids, answer_ids, strict=True)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (p, row) in enumerate(zip(prompt_ids, rows, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, len(p) : len(row)] = ids[i, len(p) : len(row)]
    return ids, mask, labels


def _warm_start_problems(
    rng: np.random.Generator, digits: np.ndarray
) -> tuple[list[str], list[str]]:
    """Prompts and answers for one warm-start batch: train split, but every 1-digit problem."""
    a, b = sample_problems(rng, digits, "train")
    one = digits == 1
    if one.any():
        a[one], b[one] = sample_problems(rng, digits[one], None)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    return [f"{x}+{y}=" for x, y in pairs], [str(x + y) for x, y in pairs]


def warm_start(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    *,
    seconds: float | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    digits: Sequence[int] = (1, 2, 3, 4),
    weights: Sequence[float] | None = None,
    easy_fraction: float = 0.4,
    decay_fraction: float = 0.2,
    num_threads: int | None = None,
    progress: bool = True,
) -> dict[str, float]:
    r"""Supervised next-token training on fresh addition problems (the demo's starting policy).

    Each step draws ``batch_size`` new problems (digit counts by ``weights``, default
    :data:`DEFAULT_WARM_START_WEIGHTS`; during the first ``easy_fraction`` of the budget only the
    counts <= 2, their weights renormalised) and takes one AdamW step (no weight decay, gradient
    norm clipped at 1) on the mean cross-entropy of the answer tokens and eos given ``<s>a+b=``:

    .. math::
        \mathcal{L} = -\frac{1}{\lvert\mathcal{A}\rvert}
        \sum_{t \in \mathcal{A}} \log \pi_\theta(x_t \mid x_{<t}),

    with :math:`\mathcal{A}` the positions of the answer and eos. Problems of two or more digits
    come from the train split only; the 100 one-digit problems are too few to hold out and are
    all trained on (they are the demo's "known facts" bucket; the eval *dataset* still never
    shares a prompt with the train dataset). The learning rate warms up linearly over 20 steps,
    stays at ``lr``, and decays linearly to ``lr/10`` over the last ``decay_fraction`` of the
    budget (by steps or by seconds, whichever is further along). Training stops after ``steps``
    steps or ``seconds`` seconds, whichever comes first.

    The easy phase makes the run robust: digit alignment is learnt on 1- and 2-digit sums first
    (with the whole mix from the start, 2-digit sums stayed unsolved for 1,000+ steps). 3-digit
    sums are learnt in a sudden transition whose timing depends on the seed. With the defaults
    and ``steps=1300`` (about 110 s on 2 idle CPU cores), at temperature 1 on 200 held-out
    prompts, pass@1 was 1.00 / 0.89 / 0.90 / 0.02 (1- / 2- / 3- / 4-digit) for seed 42, the
    demo's seed, and 1.00 / 0.89 / 0.01 / 0.00 for seed 0 (its transition comes later). A step
    budget, unlike a time budget, gives much the same starting policy on any machine.

    Args:
        model: the causal LM to train in place (left in eval mode).
        tokenizer: its tokenizer (:func:`build_tokenizer`).
        seconds: wall-time budget, > 0, or ``None``.
        steps: step budget, >= 1, or ``None``; at least one of the two must be given.
        batch_size: problems per step, >= 1.
        lr: peak learning rate, > 0.
        seed: seed of the problem stream.
        digits: digit counts to train on (each in 1..8).
        weights: their shares; ``None`` gives :data:`DEFAULT_WARM_START_WEIGHTS` for
            ``(1, 2, 3, 4)`` and equal shares otherwise.
        easy_fraction: first share of the budget on 1- and 2-digit problems only, in [0, 1].
        decay_fraction: final share of the budget with a decaying learning rate, in [0, 1].
        num_threads: if given, ``torch.set_num_threads`` for the duration (restored after).
        progress: print a line to stderr about every 10 seconds and one at the end.

    Returns:
        ``{"steps", "seconds", "initial_loss", "final_loss", "steps_per_second"}``, where the
        losses average the first and last 20 steps.

    Raises:
        TypeError, ValueError: on a bad argument (the message names it).
    """
    if seconds is None and steps is None:
        raise ValueError("seconds and steps must not both be None; give a time or a step budget")
    budget_s = (
        math.inf if seconds is None else check_float("seconds", seconds, low=0.0, low_open=True)
    )
    budget_n = math.inf if steps is None else check_int("steps", steps, low=1)
    batch_size = check_int("batch_size", batch_size, low=1)
    lr = check_float("lr", lr, low=0.0, low_open=True)
    seed = check_int("seed", seed, low=0)
    easy_fraction = check_float("easy_fraction", easy_fraction, low=0.0, high=1.0)
    decay_fraction = check_float("decay_fraction", decay_fraction, low=0.0, high=1.0)
    ds, w = _check_digits_weights(digits, weights, DEFAULT_WARM_START_WEIGHTS)
    counts = np.asarray(ds, dtype=np.int64)
    easy = (counts <= 2) & (w > 0)
    w_easy = np.where(easy, w, 0.0) / w[easy].sum() if easy.any() else w
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_int("num_threads", num_threads, low=1, high=os.cpu_count()))
    rng = np.random.default_rng([seed, 2])
    device = next(model.parameters()).device
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.98))
    warmup = 20
    losses: list[float] = []
    model.train()
    start = time.perf_counter()
    last_print = start
    step = 0
    try:
        while True:
            elapsed = time.perf_counter() - start
            if step >= budget_n or elapsed >= budget_s:
                break
            done = max(step / budget_n, elapsed / budget_s)
            scale = min(1.0, (step + 1) / warmup)
            if decay_fraction > 0 and done > 1.0 - decay_fraction:
                scale *= 1.0 - 0.9 * (done - (1.0 - decay_fraction)) / decay_fraction
            for group in opt.param_groups:
                group["lr"] = lr * scale
            mix = w_easy if done < easy_fraction else w
            per_row = rng.choice(counts, size=batch_size, p=mix)
            prompts, answers = _warm_start_problems(rng, per_row)
            ids, mask, labels = (t.to(device) for t in _sft_batch(tokenizer, prompts, answers))
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                labels[:, 1:].reshape(-1),
                ignore_index=-100,
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            now = time.perf_counter()
            if progress and now - last_print >= 10.0:
                print(
                    f"warm start: step {step}, {now - start:.0f} s, "
                    f"loss {np.mean(losses[-20:]):.4f}",
                    file=sys.stderr,
                    flush=True,
                )
                last_print = now
    finally:
        model.eval()
        torch.set_num_threads(old_threads)
    elapsed = time.perf_counter() - start
    stats = {
        "steps": float(step),
        "seconds": elapsed,
        "initial_loss": float(np.mean(losses[:20])) if losses else math.nan,
        "final_loss": float(np.mean(losses[-20:])) if losses else math.nan,
        "steps_per_second": step / elapsed if elapsed > 0 else math.nan,
    }
    if progress:
        print(
            f"warm start: {step} steps in {elapsed:.1f} s, loss {stats['initial_loss']:.4f} -> "
            f"{stats['final_loss']:.4f}",
            file=sys.stderr,
            flush=True,
        )
    return stats


# --------------------------------------------------------------------------------------------
# evaluation


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
    ``skip_special_tokens=True`` and scored by :func:`exact_match_reward`. ``temperature=0``
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
                hits = np.asarray(exact_match_reward(texts, targets)).reshape(len(chunk), reps)
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


# --------------------------------------------------------------------------------------------
# console table and plot


def _fmt(value: Any, precision: int) -> str:
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
