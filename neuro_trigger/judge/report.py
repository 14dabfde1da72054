"""One self-contained HTML page that a person opens in a browser: a run's (or an evaluation's, or a
comparison's) verdict, figures, config and provenance.

Self-contained because the machines these runs live on are often offline: every figure is embedded as
a base64 PNG, the style sheet is inline, there are no scripts, and a Content-Security-Policy forbids
the browser to fetch anything at all.

The markup is in Jinja2 templates (judge/templates/: the page, one macro per kind of section, the style
sheet) that escape every value put into them, so every text that comes from a user (config values,
descriptions, paths, captions) is HTML-escaped without a call at each place it goes in. This module
prepares what each template is given.

`write_report` writes a page from a list of sections (`Table`, `Figures`, `KeyValues`, `Text`, `Code`);
`verdict_table` turns `metrics.judge` outputs into the table at the top of every report;
`judge/run_report.py` builds the report of a training run's folder with these.
"""
from __future__ import annotations

import base64
import functools
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from matplotlib.figure import Figure

from neuro_trigger.judge.trigger import BACKGROUND_CM, IP_CM, TRIGGER_CUT_CM
from neuro_trigger.run.files import write_atomic

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BETTER_MARK = "\u2713"  # ✓, beside the bold value: the mark does not rely on colour
MISSING = "\u2013"  # –, for a value that could not be computed
REPORT_FILE = "report.html"
VERDICT_SPLITS = ("test", "val")  # the held-out split first
FIGURE_SPLITS = ("test",)  # the val split has its verdict table only: its figures would double the drawing time
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


def _column_groups(columns: list[str]) -> list[tuple[str, list[str]]]:
    """Columns as header groups: a pair "X new", "X old" becomes ("X", ["new", "old"]), any other column
    (name, [])."""
    groups: list[tuple[str, list[str]]] = []
    i = 0
    while i < len(columns):
        c = columns[i]
        if c.endswith(" new") and i + 1 < len(columns) and columns[i + 1] == c[:-4] + " old":
            groups.append((c[:-4], ["new", "old"]))
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


