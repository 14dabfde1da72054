"""The self-contained HTML page itself: its sections (`Table`, `Figures`, `KeyValues`, `Text`, `Code`) and how they
are drawn (`render_report`, `write_report`). What a page says (the verdict table, the run's, an evaluation's
or a comparison's sections) is prepared in `judge/report.py` and the modules that build on it.

Self-contained because the machines these runs live on are often offline: every figure is embedded as
a base64 PNG, the style sheet is inline, there are no scripts, and a Content-Security-Policy forbids
the browser to fetch anything at all.

The markup is in Jinja2 templates (judge/templates/: the page, one macro per kind of section, the style
sheet) that escape every value put into them, so every text that comes from a user (config values,
descriptions, paths, captions) is HTML-escaped without a call at each place it goes in. This module
prepares what each template is given.
"""
from __future__ import annotations

import base64
import functools
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.figure import Figure

from neuro_trigger.run.files import write_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BETTER_MARK = "\u2713"  # ✓, beside the bold value: the mark does not rely on colour
MISSING = "\u2013"  # –, for a value that could not be computed
FIGURE_DPI = 90  # 576 x 432 px: sharp in the page's two columns, and 20% fewer bytes than 100 dpi
TEMPLATES = "templates"  # judge/templates/: the page, its sections and its style sheet
PAGE_TEMPLATE = "report.html"


# ---------------------------------------------------------------------------------------------- sections
@dataclass
class Table:
    """A table; `better` holds the (row, column) cells to mark as the better value (bold and a mark)."""

    title: str
    columns: list[str]
    rows: list[list[Any]]
    better: set[tuple[int, int]] = field(default_factory=set)
    note: str = ""


@dataclass
class Figures:
    """Figures by caption: matplotlib Figures (rendered to PNG here) or PNG bytes."""

    title: str
    figures: dict[str, Figure | bytes]


@dataclass
class KeyValues:
    """Named values (a dict or list value is shown as compact JSON)."""

    title: str
    items: dict[str, Any]


@dataclass
class Text:
    """Plain text; blank lines separate paragraphs."""

    title: str
    text: str


@dataclass
class Code:
    """Preformatted text kept as it is: a config as JSON, a config diff, a command."""

    title: str
    text: str


Section = Table | Figures | KeyValues | Text | Code


