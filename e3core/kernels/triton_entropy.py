r"""Fused Triton kernels for per-token entropy and label log-prob (forward and backward).

Imported lazily by :mod:`e3core.kernels` on first use, never by ``import e3core``. On a CPU
tensor these kernels run only under the Triton interpreter: ``TRITON_INTERPRET=1`` must be set
before this module is first imported, since ``triton.jit`` reads it when it decorates.

Forward: one program per row streams the vocabulary once in blocks of ``BLOCK_V``, keeping the
online-softmax state of the row relative to the running maximum :math:`m` of the raw logits
(started at :math:`-\infty`): :math:`d = \sum_i e^{(x_i - m)/T}` and the shifted moment
:math:`s = \sum_i e^{(x_i - m)/T}(x_i - m)/T`. When a block raises the maximum from :math:`m`
to :math:`m'`, with :math:`\delta = (m - m')/T`,

.. math::

    d \leftarrow e^{\delta} d, \qquad s \leftarrow e^{\delta}\,(s + \delta\, d_{\text{old}}),

then the block's terms are added. At the end :math:`H = \log d - s/d` and
:math:`\log p_y = (x_y - m)/T - \log d`; the row saves only :math:`(m, \log d, H)`. One
exponential per logit, accumulation in fp32 (fp64 for fp64 input), loads upcast at once;
ragged vocabulary tails and masked logits are ``-inf`` and contribute exactly 0
(:math:`0 \cdot (-\infty)` is guarded).

Backward: a 2-D grid over (row, vocabulary block) tiles recomputes
:math:`\log p_i = (x_i - m)/T - \log d` and writes

.. math::

    \frac{\partial L}{\partial x_i} = \frac{1}{T}\Big[-p_i\big(g_H(\log p_i + H) + g_{lp}\big)
    + g_{lp}\,\mathbb{1}[i = y]\Big].

The maths and the pitfalls it avoids (verl's fused kernel let padded columns enter the softmax
as zeros) are in the project's kernel notes; the entropy is the quantity the E3 paper
(arXiv 2505.18573) steers with the sampling temperature.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import NEG_CLAMP, RowStats, acc_dtype

__all__ = ["backward_rows", "forward_rows", "interpreting"]

# Tile defaults: the fastest measured at N=32768, V=151936, bf16 on an H100 80GB HBM3 (triton
# 3.6; benchmarks/bench_entropy.py --sweep).
#: Vocabulary elements per block in the forward (one program walks its row in such blocks).
FWD_BLOCK_V: int = 4096
#: Vocabulary elements per (row, block) tile in the backward.
BWD_BLOCK_V: int = 2048
_NEG_CLAMP = tl.constexpr(NEG_CLAMP)

#: Warps per program.
FWD_NUM_WARPS: int = 4
BWD_NUM_WARPS: int = 8
#: Software-pipelining stages of the forward's loop over vocabulary blocks.
FWD_NUM_STAGES: int = 2


@triton.jit
def _entropy_fwd_kernel(
    x_ptr,
    stride_x,
    labels_ptr,
    logp_ptr,
    ent_ptr,
    max_ptr,
    logd_ptr,
    V,
    inv_t,
    HAS_LABELS: tl.constexpr,
    BLOCK_V: tl.constexpr,
    ACC: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    row_ptr = x_ptr + row * stride_x
    cols = tl.arange(0, BLOCK_V)
    neg_inf = float("-inf")
    m = tl.full((), neg_inf, ACC)
    d = tl.zeros((), ACC)
    s = tl.zeros((), ACC)
    for start in range(0, V, BLOCK_V):
        idx = start + cols
        x = tl.load(row_ptr + idx, mask=idx < V, other=neg_inf).to(ACC)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        # Shift by 0 while everything seen so far is -inf (avoids (-inf) - (-inf)).
        m_ref = tl.where(m_new == neg_inf, 0.0, m_new).to(ACC)
        delta = ((m - m_ref) * inv_t).to(ACC)  # <= 0, or -inf before the first finite logit
        alpha = tl.exp(delta)
        # d = 0 exactly while m = -inf: then the rescaled old terms are 0, not 0 * (-inf).
        corr = tl.where(d > 0.0, delta, 0.0).to(ACC) * d
        z = ((x - m_ref) * inv_t).to(ACC)
        e = tl.exp(z)
        z_c = tl.where(z < _NEG_CLAMP, _NEG_CLAMP, z)  # 0 * (-inf) -> 0; keeps NaN
        s = alpha * (s + corr) + tl.sum(e * z_c, axis=0)
        d = alpha * d + tl.sum(e, axis=0)
        m = m_new
    logd = tl.log(d)
    tl.store(ent_ptr + row, logd - s / d)
    tl.store(max_ptr + row, m)
    tl.store(logd_ptr + row, logd)
    if HAS_LABELS:
        lab = tl.load(labels_ptr + row)
        valid = (lab >= 0) & (lab < V)
        x_y = tl.load(row_ptr + tl.where(valid, lab, 0)).to(ACC)
        m_ref = tl.where(m == neg_inf, 0.0, m).to(ACC)
        lp = (x_y - m_ref) * inv_t - logd
        tl.store(logp_ptr + row, tl.where(valid, lp, 0.0).to(ACC))


@triton.jit
def _entropy_bwd_kernel(
    x_ptr,
    stride_x,
    grad_ptr,
    stride_grad,
    labels_ptr,
    max_ptr,
    logd_ptr,
    ent_ptr,
    g_ent_ptr,
    g_lp_ptr,
    V,
    inv_t,
    HAS_LABELS: tl.constexpr,
    BLOCK_V: tl.constexpr,
    ACC: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    idx = block * BLOCK_V + tl.arange(0, BLOCK_V)
    in_vocab = idx < V
    x = tl.load(x_ptr + row * stride_x + idx, mask=in_vocab, other=float("-inf")).to(ACC)
    m = tl.load(max_ptr + row)
    logd = tl.load(logd_ptr + row)
    ent = tl.load(ent_ptr + row)
    g_ent = tl.load(g_ent_ptr + row)
    logp = ((x - m) * inv_t - logd).to(ACC)
    p = tl.exp(logp)
    logp_c = tl.where(logp < _NEG_CLAMP, _NEG_CLAMP, logp)
    if HAS_LABELS:
        g_lp = tl.load(g_lp_ptr + row)
        lab = tl.load(labels_ptr + row)
        g = -p * (g_ent * (logp_c + ent) + g_lp) + tl.where(idx == lab, g_lp, 0.0)
    else:
        g = -p * (g_ent * (logp_c + ent))
    g = g * inv_t
    tl.store(grad_ptr + row * stride_grad + idx, g.to(grad_ptr.dtype.element_ty), mask=in_vocab)


#: Whether the kernels above were built for Triton's interpreter: ``triton.jit`` reads
#: ``TRITON_INTERPRET`` when it decorates, i.e. when this module is first imported.
_INTERPRETED: bool = type(_entropy_fwd_kernel).__name__ == "InterpretedFunction"


def interpreting() -> bool:
    """Whether these kernels run in Triton's interpreter (on CPU tensors).

    Returns:
        ``True`` when ``TRITON_INTERPRET=1`` was set before this module was first imported.
    """
    return _INTERPRETED


def _tl_acc(dtype: torch.dtype) -> tl.dtype:
    return tl.float64 if acc_dtype(dtype) == torch.float64 else tl.float32


def _check_device(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(
            f"backend='triton' needs a CUDA tensor or TRITON_INTERPRET=1; got a tensor on "
            f"{x.device} (use backend='torch' or 'auto')"
        )


def _row_major(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(-1) == 1 else x.contiguous()


def _block(vocab_size: int, cap: int) -> int:
    return min(cap, triton.next_power_of_2(vocab_size))


def forward_rows(
    x: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    ignore_index: int,
    chunk_size: int | None = None,
) -> RowStats:
    r"""Fused one-pass forward; same contract as :func:`e3core.kernels.reference.forward_rows`.

    Args:
        x: logits ``[N, V]``; the last dimension is made contiguous if it is not.
        labels: int64 labels ``[N]`` or ``None``; a label outside ``[0, V)`` (the ignore
            index) gets log-prob 0.
        temperature: :math:`T > 0`.
        ignore_index: unused here (any label outside ``[0, V)`` is treated as ignored; the
            public functions have already validated labels).
        chunk_size: unused (the kernel keeps only per-row state and needs no chunking).

    Returns:
        :class:`~e3core.kernels._common.RowStats` in fp32 (fp64 for fp64 input).
    """
    del ignore_index, chunk_size
    _check_device(x)
    x = _row_major(x)
    n, v = x.shape
    acc = acc_dtype(x.dtype)
    logprobs = torch.zeros(n, dtype=acc, device=x.device)
    entropy = torch.empty(n, dtype=acc, device=x.device)
    row_max = torch.empty(n, dtype=acc, device=x.device)
    log_norm = torch.empty(n, dtype=acc, device=x.device)
    if n == 0:
        return RowStats(logprobs, entropy, row_max, log_norm)
    has_labels = labels is not None
    lab = labels.contiguous() if labels is not None else row_max  # dummy pointer when absent
    _entropy_fwd_kernel[(n,)](
        x,
        x.stride(0),
        lab,
        logprobs,
        entropy,
        row_max,
        log_norm,
        v,
        1.0 / temperature,
        HAS_LABELS=has_labels,
        BLOCK_V=_block(v, FWD_BLOCK_V),
        ACC=_tl_acc(x.dtype),
        num_warps=FWD_NUM_WARPS,
        num_stages=FWD_NUM_STAGES,
    )
    return RowStats(logprobs, entropy, row_max, log_norm)


def backward_rows(
    x: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    stats: RowStats,
    grad_logprobs: torch.Tensor | None,
    grad_entropy: torch.Tensor,
    chunk_size: int | None = None,
) -> torch.Tensor:
    r"""Tiled backward; same contract as :func:`e3core.kernels.reference.backward_rows`.

    Args:
        x: the forward's logits ``[N, V]``.
        labels: the forward's int64 labels ``[N]`` or ``None``.
        temperature: the forward's temperature.
        stats: the forward's :class:`~e3core.kernels._common.RowStats`.
        grad_logprobs: :math:`g_{lp}` ``[N]`` (accumulation dtype, 0 on ignored rows) or ``None``.
        grad_entropy: :math:`g_H` ``[N]`` (accumulation dtype).
        chunk_size: unused.

    Returns:
        :math:`\partial L / \partial x`, shape ``[N, V]``, in ``x.dtype``, contiguous.
    """
    del chunk_size
    _check_device(x)
    x = _row_major(x)
    n, v = x.shape
    grad = torch.empty((n, v), dtype=x.dtype, device=x.device)
    if n == 0:
        return grad
    has_labels = labels is not None and grad_logprobs is not None
    block = _block(v, BWD_BLOCK_V)
    g_ent = grad_entropy.contiguous()
    g_lp = grad_logprobs.contiguous() if has_labels and grad_logprobs is not None else g_ent
    lab = labels.contiguous() if has_labels and labels is not None else g_ent
    _entropy_bwd_kernel[(n, triton.cdiv(v, block))](
        x,
        x.stride(0),
        grad,
        grad.stride(0),
        lab,
        stats.row_max,
        stats.log_norm,
        stats.entropy,
        g_ent,
        g_lp,
        v,
        1.0 / temperature,
        HAS_LABELS=has_labels,
        BLOCK_V=block,
        ACC=_tl_acc(x.dtype),
        num_warps=BWD_NUM_WARPS,
    )
    return grad
