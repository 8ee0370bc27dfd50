"""Griffe extension: render the package's reStructuredText markup in docstrings as Markdown.

e3core's Google-style docstrings write maths and cross-references the Sphinx way
(``:math:`x```, ``.. math::`` blocks, ``:class:`Name```). mkdocstrings renders Markdown, so this
extension rewrites each docstring once the package is loaded, without touching the source:

* ``:math:`x``` becomes ``$x$`` and a ``.. math::`` block becomes a ``$$ ... $$`` block, which
  ``pymdownx.arithmatex`` hands to MathJax;
* ``:class:``, ``:func:``, ``:meth:``, ``:mod:``, ``:attr:``, ``:data:``, ``:obj:`` and
  ``:exc:`` roles become code spans wrapped in an *optional* autorefs link: a link where the
  target is rendered in the API reference, plain code elsewhere (no broken-link warning).

Configured in ``mkdocs.yml`` under the mkdocstrings Python handler's ``extensions``.
"""

from __future__ import annotations

import html
import re
from typing import Any

from griffe import Extension, Object

_MATH_ROLE = re.compile(r":math:`(?P<body>[^`]+)`")
_REF_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc):`(?P<body>[^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. math::[ \t]*(?P<rest>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _math_blocks(text: str) -> str:
    """Turn every ``.. math::`` directive (with its indented body) into a ``$$`` block."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        base = match["indent"]
        body = [match["rest"]] if match["rest"].strip() else []
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > len(base)):
            body.append(lines[i])
            i += 1
        while body and not body[-1].strip():
            body.pop()
        while body and not body[0].strip():
            body.pop(0)
        if out and out[-1].strip():
            out.append("")
        out.append(f"{base}$$")
        out.extend(f"{base}{line.strip()}" for line in body)
        out.append(f"{base}$$")
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


def _resolve(obj: Object, name: str) -> str | None:
    """Canonical path of ``name`` as seen from ``obj`` (its scopes, then the package root)."""
    module = obj.module
    if name.startswith("."):
        package = module.path if module.is_package else module.path.rsplit(".", 1)[0]
        candidates = [package + name]
    else:
        candidates = []
        scope: Any = obj
        while scope is not None:
            candidates.append(f"{scope.path}.{name}")
            scope = scope.parent
        root = obj.package.path
        candidates += [name, f"{root}.{name}"]
    collection = obj.package.modules_collection
    for path in candidates:
        try:
            found = collection.get_member(path)
            return found.canonical_path
        except Exception:  # griffe raises several kinds of error for a missing member
            continue
    return None


def _rewrite(obj: Object, text: str) -> str:
    text = _math_blocks(text)
    text = _MATH_ROLE.sub(lambda m: f"${m['body']}$", text)

    def ref(match: re.Match[str]) -> str:
        raw = re.sub(r"\s+", "", match["body"])
        short = raw.startswith("~")
        name = raw.lstrip("~")
        shown = name.rsplit(".", 1)[-1] if short else name.lstrip(".")
        target = _resolve(obj, name) or name.lstrip(".")
        return (
            f'<autoref identifier="{html.escape(target)}" optional>'
            f"<code>{html.escape(shown)}</code></autoref>"
        )

    # Roles may wrap over a line break inside the backticks (``:meth:`~A.\n    b```).
    return _REF_ROLE.sub(ref, re.sub(r"(:[a-z]+:`[^`\n]*)\n\s*([^`]*`)", r"\1\2", text))


def _walk(obj: Object, seen: set[str]) -> None:
    if obj.path in seen:
        return
    seen.add(obj.path)
    if obj.docstring is not None:
        obj.docstring.value = _rewrite(obj, obj.docstring.value)
    for member in obj.members.values():
        if not member.is_alias:
            _walk(member, seen)


class RstToMarkdown(Extension):
    """Rewrite Sphinx-style maths and cross-reference roles once a package is loaded."""

    def on_package(self, *, pkg: Object, **kwargs: Any) -> None:
        """Rewrite every docstring of the package ``pkg``."""
        _walk(pkg, set())
