"""TRL adapter tests: one torch thread per test process (the CI machine has 2 cores)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)