# ---------------------------------------------------------------------------------------------- rendering
@functools.cache
def _templates() -> jinja2.Environment:
    """The page's templates (judge/templates/), every value put into them HTML-escaped: an unescaped value
    would have to be marked so in a template, where it shows."""
    loader = jinja2.PackageLoader("neuro_trigger.judge", TEMPLATES, encoding="utf-8")
    return jinja2.Environment(loader=loader, autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def format_value(value: Any) -> str:
    """A table cell or key value as text: 4 significant digits for floats, '–' for NaN and None, compact
    JSON for dicts and lists."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float | np.floating):
        return MISSING if not math.isfinite(value) else f"{value:.4g}"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, default=str)
    return str(value)


def png_bytes(figure: Figure | bytes) -> bytes:
    """PNG bytes of a matplotlib Figure (through plots.figure_to_png) or of bytes that already are a PNG."""
    if isinstance(figure, bytes | bytearray):
        if not bytes(figure[:8]) == PNG_SIGNATURE:
            raise ValueError("figure bytes are not a PNG")
        return bytes(figure)
    from neuro_trigger.judge.figure_files import figure_to_png

    return figure_to_png(figure, dpi=FIGURE_DPI)


_PAIRS = (("new", "old"), ("float", "hardware"))  # columns "X a", "X b" drawn under one heading X


def _column_groups(columns: list[str]) -> list[tuple[str, list[str]]]:
    """Columns as header groups: a pair "X new", "X old" becomes ("X", ["new", "old"]), a pair "X float",
    "X hardware" ("X", ["float", "hardware"]), any other column (name, [])."""
    groups: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(columns):
        c = columns[i]
        subs = next((pair for pair in _PAIRS if c.endswith(f" {pair[0]}")
                     and columns[i + 1:i + 2] == [f"{c.removesuffix(pair[0])}{pair[1]}"]), None)
        if subs is not None:
            groups.append((c.removesuffix(f" {subs[0]}"), list(subs)))
            i += 2
        else:
            groups.append((c, []))
            i += 1
    return groups


_NUMERIC_TEXT = re.compile(r"^[\s\d.,:+\-eE\u00b1\u2212%" + MISSING + "]*$")


def _text_columns(t: Table) -> set[int]:
    """Columns holding words (paths, hashes, names): left-aligned and wrapped, unlike numbers."""
    return {j for j in range(len(t.columns))
            if any(isinstance(row[j], str) and not _NUMERIC_TEXT.match(row[j]) for row in t.rows if j < len(row))}


@dataclass
class _Cell:
    text: str
    classes: str
    better: bool


def _table_view(t: Table) -> dict[str, Any]:
    """What sections.html's table needs: one header row, or two where columns come in new/old pairs (the
    pair's name spanning both, a rule on the left of each pair), and each cell's text and classes."""
    groups = _column_groups(t.columns)
    firsts, j = set(), 0
    for _, subs in groups:
        if subs:
            firsts.add(j)
        j += max(1, len(subs))
    text_columns = _text_columns(t)
    rows = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, value in enumerate(row):
            classes = " ".join(c for c, on in (("first", j in firsts), ("text", j in text_columns),
                                               ("better", (i, j) in t.better)) if on)
            cells.append(_Cell(format_value(value), classes, (i, j) in t.better))
        rows.append(cells)
    return {"columns": t.columns, "groups": groups, "paired": any(subs for _, subs in groups),
            "text_columns": text_columns, "rows": rows, "note": t.note, "mark": BETTER_MARK}


def _figures_view(f: Figures) -> dict[str, Any]:
    return {"figures": [(caption, "data:image/png;base64," + base64.b64encode(png_bytes(figure)).decode("ascii"))
                        for caption, figure in f.figures.items()]}


def _key_values_view(k: KeyValues) -> dict[str, Any]:
    return {"entries": [(key, format_value(value)) for key, value in k.items.items()]}


def _text_view(t: Text) -> dict[str, Any]:
    return {"paragraphs": [p.strip() for p in t.text.split("\n\n") if p.strip()]}


def _code_view(c: Code) -> dict[str, Any]:
    return {"text": c.text}


# each section type: the macro of sections.html that draws it, and what that macro is given
_VIEWS = {Table: ("table", _table_view), Figures: ("figures", _figures_view),
          KeyValues: ("key_values", _key_values_view), Text: ("text", _text_view), Code: ("code", _code_view)}


def render_report(title: str, sections: list[Section]) -> str:
    """The page as a string (see `write_report`)."""
    drawn = []
    for i, section in enumerate(sections):
        if type(section) not in _VIEWS:
            raise TypeError(f"not a report section: {type(section).__name__}")
        kind, view = _VIEWS[type(section)]
        drawn.append({"anchor": f"s{i}", "title": section.title, "kind": kind, "view": view(section)})
    generated = datetime.now().astimezone().isoformat(timespec="seconds")
    return _templates().get_template(PAGE_TEMPLATE).render(title=title, generated=generated, sections=drawn)


def write_report(path: Path, title: str, sections: list[Section]) -> Path:
    """Write one self-contained HTML page (figures as base64 PNG, inline CSS, no scripts, nothing
    fetched) with `title` and the sections in order; atomically, so a reader never sees half a page."""
    # UTF-8 (the page says so); a path Python could not decode in the locale (lone surrogates) goes out as its bytes
    page = render_report(title, sections).encode("utf-8", errors="surrogateescape")
    path = Path(path)
    write_atomic(path, lambda f: f.write(page))
    return path
