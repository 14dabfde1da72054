"""Compare finished runs side by side, on one common data set, as the trigger judges them.

`compare(runs)` runs the networks of every run (of this project or of the original trainer) on the same
rows (`data` files, or the first run's `split` files), judges each run per expert and over all experts
with `metrics.judge`, and writes a new, never-overwritten folder `log/comparisons/<name>_N/`:

  comparison.csv     the table: one row per (run, expert) and per (run, "all")
  metrics.json       every judge() result, per run and expert
  config_diff.json   the configs' differences key by key (global and per expert), the git ids, the data
  figures/*.png      overlaid figures (one colour per run, the old network as reference), all and per expert
  report.html        all of the above in one self-contained page

Everything a user can get wrong (too few runs, a folder that is no run, runs of different out_size, no
common data, a cut of 0 or below) is a UserError raised before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults.format import NO_EXPERT
from neuro_trigger.errors import UserError, clip
from neuro_trigger.run.folder import library_versions

SPLITS = ("train", "val", "test")
COMPARISONS = "comparisons"
OTHER_DATA = "trained on other data"
UNKNOWN_DATA = "not recorded"
NOT_SET = "(not set)"

# the table's columns, in order; "lower"/"higher": which value is the better one (marked in the report)
COLUMNS: dict[str, str | None] = {
    "run": None, "expert": None, "data": None, "training_data": None, "rows": None, "predicted_rows": None,
    "z_std_cm": "lower", "z_trimmed_std_cm": "lower", "z_half_width_68_cm": "lower",
    "z_mean_cm": "abs", "z_median_cm": "abs", "old_z_std_cm": None,
    "theta_std_deg": "lower", "theta_half_width_68_deg": "lower", "loss_vs_old": "lower",
    "efficiency": "higher", "old_efficiency": None, "rejection": "higher", "old_rejection": None,
    "best_epoch": None, "training_time_s": None,
}


@dataclass
class ComparisonResult:
    """What a comparison wrote: its folder, the table, and what went into it."""

    folder: Path
    table: pd.DataFrame
    labels: list[str]
    config_diff: dict[str, Any]
    data: list[dict[str, Any]]  # the common data files: [{path, sha256, rows}]
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # run label -> expert ("2", "all") -> judge()
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- inputs
def _check_arguments(runs: list[Path], split: str, cut_cm: float) -> None:
    if len(runs) < 2:
        raise UserError(f"compare needs at least two runs, got {len(runs)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {clip(split)!r}; one of {', '.join(SPLITS)}")
    if isinstance(cut_cm, bool) or not isinstance(cut_cm, int | float):
        raise UserError(f"the cut must be a number of cm, got {clip(repr(cut_cm))}")
    if not math.isfinite(cut_cm) or cut_cm <= 0:
        raise UserError(f"the cut must be a finite number of cm above 0 (the trigger keeps |z| < cut), "
                        f"got {cut_cm:g}")
    for run in runs:
        if not Path(run).is_dir():
            raise UserError(f"run folder {clip(str(run))} not found (or not a folder)")


def _labels(runs: list[Path], configs: list[dict]) -> list[str]:
    """'<config name>/<folder name>' per run (e.g. baseline_v2/version_3), made unique with ' (2)' etc."""
    labels: list[str] = []
    for run, config in zip(runs, configs, strict=True):
        name = config.get("name") or run.parent.name
        base = f"{name}/{run.name}"
        label, k = base, 2
        while label in labels:
            label, k = f"{base} ({k})", k + 1
        labels.append(label)
    return labels


def _out_size(nets: Any) -> int:
    return int(nets.out_size)


def _common_paths(first: Path, first_label: str, split: str, data: list[str | Path] | None) -> list[Path]:
    """The files every run is evaluated on: `data`, else the first run's `split` files from its config.json."""
    if data:
        return [Path(p) for p in data]
    config_file = first / "config.json"
    try:
        config = json.loads(config_file.read_text())
        entry = config["global"]["data"][split]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"no common data: the first run {first_label} has no config.json naming its {split} files "
                        f"(a run of the original trainer?); give the data with --data FILE ...") from None
    items = [entry] if isinstance(entry, str) else entry
    if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
        raise UserError(f"no common data: the first run {first_label} names no {split} files in its config.json; "
                        f"give the data with --data FILE ...")
    paths = [p if p.is_absolute() else REPO_ROOT / p for p in map(Path, items)]
    from neuro_trigger.data.toy import default_set

    toy_dir = default_set.DEFAULT_DIR.resolve()
    if any(p.resolve().parent == toy_dir for p in paths) and not default_set.default_dataset_current():
        default_set.ensure_default_dataset()  # the embedded default data set, generated on first use as training does
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"no common data: the {split} files of the first run {first_label} are missing "
                        f"({clip(', '.join(missing))}); give the data with --data FILE ...")
    return paths


