r"""Per-token entropy and log-probs of LLM logits without materialising the softmax.

RL trainers for LLMs need, at every step, each token's log-probability under the policy and
the entropy of the policy's next-token distribution, over vocabularies of ~150k entries. The
E3 paper (Liao et al., "Enhancing Efficiency and Exploration in Reinforcement Learning for
LLMs", arXiv 2505.18573) steers the sampling temperature to hold this entropy at a target.
With :math:`z = x / T` for logits :math:`x` and temperature :math:`T`,

.. math::

    \log p_y = z_y - \operatorname{logsumexp}(z), \qquad
    H = -\sum_i p_i \log p_i, \quad p = \operatorname{softmax}(z).

Three functions, all differentiable through both outputs:

* :func:`entropy_from_logits` -- the entropy only;
* :func:`logprobs_and_entropy` -- the label log-prob and the entropy;
* :func:`linear_logprobs_and_entropy` -- the same from hidden states and the LM-head weight,
  never materialising the full ``[N, V]`` logits.

Backends: ``"torch"`` is the chunked pure-PyTorch reference (:mod:`.reference`, the spec);
``"triton"`` the fused kernels (:mod:`.triton_entropy`), on CUDA tensors, or on CPU tensors
under ``TRITON_INTERPRET=1``; ``"auto"`` picks Triton for CUDA tensors when triton is
installed, else the reference. ``import e3core.kernels`` never imports triton.

Dtypes: logits (hidden states, weights) may be fp16, bf16, fp32 or fp64. The outputs are fp32
(fp64 for fp64 input) whatever the input dtype, since entropies and log-probs feed losses and
controllers that want full precision; gradients come back in the input's dtype.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from types import ModuleType
from typing import cast

import torch

from . import reference
from ._autograd import LinearEntropyFunction, LogitsEntropyFunction, RowOps
from ._common import (
    DEFAULT_IGNORE_INDEX,
    check_backend,
    check_chunk_size,
    check_float_tensor,
    check_labels,
    check_logits,
    check_temperature,
)

__all__ = [
    "entropy_from_logits",
    "linear_logprobs_and_entropy",
    "logprobs_and_entropy",
    "triton_available",
]

#: Logit elements (tokens x vocabulary) per token chunk of :func:`linear_logprobs_and_entropy`
#: when ``chunk_size`` is not given.
LINEAR_CHUNK_ELEMENTS_CPU: int = 1 << 22
LINEAR_CHUNK_ELEMENTS_GPU: int = 1 << 27


@lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (checked without importing it).

    Returns:
        ``True`` when ``importlib`` finds a ``triton`` package.
    """
    return importlib.util.find_spec("triton") is not None


def _triton_module() -> ModuleType:
    if not triton_available():
        raise ImportError(
            "backend='triton' needs the triton package; install it with `pip install triton` "
            "(or, in an e3core clone, `pip install -e '.[triton]'`), or use backend='torch'"
        )
    from . import triton_entropy

    return triton_entropy


def _ops(backend: str, x: torch.Tensor) -> RowOps:
    if backend == "torch":
        return cast(RowOps, reference)
    if backend == "auto":
        if x.device.type == "cuda" and triton_available():
            return cast(RowOps, _triton_module())
        return cast(RowOps, reference)
    module = _triton_module()
    if x.device.type != "cuda" and not module.interpreting():
        raise ValueError(
            f"backend='triton' needs a CUDA tensor, or TRITON_INTERPRET=1 set before the first "
            f"use of the Triton backend; got a tensor on {x.device}. Allowed here: "
            f"backend='torch' or 'auto'"
        )
    return cast(RowOps, module)


def _check_flag(check_inputs: object) -> bool:
    if not isinstance(check_inputs, bool):
        raise TypeError(f"check_inputs must be a bool; got {check_inputs!r}")
    return check_inputs


