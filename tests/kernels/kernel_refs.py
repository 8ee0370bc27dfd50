"""fp64 references and error measures for the kernel tests (naive log_softmax, no chunks)."""

from __future__ import annotations

import torch

from e3core.kernels import entropy_from_logits, linear_logprobs_and_entropy, logprobs_and_entropy

HAS_CUDA = torch.cuda.is_available()


def device_for(backend: str) -> torch.device:
    """Where a backend's tests put their tensors (Triton on CUDA when present)."""
    return torch.device("cuda" if backend == "triton" and HAS_CUDA else "cpu")


def ref_logprobs_entropy(
    x: torch.Tensor, labels: torch.Tensor | None, temperature: float, ignore_index: int = -100
) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive fp64 log-prob of the label and entropy of softmax(x / T), differentiable."""
    ls = torch.log_softmax(x.double() / temperature, dim=-1)
    # clamp: masked (-inf) entries have p = 0, and 0 * (-inf) must count as 0
    ent = -(ls.exp() * ls.clamp(min=-1e4)).sum(-1)
    if labels is None:
        return torch.zeros_like(ent), ent
    valid = labels != ignore_index
    lp = ls.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, lp, torch.zeros_like(lp)), ent


def rel_err(a: torch.Tensor, b: torch.Tensor, floor: float = 1e-30) -> float:
    """||a - b|| / ||b|| in fp64 (with a floor on ||b||)."""
    a64, b64 = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a64 - b64).norm() / max(float(b64.norm()), floor))


def run_both(
    x: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    backend: str,
    seed: int = 0,
    **kwargs: object,
) -> dict[str, torch.Tensor]:
    """Values and gradients of ours and of the fp64 reference for a random loss."""
    gen = torch.Generator().manual_seed(seed)
    lead = x.shape[:-1]
    g_lp = torch.randn(lead, generator=gen, dtype=torch.float64)
    g_h = torch.randn(lead, generator=gen, dtype=torch.float64)
    xo = x.detach().clone().requires_grad_(True)
    lp, ent = logprobs_and_entropy(xo, labels, temperature, backend=backend, **kwargs)
    dev = lp.device
    (grad,) = torch.autograd.grad(
        (lp * g_lp.to(dev, lp.dtype)).sum() + (ent * g_h.to(dev, ent.dtype)).sum(), xo
    )
    xr = x.detach().cpu().double().requires_grad_(True)
    rlp, rent = ref_logprobs_entropy(xr, labels.cpu(), temperature)
    (rgrad,) = torch.autograd.grad((rlp * g_lp).sum() + (rent * g_h).sum(), xr)
    return {
        "lp": lp,
        "ent": ent,
        "grad": grad,
        "rlp": rlp,
        "rent": rent,
        "rgrad": rgrad,
    }


__all__ = [
    "HAS_CUDA",
    "device_for",
    "entropy_from_logits",
    "linear_logprobs_and_entropy",
    "logprobs_and_entropy",
    "ref_logprobs_entropy",
    "rel_err",
    "run_both",
]
