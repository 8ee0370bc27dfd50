"""linear_logprobs_and_entropy: against the fp64 LM-head path, and never [N, V] at once."""

from __future__ import annotations

import pytest
import torch
from kernel_refs import device_for, linear_logprobs_and_entropy, ref_logprobs_entropy, rel_err
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def make_head(
    tokens: int, hidden: int, vocab: int, dtype: torch.dtype, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(tokens, hidden, generator=gen, dtype=torch.float64)
    w = torch.randn(vocab, hidden, generator=gen, dtype=torch.float64) * (2.0 / hidden**0.5)
    y = torch.randint(0, vocab, (tokens,), generator=gen)
    return h.to(dtype).to(device), w.to(dtype).to(device), y.to(device)


def grads_ours_and_ref(
    h: torch.Tensor,
    w: torch.Tensor,
    y: torch.Tensor,
    t: float,
    backend: str,
    chunk_size: int | None,
    lead: tuple[int, ...] | None = None,
) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    n = h.shape[0]
    g_lp = torch.randn(n, generator=gen, dtype=torch.float64)
    g_h = torch.randn(n, generator=gen, dtype=torch.float64)
    ho, wo = h.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    hin, yin = (ho, y) if lead is None else (ho.reshape(*lead, -1), y.reshape(lead))
    lp, ent = linear_logprobs_and_entropy(hin, wo, yin, t, backend=backend, chunk_size=chunk_size)
    lp, ent = lp.reshape(-1), ent.reshape(-1)
    dev = lp.device
    loss = (lp * g_lp.to(dev, lp.dtype)).sum() + (ent * g_h.to(dev, ent.dtype)).sum()
    gh, gw = torch.autograd.grad(loss, (ho, wo))
    hr = h.detach().cpu().double().requires_grad_(True)
    wr = w.detach().cpu().double().requires_grad_(True)
    rlp, rent = ref_logprobs_entropy(hr @ wr.t(), y.cpu(), t)
    rgh, rgw = torch.autograd.grad((rlp * g_lp).sum() + (rent * g_h).sum(), (hr, wr))
    return {"lp": lp, "ent": ent, "gh": gh, "gw": gw, "rlp": rlp, "rent": rent}, {
        "gh": rgh,
        "gw": rgw,
    }


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [None, 7, 64])
def test_values_and_grads(backend: str, dtype: torch.dtype, chunk_size: int | None) -> None:
    h, w, y = make_head(50, 24, 1000, dtype, seed=2, device=device_for(backend))
    out, ref = grads_ours_and_ref(h, w, y, 0.8, backend, chunk_size)
    tol = 1e-6 if dtype == torch.float64 else 2e-5
    assert rel_err(out["lp"], out["rlp"]) < tol
    assert rel_err(out["ent"], out["rent"]) < tol
    assert out["gh"].dtype == dtype and out["gw"].dtype == dtype
    assert rel_err(out["gh"], ref["gh"]) < tol
    assert rel_err(out["gw"], ref["gw"]) < tol


def test_leading_shape_and_ragged_vocab(backend: str) -> None:
    h, w, y = make_head(12, 16, 4099, torch.float32, seed=3, device=device_for(backend))
    out, ref = grads_ours_and_ref(h, w, y, 1.2, backend, 5, lead=(3, 4))
    assert rel_err(out["lp"], out["rlp"]) < 2e-5
    assert rel_err(out["ent"], out["rent"]) < 2e-5
    assert rel_err(out["gh"], ref["gh"]) < 2e-5
    assert rel_err(out["gw"], ref["gw"]) < 2e-5