# ---------------------------------------------------------------------------------------------- the verdict
def lookup(d: Any, *keys: str) -> Any:
    """d[k1][k2]... or None where a level is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def as_number(value: Any) -> float:
    """A float, NaN for None (JSON's NaN) or anything not a number."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _fixed(value: Any, digits: int = 2) -> str:
    v = as_number(value)
    return MISSING if math.isnan(v) else f"{v:.{digits}f}"


def _percent(value: Any, error: Any) -> str:
    v, e = as_number(value), as_number(error)
    if math.isnan(v):
        return MISSING
    return f"{100 * v:.1f}" if math.isnan(e) else f"{100 * v:.1f} \u00b1 {100 * e:.1f}"


def _count(value: Any) -> str:
    v = as_number(value)
    return MISSING if math.isnan(v) else f"{int(v):,}"


def expert_label(key: str) -> str:
    return key.replace("_", " ")


@dataclass(frozen=True)
class Measure:
    """One number of `metrics.judge`'s output as every report shows it: its column title with the unit, where
    it sits (`path` into the dict of one network, or of the judge output for the loss ratio), its decimals
    (a fraction: in percent, 1 decimal, with its binomial error where known), and which value is the better
    one: "low", "high" or "zero" (nearer zero). The verdict table and a comparison's table both take their
    columns from here, so that a number reads the same in each."""

    title: str
    path: tuple[str, ...]
    better: str
    decimals: int = 2
    percent: bool = False

    def value(self, judged: Any) -> float:
        """The number in `judged` (a network's dict of judge()), NaN where missing."""
        return as_number(lookup(judged, *self.path))

    def text(self, judged: Any) -> str:
        """The number in `judged` as the reports write it ('\u2013' where missing)."""
        if self.percent:
            return _percent(self.value(judged), lookup(judged, *self.path[:-1], self.path[-1] + "_err"))
        return _fixed(self.value(judged), self.decimals)


MEASURES: dict[str, Measure] = {
    "z_std": Measure("z \u03c3 [cm]", ("z", "std"), "low"),
    "z_trimmed_std": Measure("z trimmed \u03c3 [cm]", ("z", "trimmed_std"), "low"),
    "z_half_width_68": Measure("z 68% half-width [cm]", ("z", "half_width_68"), "low"),
    "z_mean": Measure("z bias (mean) [cm]", ("z", "mean"), "zero"),
    "z_median": Measure("z median [cm]", ("z", "median"), "zero"),
    "theta_std": Measure("\u03b8 \u03c3 [deg]", ("theta", "std"), "low"),
    "theta_half_width_68": Measure("\u03b8 68% half-width [deg]", ("theta", "half_width_68"), "low"),
    "efficiency": Measure("efficiency [%]", ("trigger", "efficiency"), "high", percent=True),
    "rejection": Measure("background rejection [%]", ("trigger", "rejection"), "high", percent=True),
    "loss_ratio": Measure("loss new / old", ("vs_old", "loss"), "low", decimals=3),  # of the judge output
}
VERDICT_PAIRS = ("z_std", "z_half_width_68", "z_mean", "efficiency", "rejection")  # new beside old
THETA_PAIRS = ("theta_std",)  # where the networks give theta


def gives_theta(judged: Any) -> bool:
    """Whether the new network of a judge() output gives theta (out_size 2)."""
    return lookup(judged, "new", "theta") is not None


def _better(new: float, old: float, rule: str) -> str | None:
    """'new', 'old' or None (a tie, or a value missing)."""
    if math.isnan(new) or math.isnan(old):
        return None
    if rule == "zero":
        new, old = abs(new), abs(old)
    if new == old:
        return None
    lower_wins = rule in ("low", "zero")
    return "new" if (new < old) == lower_wins else "old"


def verdict_table(per_expert: dict[str, dict], overall: dict | None = None, title: str = "Verdict") -> Table:
    """The verdict of `metrics.judge` outputs: a row per expert (and "all experts" from `overall`) with
    z resolution new/old (std, 68% half-width), z bias, trigger efficiency and background rejection at
    the cut (with binomial errors), theta resolution where the networks give theta, and the loss against
    the old network's; the better of new and old marked in each pair (for a bias: the one nearer zero)."""
    judged = dict(per_expert)
    if overall is not None:
        judged["all experts"] = overall
    pairs = [MEASURES[key] for key in VERDICT_PAIRS]
    if any(gives_theta(j) for j in judged.values()):
        pairs += [MEASURES[key] for key in THETA_PAIRS]
    loss = MEASURES["loss_ratio"]
    columns = ["expert", "rows"]
    for m in pairs:
        columns += [f"{m.title} new", f"{m.title} old"]
    columns.append(loss.title)
    rows: list[list[Any]] = []
    better: set[tuple[int, int]] = set()
    cuts, without_old = set(), 0
    for i, (key, j) in enumerate(judged.items()):
        row: list[Any] = [expert_label(key), _count(j.get("rows"))]
        for m in pairs:
            new, old = lookup(j, "new"), lookup(j, "old")
            row += [m.text(new), m.text(old)]
            winner = _better(m.value(new), m.value(old), m.better)
            if winner is not None:
                better.add((i, len(row) - (2 if winner == "new" else 1)))
        row.append(loss.text(j))
        rows.append(row)
        if j.get("cut_cm") is not None:
            cuts.add(float(j["cut_cm"]))
        if key != "all experts":
            n = as_number(j.get("rows_without_old"))
            without_old += 0 if math.isnan(n) else int(n)
    cut = ", ".join(f"{c:g}" for c in sorted(cuts)) or f"{TRIGGER_CUT_CM:g}"
    any_j = next(iter(judged.values()), {})
    ip, background = any_j.get("ip_cm", IP_CM), any_j.get("background_cm", BACKGROUND_CM)
    note = (f"{BETTER_MARK} bold: the better of new and old. The trigger keeps a track when |z pred| < {cut} cm; "
            f"efficiency: kept tracks from the interaction point (|reco z| < {ip:g} cm), background rejection: "
            f"removed tracks with |reco z| > {background:g} cm (binomial errors). z residual = reco z \u2212 "
            f"predicted z. Old values and 'loss new / old' use the rows where both networks give an output")
    note += f" ({without_old:,} rows without an old output left out)." if without_old else "."
    return Table(title, columns, rows, better, note)

