"""The documentation site (mkdocs.yml, docs/): API coverage, runnable examples, strict build.

1. Every name in ``e3core.__all__`` and ``e3core.kernels.__all__`` has a ``::: e3core...``
   entry in ``docs/api/*.md`` (and an anchor in the built site).
2. Every fenced ``python`` block in ``docs/**/*.md`` runs: a page's blocks in order, in one
   namespace, on the CPU. A block that cannot run here (it needs a GPU, or a framework that is
   not installed) is preceded by ``<!-- no-exec: reason -->``; those are counted and must stay
   few and explained. Any unmarked block that raises fails the test. The examples are tiny, so
   they run with one intra-op thread: on a shared 2-core machine OpenMP barriers otherwise
   stall every small torch op (see benchmarks/RESULTS.md, Core).
3. ``mkdocs build --strict`` succeeds (warnings are errors), and the TRL adapter's API page
   lists every ``e3_`` field of ``E3GRPOConfig`` (a table the ``docs/scripts/config_fields.py``
   hook builds from the dataclass).
"""

import dataclasses
import importlib.util
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


def e3_config_field_names() -> list[str]:
    """Names of ``E3GRPOConfig``'s ``e3_`` dataclass fields (TRL is in the docs' environment)."""
    from e3core.adapters.trl.config import E3GRPOConfig

    return [f.name for f in dataclasses.fields(E3GRPOConfig) if f.name.startswith("e3_")]


def load_config_fields_hook():
    """The mkdocs hook ``docs/scripts/config_fields.py``, imported as a module."""
    path = DOCS / "scripts" / "config_fields.py"
    spec = importlib.util.spec_from_file_location("docs_config_fields", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_trl_guide_lists_every_setting():
    fields = e3_config_field_names()
    text = (DOCS / "guides" / "trl.md").read_text()
    missing = [name for name in fields if f"`{name}`" not in text]
    assert fields and not missing, f"E3GRPOConfig fields missing from docs/guides/trl.md: {missing}"


def test_config_fields_table_rows_and_escaping():
    hook = load_config_fields_hook()

    @dataclasses.dataclass
    class Demo:
        e3_plain: int = dataclasses.field(default=2, metadata={"help": "Two | three <four>."})
        e3_union: "int | None" = None
        e3_listed: list = dataclasses.field(default_factory=lambda: [1, 2])
        other: int = 0

    table = hook.fields_table(Demo).splitlines()
    assert table[0] == "| Field | Type | Default | Description |"
    assert table[2] == r"| `e3_plain` | `int` | `2` | Two \| three &lt;four>. |"
    assert table[3] == "| `e3_union` | `int | None` | `None` |  |"
    assert table[4] == "| `e3_listed` | `list` | `[1, 2]` |  |"
    assert len(table) == 5, "only e3_ fields are listed"
    page = hook.on_page_markdown(f"intro\n\n{hook.MARKER}\n\nafter\n")
    assert hook.MARKER not in page


def test_trl_api_page_has_the_fields_marker():
    hook = load_config_fields_hook()
    assert hook.MARKER in (API / "trl.md").read_text()


def test_scheduler_api_page_tables_every_setting():
    hook = load_config_fields_hook()
    assert hook.SETTINGS_MARKER in (API / "scheduler.md").read_text()
    table = hook.e3_settings_table()
    for field in dataclasses.fields(E3Settings):
        assert f"| `{field.name}` |" in table, field.name
        assert hook._prose(E3Settings.help(field.name)) in table, field.name


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
@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built by ``mkdocs build --strict`` (once for this module's tests)."""
    site = tmp_path_factory.mktemp("docs") / "site"
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
    return site


def test_mkdocs_build_strict(site):
    html = "".join(p.read_text() for p in (site / "api").rglob("index.html"))
    missing = [name for name in public_names() if f'id="{name}"' not in html]
    assert not missing, f"no anchor in the built API reference for: {missing}"


def test_trl_api_page_lists_every_e3_field(site):
    fields = e3_config_field_names()
    html = (site / "api" / "trl" / "index.html").read_text()
    table = html[html.find('id="the-e3_-fields"') :]
    missing = [name for name in fields if f"<td><code>{name}</code></td>" not in table]
    assert fields and not missing, f"E3GRPOConfig fields missing from api/trl/index.html: {missing}"


EXTERNAL_ASSET = re.compile(
    r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=[\"'](?:https?:)?//[^\"']*", flags=re.I
)


def test_built_site_loads_nothing_from_the_network(site):
    """Scripts, styles, fonts and images all come from the site itself (the docs read offline).

    Links to other sites (``<a href>``) are fine. ``docs/scripts/check_site.py`` checks the same
    in a browser, where requests made by scripts are seen too.
    """
    found = {}
    for page in site.rglob("*.html"):
        hits = EXTERNAL_ASSET.findall(page.read_text())
        if hits:
            found[str(page.relative_to(site))] = hits[:3]
    assert not found, f"pages that load assets from the network: {found}"
