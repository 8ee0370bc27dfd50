"""TRL adapter tests: one torch thread per test process (the CI machine has 2 cores).

Also the demo's tokenizer, ``tok``, for the tests of ``e3core.adapters.trl.demo``.
"""

import pytest
import torch


@pytest.fixture(autouse=True)
def _threads() -> None:
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tok():
    """The demo's character tokenizer (built once per session; tests must not modify it)."""
    from e3core.adapters.trl.demo import build_tokenizer

    return build_tokenizer()
