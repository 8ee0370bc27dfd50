"""Shared validation and per-row statistics for the entropy / log-prob kernels.

Nothing here imports triton: both backends (:mod:`e3core.kernels.reference` and
:mod:`e3core.kernels.triton_entropy`) and the dispatch in :mod:`e3core.kernels` use it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

#: Dtypes accepted for logits, hidden states and LM-head weights.
SUPPORTED_DTYPES: tuple[torch.dtype, ...] = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
)

#: Backend names accepted by the public functions.
BACKENDS: tuple[str, ...] = ("auto", "torch", "triton")

#: Shifted log-probabilities below this are clamped before they multiply a probability.
#: ``exp(-1e4)`` is exactly 0 in fp32 and fp64, so the clamp changes no non-zero product and
#: only turns ``0 * (-inf)`` (a masked, ``-inf`` logit) into ``0``.
NEG_CLAMP: float = -1.0e4

#: Default label value whose log-prob is defined as 0 (and gets no gradient); as in
#: :func:`torch.nn.functional.cross_entropy`.
DEFAULT_IGNORE_INDEX: int = -100


class RowStats(NamedTuple):
    r"""Per-row results and the statistics a backward pass needs.

    All tensors have shape ``[N]`` and the accumulation dtype (fp64 for fp64 input, else fp32).

    Attributes:
        logprobs: :math:`\log p_y` per row (0 where the label is ignored or absent).
        entropy: :math:`H = -\sum_i p_i \log p_i` per row.
        row_max: :math:`m = \max_i x_i`, the row maximum of the *unscaled* logits.
        log_norm: :math:`\log d` with :math:`d = \sum_i e^{(x_i - m)/T}`, so that
            :math:`\log p_i = (x_i - m)/T - \log d`.
    """

    logprobs: torch.Tensor
    entropy: torch.Tensor
    row_max: torch.Tensor
    log_norm: torch.Tensor


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation (and output) dtype for an input dtype: fp64 stays fp64, all else is fp32.

    Args:
        dtype: the input dtype.

    Returns:
        ``torch.float64`` for fp64 input, else ``torch.float32``.
    """
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_backend(backend: object) -> str:
    """Validate a ``backend=`` argument.

    Args:
        backend: the value passed by the caller.

    Returns:
        The backend name.

    Raises:
        TypeError: if ``backend`` is not a string.
        ValueError: if it is not one of :data:`BACKENDS`.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, one of {BACKENDS}; got {backend!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
    return backend


def check_temperature(temperature: object) -> float:
    """Validate a sampling temperature.

    Args:
        temperature: the value passed by the caller (a real number, or a one-element tensor).

    Returns:
        The temperature as a Python float.

    Raises:
        TypeError: if it is not a real number.
        ValueError: if it is not finite and strictly positive.
    """
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1 or temperature.is_complex() or temperature.dtype == torch.bool:
            raise TypeError(
                "temperature must be a real number or a one-element real tensor; got a tensor "
                f"of shape {tuple(temperature.shape)} and dtype {temperature.dtype}"
            )
        temperature = temperature.item()
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a real number; got {temperature!r}")
    value = float(temperature)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"temperature must be finite and > 0; got {temperature!r}")
    return value


def check_chunk_size(chunk_size: object, name: str = "chunk_size") -> int | None:
    """Validate an optional chunk size (rows or tokens per chunk).

    Args:
        chunk_size: ``None`` (pick a default) or a positive integer.
        name: the argument name used in error messages.

    Returns:
        The chunk size, or ``None``.

    Raises:
        TypeError: if it is neither ``None`` nor an integer.
        ValueError: if it is not positive.
    """
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise TypeError(f"{name} must be None or a positive int; got {chunk_size!r}")
    if chunk_size <= 0:
        raise ValueError(f"{name} must be a positive int; got {chunk_size!r}")
    return chunk_size


def check_float_tensor(x: object, name: str) -> torch.Tensor:
    """Check that ``x`` is a floating tensor of a supported dtype.

    Args:
        x: the value passed by the caller.
        name: the argument name used in error messages.

    Returns:
        ``x``.

    Raises:
        TypeError: if ``x`` is not a tensor or has an unsupported dtype.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{name} must have dtype in {SUPPORTED_DTYPES}; got {x.dtype}")
    return x


