"""What a run leaves in its folder: per-expert results, weights.json, predictions, summary.json.

Each expert writes its own part (`write_expert_results`); `assemble` then combines the parts of
every expert into the run-level files, so experts may run as separate processes or batch jobs.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.filter_parser import parse_filter
from neuro_trigger.data.filters import (
    AndFilter,
    ConCatFilter,
    ExpertFilter,
    Filter,
    IdentityFilter,
    NotFilter,
    OrFilter,
)
from neuro_trigger.data.neuroresults.writer import write_predictions
from neuro_trigger.data.selection import apply_compare_to, expert_rows, load_data  # noqa: F401 - also artifacts.*
from neuro_trigger.errors import UserError
from neuro_trigger.judge.metrics import split_metrics
from neuro_trigger.judge.plots import figure_file, figure_names, pngs_to_tensorboard, prediction_figures, save_figures
from neuro_trigger.run.files import (  # noqa: F401 - also used as artifacts.*
    DiskFullError,
    disk_full_is_user_error,
    is_disk_full,
    read_json,
    save_npz,
    save_tensor,
    write_atomic,
    write_json,
)
from neuro_trigger.run.folder import library_versions
from neuro_trigger.run.status import summary_status
from neuro_trigger.run.weights import (  # noqa: F401 - also used as artifacts.*
    MODULE_PREFIX,
    check_weights_file,
    expert_tensors,
    load_weights_into,
    weights_to_json,
)

SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------------------------------------- per expert
PLOT_SPLITS = ("val", "test")


def write_expert_results(expert_dir: Path, module, config: dict[str, Any],
                         stores: dict[str, ColumnStore], plots: bool = True) -> None:
    """Predictions of the best network for the expert's rows, metrics per split (result_<split>.json: the
    resolution metrics "unfiltered" / "filtered" and the trigger's view "trigger", see run/metrics.judge),
    weights, and (unless `plots` is False: a parallel run draws them in jobs of their own) the plots."""
    import torch

    from neuro_trigger.judge.metrics import judge
    out = config["out_size"]
    filtered = _is_filtered(config)
    for split, store in stores.items():
        rows = expert_rows(store, config, filtered=False)
        pred = module.predict(torch.from_numpy(store.x[rows])).numpy()
        save_npz(expert_dir / f"prediction_{split}.npz", rows=rows, pred=pred)
        y, y_old = store.y[rows, :out], store.y_old[rows, :out]
        result = {"unfiltered": split_metrics(y, pred, y_old, config["loss"])}
        keep = np.isin(rows, expert_rows(store, config)) if filtered else slice(None)
        if filtered:
            result["filtered"] = split_metrics(y[keep], pred[keep], y_old[keep], config["loss"])
        # the trigger's view (run/metrics.judge) on the rows the expert is judged on: its filter's, if any;
        # the full y gives reco theta for the binning by theta even when out_size is 1
        result["trigger"] = judge(store.y[rows][keep], pred[keep], store.y_old[rows][keep], config["loss"],
                                  store.expert[rows][keep], store.ntracks[rows][keep])
        write_json(expert_dir / f"result_{split}.json", result)
    write_json(expert_dir / "weights.json", weights_to_json(module.model.state_dict()))  # model. + net names
    if plots:
        for split in PLOT_SPLITS:
            if split in stores:
                write_expert_plots(expert_dir, config, stores[split], split)


def write_expert_plots(expert_dir: Path, config: dict[str, Any], store: ColumnStore, split: str,
                       report_figures: bool = True) -> None:
    """The figures of one expert on one split (the rows its filter keeps), from its saved predictions; the new
    and the old network in the same figures, each titled with the expert and the split. On a split of
    report.html's figures also those (unless `report_figures` is False: a local run draws them in a job of
    their own, `write_report_figures`)."""
    out = config["out_size"]
    part = np.load(expert_dir / f"prediction_{split}.npz", allow_pickle=False)
    rows, pred = part["rows"], part["pred"]
    keep = np.isin(rows, expert_rows(store, config)) if _is_filtered(config) else np.ones(len(rows), bool)
    y, y_old = store.y[rows, :out], store.y_old[rows, :out]
    figures = prediction_figures(y[keep], pred[keep], y_old[keep], out, expert=config.get("expert"), split=split)
    folder = expert_dir / "plots" / split
    save_figures(figures, folder)
    # into the expert's TensorBoard run too, at the best epoch's step: training sends only histograms and a few
    # key figures (TensorBoardPlots)
    pngs_to_tensorboard({name: folder / figure_file(name) for name in figures}, expert_dir / "tb", f"{split}/",
                        _best_epoch(expert_dir))
    if report_figures:
        write_report_figures(expert_dir, config, store, split)


def write_report_figures(expert_dir: Path, config: dict[str, Any], store: ColumnStore, split: str) -> None:
    """report.html's figures of a finished expert on `split`, if it is one of the report's figure splits: drawn
    now, while other experts may still train, rather than at the run's end."""
    from neuro_trigger.judge.run_report import FIGURE_SPLITS, save_expert_figures

    if split in FIGURE_SPLITS:
        save_expert_figures(expert_dir, config, store, split)


