"""Triton kernels on a real GPU at realistic sizes (skipped without CUDA: they need one)."""

from __future__ import annotations

import pytest
import torch
from kernel_refs import linear_logprobs_and_entropy, logprobs_and_entropy, ref_logprobs_entropy

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _ref_on_gpu(x: torch.Tensor, y: torch.Tensor, t: float, g: tuple[torch.Tensor, ...]):  # type: ignore[no-untyped-def]
    xr = x.detach().double().requires_grad_(True)
    lp, ent = ref_logprobs_entropy(xr, y, t)
    (grad,) = torch.autograd.grad((lp * g[0]).sum() + (ent * g[1]).sum(), xr)
    return lp, ent, grad


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shift", [-1e4, 25.0])
def test_qwen_vocab_on_gpu(dtype: torch.dtype, shift: float) -> None:
    n, v, t = 64, 151936, 0.9
    gen = torch.Generator(device="cuda").manual_seed(0)
    x = (torch.randn(n, v, device="cuda", generator=gen) * 3 + shift).to(dtype)
    x[:, ::97] = float("-inf")
    y = torch.randint(0, v, (n,), device="cuda", generator=gen)
    x[torch.arange(n, device="cuda"), y] = shift
    g = (torch.randn(n, device="cuda", dtype=torch.float64),) * 2
    xo = x.clone().requires_grad_(True)
    lp, ent = logprobs_and_entropy(xo, y, t, backend="triton")
    (grad,) = torch.autograd.grad((lp * g[0]).sum() + (ent * g[1]).sum(), xo)
    rlp, rent, rgrad = _ref_on_gpu(x, y, t, g)
    assert _rel(lp, rlp) < 3e-6 and _rel(ent, rent) < 3e-6
    assert _rel(grad, rgrad) < (8e-3 if dtype == torch.bfloat16 else 1e-5)
    # same inputs, same bits: no race between programs
    lp2, ent2 = logprobs_and_entropy(x, y, t, backend="triton")
    assert torch.equal(lp2, lp.detach()) and torch.equal(ent2, ent.detach())


def test_auto_picks_triton_on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    from e3core.kernels import triton_entropy

    calls: list[int] = []
    real = triton_entropy.forward_rows

    def spy(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(triton_entropy, "forward_rows", spy)
    logprobs_and_entropy(
        torch.randn(4, 100, device="cuda"), torch.zeros(4, dtype=torch.long, device="cuda")
    )
    assert calls == [1]


def test_linear_on_gpu_bf16() -> None:
    n, h, v = 1024, 256, 32000
    gen = torch.Generator(device="cuda").manual_seed(1)
    hid = torch.randn(n, h, device="cuda", generator=gen).bfloat16()
    w = (torch.randn(v, h, device="cuda", generator=gen) / h**0.5 * 2).bfloat16()
    y = torch.randint(0, v, (n,), device="cuda", generator=gen)
    ho, wo = hid.clone().requires_grad_(True), w.clone().requires_grad_(True)
    lp, ent = linear_logprobs_and_entropy(ho, wo, y, chunk_size=300)
    gh, gw = torch.autograd.grad((lp + ent).sum(), (ho, wo))
    hr, wr = hid.double().requires_grad_(True), w.double().requires_grad_(True)
    rlp, rent = ref_logprobs_entropy(hr @ wr.t(), y, 1.0)
    rgh, rgw = torch.autograd.grad((rlp + rent).sum(), (hr, wr))
    # bf16 logits (as the model's LM head makes them): a few 1e-3 relative
    assert _rel(lp, rlp) < 1e-2 and _rel(ent, rent) < 1e-2
    assert _rel(gh, rgh) < 2e-2 and _rel(gw, rgw) < 2e-2
