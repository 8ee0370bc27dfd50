"""The documentation site (mkdocs.yml, docs/): API coverage, runnable examples, strict build.

1. Every name in ``e3core.__all__`` and ``e3core.kernels.__all__`` has a ``::: e3core...``
   entry in ``docs/api/*.md`` (and an anchor in the built site).
2. Every fenced ``python`` block in ``docs/**/*.md`` runs: a page's blocks in order, in one
   namespace, on the CPU. A block that cannot run here (it needs a GPU, or a framework that is
   not installed) is preceded by ``<!-- no-exec: reason -->``; those are counted and must stay
   few and explained. Any unmarked block that raises fails the test. The examples are tiny, so
   they run with one intra-op thread: on a shared 2-core machine OpenMP barriers otherwise
   stall every small torch op (see benchmarks/RESULTS.md, Core).
3. ``mkdocs build --strict`` succeeds (warnings are errors).
"""

import ast
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import e3core
import e3core.kernels
from e3core.settings import E3Settings

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
API = DOCS / "api"

FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    flags=re.M | re.S,
)
NO_EXEC = re.compile(r"<!--\s*no-exec:(?P<reason>[^<>]*?)-->\s*$")
DIRECTIVE = re.compile(r"^::: (?P<ident>[\w.]+)[ \t]*$", flags=re.M)


def python_blocks(page: Path) -> list[tuple[int, str, str | None]]:
    """``(line, code, no_exec_reason)`` of each fenced python block of ``page``, in order."""
    text = page.read_text()
    blocks = []
    for match in FENCE.finditer(text):
        lang = match["info"].strip().split(" ")[0].lower()
        if lang not in ("python", "py"):
            continue
        before = text[: match.start()].rstrip()
        marker = NO_EXEC.search(before)
        reason = " ".join(marker["reason"].split()) if marker else None
        body = textwrap.dedent(match["body"])
        blocks.append((text.count("\n", 0, match.start()) + 1, body, reason))
    return blocks


PAGES = sorted(p for p in DOCS.rglob("*.md") if python_blocks(p))


# ----------------------------------------------------------------------------- API reference
def api_identifiers() -> set[str]:
    """Objects rendered by a ``::: identifier`` directive in docs/api/*.md."""
    found: set[str] = set()
    for page in API.glob("*.md"):
        found.update(m["ident"] for m in DIRECTIVE.finditer(page.read_text()))
    return found


def public_names() -> list[str]:
    """Every public name: ``e3core.X`` for X in e3core.__all__, and the kernels' likewise."""
    return [f"e3core.{n}" for n in e3core.__all__] + [
        f"e3core.kernels.{n}" for n in e3core.kernels.__all__
    ]


def test_every_public_name_is_in_the_api_reference():
    rendered = api_identifiers()
    missing = [name for name in public_names() if name not in rendered]
    assert not missing, f"names in __all__ without a '::: name' entry in docs/api/: {missing}"


def test_api_reference_entries_exist():
    for ident in api_identifiers():
        module, _, attr = ident.rpartition(".")
        if ident == "e3core.kernels" or not module:
            continue
        if module.startswith("e3core.adapters."):
            continue  # importing them imports their framework; the strict build resolves them
        obj = __import__(module, fromlist=[attr])
        assert hasattr(obj, attr), f"docs/api names {ident}, which does not exist"


# ----------------------------------------------------------------------------- settings tables
def test_verl_guide_lists_every_setting():
    text = (DOCS / "guides" / "verl.md").read_text()
    missing = [
        f.name for f in E3Settings.__dataclass_fields__.values() if f"`{f.name}`" not in text
    ]
    assert not missing, f"E3Settings fields missing from docs/guides/verl.md: {missing}"


def test_trl_guide_lists_every_setting():
    source = (ROOT / "e3core" / "adapters" / "trl" / "config.py").read_text()
    fields = [
        node.target.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.target.id.startswith("e3_")
    ]
    text = (DOCS / "guides" / "trl.md").read_text()
    missing = [name for name in fields if f"`{name}`" not in text]
    assert fields and not missing, f"E3GRPOConfig fields missing from docs/guides/trl.md: {missing}"


# ----------------------------------------------------------------------------- examples
def test_examples_are_found_and_no_exec_blocks_are_few_and_explained():
    run = skipped = 0
    unexplained = []
    for page in PAGES:
        for line, _, reason in python_blocks(page):
            if reason is None:
                run += 1
            else:
                skipped += 1
                if len(reason) < 10:
                    unexplained.append(f"{page.relative_to(ROOT)}:{line}")
    assert run >= 10, f"only {run} runnable python blocks found in docs/"
    assert skipped <= run // 2, f"{skipped} no-exec blocks against {run} executed ones"
    assert not unexplained, f"no-exec blocks without a reason: {unexplained}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_page_examples_run(page, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    namespace: dict = {"__name__": f"docs.{page.stem}"}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for line, code, reason in python_blocks(page):
            where = f"{page.relative_to(ROOT)}:{line}"
            if reason is not None:
                compile(code, where, "exec")  # not run, but still valid Python
                continue
            try:
                exec(compile(code, where, "exec"), namespace)
            except Exception as exc:
                out = capsys.readouterr().out[-2000:]
                pytest.fail(
                    f"the python block at {where} raised {type(exc).__name__}: {exc}\n"
                    f"--- its output ---\n{out}"
                )
    finally:
        torch.set_num_threads(threads)


# ----------------------------------------------------------------------------- the build
def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr[-5000:]}"
    html = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    missing = [name for name in public_names() if f'id="{name}"' not in html]
    assert not missing, f"no anchor in the built API reference for: {missing}"
