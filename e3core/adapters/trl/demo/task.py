r"""The demo's task: integer addition with a real spread of difficulty, built locally.

A character-level tokenizer (:func:`build_tokenizer`), a tiny randomly initialised Qwen2
(:func:`build_model`), and prompts ``"a+b="`` whose answer is the decimal sum
(:func:`sample_problems`, :func:`make_dataset`). No model hub is involved. A completion is scored
by :data:`e3core.adapters.trl.rewards.exact_reward`: 1.0 when, stripped of surrounding
whitespace, it equals the answer (the tokenizer decodes eos away).

Difficulty is the digit count :math:`d = \max(\lvert a \rvert, \lvert b \rvert)` of the larger
addend; the bucket of ``"123+45="`` is ``"3-digit"`` (:func:`bucket_of`).

Held out: every unordered pair :math:`\{a, b\}` belongs to exactly one of the ``"train"`` and
``"eval"`` splits by a fixed hash (one pair in five is ``"eval"``, :func:`in_eval_split`), so the
RL training set and the evaluation set never share a problem, whatever the seeds.

Tokenization matches TRL: ``GRPOTrainer`` tokenizes a plain-string prompt with
``processing_class(text=prompts)``, i.e. with the default special tokens, which for
:func:`build_tokenizer` prepend ``<s>`` (bos). The supervised warm start
(:mod:`e3core.adapters.trl.demo.supervised`) encodes its prompts the same way, so the supervised
and RL prompts are the same token sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

from e3core._validation import _show, check_choice, check_float, check_int

__all__ = [
    "ALPHABET",
    "BOS_TOKEN",
    "DEFAULT_WEIGHTS",
    "EOS_TOKEN",
    "PAD_TOKEN",
    "UNK_TOKEN",
    "bucket_of",
    "build_model",
    "build_tokenizer",
    "in_eval_split",
    "make_dataset",
    "sample_problems",
]

PAD_TOKEN = "<pad>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
UNK_TOKEN = "<unk>"
ALPHABET = "0123456789+="
"""The 12 ordinary symbols; with the four specials the vocabulary has 16 entries."""
DEFAULT_WEIGHTS = (0.15, 0.25, 0.35, 0.25)
"""Default share of prompts per digit count 1..4 in :func:`make_dataset`: few easy, many mixed,
a hard tail."""
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
