"""Evaluate a finished (or partly finished) run on any data: its networks (`judge/networks.py`), their
predictions, the trigger's metrics, and a new evaluation folder with the metrics, the prediction table, the
figures and report.html.

    result = evaluate(run_folder, data=[...], cut_cm=15.0)   # writes RUN/evaluations/<name>_N/

Every mistake a user can make (a folder that is no run, no finished expert, a missing or corrupt
weights.json, a tensor of the wrong shape, a data file of the wrong format, a cut of 0 or below) raises
UserError before anything is written; an evaluation folder is claimed (atomically, never reused) only
once the metrics are computed, and removed again if writing into it fails.
"""
from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.dataset import ColumnStore, load_split
from neuro_trigger.data.neuroresults.format import NO_EXPERT
from neuro_trigger.errors import UserError, clip
from neuro_trigger.judge import trigger
from neuro_trigger.judge.hardware import judge_hardware, network_hardware, no_hardware_line
from neuro_trigger.judge.networks import SPLITS, RunNetworks, covered_rows, load_networks, predict
from neuro_trigger.run.files import write_atomic, write_json
from neuro_trigger.run.folder import FolderNotCreated, claim_numbered_folder, library_versions
from neuro_trigger.run.prediction_tables import HardwareColumns

EVALUATIONS = "evaluations"


@dataclass
class EvaluationResult:
    """What `evaluate` wrote: the new evaluation folder and the metrics (the content of its metrics.json)."""

    folder: Path
    metrics: dict[str, Any]


def judge_predictions(nets: RunNetworks, store: ColumnStore, pred: np.ndarray,
                      cut_cm: float = trigger.TRIGGER_CUT_CM, hardware: HardwareColumns | None = None
                      ) -> dict[str, Any]:
    """The trigger's metrics (`trigger.judge`) per network on its expert's rows, and over all experts (every
    row some expert takes; rows without a network are in `rows` there but in no other figure), with the
    counts of rows left without a prediction: {"experts": {"expert_N": judge}, "all": judge, "rows": {...}}.
    With the networks' `hardware` outputs, each judge() of a network that has them holds the hardware's measures
    too (`hardware.judge_hardware`), and "all" where every network has them."""
    expert = np.asarray(store.expert)
    covered = covered_rows(nets, store)
    per_expert: dict[str, Any] = {}
    for e in nets.networks:
        rows = store.expert_rows(e)
        if len(rows):
            with_hw = hardware if hardware is not None and f"expert_{e}" in hardware.experts else None
            per_expert[f"expert_{e}"] = _judge(store, pred, rows, nets.out_sizes.get(e, nets.out_size),
                                               nets.losses.get(e, "MSELoss"), cut_cm, with_hw)
    all_rows = np.flatnonzero(expert != NO_EXPERT)
    overall = _judge(store, pred, all_rows, nets.out_size, nets.loss, cut_cm,
                     hardware if hardware is not None and hardware.complete else None)
    missing = (expert != NO_EXPERT) & ~covered
    present, counts = np.unique(expert[missing], return_counts=True)
    rows = {"total": int(len(store)), "with_network": int(np.count_nonzero(covered)),
            "without_network": int(np.count_nonzero(missing)),
            "without_network_by_expert": {f"expert_{e}": int(n) for e, n in zip(present, counts, strict=True)},
            "no_expert": int(np.count_nonzero(expert == NO_EXPERT))}
    return {"experts": per_expert, "all": overall, "rows": rows}


def _judge(store: ColumnStore, pred: np.ndarray, rows: np.ndarray, k: int, loss: str,
           cut_cm: float, hardware: HardwareColumns | None = None) -> dict[str, Any]:
    # the full target (both columns): with out_size 1 the reco theta still bins the z residual
    judged = trigger.judge(store.y[rows], pred[rows, :k], store.y_old[rows, :k], loss,
                           expert=store.expert[rows], ntracks=store.ntracks[rows], cut_cm=cut_cm)
    if hardware is not None:
        judged.update(judge_hardware(store.y[rows], pred[rows, :k], hardware.scaled[rows, :k], loss, cut_cm))
    return judged


