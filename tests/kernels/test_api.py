"""Input validation, backend dispatch, lazy triton import and the reference's memory bound."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_refs import entropy_from_logits, linear_logprobs_and_entropy, logprobs_and_entropy
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import e3core.kernels as kernels_mod
from e3core.kernels import reference

REPO = Path(__file__).resolve().parents[2]

X = torch.zeros(2, 5)
Y = torch.zeros(2, dtype=torch.long)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"logits": [[0.0, 1.0]]}, TypeError, "logits must be a torch.Tensor"),
        ({"logits": torch.zeros(2, 5, dtype=torch.int32)}, TypeError, "logits must have dtype"),
        ({"logits": torch.tensor(1.0)}, ValueError, "logits must have at least one dim"),
        ({"logits": torch.zeros(2, 0)}, ValueError, "non-empty vocabulary"),
        ({"temperature": 0.0}, ValueError, "temperature must be finite and > 0; got 0.0"),
        ({"temperature": -1.0}, ValueError, "temperature must be finite and > 0"),
        ({"temperature": float("nan")}, ValueError, "temperature must be finite"),
        ({"temperature": float("inf")}, ValueError, "temperature must be finite"),
        ({"temperature": True}, TypeError, "temperature must be a real number; got True"),
        ({"temperature": "1"}, TypeError, "temperature must be a real number"),
        ({"temperature": torch.ones(2)}, TypeError, "one-element"),
        ({"backend": "cuda"}, ValueError, "backend must be one of .*'cuda'"),
        ({"backend": None}, TypeError, "backend must be a str"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be a positive int; got 0"),
        ({"chunk_size": 2.5}, TypeError, "chunk_size must be None or a positive int"),
        ({"labels": [0, 1]}, TypeError, "labels must be a torch.Tensor"),
        ({"labels": torch.zeros(2)}, TypeError, "labels must have an integer dtype"),
        ({"labels": torch.zeros(2, dtype=torch.bool)}, TypeError, "integer dtype"),
        (
            {"labels": torch.zeros(3, dtype=torch.long)},
            ValueError,
            r"labels must have shape \(2,\)",
        ),
        ({"labels": torch.tensor([0, 5])}, ValueError, r"labels must be in \[0, 5\) .* got 5"),
        ({"labels": torch.tensor([-1, 0])}, ValueError, "got -1"),
        ({"ignore_index": 0}, ValueError, "ignore_index must be negative"),
        ({"ignore_index": 1.5}, TypeError, "ignore_index must be an int"),
    ],
)
def test_logprobs_and_entropy_rejects(kwargs: dict[str, object], exc: type, match: str) -> None:
    args: dict[str, object] = {"logits": X, "labels": Y, "backend": "torch"}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        logprobs_and_entropy(**args)  # type: ignore[arg-type]


def test_entropy_from_logits_rejects() -> None:
    with pytest.raises(TypeError, match=r"logits must be a torch\.Tensor"):
        entropy_from_logits("x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="temperature"):
        entropy_from_logits(X, 0)
    with pytest.raises(ValueError, match="backend"):
        entropy_from_logits(X, backend="numpy")


H = torch.zeros(3, 4)
W = torch.zeros(6, 4)
L = torch.zeros(3, dtype=torch.long)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"hidden": 1.0}, TypeError, "hidden must be a torch.Tensor"),
        ({"weight": torch.zeros(6, 4, dtype=torch.long)}, TypeError, "weight must have dtype"),
        ({"hidden": torch.tensor(1.0)}, ValueError, "hidden must have shape"),
        ({"weight": torch.zeros(6)}, ValueError, r"weight must have shape \[V, H\]; got \(6,\)"),
        ({"weight": torch.zeros(6, 5)}, ValueError, r"weight must have shape \[V, 4\]"),
        ({"weight": torch.zeros(0, 4)}, ValueError, "non-empty vocabulary"),
        ({"weight": torch.zeros(6, 4, dtype=torch.float64)}, TypeError, "dtype of hidden"),
        ({"labels": torch.tensor([0, 0, 6])}, ValueError, r"labels must be in \[0, 6\)"),
        ({"labels": torch.zeros(3, 1, dtype=torch.long)}, ValueError, "labels must have shape"),
        ({"temperature": 0}, ValueError, "temperature"),
        ({"chunk_size": -3}, ValueError, "chunk_size"),
        ({"backend": "jax"}, ValueError, "backend"),
    ],
)
def test_linear_rejects(kwargs: dict[str, object], exc: type, match: str) -> None:
    args: dict[str, object] = {"hidden": H, "weight": W, "labels": L, "backend": "torch"}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        linear_logprobs_and_entropy(**args)  # type: ignore[arg-type]


def test_auto_uses_reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = reference.forward_rows

    def spy(*args: object, **kwargs: object) -> object:
        calls.append("torch")
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(reference, "forward_rows", spy)
    entropy_from_logits(torch.randn(2, 7), backend="auto")
    assert calls == ["torch"]


def test_triton_on_cpu_without_interpreter_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    from e3core.kernels import triton_entropy

    monkeypatch.setattr(triton_entropy, "interpreting", lambda: False)
    with pytest.raises(ValueError, match="backend='triton' needs a CUDA tensor"):
        entropy_from_logits(torch.randn(2, 7), backend="triton")


def test_triton_missing_raises_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels_mod, "triton_available", lambda: False)
    with pytest.raises(
        ImportError, match=r"needs the triton package; install it with `pip install triton`"
    ):
        entropy_from_logits(torch.randn(2, 7), backend="triton")
    # auto silently falls back to the reference
    assert entropy_from_logits(torch.zeros(1, 4), backend="auto").item() == pytest.approx(
        float(torch.log(torch.tensor(4.0)))
    )


def test_importing_does_not_import_triton() -> None:
    code = (
        "import sys, torch, e3core, e3core.kernels, e3core.kernels.reference\n"
        "from e3core.kernels import entropy_from_logits\n"
        "entropy_from_logits(torch.zeros(2, 3), backend='auto')\n"
        "bad = sorted(m for m in sys.modules if m == 'triton' or m.startswith('triton.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "ok"


class _NewStorage(TorchDispatchMode):
    """Records the bytes of every fresh storage (views of one storage count once)."""

    def __init__(self, known: list[torch.Tensor]) -> None:
        super().__init__()
        self.known = {t.untyped_storage().data_ptr() for t in known}
        self.seen: dict[int, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in self.known:
                storage = t.untyped_storage()
                ptr = storage.data_ptr()  # a freed address can be reused: keep the largest
                self.seen[ptr] = max(self.seen.get(ptr, 0), storage.nbytes())
        return out


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_reference_allocates_at_most_one_chunk(dtype: torch.dtype) -> None:
    """Besides the output gradient, no buffer exceeds one chunk of fp32 (rows x V)."""
    n, v, rows = 64, 1000, 4
    x = torch.randn(n, v, dtype=dtype, requires_grad=True)
    y = torch.randint(0, v, (n,))
    chunk_bytes = rows * v * 4
    mode = _NewStorage([x, y])
    with mode:
        lp, ent = logprobs_and_entropy(x, y, backend="torch", chunk_size=rows)
    assert mode.seen and max(mode.seen.values()) <= chunk_bytes
    mode.seen.clear()
    with mode:
        (lp.sum() + ent.sum()).backward()
    grad_bytes = n * v * x.element_size()
    big = [b for b in mode.seen.values() if b > chunk_bytes]
    assert big == [grad_bytes] or (not big and grad_bytes <= chunk_bytes)


def test_default_chunk_rows() -> None:
    assert reference.default_chunk_rows(151936, torch.device("cpu")) == (1 << 22) // 151936
    assert reference.default_chunk_rows(10, torch.device("cpu")) == (1 << 22) // 10
    assert reference.default_chunk_rows(1 << 30, torch.device("cpu")) == 1


def test_bad_label_raises_on_both_backends(backend: str) -> None:
    from kernel_refs import device_for

    dev = device_for(backend)
    x = torch.randn(3, 7, device=dev)
    for bad in (7, -1, 100):
        y = torch.tensor([0, bad, 6], device=dev)
        with pytest.raises(ValueError, match=rf"labels must be in \[0, 7\) .* got {bad}"):
            logprobs_and_entropy(x, y, backend=backend)
        with pytest.raises(ValueError, match=rf"got {bad}"):
            linear_logprobs_and_entropy(
                torch.randn(3, 2, device=dev), torch.randn(7, 2, device=dev), y, backend=backend
            )


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy sees the NaNs
def test_check_inputs_false_skips_the_checks(backend: str) -> None:
    from kernel_refs import device_for

    dev = device_for(backend)
    x = torch.randn(3, 7, device=dev)
    x[2] = float("-inf")
    y = torch.tensor([0, 9, 6], device=dev)
    with pytest.raises(ValueError, match="got 9"):
        logprobs_and_entropy(x, y, backend=backend)
    lp, ent = logprobs_and_entropy(x, y, backend=backend, check_inputs=False)
    assert float(lp[1]) == 0.0 and torch.isfinite(ent[:2]).all()  # out of range: as ignored
    assert torch.isnan(ent[2])  # all -inf row: undefined
    assert torch.isnan(entropy_from_logits(x, backend=backend, check_inputs=False)[2])
    lp2, _ = linear_logprobs_and_entropy(
        torch.randn(3, 2, device=dev),
        torch.randn(7, 2, device=dev),
        y,
        backend=backend,
        check_inputs=False,
    )
    assert float(lp2[1]) == 0.0
    with pytest.raises(TypeError, match="check_inputs must be a bool; got 'yes'"):
        logprobs_and_entropy(x, y, backend=backend, check_inputs="yes")  # type: ignore[arg-type]
