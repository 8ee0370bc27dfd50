"""Benchmark: per-token entropy + label log-prob from LLM logits (e3core.kernels vs peers).

CUDA (the claim: the fused forward reads the logits once, near the HBM bandwidth floor)::

    python benchmarks/bench_entropy.py --device cuda            # N=32768, V=151936, bf16

times forward, backward and forward+backward with ``triton.testing.do_bench`` (median, p20,
p80) for: naive PyTorch (fp32 upcast, and in bf16), ``torch.compile`` of the naive fp32 path,
two *peer-style* baselines written in ``peers.py`` after the published algorithms of verl
(``logsumexp(z) - sum(softmax(z) * z)``) and TRL (``log_softmax`` over chunks of 128 rows), and
e3core's torch reference and Triton kernels. It reports the extra peak memory beyond the inputs
and the fraction of the bandwidth floor: bytes that must move (forward: read the logits once;
backward: read them and write their gradient) over the time, against a nominal peak
(``--peak-tbs``, 3.35 TB/s for an H100 SXM) and against a device-to-device copy measured in the
same run. ``--sweep`` first times a few tile configurations of the Triton kernels and keeps the
fastest.

CPU (the claim: the reference needs the input plus one chunk, the naive path several copies)::

    python benchmarks/bench_entropy.py --device cpu             # N=512, V=151936, fp32

runs each method in a fresh subprocess and reports its peak resident memory (``ru_maxrss``)
above the resident memory measured after the input was created. The kernel keeps that
high-water mark, so it sees every transient buffer; the subprocesses run with glibc's
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers leave the process at once and the mark
counts live tensors rather than the allocator's cached heap.

Both print one table and write a CSV under ``--out`` (default ``benchmarks/out``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from _common import OUT_DIR, REPO, print_table, write_csv

if str(REPO) not in sys.path:  # run from a checkout without installing e3core
    sys.path.insert(0, str(REPO))

from peers import trl_chunked_entropy, verl_entropy

from e3core.kernels import logprobs_and_entropy
from e3core.kernels import reference as ref_mod

Pair = tuple[torch.Tensor, torch.Tensor]
Method = Callable[[torch.Tensor, torch.Tensor, float], Pair]


# ----------------------------------------------------------------------------- methods


def naive_fp32(x: torch.Tensor, y: torch.Tensor, t: float) -> Pair:
    """What most trainers write: upcast, log_softmax, gather, and -sum(p log p)."""
    ls = torch.log_softmax(x.float() / t, dim=-1)
    lp = ls.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return lp, -(ls.exp() * ls).sum(-1)


def naive_bf16(x: torch.Tensor, y: torch.Tensor, t: float) -> Pair:
    """The same without the upcast (less memory, bf16 rounding in every op)."""
    ls = torch.log_softmax(x / t, dim=-1)
    lp = ls.gather(-1, y.unsqueeze(-1)).squeeze(-1)
    return lp.float(), -(ls.exp() * ls).sum(-1).float()


def e3_torch(x: torch.Tensor, y: torch.Tensor, t: float) -> Pair:
    """e3core's chunked pure-PyTorch reference."""
    return logprobs_and_entropy(x, y, t, backend="torch")


def e3_triton(x: torch.Tensor, y: torch.Tensor, t: float) -> Pair:
    """e3core's fused Triton kernels."""
    return logprobs_and_entropy(x, y, t, backend="triton")


def e3_triton_unchecked(x: torch.Tensor, y: torch.Tensor, t: float) -> Pair:
    """e3core's Triton path with ``check_inputs=False``: no host synchronisation per call."""
    return logprobs_and_entropy(x, y, t, backend="triton", check_inputs=False)


def e3_triton_kernel_only(x: torch.Tensor, y: torch.Tensor, t: float) -> Pair:
    """The Triton forward kernel alone: no argument checks (no host syncs), no autograd."""
    from e3core.kernels import triton_entropy

    stats = triton_entropy.forward_rows(x.detach(), y, t, -100)
    return stats.logprobs, stats.entropy


# ----------------------------------------------------------------------------- CUDA


def _is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def _copy_bandwidth(nbytes: int) -> float:
    """Device-to-device copy bandwidth in TB/s, counting bytes read plus bytes written."""
    from triton.testing import do_bench

    a = torch.empty(nbytes // 2, dtype=torch.bfloat16, device="cuda").uniform_()
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), warmup=25, rep=200, return_mode="median")
    return 2 * nbytes / (ms * 1e-3) / 1e12


