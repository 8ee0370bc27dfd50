"""Kernel tests: run the Triton kernels through the interpreter when no CUDA device exists.

``TRITON_INTERPRET`` must be set before ``e3core.kernels.triton_entropy`` is first imported
(``triton.jit`` reads it when it decorates), so it is set here, at collection time.
"""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    os.environ["TRITON_INTERPRET"] = "1"


@pytest.fixture(params=["torch", "triton"])
def backend(request: pytest.FixtureRequest) -> str:
    """Both backends; Triton runs on CUDA when present, else in the interpreter."""
    return request.param
