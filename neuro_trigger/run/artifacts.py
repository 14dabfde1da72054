"""What a run leaves in its folder: per-expert results, weights.json, predictions, summary.json.

Each expert writes its own part (`write_expert_results`); `assemble` then combines the parts of
every expert into the run-level files, so experts may run as separate processes or batch jobs.
"""
from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.neuroresults import write_predictions
from neuro_trigger.errors import UserError
from neuro_trigger.run.metrics import split_metrics
from neuro_trigger.run.plots import prediction_figures, save_figures

SPLITS = ("train", "val", "test")


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and inf become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(_plain(data), f, indent=1)
    os.replace(tmp, path)


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what}: {path} is a directory, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what}: {path} is not valid JSON ({e})") from None


# ---------------------------------------------------------------------------------------------- weights
def weights_to_json(state: dict[str, Any]) -> dict[str, Any]:
    """Every weight tensor: its shape and its values (nested lists)."""
    return {name: {"shape": list(t.shape), "values": t.detach().cpu().tolist()} for name, t in state.items()}


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def check_weights_file(path: str, keys: list[str], configs: dict[str, dict] | None = None) -> None:
    """Fail before training if a pre-trained weights file lacks an expert or does not fit the networks."""
    import torch

    from neuro_trigger import registry

    weights = read_json(_resolve(path), "load_pre_trained_weights")
    for key in keys:
        if key not in weights:
            raise UserError(f"load_pre_trained_weights: {path} has no weights for {key} "
                            f"(it has {sorted(weights)})")
        if configs is not None:
            c = configs[key]
            model = registry.build_model(c["model"], c["in_size"], c["out_size"], c["act"])
            _load_state(model, weights[key], path, key, torch)


def _load_state(model, entry: dict, path: str, key: str, torch) -> None:
    state = model.state_dict()
    new = {}
    for name, tensor in state.items():
        if name not in entry:
            raise UserError(f"load_pre_trained_weights: {path}: {key} lacks tensor '{name}'")
        shape = entry[name].get("shape")
        if list(tensor.shape) != shape:
            raise UserError(f"load_pre_trained_weights: {path}: {key}.{name} has shape {shape}, "
                            f"the network needs {list(tensor.shape)}")
        new[name] = torch.tensor(entry[name]["values"], dtype=tensor.dtype).reshape(tensor.shape)
    model.load_state_dict(new)


def load_weights_into(model, path: str, key: str) -> None:
    """Start a network from the weights of one expert in a weights.json."""
    import torch

    weights = read_json(_resolve(path), "load_pre_trained_weights")
    if key not in weights:
        raise UserError(f"load_pre_trained_weights: {path} has no weights for {key} (it has {sorted(weights)})")
    _load_state(model, weights[key], path, key, torch)


# ---------------------------------------------------------------------------------------------- compare_to
def apply_compare_to(stores: dict[str, ColumnStore], compare_to: str, log_root: Path) -> None:
    """Take the 'old' predictions from an earlier run, which must have used the same data files."""
    import torch

    run = log_root / compare_to
    summary = read_json(run / "summary.json", f"compare_to '{compare_to}'")
    for split, store in stores.items():
        theirs = [s["sha256"] for s in summary.get("data", {}).get(split, [])]
        ours = [s["sha256"] for s in store.sources]
        if theirs != ours:
            raise UserError(f"compare_to '{compare_to}': it was trained on other {split} data "
                            f"(content hashes differ: {theirs} vs {ours})")
        pred_file = run / f"prediction_{split}.pt"
        if not pred_file.is_file():
            raise UserError(f"compare_to '{compare_to}': {pred_file} is missing")
        pred = torch.load(pred_file, map_location="cpu", weights_only=True).numpy().astype(np.float32)
        if pred.shape != store.y_old.shape:
            raise UserError(f"compare_to '{compare_to}': {pred_file} has shape {pred.shape}, "
                            f"expected {store.y_old.shape}")
        store.y_old = pred


# ---------------------------------------------------------------------------------------------- per expert
PLOT_SPLITS = ("val", "test")


def write_expert_results(expert_dir: Path, module, config: dict[str, Any],
                         stores: dict[str, ColumnStore], plots: bool = True) -> None:
    """Predictions of the best network for the expert's rows, metrics per split, weights, and (unless
    `plots` is False: a parallel run draws them in jobs of their own) the plots."""
    import torch

    from neuro_trigger.training.experts import expert_rows

    out = config["out_size"]
    filtered = _is_filtered(config)
    for split, store in stores.items():
        rows = expert_rows(store, config, filtered=False)
        pred = module.predict(torch.from_numpy(store.x[rows])).numpy()
        np.savez(expert_dir / f"prediction_{split}.npz", rows=rows, pred=pred)
        y, y_old = store.y[rows, :out], store.y_old[rows, :out]
        result = {"unfiltered": split_metrics(y, pred, y_old, config["loss"])}
        if filtered:
            keep = np.isin(rows, expert_rows(store, config))
            result["filtered"] = split_metrics(y[keep], pred[keep], y_old[keep], config["loss"])
        write_json(expert_dir / f"result_{split}.json", result)
    write_json(expert_dir / "weights.json", weights_to_json(module.model.state_dict()))
    if plots:
        for split in PLOT_SPLITS:
            if split in stores:
                write_expert_plots(expert_dir, config, stores[split], split)


