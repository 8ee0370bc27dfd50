"""The README's Python examples run as written."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index, capsys):
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {})
    assert capsys.readouterr().out.strip()


def test_readme_test_command_is_what_ci_runs():
    ci = (README.parent / ".ci" / "run").read_text()
    assert "python -m pytest -q" in README.read_text()
    assert "python -m pytest -q" in ci


MAIN_JOB = 'pip install torch==2.13.0 && pip install -e ".[trl]" && python -m e3core.adapters.trl'


def test_readme_main_job_is_what_ci_runs_in_a_fresh_environment():
    # The front door: CI installs exactly the README's main-job line in its own fresh venv and
    # runs the demo (shortened) and --help with it.
    ci = (README.parent / ".ci" / "run").read_text()
    assert MAIN_JOB in README.read_text()
    install, command = MAIN_JOB.rsplit(" && ", 1)
    front = ci[ci.index("== front door") : ci.index("== verl adapter")]
    assert f"\n{install}\n" in front
    assert f"\n{command} --help" in front and f"\n{command} --max_steps" in front


def test_readme_test_install_is_what_ci_installs():
    extras = re.search(
        r'pip install -e "\.\[([a-z,]+)\]" && python -m pytest -q', README.read_text()
    )
    assert extras is not None
    ci = (README.parent / ".ci" / "run").read_text()
    assert f'python -m pip install -q -e ".[{extras.group(1)}]"' in ci
