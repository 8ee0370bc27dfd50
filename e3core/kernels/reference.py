r"""Pure-PyTorch, chunked reference for the entropy / log-prob kernels: the spec and CPU path.

For logits :math:`x \in \mathbb{R}^{N \times V}`, a temperature :math:`T > 0` and labels
:math:`y \in \{0, \dots, V-1\}^N`, each row :math:`n` defines

.. math::

    p_i = \mathrm{softmax}(x / T)_i, \qquad
    \log p_y = \frac{x_y - m}{T} - \log d, \qquad
    H = -\sum_i p_i \log p_i = \log d - \frac{s}{d},

with the row maximum :math:`m = \max_i x_i`, :math:`d = \sum_i e^{(x_i - m)/T}` and the
*shifted* moment :math:`s = \sum_i e^{(x_i - m)/T}\,(x_i - m)/T`. Every quantity is relative to
:math:`m`: :math:`x_i - m` is exact in floating point when :math:`x_i` is near :math:`m`, so
logits far from 0 (at :math:`-10^4` say) keep full precision, whereas
:math:`\sum_i p_i x_i` accumulated unshifted would not. The E3 paper (Liao et al., "Enhancing
Efficiency and Exploration in Reinforcement Learning for LLMs", arXiv 2505.18573) steers the
sampling temperature with exactly this token entropy.

The backward pass recomputes :math:`p` from the saved per-row :math:`(m, \log d, H)`:

.. math::

    \frac{\partial L}{\partial x_i} = \frac{1}{T}\Big[-p_i\big(g_H(\log p_i + H) + g_{lp}\big)
    + g_{lp}\,\mathbb{1}[i = y]\Big],

where :math:`g_H` and :math:`g_{lp}` are the incoming gradients of :math:`H` and
:math:`\log p_y` (note :math:`\log p_i + H = z_i - \mathbb{E}_p[z]` with :math:`z = x/T`).

Rows are processed in chunks of ``chunk_size`` rows, so besides its input and output a call
holds two fp32 buffers of ``chunk_size x V`` elements. Masked vocabulary entries (logits equal
to ``-inf``) get probability 0, gradient 0, and contribute nothing to the entropy.
"""

from __future__ import annotations

import torch

from ._common import NEG_CLAMP, RowStats, acc_dtype

#: Elements (rows x vocabulary) per chunk when ``chunk_size`` is not given: 2**22 elements is
#: 16 MiB per fp32 buffer on the CPU; on a GPU, where this path is only a fallback, 2**26.
CHUNK_ELEMENTS_CPU: int = 1 << 22
CHUNK_ELEMENTS_GPU: int = 1 << 26