def _sweep(x: torch.Tensor, y: torch.Tensor, t: float) -> list[dict[str, object]]:
    """Time a few tile configurations of both Triton kernels; keep the fastest of each."""
    from triton.testing import do_bench

    from e3core.kernels import triton_entropy as te

    rows: list[dict[str, object]] = []
    best_f: tuple[float, tuple[int, int, int]] | None = None
    for block in (2048, 4096, 8192):
        for warps in (4, 8):
            for stages in (1, 2):
                te.FWD_BLOCK_V, te.FWD_NUM_WARPS, te.FWD_NUM_STAGES = block, warps, stages
                try:
                    with torch.no_grad():
                        ms = do_bench(lambda: e3_triton(x, y, t), return_mode="median")
                except Exception as err:  # a configuration that does not compile or fit
                    print(f"  fwd block={block} warps={warps} stages={stages}: {err!r}"[:200])
                    continue
                rows.append(
                    {"kernel": "fwd", "block": block, "warps": warps, "stages": stages, "ms": ms}
                )
                if best_f is None or ms < best_f[0]:
                    best_f = (ms, (block, warps, stages))
    assert best_f is not None
    te.FWD_BLOCK_V, te.FWD_NUM_WARPS, te.FWD_NUM_STAGES = best_f[1]
    xg = x.detach().requires_grad_(True)
    lp, ent = e3_triton(xg, y, t)
    g = (torch.randn_like(lp), torch.randn_like(ent))
    best_b: tuple[float, tuple[int, int]] | None = None
    for block in (1024, 2048, 4096):
        for warps in (4, 8):
            te.BWD_BLOCK_V, te.BWD_NUM_WARPS = block, warps
            try:
                ms = do_bench(
                    lambda: torch.autograd.grad((lp, ent), xg, g, retain_graph=True),
                    return_mode="median",
                )
            except Exception as err:
                print(f"  bwd block={block} warps={warps}: {err!r}"[:200])
                continue
            rows.append({"kernel": "bwd", "block": block, "warps": warps, "stages": 0, "ms": ms})
            if best_b is None or ms < best_b[0]:
                best_b = (ms, (block, warps))
    assert best_b is not None
    te.BWD_BLOCK_V, te.BWD_NUM_WARPS = best_b[1]
    for r in rows:
        print(f"  sweep {r}")
    print(
        f"  chosen fwd (BLOCK_V, warps, stages) = {best_f[1]}, bwd (BLOCK_V, warps) = {best_b[1]}"
    )
    return rows


def _measure(
    fn: Method,
    mode: str,
    x: torch.Tensor,
    y: torch.Tensor,
    t: float,
    grads: Pair,
    ref_entropy: list[torch.Tensor],
    rep_ms: int,
) -> dict[str, float]:
    """Time one method in one mode; its graph and outputs are freed on return."""
    from triton.testing import do_bench

    xg = x.detach().requires_grad_(mode != "fwd")
    if mode == "fwd":

        def call() -> object:
            with torch.no_grad():
                return fn(xg, y, t)

    elif mode == "bwd":
        lp, ent = fn(xg, y, t)

        def call() -> object:
            return torch.autograd.grad((lp, ent), xg, grads, retain_graph=True)

    else:

        def call() -> object:
            out = fn(xg, y, t)
            return torch.autograd.grad(out, xg, grads)

    call()  # warm-up (and compilation)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = call()
    torch.cuda.synchronize()
    row = {"extra_peak_gb": (torch.cuda.max_memory_allocated() - base) / 1e9}
    if mode == "fwd":
        ent_out = out[1].float()  # type: ignore[index]
        if not ref_entropy:
            ref_entropy.append(ent_out)
        row["max_abs_err_entropy_vs_first"] = float((ent_out - ref_entropy[0]).abs().max())
    del out
    med, p20, p80 = do_bench(call, warmup=25, rep=rep_ms, quantiles=[0.5, 0.2, 0.8])
    row.update(ms_median=med, ms_p20=p20, ms_p80=p80)
    return row