def check_logits(logits: object) -> torch.Tensor:
    """Validate logits of shape ``[..., V]`` with ``V >= 1``.

    Args:
        logits: the value passed by the caller.

    Returns:
        The logits tensor.

    Raises:
        TypeError: for a non-tensor or an unsupported dtype.
        ValueError: for a 0-d tensor or an empty vocabulary.
    """
    x = check_float_tensor(logits, "logits")
    if x.dim() == 0:
        raise ValueError("logits must have at least one dimension [..., V]; got a 0-d tensor")
    if x.shape[-1] == 0:
        raise ValueError(
            f"logits must have a non-empty vocabulary (last dim); got shape {tuple(x.shape)}"
        )
    return x


def check_labels(
    labels: object,
    lead_shape: torch.Size,
    vocab_size: int,
    device: torch.device,
    ignore_index: object,
    range_check: bool = True,
) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Validate integer labels against the leading shape; flag values out of range lazily.

    The range check itself is left on the device (no host synchronisation here): the returned
    mask is checked by :func:`check_outputs` together with the rows, after the kernel ran, so
    that a GPU call synchronises once. Both backends treat a flagged label as ignored until then.

    Args:
        labels: the value passed by the caller; must have shape ``lead_shape``.
        lead_shape: the logits' (or hidden states') shape without the last dimension.
        vocab_size: ``V``; each label must be in ``[0, V)`` or equal ``ignore_index``.
        device: the device the labels must be on.
        ignore_index: the label value meaning "no label here" (a negative int).
        range_check: build the out-of-range mask (else return ``None`` for it).

    Returns:
        The labels flattened to int64 ``[N]``, ``ignore_index`` as an int, and a bool ``[N]``
        mask of labels that are neither in ``[0, V)`` nor ``ignore_index`` (or ``None``).

    Raises:
        TypeError: for a non-tensor, a non-integer dtype or a non-integer ``ignore_index``.
        ValueError: for a wrong shape or device, or a non-negative ``ignore_index``.
    """
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int; got {ignore_index!r}")
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index must be negative (so it cannot be a vocabulary id); got {ignore_index}"
        )
    if not isinstance(labels, torch.Tensor):
        raise TypeError(f"labels must be a torch.Tensor; got {type(labels).__name__}")
    if labels.dtype.is_floating_point or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must have an integer dtype; got {labels.dtype}")
    if labels.shape != lead_shape:
        raise ValueError(
            f"labels must have shape {tuple(lead_shape)} (the leading shape); "
            f"got {tuple(labels.shape)}"
        )
    if labels.device != device:
        raise ValueError(f"labels must be on {device}; got {labels.device}")
    flat = labels.reshape(-1).to(torch.int64)
    if not range_check:
        return flat, ignore_index, None
    bad = ((flat < 0) | (flat >= vocab_size)) & (flat != ignore_index)
    return flat, ignore_index, bad


def check_outputs(
    row_max: torch.Tensor,
    labels: torch.Tensor | None,
    bad_labels: torch.Tensor | None,
    vocab_size: int,
    ignore_index: int,
) -> None:
    """Raise for out-of-range labels or all ``-inf`` rows, with one host synchronisation.

    Args:
        row_max: the per-row maxima of the logits (``-inf`` for an all ``-inf`` row).
        labels: the flattened labels, or ``None``.
        bad_labels: the mask from :func:`check_labels`, or ``None``.
        vocab_size: ``V``, for the message.
        ignore_index: for the message.

    Raises:
        ValueError: if a label is out of range, or some row is all ``-inf``.
    """
    if row_max.numel() == 0:
        return
    inf_rows = torch.isneginf(row_max)
    flags = [inf_rows.any()]
    if bad_labels is not None:
        flags.append(bad_labels.any())
    found = torch.stack(flags).tolist()
    if len(found) > 1 and found[1]:
        assert labels is not None and bad_labels is not None
        first = int(labels[bad_labels][0])
        raise ValueError(
            f"labels must be in [0, {vocab_size}) or equal ignore_index={ignore_index}; got {first}"
        )
    if found[0]:
        first_row = int(torch.nonzero(inf_rows)[0, 0])
        raise ValueError(
            "logits must have at least one logit > -inf in every row (the softmax of an all "
            f"-inf row is undefined); row {first_row} (of the flattened leading dims) is all -inf"
        )
