import subprocess
import sys

import e3core

FORBIDDEN = ("trl", "verl", "openrlhf", "ray", "vllm", "triton", "transformers", "deepspeed")


def _loaded_after(statement):
    code = f"import sys; {statement}; print(','.join(m for m in {FORBIDDEN!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_import_e3core_imports_no_framework_or_triton():
    assert _loaded_after("import e3core") == ""


def test_import_kernels_does_not_import_triton():
    assert _loaded_after("import e3core.kernels") == ""


def test_public_api_is_complete():
    for name in e3core.__all__:
        assert hasattr(e3core, name), name
    for name in ("E3Scheduler", "BetaDifficultyTracker", "group_advantages", "Budget"):
        assert name in e3core.__all__


def test_py_typed_is_shipped():
    from importlib import resources

    assert resources.files("e3core").joinpath("py.typed").is_file()
