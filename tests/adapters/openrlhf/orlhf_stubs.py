"""Import stubs for the GPU-only modules OpenRLHF 0.11 imports: ``vllm``, ``flash_attn_2_cuda``.

OpenRLHF imports ``vllm.SamplingParams`` at module level (``samples_generator.py``) and
flash-attn's CUDA extension through ``openrlhf.models`` (the CPU install skips building it).
These stubs stand in for exactly those names so the real OpenRLHF code imports on CPU; any call
into a stubbed engine or kernel raises. They never replace a real, importable package. Ray
workers load them through ``runtime_env={"worker_process_setup_hook": "orlhf_stubs.install"}``.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types
import uuid


class SamplingParams:
    """The ``vllm.SamplingParams`` fields OpenRLHF sets, as plain attributes (picklable)."""

    def __init__(self, **kwargs):
        self.n = 1
        self.temperature = 1.0
        self.top_p = 1.0
        self.top_k = -1
        self.max_tokens = 16
        self.min_tokens = 0
        self.logprobs = None
        self.__dict__.update(kwargs)


SamplingParams.__module__ = "vllm"


def _stub(name: str, package: bool = False, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, loader=None, is_package=package)
    if package:
        module.__path__ = []
    module.__dict__.update(attrs)
    module.__e3_stub__ = True
    return module


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _unavailable(name: str):
    def call(*args, **kwargs):
        raise RuntimeError(f"{name} is a CPU test stub; vLLM / CUDA kernels are not installed")

    return call


def install() -> None:
    """Put the stubs into ``sys.modules`` where the real packages are absent (idempotent)."""
    if _missing("flash_attn_2_cuda"):
        kernels = {k: _unavailable(k) for k in ("fwd", "bwd", "varlen_fwd", "varlen_bwd")}
        sys.modules["flash_attn_2_cuda"] = _stub("flash_attn_2_cuda", **kernels)
    if _missing("vllm"):
        names = {
            "vllm": _stub(
                "vllm",
                package=True,
                __version__="0.29.0",
                SamplingParams=SamplingParams,
                LLM=_unavailable("vllm.LLM"),
                AsyncEngineArgs=_unavailable("vllm.AsyncEngineArgs"),
                AsyncLLMEngine=_unavailable("vllm.AsyncLLMEngine"),
            ),
            "vllm.inputs": _stub("vllm.inputs", TokensPrompt=lambda **kw: dict(kw)),
            "vllm.utils": _stub("vllm.utils", random_uuid=lambda: uuid.uuid4().hex),
            "vllm.distributed": _stub("vllm.distributed", package=True),
            "vllm.distributed.utils": _stub(
                "vllm.distributed.utils", StatelessProcessGroup=_unavailable("spg")
            ),
            "vllm.distributed.device_communicators": _stub(
                "vllm.distributed.device_communicators", package=True
            ),
            "vllm.distributed.device_communicators.pynccl": _stub(
                "vllm.distributed.device_communicators.pynccl",
                PyNcclCommunicator=_unavailable("PyNcclCommunicator"),
            ),
        }
        for name, module in names.items():
            sys.modules[name] = module
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(names[parent], child, module)