def run_cuda(args: argparse.Namespace) -> list[dict[str, object]]:
    """Time every method in every mode on the GPU; return one row per (method, mode)."""
    import triton

    torch.manual_seed(0)
    n, v, t = args.n, args.v, args.temperature
    dtype = getattr(torch, args.dtype)
    dev = torch.device("cuda")
    x = (torch.randn(n, v, device=dev, dtype=torch.float32) * 3.0).to(dtype)
    y = torch.randint(0, v, (n,), device=dev)
    g_lp = torch.randn(n, device=dev)
    g_h = torch.randn(n, device=dev)
    elt = x.element_size()
    logits_bytes = n * v * elt
    copy_tbs = _copy_bandwidth(min(logits_bytes, 8 << 30))
    name = torch.cuda.get_device_name()
    print(f"device: {name}; torch {torch.__version__}; triton {triton.__version__}")
    print(f"N={n} V={v} dtype={args.dtype} T={t}; logits {logits_bytes / 1e9:.2f} GB")
    print(f"measured device-to-device copy: {copy_tbs:.2f} TB/s; nominal peak {args.peak_tbs} TB/s")
    if args.sweep:
        _sweep(x, y, t)

    methods: dict[str, Method] = {
        "naive fp32 (log_softmax)": naive_fp32,
        "naive bf16 (no upcast)": naive_bf16,
        "torch.compile(naive fp32)": torch.compile(naive_fp32, dynamic=False),
        "peer-style verl (lse - sum p*z)": verl_entropy,
        "peer-style TRL (chunked 128 rows)": trl_chunked_entropy,
        "e3core torch reference": e3_torch,
        "e3core triton": e3_triton,
        "e3core triton, check_inputs=False": e3_triton_unchecked,
        "e3core triton, fwd kernel only": e3_triton_kernel_only,
    }
    floor_bytes = {"fwd": logits_bytes, "bwd": 2 * logits_bytes, "fwd+bwd": 3 * logits_bytes}
    rows: list[dict[str, object]] = []
    ref_entropy: list[torch.Tensor] = []
    for label, fn in methods.items():
        for mode in ("fwd", "bwd", "fwd+bwd"):
            # TRL runs its chunked entropy under no_grad (a metric); through autograd each
            # chunk's slice backward materialises a full [N, V] gradient (seconds per call).
            if fn in (e3_triton_kernel_only, trl_chunked_entropy) and mode != "fwd":
                continue
            row: dict[str, object] = {"method": label, "mode": mode}
            try:
                row.update(_measure(fn, mode, x, y, t, (g_lp, g_h), ref_entropy, args.rep_ms))
                nbytes = floor_bytes[mode]
                med = float(row["ms_median"])  # type: ignore[arg-type]
                row["floor_frac_nominal"] = nbytes / (med * 1e-3) / (args.peak_tbs * 1e12)
                row["floor_frac_copy"] = nbytes / (med * 1e-3) / (copy_tbs * 1e12)
            except Exception as err:
                if not _is_oom(err):
                    raise
                row.update(ms_median=math.nan, note="OOM")
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            rows.append(row)
            _print_row(row)
    for row in rows:
        row.update(
            device=name, n=n, v=v, dtype=args.dtype, copy_tbs=copy_tbs, peak_tbs=args.peak_tbs
        )
    return rows


def _print_row(row: dict[str, object]) -> None:
    if row.get("note") == "OOM":
        print(f"  {row['method']:<36} {row['mode']:<8} OOM")
        return
    print(
        f"  {row['method']:<36} {row['mode']:<8} {row['ms_median']:8.2f} ms "
        f"[{row['ms_p20']:.2f}, {row['ms_p80']:.2f}]  peak +{row['extra_peak_gb']:6.2f} GB  "
        f"floor {100 * float(row['floor_frac_nominal']):5.1f}% nominal "  # type: ignore[arg-type]
        f"{100 * float(row['floor_frac_copy']):5.1f}% copy"  # type: ignore[arg-type]
    )


def print_cuda_table(rows: list[dict[str, object]]) -> None:
    """Markdown table of the CUDA results (pasted into benchmarks/RESULTS.md)."""
    table: list[list[object]] = []
    for r in rows:
        if r.get("note") == "OOM":
            table.append([r["method"], r["mode"], "OOM", "OOM", "-"])
            continue
        table.append(
            [
                r["method"],
                r["mode"],
                f"{r['ms_median']:.2f} [{r['ms_p20']:.2f}, {r['ms_p80']:.2f}]",
                f"{r['extra_peak_gb']:.2f}",
                f"{100 * float(r['floor_frac_nominal']):.0f} / "  # type: ignore[arg-type]
                f"{100 * float(r['floor_frac_copy']):.0f}",  # type: ignore[arg-type]
            ]
        )
    print()
    columns = ["method", "mode", "median ms [p20, p80]", "extra peak GB"]
    print_table([*columns, "% of floor (nominal / copy)"], table, spaced_rule=True)


# ----------------------------------------------------------------------------- CPU


