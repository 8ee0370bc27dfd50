"""mkdocs hook: the table of ``E3GRPOConfig``'s ``e3_`` fields, built from the class at build time.

A page that holds the line ``<!-- e3-config-fields -->`` gets it replaced by a markdown table
with one row per dataclass field of :class:`e3core.adapters.trl.config.E3GRPOConfig` whose name
starts with ``e3_``: name, type (the annotation as written), default and the field's
``metadata["help"]``. Nothing is written by hand, so a new field shows up on the next build
(``tests/test_docs.py`` checks that the built page names every field).

A page that holds ``<!-- e3-settings-fields -->`` gets the same table for every field of
:class:`e3core.E3Settings` (the one source the ``e3_`` fields are generated from; no TRL needed).

Registered in ``mkdocs.yml`` under ``hooks:``. Importing the config imports TRL, so the build
needs the ``trl`` extra (``pip install -e ".[trl,docs]"``); without it a page with the marker
fails the build rather than losing its table.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from mkdocs.exceptions import PluginError

MARKER = "<!-- e3-config-fields -->"
SETTINGS_MARKER = "<!-- e3-settings-fields -->"
PREFIX = "e3_"


def _code(text: str) -> str:
    """``text`` as an inline code span (pipes inside code spans need no escaping in tables).

    Args:
        text: The literal text.

    Returns:
        The code span, fenced with two backticks when ``text`` itself holds a backtick.
    """
    text = " ".join(text.split())
    if "`" in text:
        return f"`` {text} ``"
    return f"`{text}`"


def _prose(text: str) -> str:
    """Help text made safe for one table cell: one line, ``|`` and ``<`` escaped outside code.

    Args:
        text: The help text; it may contain inline code spans in backticks.

    Returns:
        The cell's markdown.
    """
    parts = " ".join(text.split()).split("`")
    for i in range(0, len(parts), 2):  # even parts lie outside code spans
        parts[i] = parts[i].replace("|", r"\|").replace("<", "&lt;")
    return "`".join(parts)


def _type_name(annotation: Any) -> str:
    """The field's type as a user reads it.

    Args:
        annotation: ``Field.type``: the annotation string (the config module uses postponed
            annotations) or a type object (a dataclass built at run time).

    Returns:
        For example ``int | None``.
    """
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type):
        return annotation.__qualname__
    return re.sub(r"\btyping\.", "", str(annotation))


def _default(field: dataclasses.Field) -> str:
    """The field's default as Python source: ``repr`` of the value or of the factory's result.

    Args:
        field: A dataclass field.

    Returns:
        The default, or ``(required)`` when the field has none.
    """
    if field.default is not dataclasses.MISSING:
        return _code(repr(field.default))
    if field.default_factory is not dataclasses.MISSING:
        return _code(repr(field.default_factory()))
    return "(required)"


def config_fields(cls: type, prefix: str = PREFIX) -> list[dataclasses.Field]:
    """The dataclass fields of ``cls`` whose names start with ``prefix``, in declaration order.

    Args:
        cls: A dataclass.
        prefix: Name prefix to keep.

    Returns:
        The fields.
    """
    return [f for f in dataclasses.fields(cls) if f.name.startswith(prefix)]


def fields_table(cls: type, prefix: str = PREFIX) -> str:
    """A markdown table of the fields of ``cls`` named ``prefix...``.

    Args:
        cls: A dataclass.
        prefix: Name prefix of the fields to list.

    Returns:
        The table: a header and one row per field (name, type, default, help).

    Raises:
        ValueError: no field of ``cls`` starts with ``prefix``.
    """
    fields = config_fields(cls, prefix)
    if not fields:
        raise ValueError(f"{cls.__qualname__} has no field starting with {prefix!r}")
    rows = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    for field in fields:
        help_text = _prose(str(field.metadata.get("help", "")))
        rows.append(
            f"| {_code(field.name)} | {_code(_type_name(field.type))} | {_default(field)} "
            f"| {help_text} |"
        )
    return "\n".join(rows)


def e3_config_table() -> str:
    """The table for ``E3GRPOConfig``.

    Returns:
        The markdown table.

    Raises:
        PluginError: the TRL adapter cannot be imported (TRL is not installed).
    """
    try:
        from e3core.adapters.trl.config import E3GRPOConfig
    except ImportError as exc:
        raise PluginError(
            f"{MARKER} needs e3core.adapters.trl.config, which failed to import ({exc}); "
            'install the TRL extra: pip install -e ".[trl,docs]"'
        ) from exc
    return fields_table(E3GRPOConfig)


def e3_settings_table() -> str:
    """The table for every field of ``E3Settings``.

    Returns:
        The markdown table.
    """
    from e3core.settings import E3Settings

    return fields_table(E3Settings, prefix="")


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """The ``on_page_markdown`` event: replace each marker of a page by the generated table.

    Args:
        markdown: The page's markdown source.
        **kwargs: The other event arguments (page, config, files), unused.

    Returns:
        The markdown with the table in place of the marker.
    """
    if SETTINGS_MARKER in markdown:
        markdown = markdown.replace(SETTINGS_MARKER, f"\n{e3_settings_table()}\n")
    if MARKER not in markdown:
        return markdown
    table = e3_config_table()
    return markdown.replace(MARKER, f"\n{table}\n")