def evaluate(run_folder: Path | str, data: list[str | Path] | None = None, split: str = "test",
             cut_cm: float = trigger.TRIGGER_CUT_CM, out_root: Path | None = None) -> EvaluationResult:
    """Run the networks of `run_folder` on `data` (neuroresults files, .gz or plain, concatenated in order;
    default: the run's own `split`) and write a new folder `<out_root>/<name>_N/` (out_root default
    RUN/evaluations; name: the split, or the first data file's stem; N the next free number): metrics.json,
    pred_data_<name>.csv (the Belle II rows unchanged plus NewZ NewTheta, nan where no network, and the hardware's
    HwRawZ HwRawTheta HwZ HwTheta where a network has a hardware equivalent), plots/ (PNG) and report.html.
    Returns the folder and the metrics. UserError (one line, nothing written) for bad input."""
    cut = check_cut(cut_cm)
    folder = Path(run_folder)
    nets = load_networks(folder)
    paths, name, what, used_split = chosen_data(nets, data, split)
    store = load_split(paths)
    if not np.any(covered_rows(nets, store)):
        found = sorted({int(e) for e in np.unique(store.expert)})
        raise UserError(f"{what}: none of its {len(store)} rows belongs to an expert the run has a network for "
                        f"(networks: experts {sorted(nets.networks)}; the data's experts: {found})")
    pred = predict(nets, store)
    hardware = network_hardware(nets, store)  # the networks on the trigger's fixed-point arithmetic
    judged = judge_predictions(nets, store, pred, cut, hardware)
    result = {
        "run": str(folder.resolve()),
        "run_kind": nets.kind,
        "config_name": nets.config.get("name"),
        "name": name,
        "split": used_split,
        "data": store.sources,
        "cut_cm": cut,
        "thresholds_cm": {"cut": cut, "ip": trigger.IP_CM, "background": trigger.BACKGROUND_CM},
        "out_size": nets.out_size,
        "networks": [f"expert_{e}" for e in nets.networks],
        "left_out": nets.left_out,  # configured experts without a network (not finished), each with its status
        "hardware": {"experts": hardware.experts, "without": hardware.without},  # networks with(out) hardware outputs
        "created": datetime.now(UTC).astimezone().isoformat(timespec="seconds"),
        **judged,
    }
    root = Path(out_root) if out_root is not None else folder / EVALUATIONS
    root_existed = root.exists()
    target = claim_folder(root, name)
    try:
        _write_evaluation(target, nets, store, pred, result, what, hardware)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if not root_existed:
            try:
                root.rmdir()  # only if empty: another evaluation may have started meanwhile
            except OSError:
                pass
        raise
    return EvaluationResult(folder=target, metrics=result)


def check_cut(cut_cm: Any) -> float:
    try:
        cut = float(cut_cm)
    except (TypeError, ValueError):
        raise UserError(f"trigger cut {clip(repr(cut_cm))}: not a number of cm") from None
    if not math.isfinite(cut) or cut <= 0:
        raise UserError(f"trigger cut {cut_cm} cm: it must be a finite number above 0 (the trigger keeps "
                        f"|z_pred| < cut)")
    return cut


def _stem(path: Path) -> str:
    """A data file's name without .gz and its format suffix (neuroresults_random3.gz -> neuroresults_random3)."""
    name = path.name
    if name.endswith(".gz"):
        name = name[:-3]
    stem = Path(name).stem
    return stem or name or "data"