def write_expert_plots(expert_dir: Path, config: dict[str, Any], store: ColumnStore, split: str) -> None:
    """The figures of one expert on one split (the rows its filter keeps), from its saved predictions."""
    from neuro_trigger.training.experts import expert_rows

    out = config["out_size"]
    part = np.load(expert_dir / f"prediction_{split}.npz", allow_pickle=False)
    rows, pred = part["rows"], part["pred"]
    keep = np.isin(rows, expert_rows(store, config)) if _is_filtered(config) else np.ones(len(rows), bool)
    y, y_old = store.y[rows, :out], store.y_old[rows, :out]
    figures = prediction_figures(y[keep], pred[keep], y_old[keep], out)
    save_figures(figures, expert_dir / "plots" / split)


def _is_filtered(config: dict[str, Any]) -> bool:
    return config["filter"].split(".")[-1] != "IdentityFilter()"


# ---------------------------------------------------------------------------------------------- run level
def _versions() -> dict[str, str]:
    """From the installed packages' metadata: importing lightning just for its version takes 3 s."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"python": platform.python_version(), **{name: installed(name) for name in
                                                     ("torch", "lightning", "numpy", "pandas")}}


def start_summary(folder: Path, resolved: dict, stores: dict[str, ColumnStore], git_id: str | None,
                  description: str, started: float) -> dict[str, Any]:
    summary = {
        "config_name": resolved["name"],
        "description": description,
        "git_id": git_id,
        "start_time": datetime.fromtimestamp(started, UTC).astimezone().isoformat(timespec="seconds"),
        "end_time": None,
        "status": "running",
        "versions": _versions(),
        "data": {split: store.sources for split, store in stores.items()},
        "config": {"global": resolved["global"], "experts": resolved["experts"]},
        "experts": {key: {"status": "queued"} for key in resolved["experts"]},
        "metrics": {},
    }
    write_json(folder / "summary.json", summary)
    return summary


def _expert_status(folder: Path, key: str) -> dict[str, Any]:
    path = folder / key / "status.json"
    return json.loads(path.read_text()) if path.exists() else {"status": "not started"}


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
    import torch

    experts = json.loads((folder / "config.json").read_text())["experts"]
    done = [k for k in experts if _expert_status(folder, k)["status"] == "finished"]
    for split, store in stores.items():
        pred, _ = _merged_predictions(folder, split, len(store), done)
        torch.save(torch.from_numpy(pred), folder / f"prediction_{split}.pt")
        _write_prediction_table(store, pred, folder / f"pred_data_{split}.csv")


def assemble(folder: Path, stores: dict[str, ColumnStore] | None = None,
             tables_written: bool = False) -> dict[str, Any]:
    """Combine every expert's part into prediction files (unless `tables_written`), weights.json and
    summary.json."""
    from neuro_trigger.training.experts import expert_rows, load_data

    resolved = json.loads((folder / "config.json").read_text())
    summary = json.loads((folder / "summary.json").read_text())
    if stores is None:
        stores = load_data(resolved["global"], folder.parent.parent)
    experts = resolved["experts"]
    statuses = {key: _expert_status(folder, key) for key in experts}
    done = [k for k, s in statuses.items() if s["status"] == "finished"]
    if not tables_written:
        write_prediction_tables(folder, stores)

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
        for key in done:
            split_result["experts"][key] = json.loads((folder / key / f"result_{split}.json").read_text())
        metrics[split] = split_result

    weights = {}
    for key in done:
        weights[key] = json.loads((folder / key / "weights.json").read_text())
    write_json(folder / "weights.json", weights)
    log_mean_over_experts(folder, list(experts))

    states = {s["status"] for s in statuses.values()}
    summary.update(
        experts=statuses,
        metrics=metrics,
        end_time=datetime.fromtimestamp(time.time(), UTC).astimezone().isoformat(timespec="seconds"),
        status="finished" if states == {"finished"} else "interrupted" if "interrupted" in states else "failed",
    )
    write_json(folder / "summary.json", summary)
    return summary


def _write_prediction_table(store: ColumnStore, pred: np.ndarray, dst: Path) -> None:
    """The Belle II file(s) of the split, every row unchanged, plus NewZ NewTheta; several files are joined."""
    start = 0
    with open(dst, "wb") as out:
        for i, source in enumerate(store.sources):
            part = dst.with_name(f".{dst.name}.part")
            write_predictions(source["path"], part, pred[start:start + source["rows"]])
            data = part.read_bytes()
            part.unlink()
            if i > 0:
                data = data.split(b"\n", 2)[2]  # header and the empty line only once
            out.write(data)
            start += source["rows"]


def log_mean_over_experts(run_folder: Path, expert_keys: list[str]) -> Path | None:
    """Average each epoch-level metric over the experts (from their CSV logs) into mean_expert/ for
    TensorBoard. Written with torch's SummaryWriter: the run's parent process never imports lightning."""
    import pandas as pd
    from torch.utils.tensorboard import SummaryWriter

    frames = []
    for key in expert_keys:
        csv = run_folder / key / "csv" / "metrics.csv"
        if csv.exists():
            table = pd.read_csv(csv)
            if "epoch" in table:
                frames.append(table.groupby("epoch").mean(numeric_only=True).drop(columns="step", errors="ignore"))
    if not frames:
        return None
    mean = pd.concat(frames).groupby(level=0).mean()
    log_dir = run_folder / "mean_expert"
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for epoch, row in mean.iterrows():
            for name, value in row.items():
                if not math.isnan(value):
                    writer.add_scalar(str(name), float(value), global_step=int(epoch))
    return log_dir