def _best_epoch(expert_dir: Path) -> int:
    """The epoch of the expert's best checkpoint (best-epoch=N.ckpt; the latest if several), 0 without one."""
    epochs = [int(m.group(1)) for path in (expert_dir / "ckpts").glob("best-epoch=*.ckpt")
              if (m := re.fullmatch(r"best-epoch=(\d+)\.ckpt", path.name))]
    return max(epochs, default=0)


def is_identity_filter(f: Filter) -> bool:
    """Whether a parsed filter keeps every row of any data by its structure: IdentityFilter(),
    ExpertFilter(-1), an empty ConCatFilter, `&` / ConCatFilter of identities, `|` with an identity, and
    `~~` of one. Anything else counts as filtering, even where it happens to keep every row of some
    data (a RangeFilter covering all rows, say): whether a run is "filtered" depends on its config only."""
    if isinstance(f, IdentityFilter):
        return True
    if isinstance(f, ExpertFilter):
        return f.expert == -1
    if isinstance(f, ConCatFilter):
        return all(is_identity_filter(g) for g in f.filters)
    if isinstance(f, AndFilter):
        return is_identity_filter(f.left) and is_identity_filter(f.right)
    if isinstance(f, OrFilter):
        return is_identity_filter(f.left) or is_identity_filter(f.right)
    if isinstance(f, NotFilter) and isinstance(f.inner, NotFilter):
        return is_identity_filter(f.inner.inner)
    return False


def _is_filtered(config: dict[str, Any]) -> bool:
    """Whether the config's filter drops rows (decided from the parsed filter, not from its text)."""
    return not is_identity_filter(parse_filter(config["filter"]))


# ---------------------------------------------------------------------------------------------- run level
def start_summary(folder: Path, resolved: dict, stores: dict[str, ColumnStore], git_id: str | None,
                  description: str, started: float) -> dict[str, Any]:
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


