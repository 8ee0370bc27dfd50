"""Autograd functions shared by both backends: recompute in backward, save per-row stats only.

A backend is any object with ``forward_rows`` and ``backward_rows`` as in
:mod:`e3core.kernels.reference` (the spec) and :mod:`e3core.kernels.triton_entropy`.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch.autograd.function import FunctionCtx, once_differentiable

from ._common import RowStats, acc_dtype, check_outputs


class RowOps(Protocol):
    """The two operations a backend provides."""

    def forward_rows(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        temperature: float,
        ignore_index: int,
        chunk_size: int | None = None,
    ) -> RowStats:
        """Per-row log-prob, entropy and statistics of ``softmax(x / T)``."""
        ...

    def backward_rows(
        self,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        temperature: float,
        stats: RowStats,
        grad_logprobs: torch.Tensor | None,
        grad_entropy: torch.Tensor,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """Gradient with respect to ``x`` from the saved statistics."""
        ...


def _incoming(
    grad: torch.Tensor | None, n: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    if grad is None:
        return torch.zeros(n, dtype=dtype, device=device)
    return grad.to(dtype).contiguous()


def _lp_grad(
    grad_logprobs: torch.Tensor | None,
    labels: torch.Tensor | None,
    ignore_index: int,
    n: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    if labels is None:
        return None
    g = _incoming(grad_logprobs, n, dtype, device)
    return torch.where(labels != ignore_index, g, torch.zeros_like(g))


class LogitsEntropyFunction(torch.autograd.Function):
    """``(logprobs, entropy)`` of ``softmax(x / T)`` for 2-D logits ``x``."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: torch.Tensor,
        labels: torch.Tensor | None,
        bad_labels: torch.Tensor | None,
        temperature: float,
        ignore_index: int,
        chunk_size: int | None,
        ops: RowOps,
        check: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the backend's forward and save ``x`` and the per-row statistics."""
        stats = ops.forward_rows(x, labels, temperature, ignore_index, chunk_size)
        if check:
            check_outputs(stats.row_max, labels, bad_labels, x.shape[-1], ignore_index)
        ctx.save_for_backward(x, labels, stats.row_max, stats.log_norm, stats.entropy)
        c: Any = ctx
        c.temperature = temperature
        c.ignore_index = ignore_index
        c.chunk_size = chunk_size
        c.ops = ops
        if labels is None:
            ctx.mark_non_differentiable(stats.logprobs)
        return stats.logprobs, stats.entropy

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, None, None, None, None, None, None, None]:
        """Recompute the softmax from the saved statistics and return the logits' gradient."""
        x, labels, row_max, log_norm, entropy = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None, None, None, None
        n = x.shape[0]
        acc = acc_dtype(x.dtype)
        g_ent = _incoming(grad_entropy, n, acc, x.device)
        g_lp = _lp_grad(grad_logprobs, labels, ctx.ignore_index, n, acc, x.device)
        stats = RowStats(entropy, entropy, row_max, log_norm)
        grad = ctx.ops.backward_rows(x, labels, ctx.temperature, stats, g_lp, g_ent, ctx.chunk_size)
        return grad, None, None, None, None, None, None, None


class LinearEntropyFunction(torch.autograd.Function):
    """``(logprobs, entropy)`` of ``softmax(h W^T / T)``, chunked over tokens."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        labels: torch.Tensor,
        bad_labels: torch.Tensor,
        temperature: float,
        ignore_index: int,
        token_chunk: int,
        ops: RowOps,
        check: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute each chunk's logits, reduce them to per-row statistics, drop them."""
        n = hidden.shape[0]
        acc = acc_dtype(hidden.dtype)
        parts: list[RowStats] = []
        for start in range(0, n, token_chunk):
            logits = hidden[start : start + token_chunk] @ weight.t()
            parts.append(
                ops.forward_rows(
                    logits, labels[start : start + token_chunk], temperature, ignore_index
                )
            )
            del logits
        if parts:
            stats = RowStats(*(torch.cat(list(t)) for t in zip(*parts, strict=True)))
        else:
            empty = torch.empty(0, dtype=acc, device=hidden.device)
            stats = RowStats(empty, empty, empty, empty)
        if check:
            check_outputs(stats.row_max, labels, bad_labels, weight.shape[0], ignore_index)
        ctx.save_for_backward(hidden, weight, labels, stats.row_max, stats.log_norm, stats.entropy)
        c: Any = ctx
        c.temperature = temperature
        c.ignore_index = ignore_index
        c.token_chunk = token_chunk
        c.ops = ops
        return stats.logprobs, stats.entropy

    @staticmethod
    @once_differentiable
    def backward(
        ctx: Any, grad_logprobs: torch.Tensor | None, grad_entropy: torch.Tensor | None
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None, None, None, None, None, None]:
        """Recompute each chunk's logits, form its logits' gradient, and contract it."""
        hidden, weight, labels, row_max, log_norm, entropy = ctx.saved_tensors
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (need_h or need_w):
            return None, None, None, None, None, None, None, None, None
        n = hidden.shape[0]
        acc = acc_dtype(hidden.dtype)
        g_ent = _incoming(grad_entropy, n, acc, hidden.device)
        g_lp = _lp_grad(grad_logprobs, labels, ctx.ignore_index, n, acc, hidden.device)
        assert g_lp is not None
        grad_h = torch.empty_like(hidden) if need_h else None
        # grad_weight is a sum over all chunks: accumulate it in at least fp32.
        grad_w_acc = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        step = ctx.token_chunk
        for start in range(0, n, step):
            sl = slice(start, start + step)
            h = hidden[sl]
            logits = h @ weight.t()
            stats = RowStats(entropy[sl], entropy[sl], row_max[sl], log_norm[sl])
            g = ctx.ops.backward_rows(
                logits, labels[sl], ctx.temperature, stats, g_lp[sl], g_ent[sl]
            )
            del logits
            if grad_h is not None:
                torch.mm(g, weight, out=grad_h[sl])
            if grad_w_acc is not None:
                if grad_w_acc.dtype == g.dtype:
                    grad_w_acc.addmm_(g.t(), h)
                else:
                    grad_w_acc.add_(g.t() @ h)
            del g
        grad_w = None
        if grad_w_acc is not None:
            grad_w = grad_w_acc if grad_w_acc.dtype == weight.dtype else grad_w_acc.to(weight.dtype)
        return grad_h, grad_w, None, None, None, None, None, None, None