def logprobs_and_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    *,
    backend: str = "auto",
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    chunk_size: int | None = None,
    check_inputs: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Log-probability of each label and entropy of each row of ``softmax(logits / T)``.

    .. math::

        \log p_y = \frac{x_y}{T} - \log\sum_i e^{x_i/T}, \qquad
        H = -\sum_i p_i \log p_i.

    Computed relative to each row's maximum, so logits far from 0 keep full precision;
    ``-inf`` logits are masked entries (probability 0, gradient 0). Differentiable through both
    outputs (first order); the backward recomputes the softmax from per-row statistics instead
    of saving it.

    Args:
        logits: ``[..., V]``, fp16, bf16, fp32 or fp64; every row needs one logit ``> -inf``.
            NaN or ``+inf`` logits give undefined outputs.
        labels: integer tensor of shape ``logits.shape[:-1]``, each in ``[0, V)`` or equal to
            ``ignore_index``.
        temperature: :math:`T > 0`, a real number.
        backend: ``"auto"`` (Triton on CUDA when installed, else PyTorch), ``"torch"`` or
            ``"triton"``.
        ignore_index: negative label value whose log-prob is 0 and passes no gradient (the
            entropy of that row is still computed); default -100 as in
            :func:`torch.nn.functional.cross_entropy`.
        chunk_size: rows per chunk for the ``"torch"`` backend (default: about 2**22 elements
            per chunk on CPU); the Triton kernels keep only per-row state and ignore it.
        check_inputs: check the label range and that no row is all ``-inf`` (one host
            synchronisation per call, after the kernel). ``False`` skips both, for CUDA-graph
            capture or hot loops whose inputs are known good: a label outside ``[0, V)`` then
            gets log-prob 0 and an all ``-inf`` row gives NaN.

    Returns:
        ``(logprobs, entropy)``, each of shape ``logits.shape[:-1]``, fp32 (fp64 for fp64
        logits).

    Raises:
        TypeError: for non-tensors, unsupported dtypes, non-integer labels or a non-real
            temperature.
        ValueError: for shape, device or range errors, a non-positive temperature, an unknown
            backend, ``"triton"`` on a CPU tensor without the interpreter, or (with
            ``check_inputs``) a label out of range or an all ``-inf`` row.
        ImportError: for ``backend="triton"`` without triton installed.

    Example:
        >>> x = torch.tensor([[0.0, 0.0]])
        >>> logprobs_and_entropy(x, torch.tensor([1]), backend="torch")
        (tensor([-0.6931]), tensor([0.6931]))
    """
    x = check_logits(logits)
    t = check_temperature(temperature)
    name = check_backend(backend)
    chunk = check_chunk_size(chunk_size)
    lead, v = x.shape[:-1], x.shape[-1]
    check = _check_flag(check_inputs)
    flat_labels, ignore, bad = check_labels(labels, lead, v, x.device, ignore_index, check)
    ops = _ops(name, x)
    logp, ent = LogitsEntropyFunction.apply(
        x.reshape(-1, v), flat_labels, bad, t, ignore, chunk, ops, check
    )
    return logp.reshape(lead), ent.reshape(lead)


def entropy_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    *,
    backend: str = "auto",
    chunk_size: int | None = None,
    check_inputs: bool = True,
) -> torch.Tensor:
    r"""Entropy of each row of ``softmax(logits / T)``: :math:`H = -\sum_i p_i \log p_i`.

    Same computation and conventions as :func:`logprobs_and_entropy`, without labels.

    Args:
        logits: ``[..., V]``, fp16, bf16, fp32 or fp64; every row needs one logit ``> -inf``.
        temperature: :math:`T > 0`.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        chunk_size: rows per chunk for the ``"torch"`` backend.
        check_inputs: check that no row is all ``-inf`` (one host synchronisation per call);
            see :func:`logprobs_and_entropy`.

    Returns:
        The entropy, shape ``logits.shape[:-1]``, fp32 (fp64 for fp64 logits); differentiable.

    Raises:
        TypeError: as :func:`logprobs_and_entropy`.
        ValueError: as :func:`logprobs_and_entropy`.
        ImportError: as :func:`logprobs_and_entropy`.

    Example:
        >>> entropy_from_logits(torch.zeros(3, 4), backend="torch")
        tensor([1.3863, 1.3863, 1.3863])
    """
    x = check_logits(logits)
    t = check_temperature(temperature)
    name = check_backend(backend)
    chunk = check_chunk_size(chunk_size)
    v = x.shape[-1]
    ops = _ops(name, x)
    _, ent = LogitsEntropyFunction.apply(
        x.reshape(-1, v), None, None, t, DEFAULT_IGNORE_INDEX, chunk, ops, _check_flag(check_inputs)
    )
    return ent.reshape(x.shape[:-1])


def linear_logprobs_and_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    labels: torch.Tensor,
    temperature: float = 1.0,
    *,
    backend: str = "auto",
    ignore_index: int = DEFAULT_IGNORE_INDEX,
    chunk_size: int | None = None,
    check_inputs: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Label log-probs and entropies of ``softmax(hidden @ weight.T / T)``, chunked over tokens.

    The logits :math:`x = h W^\top` (computed by :func:`torch.matmul` in the inputs' dtype,
    as the model's LM head would) exist only ``chunk_size`` tokens at a time: the forward
    reduces each chunk to per-token statistics and frees it, and the backward recomputes it to
    form :math:`\partial L/\partial h = G W` and :math:`\partial L/\partial W = G^\top h` chunk
    by chunk (:math:`G` the chunk's logits gradient). Peak extra memory is one chunk of logits
    (plus its gradient) instead of several ``[N, V]`` fp32 copies; ``grad_weight`` is
    accumulated in fp32 (fp64 for fp64), so a bf16/fp16 weight costs a transient fp32 copy of
    its size in the backward.

    Args:
        hidden: ``[..., H]`` hidden states, fp16, bf16, fp32 or fp64.
        weight: ``[V, H]`` LM-head weight, same dtype and device as ``hidden``.
        labels: integer tensor of shape ``hidden.shape[:-1]``, each in ``[0, V)`` or
            ``ignore_index``.
        temperature: :math:`T > 0`.
        backend: reduction backend for each chunk of logits: ``"auto"``, ``"torch"`` or
            ``"triton"``.
        ignore_index: negative label value whose log-prob is 0 and passes no gradient.
        chunk_size: tokens per chunk (default: about 2**22 logits per chunk on CPU, 2**27 on
            GPU).
        check_inputs: check the label range and the rows (one host synchronisation); see
            :func:`logprobs_and_entropy`.

    Returns:
        ``(logprobs, entropy)`` of shape ``hidden.shape[:-1]``, fp32 (fp64 for fp64 inputs);
        differentiable with respect to ``hidden`` and ``weight``.

    Raises:
        TypeError: for non-tensors, unsupported or mismatched dtypes, or bad labels.
        ValueError: for mismatched shapes or devices, bad labels or temperature, an unknown
            backend, or an all ``-inf`` row.
        ImportError: for ``backend="triton"`` without triton installed.
    """
    h = check_float_tensor(hidden, "hidden")
    w = check_float_tensor(weight, "weight")
    if h.dim() == 0:
        raise ValueError("hidden must have shape [..., H]; got a 0-d tensor")
    if w.dim() != 2:
        raise ValueError(f"weight must have shape [V, H]; got {tuple(w.shape)}")
    if w.shape[1] != h.shape[-1]:
        raise ValueError(
            f"weight must have shape [V, {h.shape[-1]}] to match hidden [..., {h.shape[-1]}]; "
            f"got {tuple(w.shape)}"
        )
    if w.shape[0] == 0:
        raise ValueError(f"weight must have a non-empty vocabulary; got {tuple(w.shape)}")
    if w.dtype != h.dtype:
        raise TypeError(f"weight must have the dtype of hidden ({h.dtype}); got {w.dtype}")
    if w.device != h.device:
        raise ValueError(f"weight must be on the device of hidden ({h.device}); got {w.device}")
    t = check_temperature(temperature)
    name = check_backend(backend)
    chunk = check_chunk_size(chunk_size)
    lead, v = h.shape[:-1], w.shape[0]
    check = _check_flag(check_inputs)
    flat_labels, ignore, bad = check_labels(labels, lead, v, h.device, ignore_index, check)
    if chunk is None:
        budget = LINEAR_CHUNK_ELEMENTS_CPU if h.device.type == "cpu" else LINEAR_CHUNK_ELEMENTS_GPU
        chunk = max(1, budget // v)
    ops = _ops(name, h)
    logp, ent = LinearEntropyFunction.apply(
        h.reshape(-1, h.shape[-1]).contiguous(),
        w,
        flat_labels,
        bad,
        t,
        ignore,
        chunk,
        ops,
        check,
    )
    return logp.reshape(lead), ent.reshape(lead)