def test_bf16_no_worse_than_naive_bf16(backend: str) -> None:
    """bf16: no further from the fp64 answer than PyTorch's bf16 LM head + log_softmax."""
    dev = device_for(backend)
    h, w, y = make_head(40, 32, 1000, torch.float32, seed=4, device=torch.device("cpu"))
    out, _ = grads_ours_and_ref(
        h.bfloat16().to(dev), w.bfloat16().to(dev), y.to(dev), 1.0, backend, 16
    )
    hb, wb = h.bfloat16().requires_grad_(True), w.bfloat16().requires_grad_(True)
    ls = torch.log_softmax(hb @ wb.t(), dim=-1)
    nlp = ls.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    nent = -(ls.exp() * ls).sum(-1)
    gen = torch.Generator().manual_seed(1)
    g_lp, g_h = torch.randn(40, generator=gen), torch.randn(40, generator=gen)
    ngh, ngw = torch.autograd.grad(
        (nlp * g_lp.bfloat16()).sum() + (nent * g_h.bfloat16()).sum(), (hb, wb)
    )
    # the fp32 answer: the same bf16-rounded inputs, computed in fp64
    ref32, ref_g = grads_ours_and_ref(h.bfloat16(), w.bfloat16(), y, 1.0, "torch", None)
    slack = 2e-3
    assert rel_err(out["lp"], ref32["rlp"]) <= rel_err(nlp, ref32["rlp"]) + slack
    assert rel_err(out["ent"], ref32["rent"]) <= rel_err(nent, ref32["rent"]) + slack
    assert rel_err(out["gh"], ref_g["gh"]) <= rel_err(ngh, ref_g["gh"]) + slack
    assert rel_err(out["gw"], ref_g["gw"]) <= rel_err(ngw, ref_g["gw"]) + slack


def test_gradcheck_fp64(backend: str) -> None:
    h, w, y = make_head(5, 3, 11, torch.float64, seed=5, device=device_for(backend))
    y[2] = -100
    h.requires_grad_(True)
    w.requires_grad_(True)
    fast = backend == "triton" and not torch.cuda.is_available()

    def f(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return linear_logprobs_and_entropy(a, b, y, 1.1, backend=backend, chunk_size=2)

    assert torch.autograd.gradcheck(f, (h, w), eps=1e-6, atol=1e-7, rtol=1e-5, fast_mode=fast)


def test_frozen_inputs(backend: str) -> None:
    h, w, y = make_head(9, 8, 100, torch.float32, seed=6, device=device_for(backend))
    hh = h.clone().requires_grad_(True)
    lp, ent = linear_logprobs_and_entropy(hh, w, y, backend=backend, chunk_size=4)
    (gh,) = torch.autograd.grad((lp + ent).sum(), hh)
    ww = w.clone().requires_grad_(True)
    lp2, ent2 = linear_logprobs_and_entropy(h, ww, y, backend=backend, chunk_size=4)
    (gw,) = torch.autograd.grad((lp2 + ent2).sum(), ww)
    assert gh.shape == h.shape and gw.shape == w.shape
    # gradient of the sum (g = 1) against fp64 autograd
    hr, wr = h.cpu().double().requires_grad_(True), w.cpu().double().requires_grad_(True)
    rlp, rent = ref_logprobs_entropy(hr @ wr.t(), y.cpu(), 1.0)
    rgh, rgw = torch.autograd.grad((rlp + rent).sum(), (hr, wr))
    assert rel_err(gh, rgh) < 2e-5 and rel_err(gw, rgw) < 2e-5


class _NewStorageSizes(TorchDispatchMode):
    """Records the size (elements) of every tensor created with fresh storage."""

    def __init__(self, known: list[torch.Tensor]) -> None:
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.sizes: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.known:
                self.sizes.append(t.numel())
        return out


def test_never_materialises_full_logits() -> None:
    n, hid, v, chunk = 96, 8, 512, 8
    h, w, y = make_head(n, hid, v, torch.float32, seed=7, device=torch.device("cpu"))
    h.requires_grad_(True)
    w.requires_grad_(True)
    mode = _NewStorageSizes([h, w, y])
    with mode:
        lp, ent = linear_logprobs_and_entropy(h, w, y, backend="torch", chunk_size=chunk)
        (lp.sum() + ent.sum()).backward()
    assert v * hid in mode.sizes  # the backward (grad_weight) was seen too
    biggest = max(mode.sizes)
    assert biggest <= max(chunk * v, v * hid, n * hid)  # one chunk of logits, or a gradient
    assert biggest < n * v // 4