def _safe_name(text: str) -> str:
    """A folder name from a file name: letters, digits, '.', '-' and '_' kept, anything else '_'."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "data"
    return safe[:80]


def chosen_data(nets: RunNetworks, data: list[str | Path] | str | Path | None, split: str
                ) -> tuple[list[Path], str, str, str | None]:
    """The files to judge on: `data` (one file or several, read in order) or else the run's own `split`; with a
    name for the output folder (the split, or the first file's stem), a phrase for messages, and the split used
    (None for `data`). UserError for an unknown split or a run that records no files for it."""
    if isinstance(data, str | Path):
        data = [data]
    if data:
        paths = [Path(p) for p in data]
        return paths, _safe_name(_stem(paths[0])), f"data {', '.join(p.name for p in paths)}", None
    if split not in SPLITS:
        raise UserError(f"split '{clip(split)}' is not one of {', '.join(SPLITS)}")
    return _split_paths(nets, split), split, f"{split} split", split


def _split_paths(nets: RunNetworks, split: str) -> list[Path]:
    """The data files of one of the run's own splits: config.json's `data` (relative to the repository), or
    the original's `data_path`."""
    entry = (nets.config.get("global") or {}).get("data")
    files = entry.get(split) if isinstance(entry, dict) else None
    if isinstance(files, str):
        files = [files]
    if not (isinstance(files, list) and files and all(isinstance(f, str) for f in files)):
        raise UserError(f"run folder {nets.folder}: its config records no {split} data files; name them with --data")
    if nets.kind == "own":
        from neuro_trigger.data.selection import data_paths

        return data_paths({"data": {s: files for s in SPLITS}})[split]  # generates the toy data if named
    return [p if p.is_absolute() else REPO_ROOT / p for p in map(Path, files)]


def claim_folder(root: Path, name: str, max_attempts: int = 1000) -> Path:
    """Create and return root/<name>_N, N one above the highest there (0 first), claimed atomically
    (`claim_numbered_folder`) so that two evaluations at once never share a folder."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create {root}: {e.strerror or e}") from None
    try:
        folder = claim_numbered_folder(root, name, max_attempts)
    except FolderNotCreated as e:
        raise UserError(f"cannot create {e.folder}: {e.error.strerror or e.error}") from None
    if folder is None:
        raise UserError(f"could not claim a new evaluation folder in {root} after {max_attempts} attempts")
    return folder


def _write_evaluation(folder: Path, nets: RunNetworks, store: ColumnStore, pred: np.ndarray,
                      result: dict[str, Any], what: str, hardware: HardwareColumns) -> None:
    """metrics.json, the prediction table (and the hardware's columns), the figures and report.html into a claimed
    folder."""
    from neuro_trigger.data.neuroresults.writer import write_predictions

    write_json(folder / "metrics.json", result)
    table = folder / f"pred_data_{result['name']}.csv"
    try:
        write_predictions([s["path"] for s in store.sources], table, pred, rows=[s["rows"] for s in store.sources],
                          extra=hardware.table_columns())
    except ValueError as e:
        raise UserError(f"{what}: cannot write the prediction table {table}: {e}") from None
    figures = _figures(folder, nets, store, pred, result, what)
    _report(folder, nets, result, figures, what)


def _figures(folder: Path, nets: RunNetworks, store: ColumnStore, pred: np.ndarray, result: dict[str, Any],
             what: str) -> dict[str, dict[str, bytes]]:
    """The overlaid figures (new and old network) per expert and, with more than one network, over all
    experts, as PNG files under plots/<expert_N | all>/; returns their bytes by group and caption."""
    from neuro_trigger.judge.figure_files import figure_to_png
    from neuro_trigger.judge.overlays import overlay_figures

    groups: list[tuple[str, str, np.ndarray, int]] = []
    for e in nets.networks:
        rows = store.expert_rows(e)
        if len(rows):
            label = "solo network (all experts)" if e == -1 else f"expert {e}"
            groups.append((f"expert_{e}", label, rows, nets.out_sizes.get(e, nets.out_size)))
    if len(groups) > 1:
        rows = np.flatnonzero(covered_rows(nets, store))
        groups.append(("all", "all experts", rows, nets.out_size))
    out: dict[str, dict[str, bytes]] = {}
    for key, label, rows, k in groups:
        title = f"{label}, {what}"
        figs = overlay_figures(store.y[rows, :k], {"new": pred[rows, :k]}, store.y_old[rows, :k], k,
                                     cut_cm=result["cut_cm"], title=title)
        out[key] = {}
        for fig_name, fig in figs.items():
            png = figure_to_png(fig)
            file_name = _safe_name(fig_name) + ".png"
            write_atomic(folder / "plots" / key / file_name, lambda f, png=png: f.write(png))
            out[key][f"{title}: {fig_name}"] = png
    return out


def _left_out(left_out: dict[str, str]) -> str:
    """The experts a run has no network for, each with its status: "expert_3 (failed), expert_4 (running)"."""
    return ", ".join(f"{key} ({why})" for key, why in left_out.items()) or "-"


def _run_git_id(nets: RunNetworks) -> str:
    path = nets.folder / "git_id.txt"
    try:
        return path.read_text(encoding="utf-8").strip() or "-"
    except OSError:
        git_id = nets.summary.get("git_id")
        return str(git_id).strip() if git_id else "not recorded"


def _report(folder: Path, nets: RunNetworks, result: dict[str, Any], figures: dict[str, dict[str, bytes]],
            what: str) -> None:
    """report.html: the verdict table, the figures, then what was evaluated on which data with which code."""
    from neuro_trigger.judge import report

    rows = result["rows"]
    sections: list[Any] = [report.verdict_table(result["experts"], result["all"])]
    sections += [t for t in [report.hardware_table(result["experts"], result["all"])] if t is not None]
    counted = {
        "run": result["run"],
        "run kind": "this project" if nets.kind == "own" else "the original trainer",
        "networks": ", ".join(result["networks"]),
        "experts left out (no finished network)": _left_out(result["left_out"]),
        "evaluated on": what,
        "trigger cut": f"|z| < {result['cut_cm']:g} cm (efficiency on |reco z| < {trigger.IP_CM:g} cm, "
                       f"rejection on |reco z| > {trigger.BACKGROUND_CM:g} cm)",
        "rows": rows["total"],
        "rows with a network": rows["with_network"],
        "rows of experts without a network (NaN predictions)": rows["without_network"],
        "rows without a network, by expert": ", ".join(f"{k}: {n}" for k, n in
                                                       rows["without_network_by_expert"].items()) or "-",
        "rows with Expert -1 (no expert takes them)": rows["no_expert"],
        "on the hardware (fixed point)": ", ".join(result["hardware"]["experts"]) or "-",
    }
    if result["hardware"]["without"]:
        counted["without hardware outputs"] = no_hardware_line(result["hardware"]["without"])
    sections.append(report.KeyValues("Evaluation", counted))
    for key, figs in figures.items():
        sections.append(report.Figures("All experts" if key == "all" else key.replace("_", " "), figs))
    sections.append(report.KeyValues("Data files", {s["path"]: f"{s['rows']} rows, sha256 {s['sha256']}"
                                                    for s in result["data"]}))
    sections.append(report.KeyValues("Code and libraries", {"git id of the run": _run_git_id(nets),
                                                            **library_versions()}))
    sections.append(report.Code("Config of the run", json.dumps(nets.config, indent=1, default=str)))
    sections.append(report.Text("TensorBoard", f"tensorboard --logdir {nets.folder}" if nets.kind == "own"
                                else f"tensorboard --logdir {nets.folder} (the original's logs, where kept)"))
    title = f"Evaluation of {nets.config.get('name', nets.folder.name)} ({nets.folder.name}) on {what}"
    report.write_report(folder / "report.html", title, sections)