def _recorded_hashes(summary: dict) -> dict[str, list[str]] | None:
    """The content hashes of the run's data files per split, from summary.json; None where not recorded."""
    recorded = summary.get("data") if isinstance(summary, dict) else None
    if not isinstance(recorded, dict):
        return None
    return {split: [f.get("sha256") for f in files if isinstance(f, dict)]
            for split, files in recorded.items() if isinstance(files, list)}


def training_data_id(summary: dict) -> str:
    """A short id of the files a run was trained on (train and val, which picks the best epoch): the first 8 hex
    digits of the sha256 of their content hashes; '' where summary.json records none (the original's runs)."""
    hashes = _recorded_hashes(summary)
    if hashes is None or "train" not in hashes:
        return ""
    text = "\n".join(["train", *hashes["train"], "val", *hashes.get("val", [])])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def data_relation(summary: dict, common: list[str], reference_id: str) -> str:
    """What the table's `data` column says of a run: the common data are its own '<split> split' or 'new data'
    to it, prefixed with OTHER_DATA where its training files differ from the first run's (`reference_id`);
    UNKNOWN_DATA where summary.json records no content hashes."""
    hashes = _recorded_hashes(summary)
    if hashes is None:
        return UNKNOWN_DATA
    own = next((f"own {split} split" for split in ("test", "val", "train") if hashes.get(split) == common),
               "new data")
    if reference_id and training_data_id(summary) != reference_id:
        return f"{OTHER_DATA}; {own}"
    return own


# ---------------------------------------------------------------------------------------------- run facts
def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _seconds_between(start: Any, end: Any) -> float:
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return math.nan


def _expert_facts(run: Path, summary: dict, key: str) -> tuple[int | None, float]:
    """Best epoch (from best_checkpoint 'best-epoch=E.ckpt') and training seconds of one expert of this project's
    run; (None, NaN) where not recorded (the original's runs)."""
    status = _read_json(run / key / "status.json")
    if not status:
        experts = summary.get("experts") if isinstance(summary, dict) else None
        status = experts.get(key, {}) if isinstance(experts, dict) and isinstance(experts.get(key), dict) else {}
    match = re.search(r"epoch=(\d+)", str(status.get("best_checkpoint", "")))
    return (int(match.group(1)) if match else None), _seconds_between(status.get("started"), status.get("ended"))


def _git_id(run: Path, summary: dict) -> str:
    try:
        text = (run / "git_id.txt").read_text().strip()
    except OSError:
        text = ""
    if text:
        return text.splitlines()[0]
    value = summary.get("git_id") if isinstance(summary, dict) else None
    return str(value) if value else UNKNOWN_DATA


def _loss_name(nets: Any, expert: int | None) -> str:
    """The loss an expert's network was trained with (None: the run's global loss), for its loss ratio."""
    if expert is None:
        return nets.loss
    losses = nets.losses
    return losses.get(expert) or losses.get(-1) or nets.loss


def _experts_of(nets: Any, store: Any) -> list[int]:
    """The experts a run has networks for; for a single network on all data (-1): the experts in the data."""
    experts = sorted(int(e) for e in nets.networks)
    if -1 in experts:
        return sorted(int(e) for e in np.unique(store.expert) if e >= 0)
    return experts


