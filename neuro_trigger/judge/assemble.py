"""summary.json from a run's start to its end, and the run-level files assembled from the experts' parts.

`start_summary` writes it before any expert trains (the SLURM launcher's jobs keep it up to date while they
run: runner/slurm_jobs.py); `assemble` then combines whatever experts finished into weights.json, the
prediction files, mean_expert/ and the final summary.json with the metrics over all experts. It judges (the
metrics over all experts), so it sits in judge/, where both launchers in runner/ reach it.
"""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.selection import expert_rows, load_data
from neuro_trigger.errors import UserError
from neuro_trigger.judge.hardware import judge_hardware
from neuro_trigger.judge.mean_expert import log_mean_over_experts
from neuro_trigger.judge.metrics import split_metrics
from neuro_trigger.run.files import DiskFullError, disk_full_is_user_error, read_json, write_json
from neuro_trigger.run.folder import journal_lines, library_versions
from neuro_trigger.run.prediction_tables import merged_hardware, merged_predictions, write_prediction_tables
from neuro_trigger.run.status import summary_status


def start_summary(folder: Path, resolved: dict, stores: dict[str, ColumnStore], git_id: str | None,
                  description: str, started: float) -> dict[str, Any]:
    """summary.json of a run about to start: its config, data, code and libraries, every expert queued."""
    summary = {
        "config_name": resolved["name"],
        "description": description,
        "git_id": git_id,
        "start_time": datetime.fromtimestamp(started, UTC).astimezone().isoformat(timespec="seconds"),
        "end_time": None,
        "status": "running",
        "versions": library_versions(),
        "data": {split: store.sources for split, store in stores.items()},
        "config": {"global": resolved["global"], "experts": resolved["experts"]},
        "experts": {key: {"status": "queued"} for key in resolved["experts"]},
        "metrics": {},
    }
    write_json(folder / "summary.json", summary)
    return summary


def assemble(folder: Path, stores: dict[str, ColumnStore] | None = None,
             tables_written: bool = False) -> dict[str, Any]:
    """Combine every expert's part into prediction files (unless `tables_written`), weights.json and
    summary.json (metrics per split: "all_unfiltered", "all_filtered", "trigger_all" and each expert's
    result_<split>.json; "trigger_all" with the hardware's measures where every finished expert's network has a
    hardware equivalent; "hardware": which have one, and why the others have none). A full disk while writing
    them still leaves an honest summary.json (status "failed", the error, the metrics) where it fits, and then
    raises DiskFullError (one line)."""
    from neuro_trigger.judge.trigger import judge

    resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    if stores is None:
        stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    experts = resolved["experts"]
    statuses = {key: summary_status(folder, key) for key in experts}
    done = [k for k, s in statuses.items() if s["status"] == "finished"]

    metrics: dict[str, Any] = {}
    hardware_experts: dict[str, Any] = {"experts": [], "without": {}}  # the same on every split
    for split, store in stores.items():
        pred, rows_all = merged_predictions(folder, split, len(store), done)
        hardware = merged_hardware(folder, split, len(store), done)
        rows_filtered = [expert_rows(store, experts[key]) for key in done]
        out = min((experts[k]["out_size"] for k in done), default=2)
        loss = resolved["global"]["loss"]
        split_result: dict[str, Any] = {"experts": {}}
        for name, parts in (("unfiltered", rows_all), ("filtered", rows_filtered)):
            rows = np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
            split_result[f"all_{name}"] = split_metrics(store.y[rows, :out], pred[rows, :out],
                                                        store.y_old[rows, :out], loss)
        # the trigger's view over every finished expert's judged rows (each row once), as result_<split>.json
        # has it per expert; a mask rather than np.unique, which sorts
        judged = np.zeros(len(store), bool)
        for part in rows_filtered:
            judged[part] = True
        rows = np.flatnonzero(judged)
        split_result["trigger_all"] = judge(store.y[rows], pred[rows, :out], store.y_old[rows], loss,
                                            store.expert[rows], store.ntracks[rows])
        if hardware.complete:  # over all experts only where every network has them
            split_result["trigger_all"].update(judge_hardware(store.y[rows], pred[rows, :out],
                                                              hardware.scaled[rows, :out], loss))
        hardware_experts = {"experts": hardware.experts, "without": hardware.without}
        for key in done:
            result_file = folder / key / f"result_{split}.json"
            split_result["experts"][key] = json.loads(result_file.read_text(encoding="utf-8"))
        metrics[split] = split_result

    disk_full: DiskFullError | None = None
    try:
        if not tables_written:
            write_prediction_tables(folder, stores)
        weights = {}
        for key in done:
            weights[key] = json.loads((folder / key / "weights.json").read_text(encoding="utf-8"))
        write_json(folder / "weights.json", weights)
        with disk_full_is_user_error(folder / "mean_expert"):
            log_mean_over_experts(folder, list(experts))
    except DiskFullError as e:
        disk_full = e

    states = {s["status"] for s in statuses.values()}
    summary.update(
        experts=statuses,
        metrics=metrics,
        hardware=hardware_experts,
        end_time=datetime.fromtimestamp(time.time(), UTC).astimezone().isoformat(timespec="seconds"),
        status="finished" if states == {"finished"} else "interrupted" if "interrupted" in states else "failed",
    )
    if disk_full is not None:
        summary.update(status="failed", error=str(disk_full))
    try:
        write_json(folder / "summary.json", summary)
    except DiskFullError:
        if disk_full is None:
            raise
    if disk_full is not None:
        raise disk_full
    return summary


def missing_run_files(folder: Path) -> list[str]:
    """What a finished run has and `folder` lacks (assembling the folder again brings it back): summary.json that
    says "finished", weights.json, report.html, prediction_<split>.pt and pred_data_<split>.csv of every split,
    and a line in the journal (log.txt of the log root) that says the run ended neither interrupted nor failed.
    A run that stopped between its training and its last line lacks some of them."""
    from neuro_trigger.judge.report import REPORT_FILE

    try:
        summary = read_json(folder / "summary.json", "summary.json")
    except UserError:
        return ["summary.json"]
    missing = [] if summary.get("status") == "finished" else ["summary.json that says finished"]
    splits = summary.get("data") if isinstance(summary.get("data"), dict) else {}
    names = ["weights.json", REPORT_FILE, *(f"prediction_{s}.pt" for s in splits),
             *(f"pred_data_{s}.csv" for s in splits)]
    missing += [name for name in names if not (folder / name).is_file()]
    lines = journal_lines(folder.parent.parent / "log.txt", folder)
    if not lines or lines[-1].rstrip().endswith(("[interrupted]", "[failed]")):
        missing.append("its journal line (log.txt)")
    return missing
