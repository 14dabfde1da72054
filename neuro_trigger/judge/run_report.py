"""The report of a training run's folder (`write_run_report`): the verdict per expert, the run and its
experts, each finished expert's figures, the config, the data files, code and libraries, TensorBoard.

An expert's figures are drawn by a job of their own once it has finished (`save_expert_figures`), so
writing the report after the last expert mostly embeds PNGs that are already there.
"""
from __future__ import annotations

import json
import logging
import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from neuro_trigger.judge.report import (
    FIGURE_DPI,
    FIGURE_SPLITS,
    MISSING,
    REPORT_FILE,
    VERDICT_SPLITS,
    Code,
    Figures,
    KeyValues,
    Section,
    Table,
    Text,
    as_number,
    expert_label,
    hardware_table,
    lookup,
    png_bytes,
    verdict_table,
    write_report,
)
from neuro_trigger.judge.trigger import TRIGGER_CUT_CM
from neuro_trigger.run.files import write_json

log = logging.getLogger(__name__)

REPORT_FIGURE_DIR = "report"  # expert_N/plots/<split>/report/: the expert's figures saved for report.html


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
    found = lookup(summary, "metrics", split, "experts", key, "trigger")
    if found is None:
        path = folder / key / f"result_{split}.json"
        if path.is_file():
            found = lookup(_read_json(path), "trigger")
    return found if isinstance(found, dict) else None


def _verdict_sections(folder: Path, summary: dict, done: list[str]) -> list[Section]:
    sections: list[Section] = []
    metrics = summary.get("metrics") or {}
    for split in (s for s in VERDICT_SPLITS if s in metrics):
        per_expert = {key: j for key in done if (j := _judged(folder, summary, split, key)) is not None}
        if not per_expert:
            continue
        overall = lookup(metrics, split, "trigger_all")
        overall = overall if isinstance(overall, dict) else None
        sections.append(verdict_table(per_expert, overall, title=f"Verdict: new vs old network, {split} split"))
        on_hardware = hardware_table(per_expert, overall, title=f"On the hardware: new network in fixed point vs "
                                                                f"float, {split} split")
        sections += [on_hardware] if on_hardware is not None else []
    if not sections:
        sections.append(Text("Verdict", "No trigger metrics in summary.json or the experts' result files "
                                        "(no expert finished, or the run was made before they were computed)."))
    return sections


def _expert_table(summary: dict, resolved: dict) -> Table:
    rows = []
    for key, config in resolved.get("experts", {}).items():
        state = lookup(summary, "experts", key) or {}
        rows.append([expert_label(key), state.get("status", "unknown"), state.get("epochs_done"), config.get("epochs"),
                     as_number(state.get("best_val_loss")), state.get("started"), state.get("ended"),
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
    """Overlaid new-vs-old figures per finished expert on the FIGURE_SPLITS: those its figures job saved
    (`save_expert_figures`) while they are still of its predictions, else drawn here."""
    sections: list[Section] = []
    for split in FIGURE_SPLITS:
        recorded = [s.get("sha256") for s in lookup(summary, "data", split) or []]
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
                drawn = expert_figures(folder / key, resolved["experts"][key], store, split, summary)
                if drawn is not None:
                    title, figs = drawn
                    found = title, {_caption(name): png_bytes(fig) for name, fig in figs.items()}
            if found is not None:
                sections.append(Figures(*found))
    return sections


def _caption(name: str) -> str:
    return name.replace("_", " ")


def expert_figures(expert_dir: Path, config: dict, store, split: str,
                   summary: dict | None = None) -> tuple[str, dict[str, Figure]] | None:
    """The report's figures of one finished expert on one split, drawn from its saved predictions on the rows
    it is judged on: (section title, figures by name); None without predictions."""
    from neuro_trigger.data.filter_parser import parse_filter
    from neuro_trigger.data.selection import expert_rows
    from neuro_trigger.judge.filtered import is_identity_filter
    from neuro_trigger.judge.overlays import overlay_figures

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
    cut = as_number(lookup(_judged(expert_dir.parent, summary or {}, split, expert_dir.name) or {}, "cut_cm"))
    what = f"expert {config.get('expert', expert_dir.name)}, {split} split"
    # the full y gives reco theta for the figures by theta even when the network gives z only
    figs = overlay_figures(store.y[rows], {"new": pred[:, :out]}, store.y_old[rows], out,
                           cut_cm=TRIGGER_CUT_CM if math.isnan(cut) else cut, title=what)
    return f"Figures: {what} ({rows.size:,} rows)", figs


def save_expert_figures(expert_dir: Path, config: dict, store, split: str) -> None:
    """Draw the report's figures of a finished expert into `expert_dir/plots/<split>/report/` (a job of its
    own, while other experts still train), so that report.html, written after the last expert, only
    embeds them. index.json, written last, names them and what they were drawn from."""
    from neuro_trigger.judge.figure_files import save_figures

    drawn = expert_figures(expert_dir, config, store, split)
    if drawn is None:
        return
    title, figs = drawn
    folder = expert_dir / "plots" / split / REPORT_FIGURE_DIR
    paths = save_figures(figs, folder, dpi=FIGURE_DPI)
    files = [[_caption(name), path.name] for name, path in zip(figs, paths, strict=True)]
    index = {"title": title, "figures": files, "prediction": _file_stamp(expert_dir / f"prediction_{split}.npz"),
             "data_sha256": [s.get("sha256") for s in store.sources]}
    write_json(folder / "index.json", index)


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
    states = {key: lookup(summary, "experts", key, "status") for key in experts}
    for key in experts:  # a partly finished run: summary.json may not have heard of an expert yet
        if states[key] is None and (folder / key / "status.json").is_file():
            states[key] = lookup(_read_json(folder / key / "status.json"), "status")
    done = [key for key in experts if states[key] == "finished"]

    name = resolved.get("name") or summary.get("config_name") or "run"
    title = f"NeuroTrigger run {name} / {folder.name}"
    overview = KeyValues("Run", {
        "folder": str(folder),
        "config": name,
        "description": resolved.get("description", summary.get("description", "")) or MISSING,
        "mode": resolved.get("mode", MISSING),
        "status": summary.get("status", "unknown"),
        "experts finished": f"{len(done)} of {len(experts)}" + (f" ({', '.join(expert_label(k) for k in done)})"
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
