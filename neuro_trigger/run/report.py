"""One self-contained HTML page that a person opens in a browser: a run's (or an evaluation's, or a
comparison's) verdict, figures, config and provenance.

Self-contained because the machines these runs live on are often offline: every figure is embedded as
a base64 PNG, the style sheet is inline, there are no scripts, and a Content-Security-Policy forbids
the browser to fetch anything at all. Every text that comes from a user (config values, descriptions,
paths, captions) is HTML-escaped.

`write_report` writes a page from a list of sections (`Table`, `Figures`, `KeyValues`, `Text`, `Code`);
`verdict_table` turns `metrics.judge` outputs into the table at the top of every report;
`write_run_report` builds the report of a training run's folder and never fails the run.
"""
from __future__ import annotations

import base64
import html
import json
import logging
import math
import re
import shlex
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from neuro_trigger.run.files import write_atomic
from neuro_trigger.run.metrics import BACKGROUND_CM, IP_CM, TRIGGER_CUT_CM

log = logging.getLogger(__name__)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BETTER_MARK = "\u2713"  # ✓, beside the bold value: the mark does not rely on colour
MISSING = "\u2013"  # –, for a value that could not be computed
REPORT_FILE = "report.html"
VERDICT_SPLITS = ("test", "val")  # the held-out split first
FIGURE_SPLITS = ("test",)  # the val split has its verdict table only: its figures would double the drawing time
REPORT_FIGURE_DIR = "report"  # expert_N/plots/<split>/report/: figures saved for report.html
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
    from neuro_trigger.run.plots import figure_to_png

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
def _get(d: Any, *keys: str) -> Any:
    """d[k1][k2]... or None where a level is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _num(value: Any) -> float:
    """A float, NaN for None (JSON's NaN) or anything not a number."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _fixed(value: Any, digits: int = 2) -> str:
    v = _num(value)
    return MISSING if math.isnan(v) else f"{v:.{digits}f}"


def _percent(value: Any, error: Any) -> str:
    v, e = _num(value), _num(error)
    if math.isnan(v):
        return MISSING
    return f"{100 * v:.1f}" if math.isnan(e) else f"{100 * v:.1f} \u00b1 {100 * e:.1f}"


def _count(value: Any) -> str:
    v = _num(value)
    return MISSING if math.isnan(v) else f"{int(v):,}"


def _label(key: str) -> str:
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
    if any(_get(j, "new", "theta") is not None for j in judged.values()):
        pairs.append(_THETA_PAIR)
    columns = ["expert", "rows"]
    for name, _, _ in pairs:
        columns += [f"{name} new", f"{name} old"]
    columns.append("loss new / old")
    rows: list[list[Any]] = []
    better: set[tuple[int, int]] = set()
    cuts, without_old = set(), 0
    for i, (key, j) in enumerate(judged.items()):
        row: list[Any] = [_label(key), _count(j.get("rows"))]
        for _name, path, rule in pairs:
            new, old = _num(_get(j, "new", *path)), _num(_get(j, "old", *path))
            if path[0] == "trigger":
                row += [_percent(new, _get(j, "new", "trigger", path[1] + "_err")),
                        _percent(old, _get(j, "old", "trigger", path[1] + "_err"))]
            else:
                row += [_fixed(new), _fixed(old)]
            winner = _better(new, old, rule)
            if winner is not None:
                better.add((i, len(row) - (2 if winner == "new" else 1)))
        row.append(_fixed(_get(j, "vs_old", "loss"), 3))
        rows.append(row)
        if j.get("cut_cm") is not None:
            cuts.add(float(j["cut_cm"]))
        if key != "all experts":
            n = _num(j.get("rows_without_old"))
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


# ---------------------------------------------------------------------------------------------- a run's report
def write_run_report(folder: Path, stores: dict | None = None) -> Path | None:
    """Write `<folder>/report.html` for a finished or partly finished training run: the verdict per
    expert, the new-vs-old figures per expert on the val and test splits, the config, the data files
    with hashes, git id, library versions and how to open TensorBoard. `stores` (split -> ColumnStore,
    as the run loaded them) saves reading the data again. Never fails a run: on any error it logs a
    warning and returns None."""
    try:
        return _write_run_report(Path(folder), stores)
    except Exception as error:  # noqa: BLE001 - a report must never fail the run it describes
        log.warning("report.html not written for %s: %s: %s", folder, type(error).__name__, error)
        return None


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _judged(folder: Path, summary: dict, split: str, key: str) -> dict | None:
    """An expert's judge output on a split: from summary.json, else from its result_<split>.json."""
    found = _get(summary, "metrics", split, "experts", key, "trigger")
    if found is None:
        path = folder / key / f"result_{split}.json"
        if path.is_file():
            found = _get(_read_json(path), "trigger")
    return found if isinstance(found, dict) else None


def _verdict_sections(folder: Path, summary: dict, done: list[str]) -> list[Section]:
    sections: list[Section] = []
    metrics = summary.get("metrics") or {}
    for split in (s for s in VERDICT_SPLITS if s in metrics):
        per_expert = {key: j for key in done if (j := _judged(folder, summary, split, key)) is not None}
        if not per_expert:
            continue
        overall = _get(metrics, split, "trigger_all")
        sections.append(verdict_table(per_expert, overall if isinstance(overall, dict) else None,
                                      title=f"Verdict: new vs old network, {split} split"))
    if not sections:
        sections.append(Text("Verdict", "No trigger metrics in summary.json or the experts' result files "
                                        "(no expert finished, or the run was made before they were computed)."))
    return sections


def _expert_table(summary: dict, resolved: dict) -> Table:
    rows = []
    for key, config in resolved.get("experts", {}).items():
        state = _get(summary, "experts", key) or {}
        rows.append([_label(key), state.get("status", "unknown"), state.get("epochs_done"), config.get("epochs"),
                     _num(state.get("best_val_loss")), state.get("started"), state.get("ended"),
                     state.get("error", "")])
    return Table("Experts", ["expert", "status", "epochs done", "max epochs", "best val loss", "started", "ended",
                             "error"], rows)


def _config_sections(resolved: dict) -> list[Section]:
    """config.json as two blocks: everything but the per-expert configs, then per expert only the keys that
    differ from the global config (the rest is the global config's, repeated in config.json)."""
    general = {k: v for k, v in resolved.items() if k != "experts"}
    glob = resolved.get("global", {})
    differ = {}
    for key, config in (resolved.get("experts") or {}).items():
        own = {k: v for k, v in config.items() if k != "expert" and glob.get(k, object()) != v}
        differ[key] = own
    per_expert = (json.dumps(differ, indent=2, default=str) if any(differ.values())
                  else "every expert uses the global config")
    return [Code("Config (config.json)", json.dumps(general, indent=2, default=str)),
            Code("Config per expert: the keys that differ from the global config", per_expert)]


def _data_table(summary: dict) -> Table:
    rows = []
    for split, sources in (summary.get("data") or {}).items():
        for s in sources or []:
            rows.append([split, s.get("path"), s.get("rows"), s.get("sha256")])
    return Table("Data files", ["split", "file", "rows", "sha256"], rows,
                 note="Content hashes (sha256) of the files this run read, as in summary.json.")


def _figure_sections(folder: Path, resolved: dict, summary: dict, done: list[str],
                     stores: dict | None) -> list[Section]:
    """Overlaid new-vs-old figures per finished expert on the FIGURE_SPLITS: those its plot job saved
    (`save_expert_figures`) while they are still of its predictions, else drawn here."""
    sections: list[Section] = []
    for split in FIGURE_SPLITS:
        recorded = [s.get("sha256") for s in _get(summary, "data", split) or []]
        for key in done:
            found = _saved_expert_figures(folder / key, split, recorded)
            if found is None:
                if stores is None:
                    from neuro_trigger.data.selection import load_data

                    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
                store = stores.get(split)
                if store is None:
                    break
                if recorded and recorded != [s.get("sha256") for s in store.sources]:
                    sections.append(Text(f"Figures, {split} split", f"Not drawn: the {split} data files changed "
                                                                    "since the run (their sha256 differ from "
                                                                    "summary.json)."))
                    break
                found = expert_figures(folder / key, resolved["experts"][key], store, split, summary)
            if found is not None:
                sections.append(Figures(*found))
    return sections


def expert_figures(expert_dir: Path, config: dict, store, split: str,
                   summary: dict | None = None) -> tuple[str, dict[str, bytes]] | None:
    """The report's figures of one finished expert on one split, drawn from its saved predictions on the rows
    it is judged on: (section title, PNG bytes by caption); None without predictions."""
    from neuro_trigger.data.filters import parse_filter
    from neuro_trigger.data.selection import expert_rows
    from neuro_trigger.run.artifacts import is_identity_filter
    from neuro_trigger.run.plots import overlay_figures

    path = expert_dir / f"prediction_{split}.npz"
    if not path.is_file():
        return None
    out = int(config["out_size"])
    with np.load(path, allow_pickle=False) as part:
        rows, pred = part["rows"], part["pred"]
    if rows.size and int(rows.max()) >= len(store):
        raise ValueError(f"{path}: rows beyond the {split} split's {len(store)} rows")
    if not is_identity_filter(parse_filter(config["filter"])):  # the rows judged: the filter's
        keep = np.isin(rows, expert_rows(store, config))
        rows, pred = rows[keep], pred[keep]
    cut = _num(_get(_judged(expert_dir.parent, summary or {}, split, expert_dir.name) or {}, "cut_cm"))
    what = f"expert {config.get('expert', expert_dir.name)}, {split} split"
    # the full y gives reco theta for the figures by theta even when the network gives z only
    figs = overlay_figures(store.y[rows], {"new": pred[:, :out]}, store.y_old[rows], out,
                           cut_cm=TRIGGER_CUT_CM if math.isnan(cut) else cut, title=what)
    return f"Figures: {what} ({rows.size:,} rows)", {name.replace("_", " "): png_bytes(f) for name, f in figs.items()}


def save_expert_figures(expert_dir: Path, config: dict, store, split: str) -> None:
    """Draw the report's figures of a finished expert into `expert_dir/plots/<split>/report/` (its plot job
    does this while other experts still train), so that report.html, written after the last expert, only
    embeds them. index.json, written last, names them and what they were drawn from."""
    drawn = expert_figures(expert_dir, config, store, split)
    if drawn is None:
        return
    title, pngs = drawn
    folder = expert_dir / "plots" / split / REPORT_FIGURE_DIR
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i, (caption, data) in enumerate(pngs.items()):
        files.append([caption, f"{i:02d}.png"])
        write_atomic(folder / files[-1][1], lambda f, data=data: f.write(data))
    index = {"title": title, "figures": files, "prediction": _file_stamp(expert_dir / f"prediction_{split}.npz"),
             "data_sha256": [s.get("sha256") for s in store.sources]}
    write_atomic(folder / "index.json", lambda f: f.write(json.dumps(index, indent=1).encode()))


def _file_stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _saved_expert_figures(expert_dir: Path, split: str, recorded: list) -> tuple[str, dict[str, bytes]] | None:
    """The figures `save_expert_figures` left, if they were drawn from the expert's current predictions and the
    data the run recorded; else None (they are drawn again)."""
    folder = expert_dir / "plots" / split / REPORT_FIGURE_DIR
    try:
        index = _read_json(folder / "index.json")
        if index["prediction"] != _file_stamp(expert_dir / f"prediction_{split}.npz") or \
                (recorded and index["data_sha256"] != recorded):
            return None
        return index["title"], {caption: png_bytes((folder / name).read_bytes()) for caption, name in index["figures"]}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_run_report(folder: Path, stores: dict | None) -> Path:
    resolved = _read_json(folder / "config.json")
    summary_path = folder / "summary.json"
    summary = _read_json(summary_path) if summary_path.is_file() else {}
    experts = list(resolved.get("experts", {}))
    states = {key: _get(summary, "experts", key, "status") for key in experts}
    for key in experts:  # a partly finished run: summary.json may not have heard of an expert yet
        if states[key] is None and (folder / key / "status.json").is_file():
            states[key] = _get(_read_json(folder / key / "status.json"), "status")
    done = [key for key in experts if states[key] == "finished"]

    name = resolved.get("name") or summary.get("config_name") or "run"
    title = f"NeuroTrigger run {name} / {folder.name}"
    overview = KeyValues("Run", {
        "folder": str(folder),
        "config": name,
        "description": resolved.get("description", summary.get("description", "")) or MISSING,
        "mode": resolved.get("mode", MISSING),
        "status": summary.get("status", "unknown"),
        "experts finished": f"{len(done)} of {len(experts)}" + (f" ({', '.join(_label(k) for k in done)})"
                                                                 if done else ""),
        "started": summary.get("start_time"),
        "ended": summary.get("end_time"),
    })
    sections: list[Section] = [*_verdict_sections(folder, summary, done), overview, _expert_table(summary, resolved)]
    try:
        sections += _figure_sections(folder, resolved, summary, done, stores)
    except Exception as error:  # noqa: BLE001 - the rest of the report is still worth having
        log.warning("report.html of %s: figures not drawn: %s: %s", folder, type(error).__name__, error)
        sections.append(Text("Figures", f"Not drawn: {type(error).__name__}: {error}"))
    git_id = summary.get("git_id")
    sections += [
        *_config_sections(resolved),
        _data_table(summary),
        KeyValues("Code and libraries", {
            "git id": git_id or "unavailable (see git_id.txt)",
            "uncommitted changes": "git_diff.txt in the run folder" if (folder / "git_diff.txt").is_file()
            else MISSING,
            **{name: version for name, version in (summary.get("versions") or {}).items()},
        }),
        Code("TensorBoard", f"tensorboard --logdir {shlex.quote(str(folder))}\n\n"
                            "# one run per expert (expert_N/tb) and mean_expert (each metric averaged over the\n"
                            "# experts); the x axis of the epoch metrics is the epoch; HParams compares configs"),
    ]
    path = write_report(folder / REPORT_FILE, title, sections)
    log.info("report: %s", path)
    return path
