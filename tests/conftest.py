"""Shared test settings: hypothesis without deadlines (CI machines are slow and shared).

The verl adapter's contract tests (``tests/adapters/verl``) need verl, whose pins conflict with
TRL's: they are collected only where verl is installed (CI runs them in their own environment,
``pip install -e ".[verl,test]" && python -m pytest -q tests/adapters/verl``); elsewhere the
header of the run says they were not collected. They are never skipped-as-passed.

Without CUDA the Triton kernels run in Triton's interpreter. ``TRITON_INTERPRET`` is set here,
before any test module is imported, because TRL (imported by the adapter tests, collected first)
imports triton and its jit decorators read the setting once.
"""

import importlib.util
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

collect_ignore: list[str] = []
_HAS_VERL = importlib.util.find_spec("verl") is not None
if not _HAS_VERL:
    collect_ignore.append("adapters/verl")


def _verl_line() -> str:
    if _HAS_VERL:
        return "e3core: verl installed, the verl adapter's contract tests were collected"
    return (
        "e3core: verl not installed, tests/adapters/verl NOT collected (they run in their own "
        'environment: pip install -e ".[verl,test]" && python -m pytest -q tests/adapters/verl)'
    )


def pytest_report_header(config):
    return _verl_line()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also at the end, where ``-q`` runs show it.
    terminalreporter.write_line(_verl_line())
