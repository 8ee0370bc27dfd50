"""Shared test settings: hypothesis without deadlines (CI machines are slow and shared).

Without CUDA the Triton kernels run in Triton's interpreter. ``TRITON_INTERPRET`` is set here,
before any test module is imported, because TRL (imported by the adapter tests, collected first)
imports triton and its jit decorators read the setting once.
"""

import os

import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "e3core",
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("e3core")

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
