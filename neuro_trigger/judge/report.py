"""One self-contained HTML page that a person opens in a browser: a run's (or an evaluation's, or a
comparison's) verdict, figures, config and provenance.

Self-contained because the machines these runs live on are often offline: every figure is embedded as
a base64 PNG, the style sheet is inline, there are no scripts, and a Content-Security-Policy forbids
the browser to fetch anything at all. Every text that comes from a user (config values, descriptions,
paths, captions) is HTML-escaped.

`write_report` writes a page from a list of sections (`Table`, `Figures`, `KeyValues`, `Text`, `Code`);
`verdict_table` turns `metrics.judge` outputs into the table at the top of every report;
`run/run_report.py` builds the report of a training run's folder with these.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

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
_CSS = """
:root { color-scheme: light; }
body { font-family: "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; margin: 0; background: #f4f5f7;
       color: #1d2330; line-height: 1.45; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 20px 48px; }
h1 { font-size: 1.7em; margin: 0 0 4px; }
.generated { color: #5a6273; margin: 0 0 14px; font-size: 0.92em; }
nav { font-size: 0.9em; margin-bottom: 18px; display: flex; flex-wrap: wrap; gap: 4px 16px; }
nav a { color: #24508f; text-decoration: none; white-space: nowrap; }
nav a:hover { text-decoration: underline; }
section { background: #fff; border: 1px solid #dde1e8; border-radius: 6px; padding: 14px 18px 16px;
          margin: 0 0 18px; }
h2 { font-size: 1.25em; margin: 0 0 10px; border-bottom: 2px solid #e3e7ee; padding-bottom: 4px; }
table { border-collapse: collapse; font-size: 0.84em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d5dae3; padding: 3px 6px; text-align: right; }
td { white-space: nowrap; }
th.text, td.text { text-align: left; }
td.text { white-space: normal; min-width: 6em; }
th { background: #eef1f6; vertical-align: bottom; }
th.group { text-align: center; border-left: 2px solid #aab3c2; }
th.first, td.first { border-left: 2px solid #aab3c2; }
th.sub, th.first { font-weight: 500; text-align: right; }
thead tr:first-child th:first-child, td:first-child { text-align: left; font-weight: 600; }
tbody tr:nth-child(even) td { background: #f8f9fb; }
td.better, tbody tr:nth-child(even) td.better { background: #e3f4e1; font-weight: 700; }
.mark { color: #1b6e20; margin-left: 3px; }
.note { color: #4a5263; font-size: 0.88em; margin: 8px 0 0; }
.wide { overflow-x: auto; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 14px; }
figure { margin: 0; }
figure img { width: 100%; height: auto; border: 1px solid #e3e7ee; }
figcaption { font-size: 0.85em; color: #4a5263; text-align: center; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 3px 16px; margin: 0; font-size: 0.92em; }
dt { font-weight: 600; }
dd { margin: 0; word-break: break-all; }
pre { background: #f6f8fa; border: 1px solid #e3e7ee; padding: 10px; overflow-x: auto; font-size: 0.84em;
      margin: 0; }
p { margin: 0 0 8px; }
"""

# nothing may be fetched: no scripts, styles only inline, images only data: URIs
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


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


def _table_head(columns: list[str], text: set[int]) -> str:
    """One header row, or two where columns come in new/old pairs (the pair's name spanning both)."""
    groups = _column_groups(columns)
    if all(not subs for _, subs in groups):
        cells = (f'<th class="text">{_esc(c)}</th>' if j in text else f"<th>{_esc(c)}</th>"
                 for j, c in enumerate(columns))
        return "<tr>" + "".join(cells) + "</tr>"
    top = "".join(f'<th colspan="{len(subs)}" class="group">{_esc(name)}</th>' if subs
                  else f'<th rowspan="2">{_esc(name)}</th>' for name, subs in groups)
    sub = "".join(f'<th class="{"first" if k == 0 else "sub"}">{_esc(s)}</th>'
                  for _, subs in groups for k, s in enumerate(subs))
    return f"<tr>{top}</tr><tr>{sub}</tr>"


def _render_table(t: Table) -> str:
    firsts = set()  # the first column of each new/old pair: a rule on its left separates the pairs
    j = 0
    for _, subs in _column_groups(t.columns):
        if subs:
            firsts.add(j)
        j += max(1, len(subs))
    text_columns = _text_columns(t)
    head = _table_head(t.columns, text_columns)
    body = []
    for i, row in enumerate(t.rows):
        cells = []
        for j, value in enumerate(row):
            text = _esc(format_value(value))
            classes = " ".join(c for c, on in (("first", j in firsts), ("text", j in text_columns),
                                               ("better", (i, j) in t.better)) if on)
            attr = f' class="{classes}"' if classes else ""
            mark = f'<span class="mark" aria-label="better">{BETTER_MARK}</span>' if (i, j) in t.better else ""
            cells.append(f"<td{attr}>{text}{mark}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = f'<p class="note">{_esc(t.note)}</p>' if t.note else ""
    return (f'<div class="wide"><table><thead>{head}</thead><tbody>{"".join(body)}</tbody></table></div>'
            f"{note}")


def _render_figures(f: Figures) -> str:
    if not f.figures:
        return '<p class="note">no figures</p>'
    items = []
    for caption, figure in f.figures.items():
        data = base64.b64encode(png_bytes(figure)).decode("ascii")
        items.append(f'<figure><img src="data:image/png;base64,{data}" alt="{_esc(caption)}">'
                     f"<figcaption>{_esc(caption)}</figcaption></figure>")
    return '<div class="grid">' + "".join(items) + "</div>"


def _render_key_values(k: KeyValues) -> str:
    rows = "".join(f"<dt>{_esc(key)}</dt><dd>{_esc(format_value(value))}</dd>" for key, value in k.items.items())
    return f"<dl>{rows}</dl>"


def _render_text(t: Text) -> str:
    paragraphs = [p.strip() for p in t.text.split("\n\n") if p.strip()]
    return "".join(f"<p>{_esc(p)}</p>" for p in paragraphs)


def _render_code(c: Code) -> str:
    return f"<pre><code>{_esc(c.text)}</code></pre>"


_RENDERERS = {Table: _render_table, Figures: _render_figures, KeyValues: _render_key_values, Text: _render_text,
              Code: _render_code}


def render_report(title: str, sections: list[Section]) -> str:
    """The page as a string (see `write_report`)."""
    parts, links = [], []
    for i, section in enumerate(sections):
        render = _RENDERERS.get(type(section))
        if render is None:
            raise TypeError(f"not a report section: {type(section).__name__}")
        anchor = f"s{i}"
        links.append(f'<a href="#{anchor}">{_esc(section.title)}</a>')
        parts.append(f'<section id="{anchor}"><h2>{_esc(section.title)}</h2>{render(section)}</section>')
    generated = datetime.now().astimezone().isoformat(timespec="seconds")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n"
        f"<body><main><h1>{_esc(title)}</h1>"
        f'<p class="generated">report written {_esc(generated)} by neuro_trigger</p>'
        f"<nav>{''.join(links)}</nav>\n" + "\n".join(parts) + "\n</main></body></html>\n"
    )


def write_report(path: Path, title: str, sections: list[Section]) -> Path:
    """Write one self-contained HTML page (figures as base64 PNG, inline CSS, no scripts, nothing
    fetched) with `title` and the sections in order; atomically, so a reader never sees half a page."""
    page = render_report(title, sections).encode("utf-8")
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


# (column title, path into a NET dict, formatter, which is better: "low", "high" or "zero")
_PAIRS: list[tuple[str, tuple[str, ...], str]] = [
    ("z \u03c3 [cm]", ("z", "std"), "low"),
    ("z 68% half-width [cm]", ("z", "half_width_68"), "low"),
    ("z bias (mean) [cm]", ("z", "mean"), "zero"),
    ("efficiency [%]", ("trigger", "efficiency"), "high"),
    ("background rejection [%]", ("trigger", "rejection"), "high"),
]
_THETA_PAIR = ("\u03b8 \u03c3 [deg]", ("theta", "std"), "low")


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
    pairs = list(_PAIRS)
    if any(lookup(j, "new", "theta") is not None for j in judged.values()):
        pairs.append(_THETA_PAIR)
    columns = ["expert", "rows"]
    for name, _, _ in pairs:
        columns += [f"{name} new", f"{name} old"]
    columns.append("loss new / old")
    rows: list[list[Any]] = []
    better: set[tuple[int, int]] = set()
    cuts, without_old = set(), 0
    for i, (key, j) in enumerate(judged.items()):
        row: list[Any] = [expert_label(key), _count(j.get("rows"))]
        for _name, path, rule in pairs:
            new, old = as_number(lookup(j, "new", *path)), as_number(lookup(j, "old", *path))
            if path[0] == "trigger":
                row += [_percent(new, lookup(j, "new", "trigger", path[1] + "_err")),
                        _percent(old, lookup(j, "old", "trigger", path[1] + "_err"))]
            else:
                row += [_fixed(new), _fixed(old)]
            winner = _better(new, old, rule)
            if winner is not None:
                better.add((i, len(row) - (2 if winner == "new" else 1)))
        row.append(_fixed(lookup(j, "vs_old", "loss"), 3))
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


def __getattr__(name: str) -> Any:
    # write_run_report lived here until run/run_report.py took it; kept for existing notebooks and scripts
    if name == "write_run_report":
        from neuro_trigger.judge import run_report

        return run_report.write_run_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
