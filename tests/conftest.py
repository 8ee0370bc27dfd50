"""Shared test settings: hypothesis without deadlines (CI machines are slow and shared).

The verl and OpenRLHF adapters' contract tests (``tests/adapters/verl``,
``tests/adapters/openrlhf``) need their frameworks, whose pins conflict with TRL's and each
other's: they are collected only where the framework is installed (CI runs each in its own
environment, e.g. ``pip install -e ".[verl,test]" && python -m pytest -q tests/adapters/verl``);
elsewhere the run says, at its start and end, that they were not collected. They are never
skipped-as-passed.

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
_FRAMEWORKS = {"verl": "verl", "openrlhf": "openrlhf"}  # test folder -> package
_PRESENT = {d: importlib.util.find_spec(p) is not None for d, p in _FRAMEWORKS.items()}
for _folder, _present in _PRESENT.items():
    if not _present:
        collect_ignore.append(f"adapters/{_folder}")


def _framework_lines() -> list[str]:
    lines = []
    for folder, present in _PRESENT.items():
        if present:
            lines.append(f"e3core: {folder} installed, tests/adapters/{folder} collected")
        else:
            lines.append(
                f"e3core: {folder} not installed, tests/adapters/{folder} NOT collected (they run "
                f'in their own environment: pip install -e ".[{folder},test]" && '
                f"python -m pytest -q tests/adapters/{folder})"
            )
    return lines


def pytest_report_header(config):
    return _framework_lines()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also at the end, where ``-q`` runs show it.
    for line in _framework_lines():
        terminalreporter.write_line(line)
