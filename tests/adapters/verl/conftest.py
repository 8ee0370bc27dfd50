"""Fixtures for the verl adapter's contract tests (real verl 0.9.1 code, GPU-only parts stubbed).

verl cannot train on CPU (GPU resource pools, CUDA engines, vLLM/SGLang rollout), so these tests
drive the real verl code around E3's hooks: the plugin loader, the advantage registry and
``compute_advantage`` on ``DataProto``, ``AgentLoopWorkerTQ``'s prompt path with the model call
and the transfer-queue put stubbed, and the V1 trainer built from verl's own generated config.
They run in their own environment (``pip install -e ".[verl,test]"``): verl pins a transformers
release that conflicts with TRL's.
"""

from __future__ import annotations

import pytest
from verl_fixtures import build_trainer


@pytest.fixture
def make_trainer():
    """:func:`build_trainer`, as a fixture."""
    return build_trainer