# ---------------------------------------------------------------------------------------------- config diff
def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of 'a.b' keys; lists and other values are kept whole."""
    if isinstance(value, dict) and (value or not prefix):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _differing(flat: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = sorted(set().union(*flat))
    out = {}
    for key in keys:
        values = [f.get(key, NOT_SET) for f in flat]
        if any(json.dumps(v, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True, default=str)
               for v in values[1:]):
            out[key] = values
    return out


def config_diff(configs: list[dict], labels: list[str]) -> dict[str, Any]:
    """Only the config keys whose values differ between the runs, flattened ('dist.norm.std').

    `global`: the config name and the global keys. `experts`: per expert every run has, the keys that differ
    and are not explained by the global difference (an expert_N override in some run). `experts_only_in`:
    experts some runs lack, with the runs that have them. Values are listed in the order of `runs`.
    """
    flat_global = [flatten({"name": c.get("name"), **(c.get("global") or {})}) for c in configs]
    experts_of = [set((c.get("experts") or {}).keys()) for c in configs]
    common = set.intersection(*experts_of)
    per_expert: dict[str, dict[str, list[Any]]] = {}
    for key in sorted(common, key=_expert_order):
        flat = [flatten(c["experts"][key]) for c in configs]
        overridden = {k: v for k, v in _differing(flat).items()
                      if any(f.get(k, NOT_SET) != g.get(k, NOT_SET) for f, g in zip(flat, flat_global, strict=True))}
        if overridden:
            per_expert[key] = overridden
    only_in = {key: [label for label, keys in zip(labels, experts_of, strict=True) if key in keys]
               for key in sorted(set.union(*experts_of) - common, key=_expert_order)}
    return {"runs": list(labels), "global": _differing(flat_global), "experts": per_expert,
            "experts_only_in": only_in}


def _expert_order(key: str) -> tuple[int, str]:
    match = re.fullmatch(r"expert_(-?\d+)", key)
    return (int(match.group(1)), key) if match else (1 << 30, key)


# ---------------------------------------------------------------------------------------------- the table
def _row(label: str, expert: str, note: str, training: str, judged: dict, best_epoch: int | None,
         seconds: float) -> dict:
    new, old = judged["new"], judged["old"]
    theta = new.get("theta") or {}
    return {
        "run": label, "expert": expert, "data": note, "training_data": training, "rows": judged["rows"],
        "predicted_rows": new["z"]["count"],
        "z_std_cm": new["z"]["std"], "z_trimmed_std_cm": new["z"]["trimmed_std"],
        "z_half_width_68_cm": new["z"]["half_width_68"], "z_mean_cm": new["z"]["mean"],
        "z_median_cm": new["z"]["median"], "old_z_std_cm": old["z"]["std"],
        "theta_std_deg": theta.get("std", math.nan), "theta_half_width_68_deg": theta.get("half_width_68", math.nan),
        "loss_vs_old": judged["vs_old"]["loss"],
        "efficiency": new["trigger"]["efficiency"], "old_efficiency": old["trigger"]["efficiency"],
        "rejection": new["trigger"]["rejection"], "old_rejection": old["trigger"]["rejection"],
        "best_epoch": best_epoch, "training_time_s": seconds,
    }


def _frame(rows: list[dict]) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    for column in ("rows", "predicted_rows"):
        table[column] = table[column].astype("int64")
    return table


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def best_cells(table: pd.DataFrame) -> set[tuple[int, int]]:
    """(row, column) positions of the best run's value per expert and metric (lowest resolution, |bias|, loss
    ratio; highest efficiency, rejection), for marking in the report. Ties mark every best run."""
    cells: set[tuple[int, int]] = set()
    columns = list(table.columns)
    for _, group in table.groupby("expert", sort=False):
        if len(group) < 2:
            continue
        for column, better in COLUMNS.items():
            if better is None:
                continue
            values = np.array([_number(v) for v in group[column]])
            if better == "abs":
                values = np.abs(values)
            if better == "higher":
                values = -values
            if not np.isfinite(values).any():
                continue
            best = np.nanmin(values)
            for position, value in zip(group.index, values, strict=True):
                if value == best:
                    cells.add((int(table.index.get_loc(position)), columns.index(column)))
    return cells


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating):
        return "" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


# short headers of the terminal table: (header, column(s)); a pair prints "new (old)"
_TEXT_COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("run", ("run",)), ("expert", ("expert",)), ("rows", ("predicted_rows",)),
    ("z std cm", ("z_std_cm", "old_z_std_cm")), ("z 68% cm", ("z_half_width_68_cm",)),
    ("z bias cm", ("z_mean_cm",)), ("theta std", ("theta_std_deg",)), ("loss/old", ("loss_vs_old",)),
    ("eff (old)", ("efficiency", "old_efficiency")), ("rej (old)", ("rejection", "old_rejection")),
    ("best ep", ("best_epoch",)), ("time s", ("training_time_s",)), ("data", ("data",)),
]


def format_table(table: pd.DataFrame) -> str:
    """The comparison table as compact text for the terminal: one line per (run, expert), 3-4 digits per value,
    the old network's value in parentheses beside the new one's where the table has both."""
    lines = []
    for _, row in table.iterrows():
        cells = []
        for _, names in _TEXT_COLUMNS:
            if len(names) == 2:
                cells.append(f"{_fmt(row[names[0]], 3)} ({_fmt(row[names[1]], 3)})")
            else:
                cells.append(_fmt(row[names[0]], 3 if names[0] not in ("run", "data") else 4))
        lines.append(cells)
    headers = [h for h, _ in _TEXT_COLUMNS]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    text = ["  ".join(h.ljust(w) if i in (0, len(headers) - 1) else h.rjust(w)
                      for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    for line in lines:
        text.append("  ".join(c.ljust(w) if i in (0, len(headers) - 1) else c.rjust(w)
                              for i, (c, w) in enumerate(zip(line, widths, strict=True))))
    return "\n".join(line.rstrip() for line in text)


# ---------------------------------------------------------------------------------------------- output folder
def _folder_name(configs: list[dict], runs: list[Path]) -> str:
    names = [str(c.get("name") or r.parent.name) for c, r in zip(configs, runs, strict=True)]
    name = re.sub(r"[^A-Za-z0-9_.+-]+", "_", "-vs-".join(names)).strip("._") or "comparison"
    return name[:120]


def claim_folder(parent: Path, name: str, max_attempts: int = 1000) -> Path:
    """Create and return `parent/<name>_N` with N the next free number (0 first), claimed with os.mkdir so that
    two comparisons started at once never share a folder."""
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create {parent}: {exc.strerror or exc}") from None
    pattern = re.compile(re.escape(name) + r"_(\d+)$")
    for _ in range(max_attempts):
        taken = [int(m.group(1)) for m in map(pattern.match, os.listdir(parent)) if m]
        folder = parent / f"{name}_{max(taken) + 1 if taken else 0}"
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue
        except OSError as exc:
            raise UserError(f"cannot create {folder}: {exc.strerror or exc}") from None
        return folder
    raise UserError(f"could not claim a new folder {name}_N in {parent} after {max_attempts} attempts")


# ---------------------------------------------------------------------------------------------- compare
def compare(runs: list[Path], split: str = "test", data: list[str | Path] | None = None, cut_cm: float = 15.0,
            out_root: Path | None = None) -> ComparisonResult:
    """Judge every run on one common data set and write the comparison folder (see the module doc).

    `data`: the common files; without them the first run's `split` files (from its config.json). Runs whose
    recorded data (summary.json content hashes) are not the common files are evaluated on them all the same and
    flagged "trained on other data" in the table. `out_root` replaces `<repo>/log` (tests).
    """
    from neuro_trigger.data.dataset import load_split
    from neuro_trigger.judge.networks import load_networks, predict
    from neuro_trigger.judge.trigger import judge

    runs = [Path(r) for r in runs]
    _check_arguments(runs, split, cut_cm)
    cut_cm = float(cut_cm)
    loaded = [load_networks(run) for run in runs]
    configs = [n.config if isinstance(n.config, dict) else {} for n in loaded]
    labels = _labels(runs, configs)
    sizes = {label: _out_size(n) for label, n in zip(labels, loaded, strict=True)}
    if len(set(sizes.values())) > 1:
        raise UserError("runs with different out_size cannot be compared: "
                        + ", ".join(f"{label} has {size}" for label, size in sizes.items()))
    k = next(iter(sizes.values()))
    paths = _common_paths(runs[0], labels[0], split, data)
    store = load_split(paths)
    common = [s["sha256"] for s in store.sources]
    what = f"{split} split of {labels[0]}" if not data else ", ".join(Path(s["path"]).name for s in store.sources)

    target, old = store.y[:, :k], store.y_old[:, :k]
    rows: list[dict] = []
    metrics: dict[str, dict[str, dict]] = {}
    preds: dict[str, np.ndarray] = {}
    experts_of: dict[str, list[int]] = {}
    notes: list[str] = []
    reference_id = training_data_id(loaded[0].summary if isinstance(loaded[0].summary, dict) else {})
    for run, nets, label in zip(runs, loaded, labels, strict=True):
        summary = nets.summary if isinstance(nets.summary, dict) else {}
        pred = np.asarray(predict(nets, store), dtype=np.float32)[:, :k]
        preds[label] = pred
        note = data_relation(summary, common, reference_id)
        training = training_data_id(summary) or UNKNOWN_DATA
        if note.startswith(OTHER_DATA):
            notes.append(f"{label} was trained on other data files than {labels[0]} (the content hashes of its train "
                         f"and val files in summary.json differ); every run is evaluated on the common data")
        elif note == UNKNOWN_DATA:
            notes.append(f"{label} records no content hashes of its data (a run of the original trainer?): "
                         f"whether it was trained on the same data is unknown")
        experts_of[label] = _experts_of(nets, store)
        metrics[label] = {}
        for expert in experts_of[label]:
            key = f"expert_{expert}"
            idx = np.flatnonzero(store.expert == expert)
            judged = judge(target[idx], pred[idx], old[idx], _loss_name(nets, expert), store.expert[idx],
                           store.ntracks[idx], cut_cm=cut_cm)
            metrics[label][str(expert)] = judged
            rows.append(_row(label, str(expert), note, training, judged, *_expert_facts(run, summary, key)))
        idx = np.flatnonzero(store.expert != NO_EXPERT)  # every row some expert takes, as evaluate judges "all"
        judged = judge(target[idx], pred[idx], old[idx], _loss_name(nets, None), store.expert[idx],
                       store.ntracks[idx], cut_cm=cut_cm)
        metrics[label]["all"] = judged
        seconds = _seconds_between(summary.get("start_time"), summary.get("end_time"))
        rows.append(_row(label, "all", note, training, judged, None, seconds))
    table = _frame(rows)
    diff = config_diff(configs, labels)
    diff["git_ids"] = {label: _git_id(run, n.summary if isinstance(n.summary, dict) else {})
                       for run, n, label in zip(runs, loaded, labels, strict=True)}
    figures = _figures(target, old, store.expert, preds, experts_of, k, cut_cm, what)

    folder = claim_folder(Path(out_root if out_root is not None else REPO_ROOT / "log") / COMPARISONS,
                          _folder_name(configs, runs))
    result = ComparisonResult(folder=folder, table=table, labels=labels, config_diff=diff, data=list(store.sources),
                              metrics=metrics, notes=notes)
    try:
        _write(result, runs, split, cut_cm, what, figures)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)  # a comparison is written whole or not at all
        raise
    return result


def _figures(target: np.ndarray, old: np.ndarray, expert: np.ndarray, preds: dict[str, np.ndarray],
             experts_of: dict[str, list[int]], k: int, cut_cm: float, what: str) -> dict[str, dict[str, bytes]]:
    """Overlaid figures as PNG bytes: over all experts, and per expert for the runs that have that expert."""
    from neuro_trigger.judge.figure_files import figure_to_png
    from neuro_trigger.judge.overlays import overlay_figures

    groups: dict[str, dict[str, bytes]] = {}
    figs = overlay_figures(target, preds, old, k, cut_cm, f"all experts, {what}")
    groups["all experts"] = {name: figure_to_png(fig) for name, fig in figs.items()}
    for e in sorted({e for es in experts_of.values() for e in es}):
        idx = np.flatnonzero(expert == e)
        these = {label: pred[idx] for label, pred in preds.items() if e in experts_of[label]}
        if idx.size == 0 or not these:
            continue
        figs = overlay_figures(target[idx], these, old[idx], k, cut_cm, f"expert {e}, {what}")
        groups[f"expert {e}"] = {name: figure_to_png(fig) for name, fig in figs.items()}
    return groups


def _diff_rows(diff: dict[str, Any]) -> list[list[Any]]:
    def show(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, default=str)

    rows = [[key, *map(show, values)] for key, values in diff["global"].items()]
    for expert, keys in diff["experts"].items():
        rows += [[f"{expert}.{key}", *map(show, values)] for key, values in keys.items()]
    for expert, having in diff["experts_only_in"].items():
        rows.append([f"{expert} (trained)", *["yes" if label in having else "no" for label in diff["runs"]]])
    return rows


def _write(result: ComparisonResult, runs: list[Path], split: str, cut_cm: float, what: str,
           figures: dict[str, dict[str, bytes]]) -> None:
    from neuro_trigger.judge.report import Code, Figures, KeyValues, Table, Text, verdict_table, write_report
    from neuro_trigger.run.files import write_atomic, write_json

    folder, table, diff = result.folder, result.table, result.config_diff
    csv = table.to_csv(index=False).encode()
    write_atomic(folder / "comparison.csv", lambda f: f.write(csv))
    write_json(folder / "metrics.json", {"cut_cm": cut_cm, "data": result.data, "runs": result.metrics})
    write_json(folder / "config_diff.json", {**diff, "folders": {label: str(run) for label, run
                                                                  in zip(result.labels, runs, strict=True)},
                                             "data": result.data, "split": split, "cut_cm": cut_cm})
    for group, figs in figures.items():
        for name, png in figs.items():
            write_atomic(folder / "figures" / (re.sub(r"[^A-Za-z0-9]+", "_", f"{group} {name}").strip("_") + ".png"),
                         lambda f, png=png: f.write(png))

    sections: list[Any] = [
        Text("What is compared",
             f"{len(result.labels)} runs on one common data set: {what} ({sum(s['rows'] for s in result.data)} rows); "
             f"trigger cut |z| < {cut_cm:g} cm. The column 'data' says what the common data are to each run (its "
             f"own split, or new data) and '{OTHER_DATA}' where its train and val files differ from the first "
             f"run's; 'training_data' is a short id of those files' content hashes."
             + "".join(f"\n\n{n}." for n in result.notes)),
        Table("Runs side by side", list(table.columns),
              [[None if v is None or v is pd.NA else v for v in row] for row in table.itertuples(False)],
              better=best_cells(table), note="per expert, the best run's value is marked; lower resolution, |bias| "
                                             "and loss ratio are better, higher efficiency and rejection"),
    ]
    for label in result.labels:
        per_run = result.metrics[label]
        sections.append(verdict_table({f"expert_{e}": m for e, m in per_run.items() if e != "all"},
                                      per_run.get("all"), title=f"{label}: new vs old network"))
    for group, figs in figures.items():
        sections.append(Figures(f"Overlaid figures: {group}", {f"{group}: {name}": png for name, png in figs.items()}))
    sections += [
        Table("Config differences", ["key", *result.labels], _diff_rows(diff),
              note="only the keys that differ; expert_N keys only where an expert's value is not the global one"),
        KeyValues("Code", {**{f"git id of {label}": git for label, git in diff["git_ids"].items()},
                           **{f"{name} (this comparison)": version for name, version in library_versions().items()}}),
        KeyValues("Run folders", {label: str(run) for label, run in zip(result.labels, runs, strict=True)}),
        KeyValues("Common data", {s["path"]: f"sha256 {s['sha256']}, {s['rows']} rows" for s in result.data}),
        Code("Config differences (JSON)", json.dumps(diff, indent=1, default=str)),
        Text("TensorBoard", "The runs' training curves side by side: .venv/bin/tensorboard --logdir_spec "
                            + ",".join(f"{label.replace(':', '_')}:{run}" for label, run
                                       in zip(result.labels, runs, strict=True))),
    ]
    write_report(folder / "report.html", f"Comparison {folder.name}", sections)