CPU_METHODS: dict[str, Method] = {
    "naive fp32 (log_softmax)": naive_fp32,
    "peer-style verl (lse - sum p*z)": verl_entropy,
    "peer-style TRL (chunked 128 rows)": trl_chunked_entropy,
    "e3core torch reference": e3_torch,
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _maxrss_bytes() -> int:
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib if sys.platform == "darwin" else kib * 1024


def cpu_child(method: str, mode: str, n: int, v: int, t: float) -> dict[str, float]:
    """Run one method once in this (fresh) process; report peak RSS above the input."""
    torch.manual_seed(0)
    x = torch.randn(n, v).mul_(3.0)  # in place: no second input-sized buffer, ever
    y = torch.randint(0, v, (n,))
    x.requires_grad_(mode == "fwd+bwd")
    base = max(_rss_bytes(), _maxrss_bytes())  # the input is resident (randn wrote it)
    fn = CPU_METHODS[method]
    if mode == "fwd":
        with torch.no_grad():
            lp, ent = fn(x, y, t)
    else:
        lp, ent = fn(x, y, t)
        (lp.sum() + ent.sum()).backward()
    peak = _maxrss_bytes()
    return {"extra_peak_bytes": float(peak - base), "input_bytes": float(x.numel() * 4)}


def run_cpu(args: argparse.Namespace) -> list[dict[str, object]]:
    """Each method in a fresh subprocess (so ru_maxrss is its own high-water mark)."""
    n, v = args.n, args.v
    chunk_rows = ref_mod.default_chunk_rows(v, torch.device("cpu"))
    chunk_bytes = 2 * chunk_rows * v * 4  # the reference's two fp32 buffers of one chunk
    input_bytes = n * v * 4
    print(f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}")
    print(
        f"N={n} V={v} fp32: input {input_bytes / 1e6:.0f} MB; reference chunk = {chunk_rows} "
        f"rows, 2 fp32 buffers = {chunk_bytes / 1e6:.1f} MB"
    )
    rows: list[dict[str, object]] = []
    for method in CPU_METHODS:
        for mode in ("fwd", "fwd+bwd"):
            cmd = [
                sys.executable,
                __file__,
                "--cpu-child",
                json.dumps({"method": method, "mode": mode, "n": n, "v": v, "t": args.temperature}),
            ]
            # Every buffer over 64 KiB gets its own mmap and goes back to the OS when freed, so
            # the RSS high-water mark tracks live tensors, not glibc's cached heap.
            env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
            res = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
            out = json.loads(res.stdout.strip().splitlines()[-1])
            extra = out["extra_peak_bytes"]
            # forward: input + chunk; forward+backward also holds the gradient (input-sized)
            budget = chunk_bytes + (input_bytes if mode == "fwd+bwd" else 0)
            row = {
                "device": "cpu",
                "method": method,
                "mode": mode,
                "n": n,
                "v": v,
                "input_mb": input_bytes / 1e6,
                "extra_peak_mb": extra / 1e6,
                "extra_over_input": extra / input_bytes,
                "chunk_mb": chunk_bytes / 1e6,
                "within_input_plus_chunk": extra <= budget * 1.05 + 8e6,
            }
            rows.append(row)
            print(
                f"  {method:<36} {mode:<8} peak = input + {extra / 1e6:8.1f} MB "
                f"({extra / input_bytes:5.2f} x input)"
            )
    table = [
        [
            r["method"],
            r["mode"],
            f"{float(r['extra_peak_mb']):.1f}",  # type: ignore[arg-type]
            f"{float(r['extra_over_input']):.2f}",  # type: ignore[arg-type]
            "yes" if r["within_input_plus_chunk"] else "no",
        ]
        for r in rows
    ]
    print()
    columns = ["method", "mode", "peak above the input (MB)", "x input"]
    print_table([*columns, "within input (+grad) + one chunk"], table, spaced_rule=True)
    return rows


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--n", type=int, default=None, help="tokens (default 32768 cuda, 512 cpu)")
    parser.add_argument("--v", type=int, default=151936, help="vocabulary size")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--peak-tbs", type=float, default=3.35, help="nominal HBM TB/s")
    parser.add_argument("--rep-ms", type=int, default=300, help="do_bench repetition time")
    parser.add_argument("--sweep", action="store_true", help="tune the Triton tiles first")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    parser.add_argument("--cpu-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cpu_child is not None:
        job = json.loads(args.cpu_child)
        print(json.dumps(cpu_child(job["method"], job["mode"], job["n"], job["v"], job["t"])))
        return
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    print(f"bench_entropy {stamp}: {' '.join(sys.argv[1:])}")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda needs a CUDA GPU; use --device cpu here")
        args.n = args.n or 32768
        rows = run_cuda(args)
        print_cuda_table(rows)
        print(f"wrote {write_csv(rows, args.out / 'bench_entropy_cuda.csv')}")
    else:
        args.n = args.n or 512
        rows = run_cpu(args)
        print(f"wrote {write_csv(rows, args.out / 'bench_entropy_cpu.csv')}")


if __name__ == "__main__":
    main()