def default_chunk_rows(vocab_size: int, device: torch.device) -> int:
    """Rows per chunk so that one chunk holds about a fixed number of elements.

    Args:
        vocab_size: ``V``, the length of each row.
        device: where the logits live (GPUs get larger chunks).

    Returns:
        ``max(1, budget // V)`` with the budget :data:`CHUNK_ELEMENTS_CPU` or
        :data:`CHUNK_ELEMENTS_GPU`.
    """
    budget = CHUNK_ELEMENTS_CPU if device.type == "cpu" else CHUNK_ELEMENTS_GPU
    return max(1, budget // max(1, vocab_size))


def _shifted(x: torch.Tensor, row_max: torch.Tensor, temperature: float) -> torch.Tensor:
    """Return a fresh accumulation-dtype buffer holding ``(x - m) / T`` (``m`` per row)."""
    z = x.to(acc_dtype(x.dtype), copy=True)
    z.sub_(row_max.unsqueeze(-1))
    z.div_(temperature)
    return z


def forward_rows(
    x: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    ignore_index: int,
    chunk_size: int | None = None,
) -> RowStats:
    r"""Per-row log-prob of the label, entropy, and the statistics the backward needs.

    Args:
        x: logits of shape ``[N, V]`` (fp16, bf16, fp32 or fp64).
        labels: int64 labels of shape ``[N]``, or ``None`` for entropy only (log-probs are then 0).
        temperature: :math:`T > 0`; the distribution is :math:`\mathrm{softmax}(x / T)`.
        ignore_index: label value whose log-prob is reported as 0 (as is any label outside
            ``[0, V)``: the public functions reject those after the call).
        chunk_size: rows per chunk; ``None`` picks :func:`default_chunk_rows`.

    Returns:
        :class:`~e3core.kernels._common.RowStats` in fp32 (fp64 for fp64 input). A row whose
        logits are all ``-inf`` gets ``row_max = -inf`` and undefined (NaN) outputs; the public
        functions raise on it.
    """
    n, v = x.shape
    acc = acc_dtype(x.dtype)
    rows = chunk_size if chunk_size is not None else default_chunk_rows(v, x.device)
    logprobs = torch.zeros(n, dtype=acc, device=x.device)
    entropy = torch.empty(n, dtype=acc, device=x.device)
    row_max = torch.empty(n, dtype=acc, device=x.device)
    log_norm = torch.empty(n, dtype=acc, device=x.device)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        xc = x[start:stop]
        m = xc.amax(dim=-1).to(acc)
        # An all -inf row would give (-inf) - (-inf) = NaN; shift it by 0 instead (its outputs
        # stay undefined and the caller raises on row_max = -inf).
        m_safe = torch.where(torch.isneginf(m), torch.zeros_like(m), m)
        z = _shifted(xc, m_safe, temperature)  # (x - m) / T, <= 0
        if labels is not None:
            lab = labels[start:stop]
            # out-of-range labels are flagged by the caller; clamp so the gather stays in bounds
            valid = (lab >= 0) & (lab < v)
            z_y = z.gather(1, lab.clamp(0, v - 1).unsqueeze(1)).squeeze(1)
        e = torch.exp(z)
        d = e.sum(dim=-1)
        z.clamp_(min=NEG_CLAMP)  # 0 * (-inf) -> 0 for masked entries
        e.mul_(z)
        s = e.sum(dim=-1)
        del e, z
        logd = torch.log(d)
        entropy[start:stop] = logd - s / d
        row_max[start:stop] = m
        log_norm[start:stop] = logd
        if labels is not None:
            logprobs[start:stop] = torch.where(valid, z_y - logd, torch.zeros_like(logd))
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
    r"""Gradient of :math:`\sum_n g_{lp,n}\log p_{y_n} + g_{H,n} H_n` with respect to the logits.

    Args:
        x: the forward's logits ``[N, V]``.
        labels: the forward's int64 labels ``[N]`` or ``None``.
        temperature: the forward's temperature.
        stats: the forward's :class:`~e3core.kernels._common.RowStats`.
        grad_logprobs: :math:`g_{lp}` of shape ``[N]`` in the accumulation dtype, already 0
            where the label is ignored; ``None`` when there are no labels.
        grad_entropy: :math:`g_H` of shape ``[N]`` in the accumulation dtype.
        chunk_size: rows per chunk; ``None`` picks :func:`default_chunk_rows`.

    Returns:
        :math:`\partial L / \partial x`, shape ``[N, V]``, in ``x.dtype``.
    """
    n, v = x.shape
    rows = chunk_size if chunk_size is not None else default_chunk_rows(v, x.device)
    grad = torch.empty_like(x, memory_format=torch.contiguous_format)
    for start in range(0, n, rows):
        stop = min(n, start + rows)
        logp = _shifted(x[start:stop], stats.row_max[start:stop], temperature)
        logp.sub_(stats.log_norm[start:stop].unsqueeze(-1))  # log p_i
        p = torch.exp(logp)
        logp.clamp_(min=NEG_CLAMP)  # masked entries: p = 0, keep the product finite
        # inner = g_H * (log p + H) + g_lp, built in place in the log p buffer
        logp.add_(stats.entropy[start:stop].unsqueeze(-1))
        logp.mul_(grad_entropy[start:stop].unsqueeze(-1))
        if grad_logprobs is not None:
            logp.add_(grad_logprobs[start:stop].unsqueeze(-1))
        p.mul_(logp).neg_()
        del logp
        if labels is not None and grad_logprobs is not None:
            lab = labels[start:stop].clamp(0, v - 1).unsqueeze(1)  # ignored rows have g_lp = 0
            p.scatter_add_(1, lab, grad_logprobs[start:stop].unsqueeze(1))
        p.div_(temperature)
        grad[start:stop] = p
    return grad