def _merged_predictions(folder: Path, split: str, n: int, done: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The finished experts' predictions on one split in row order (NaN elsewhere), and their rows."""
    pred = np.full((n, 2), np.nan, dtype=np.float32)
    rows = []
    for key in done:
        part = np.load(folder / key / f"prediction_{split}.npz", allow_pickle=False)
        pred[part["rows"], : part["pred"].shape[1]] = part["pred"]
        rows.append(part["rows"])
    return pred, rows


def write_prediction_tables(folder: Path, stores: dict[str, ColumnStore]) -> None:
    """prediction_<split>.pt and pred_data_<split>.csv (the Belle II format) from the finished experts.
    The slowest part of assembling a run; a parallel run writes them while the last plots are drawn."""

    experts = json.loads((folder / "config.json").read_text())["experts"]
    done = [k for k in experts if summary_status(folder, k)["status"] == "finished"]
    for split, store in stores.items():
        pred, _ = _merged_predictions(folder, split, len(store), done)
        save_tensor(folder / f"prediction_{split}.pt", pred)
        table = folder / f"pred_data_{split}.csv"
        try:
            with disk_full_is_user_error(table):
                _write_prediction_table(store, pred, table)
        except UserError:
            table.unlink(missing_ok=True)  # never leave half a table behind
            raise


def refresh_summary(folder: Path) -> None:
    """summary.json's experts as their status files say, after one of them stopped or failed outside a runner
    that would assemble the folder (a SLURM job): the run is "interrupted" or "failed" once none of them is
    running. Assembling the folder later replaces this with the whole summary."""
    import fcntl

    with open(folder / ".summary.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = read_json(folder / "summary.json", "summary.json")
        statuses = {key: summary_status(folder, key) for key in summary["experts"]}
        states = {s["status"] for s in statuses.values()}
        summary["experts"] = statuses
        if "running" not in states and summary.get("status") == "running":
            summary["status"] = "interrupted" if "interrupted" in states else "failed"
        write_json(folder / "summary.json", summary)


def assemble(folder: Path, stores: dict[str, ColumnStore] | None = None,
             tables_written: bool = False) -> dict[str, Any]:
    """Combine every expert's part into prediction files (unless `tables_written`), weights.json and
    summary.json (metrics per split: "all_unfiltered", "all_filtered", "trigger_all" and each expert's
    result_<split>.json). A full disk while writing them still leaves an honest summary.json (status "failed",
    the error, the metrics) where it fits, and then raises DiskFullError (one line)."""
    from neuro_trigger.judge.metrics import judge

    resolved = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    if stores is None:
        stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    experts = resolved["experts"]
    statuses = {key: summary_status(folder, key) for key in experts}
    done = [k for k, s in statuses.items() if s["status"] == "finished"]

    metrics: dict[str, Any] = {}
    for split, store in stores.items():
        pred, rows_all = _merged_predictions(folder, split, len(store), done)
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
        for key in done:
            split_result["experts"][key] = json.loads((folder / key / f"result_{split}.json").read_text())
        metrics[split] = split_result

    disk_full: DiskFullError | None = None
    try:
        if not tables_written:
            write_prediction_tables(folder, stores)
        weights = {}
        for key in done:
            weights[key] = json.loads((folder / key / "weights.json").read_text())
        write_json(folder / "weights.json", weights)
        with disk_full_is_user_error(folder / "mean_expert"):
            log_mean_over_experts(folder, list(experts))
    except DiskFullError as e:
        disk_full = e

    states = {s["status"] for s in statuses.values()}
    summary.update(
        experts=statuses,
        metrics=metrics,
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


def _write_prediction_table(store: ColumnStore, pred: np.ndarray, dst: Path) -> None:
    """The Belle II file(s) of the split, every row unchanged, plus NewZ NewTheta, through one writer: the
    header and the empty line once, the row counts checked per file and in total, written atomically."""
    write_predictions([s["path"] for s in store.sources], dst, pred, rows=[s["rows"] for s in store.sources])


def read_expert_metrics(expert_dir: Path):
    """The expert's epoch metrics (csv/metrics.csv) as a DataFrame; None where there are none yet: no file, or
    an empty one (an expert killed before its loggers first wrote)."""
    import pandas as pd

    path = expert_dir / "csv" / "metrics.csv"
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def log_mean_over_experts(run_folder: Path, expert_keys: list[str]) -> Path | None:
    """Average each epoch-level metric over the experts (from their CSV logs) into mean_expert/ for
    TensorBoard, one event per epoch holding every metric. Written with torch's SummaryWriter: the run's parent
    process never imports lightning."""
    import pandas as pd
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    frames = []
    for key in expert_keys:
        table = read_expert_metrics(run_folder / key)
        if table is not None and "epoch" in table:
            frames.append(table.groupby("epoch").mean(numeric_only=True).drop(columns="step", errors="ignore"))
    if not frames:
        return None
    mean = pd.concat(frames).groupby(level=0).mean()
    log_dir = run_folder / "mean_expert"
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for epoch, row in mean.iterrows():
            values = [Summary.Value(tag=str(name), simple_value=float(value)) for name, value in row.items()
                      if not math.isnan(value)]
            writer.file_writer.add_summary(Summary(value=values), int(epoch))
    return log_dir


# ---------------------------------------------------------------------------------------------- disk space
# Measured on runs of the toy data (baseline_v2): one figure in TensorBoard ~26 kB per plot epoch, one
# PNG of expert_N/plots ~32 kB, a data row of the text format ~300-330 bytes.
_FIGURE_TB_BYTES = 26_000
_FIGURE_PNG_BYTES = 32_000
_REPORT_FIGURES = 7  # report.overlay_figures per expert and figure split, at most
_TEXT_ROW_BYTES = 330
_NEW_FIELDS_BYTES = 24  # "\tNewZ\tNewTheta": shortest float32 repr, or nan
_RUN_FIXED_BYTES = 300_000  # config, summary, git diff, logs, mean_expert
_EXPERT_FIXED_BYTES = 30_000  # csv metrics, result_*.json, status, hparams, log, scalars


def _text_bytes(source: dict[str, Any]) -> int:
    """Bytes of a data file's text once inflated: its size, or the gzip trailer's (mod 2^32) where it is
    plausible, else a typical row length times its rows."""
    path, rows = Path(source["path"]), int(source.get("rows", 0))
    guess = rows * _TEXT_ROW_BYTES
    try:
        size = path.stat().st_size
        if path.suffix != ".gz":
            return size
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            inflated = int.from_bytes(f.read(4), "little")
    except OSError:
        return guess
    plausible = inflated >= size and (rows == 0 or 50 * rows <= inflated <= 5000 * rows)
    return inflated if plausible else guess


def _parameter_count(config: dict[str, Any]) -> int:
    from neuro_trigger import registry

    model = registry.build_model(config["model"], config["in_size"], config["out_size"], config["act"])
    return sum(t.numel() for t in model.state_dict().values())


def estimated_run_bytes(stores: dict[str, ColumnStore], resolved: dict[str, Any]) -> int:
    """What a run of `resolved` (config.json's content) on `stores` writes, in bytes, for the free-space
    check before it starts: per split pred_data_<split>.csv (the data's text plus two fields a row) and
    prediction_<split>.pt; per expert its predictions (.npz), two checkpoints, two weights.json copies,
    TensorBoard (figures every plot_every epochs, up to the configured epochs) and its PNG plots.
    Early stopping only makes a run smaller. A default run (baseline_v2, toy data) writes about 162 MB."""
    total = _RUN_FIXED_BYTES
    for store in stores.values():
        n = len(store)
        total += sum(_text_bytes(s) for s in store.sources) + n * _NEW_FIELDS_BYTES
        total += n * 2 * 4 + 1_000
    plot_splits = [s for s in PLOT_SPLITS if s in stores]
    for config in resolved["experts"].values():
        out = config["out_size"]
        params = _parameter_count(config)
        figures = len(figure_names(out))
        for store in stores.values():
            rows = len(store) if config["expert"] == -1 else int(np.count_nonzero(store.expert == config["expert"]))
            total += rows * (8 + 4 * out) + 600
        total += 2 * (params * 4 * 3 + 20_000)  # best and last checkpoint: weights and Adam's two moments
        total += 2 * params * 24 + 2_000  # weights.json of the expert and its copy in the run's
        total += (config["epochs"] // max(1, config["plot_every"])) * figures * _FIGURE_TB_BYTES
        total += len(plot_splits) * figures * _FIGURE_PNG_BYTES + _EXPERT_FIXED_BYTES
        total += _REPORT_FIGURES * _FIGURE_PNG_BYTES  # report.html's figures of the expert (test split)
    return int(total)
