"""Train the experts of a config: one Lightning Trainer per expert, each in its own process.

`train()` is what the CLI calls and what tests and notebooks call. It sets up the run folder,
loads each split once into shared memory, starts the expert processes, shows their progress and
finally assembles the run folder. `run_expert()` trains a single expert into an existing run
folder; it is what each process runs, and it can run as a batch job of its own, followed by
`assemble()`.
"""
from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import queue as queue_module
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger import REPO_ROOT, cpu_cores
from neuro_trigger.config import resolve_config
from neuro_trigger.data.dataset import ColumnStore, SharedColumns, load_split
from neuro_trigger.data.filters import ExpertFilter, parse_filter
from neuro_trigger.errors import UserError
from neuro_trigger.run import artifacts
from neuro_trigger.run.folder import append_journal, create_run_folder, ensure_writable, write_git_snapshot
from neuro_trigger.training.stopping import (
    RunLock,
    process_alive,
    process_start_time,
    stop_job_on_signals,
    stop_on_signals,
    watch_parent,
)

log = logging.getLogger("neuro_trigger")

SPLITS = ("train", "val", "test")
DEBUG_ROOT = Path("/tmp/nt_pytorch_debug_log")
DEBUG_MAX_EPOCHS = 10


@dataclass
class RunResult:
    """What a run left behind: its folder, the summary written there, and whether every expert finished."""

    folder: Path
    summary: dict[str, Any]

    @property
    def ok(self) -> bool:
        return all(e["status"] == "finished" for e in self.summary["experts"].values())


# ---------------------------------------------------------------------------------------------- data
def data_paths(config: dict[str, Any]) -> dict[str, list[Path]]:
    """The configured files per split, absolute; the embedded toy data set is generated on first use."""
    paths = {}
    for split in SPLITS:
        entry = config["data"][split]
        items = [entry] if isinstance(entry, str) else entry
        paths[split] = [p if p.is_absolute() else REPO_ROOT / p for p in map(Path, items)]
    from neuro_trigger.data import toy_mc

    toy_dir = toy_mc.DEFAULT_DIR.resolve()
    wanted = [p for ps in paths.values() for p in ps]
    if any(p.resolve().parent == toy_dir for p in wanted) and not toy_mc.default_dataset_current():
        began = time.time()
        log.info("generating the embedded default data set (the toy Monte Carlo) into %s: first use of this "
                 "version, about a minute", toy_dir)
        toy_mc.ensure_default_dataset()
        log.info("default data set generated in %.0f s", time.time() - began)
    return paths


def load_data(config: dict[str, Any], log_root: Path | None = None) -> dict[str, ColumnStore]:
    """Each split read once (cached parse); `compare_to` (a run under `log_root`) replaces the old predictions."""
    stores = {split: load_split(paths) for split, paths in data_paths(config).items()}
    if config.get("compare_to"):
        artifacts.apply_compare_to(stores, config["compare_to"], log_root or REPO_ROOT / "log")
    return stores


def expert_rows(store: ColumnStore, config: dict[str, Any], filtered: bool = True) -> np.ndarray:
    """Row indices of one expert in a split, after the config's filter (if `filtered`)."""
    mask = ExpertFilter(config["expert"]).mask(store)
    if filtered:
        mask &= parse_filter(config["filter"]).mask(store)
    return np.flatnonzero(mask)


def check_rows(stores: dict[str, ColumnStore], resolved: dict[str, Any]) -> dict[str, int]:
    """Training rows per expert; an expert left with no train or val rows is an error before any training."""
    counts = {}
    for key, config in resolved["experts"].items():
        for split in ("train", "val"):
            n = len(expert_rows(stores[split], config))
            if n == 0:
                raise UserError(
                    f"{key}: no {split} rows left after filter '{config['filter']}' "
                    f"({len(expert_rows(stores[split], config, filtered=False))} rows before filtering, "
                    f"files {[s['path'] for s in stores[split].sources]})"
                )
            if split == "train":
                counts[key] = n
    return counts


# ---------------------------------------------------------------------------------------------- one expert
def _expert_logging(folder: Path, key: str) -> logging.Handler:
    handler = logging.FileHandler(folder / f"{key}.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    return handler


def run_expert(folder: Path, key: str, stores: dict[str, ColumnStore] | None = None,
               report=None, resume_from: Path | None = None, threads=None, plots: bool = True,
               verbose: bool = False) -> dict[str, Any]:
    """Train one expert of the run in `folder` and write its part of the folder; returns its status.

    Without `stores` the data are loaded here (a batch job); `report` receives progress dicts;
    `resume_from` is a checkpoint to continue from. On Ctrl-C the status says "interrupted" with
    the number of epochs done, and KeyboardInterrupt is raised. `threads` (a shared integer) is
    the CPU thread count the runner grants this expert; it is read at every epoch start. `plots`
    False leaves the figures to artifacts.write_expert_plots (a parallel run draws them in jobs of their own).
    `verbose` lets Lightning's banners and routine warnings through.
    """
    import lightning as L
    import torch

    from neuro_trigger.training.batches import EvalBatches, TrainBatches
    from neuro_trigger.training.module import ExpertModule
    from neuro_trigger.training.quiet import quiet_lightning

    quiet_lightning(verbose)
    report = report or (lambda message: None)
    resolved = json.loads((folder / "config.json").read_text())
    config = resolved["experts"][key]
    expert_dir = folder / key
    expert_dir.mkdir(exist_ok=True)
    status: dict[str, Any] = {"status": "running", "started": _now(), "pid": os.getpid(),
                              "pid_start": process_start_time(os.getpid())}
    artifacts.write_json(expert_dir / "status.json", status)
    if stores is None:
        stores = load_data(config, folder.parent.parent)
    L.seed_everything(config["seed"], workers=True, verbose=False)
    out = config["out_size"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with warnings.catch_warnings():  # the shared columns are read-only maps; the tensors are only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = {s: (torch.from_numpy(st.x), torch.from_numpy(st.y[:, :out]), torch.from_numpy(st.y_old[:, :out]))
                   for s, st in stores.items()}
    train_rows = expert_rows(stores["train"], config)
    val_rows = expert_rows(stores["val"], config)
    log.info("%s: %d train rows, %d val rows, batch size %d, %s", key, len(train_rows), len(val_rows),
             config["batch_size"], "reweighted by " + json.dumps(config["dist"]) if config["dist"] else "shuffled")
    x, y, _ = tensors["train"]
    train_batches = TrainBatches(x, y, train_rows, config["batch_size"], config["seed"], config["dist"], device)
    val_batches = EvalBatches(*tensors["val"], val_rows, device)

    module = ExpertModule(config)
    if config.get("load_pre_trained_weights"):
        artifacts.load_weights_into(module.model, config["load_pre_trained_weights"], key)
    trainer, checkpoint = build_trainer(config, expert_dir, report, threads)
    earlier_metrics = None
    if resume_from is not None:
        log.info("%s: resuming from %s", key, resume_from)
        earlier_metrics = _read_metrics(expert_dir)  # the CSV logger starts a new file
    try:
        trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=val_batches,
                    ckpt_path=str(resume_from) if resume_from else None)
    except (KeyboardInterrupt, SystemExit) as stop:
        # Lightning turns Ctrl-C into a graceful stop followed by sys.exit(1)
        if isinstance(stop, SystemExit) and not trainer.interrupted:
            raise
        status.update(status="interrupted", epochs_done=trainer.current_epoch, ended=_now(),
                      last_checkpoint=str(checkpoint.last_model_path or ""))
        artifacts.write_json(expert_dir / "status.json", status)
        log.warning("%s interrupted after %d epoch(s)", key, trainer.current_epoch)
        raise KeyboardInterrupt from None
    finally:
        if earlier_metrics is not None:
            _prepend_metrics(expert_dir, earlier_metrics)

    best = checkpoint.best_model_path or checkpoint.last_model_path
    state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
    module.load_state_dict(state)
    module.to("cpu")
    artifacts.write_expert_results(expert_dir, module, config, stores, plots=plots)
    status.update(status="finished", epochs_done=trainer.current_epoch, best_checkpoint=str(Path(best).name),
                  best_val_loss=float(checkpoint.best_model_score) if checkpoint.best_model_score is not None
                  else math.nan, ended=_now())
    artifacts.write_json(expert_dir / "status.json", status)
    report({"expert": config["expert"], "status": "finished", "epoch": trainer.current_epoch - 1,
            "max_epochs": config["epochs"], "val_loss": status["best_val_loss"]})
    return status


def _read_metrics(expert_dir: Path):
    import pandas as pd

    path = expert_dir / "csv" / "metrics.csv"
    return pd.read_csv(path) if path.is_file() else None


def _prepend_metrics(expert_dir: Path, earlier) -> None:
    """Keep the epochs logged before a resume: the resumed logger rewrote metrics.csv from its epoch on."""
    import pandas as pd

    now = _read_metrics(expert_dir)
    if now is None or now.empty:
        merged = earlier
    else:
        merged = pd.concat([earlier[earlier["epoch"] < now["epoch"].min()], now], ignore_index=True)
    merged.to_csv(expert_dir / "csv" / "metrics.csv", index=False)


def build_trainer(config: dict[str, Any], expert_dir: Path, report=None, threads=None):
    """The one place an expert's Trainer is configured: loggers, checkpoints, early stopping, progress, plots."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from neuro_trigger.training.callbacks import HParamsSummary, ProgressReport, TensorBoardPlots, ThreadShare

    checkpoint = ModelCheckpoint(dirpath=expert_dir / "ckpts", filename="best-{epoch}", monitor="val_loss",
                                 mode="min", save_top_k=1, save_last=True)
    trainer = L.Trainer(
        max_epochs=config["epochs"],
        accelerator="auto",
        devices=1,
        logger=[TensorBoardLogger(str(expert_dir), name="tb", version="", default_hp_metric=False),
                CSVLogger(str(expert_dir), name="csv", version="")],
        callbacks=[checkpoint,
                   EarlyStopping(monitor="val_loss", mode="min", patience=config["early_stopping_patience"]),
                   ProgressReport(config["expert"], report or (lambda message: None)),
                   TensorBoardPlots(config["plot_every"], config["out_size"]),
                   HParamsSummary(config)]
        + ([ThreadShare(threads)] if threads is not None else []),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1_000_000,  # metrics are logged per epoch only
    )
    return trainer, checkpoint


def _job_start(folder: Path, log_name: str, run_pid: int) -> None:
    """First steps of every job process: output into its log, SIGTERM/SIGHUP like Ctrl-C, and stop
    by itself if the run's process (`run_pid`) dies."""
    log_fd = os.open(folder / log_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    stop_job_on_signals()
    watch_parent(run_pid)


def _child(folder: Path, key: str, handles: dict[str, SharedColumns], threads, progress,
           resume_from: Path | None, run_pid: int, adaptive: bool, verbose: bool) -> None:
    """Entry point of an expert process: its output goes to its own log, its status to status.json."""
    import torch

    _job_start(folder, f"{key}.log", run_pid)
    _expert_logging(folder, key)
    torch.set_num_threads(threads.value)
    stores = {split: ColumnStore.from_shared(h) for split, h in handles.items()}
    try:
        run_expert(folder, key, stores, progress.put, resume_from, threads if adaptive else None, plots=False,
                   verbose=verbose)
    except KeyboardInterrupt:
        progress.cancel_join_thread()  # never wait at exit for a runner that may no longer read
        sys.exit(130)  # the parent reads the status; it marks an expert interrupted before its training started
    except BaseException as error:  # noqa: BLE001 - every failure must reach status.json
        log.error("%s failed:\n%s", key, traceback.format_exc())
        _write_failure(folder, key, error)
        progress.put({"expert": key, "status": "failed", "error": str(error)})
        sys.exit(1)


def _plot_child(folder: Path, key: str, split: str, handle: SharedColumns, run_pid: int) -> None:
    """Entry point of a plotting job: the figures of one finished expert on one split."""
    _job_start(folder, f"{key}.log", run_pid)
    _expert_logging(folder, key)
    config = json.loads((folder / "config.json").read_text())["experts"][key]
    try:
        artifacts.write_expert_plots(folder / key, config, ColumnStore.from_shared(handle), split)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - the expert's results stand; its log says what went wrong
        log.error("%s: the %s plots failed:\n%s", key, split, traceback.format_exc())
        sys.exit(1)


def _tables_child(folder: Path, handles: dict[str, SharedColumns], run_pid: int) -> None:
    """Entry point of the job writing the run's prediction tables once every expert has trained."""
    _job_start(folder, "app.log", run_pid)
    try:
        artifacts.write_prediction_tables(folder, {split: ColumnStore.from_shared(h) for split, h in handles.items()})
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - the parent writes them itself after a failure here
        traceback.print_exc()
        sys.exit(1)


def _write_failure(folder: Path, key: str, error: BaseException) -> None:
    status = _read_status(folder, key)
    status.update(status="failed", error=f"{type(error).__name__}: {error}", ended=_now())
    artifacts.write_json(folder / key / "status.json", status)


# ---------------------------------------------------------------------------------------------- the whole run
def _now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


class _Console(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (tests and notebooks replace it between runs)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def _setup_console() -> None:
    """This project's log lines on the console (once per process), from the first step of a run."""
    if not any(isinstance(h, _Console) for h in log.handlers):
        console = _Console()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)


def _setup_logging(folder: Path) -> logging.Handler:
    handler = logging.FileHandler(folder / "app.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    _setup_console()
    return handler


def train(
    config: str | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    production: bool = False,
    solo: bool = False,
    description: str = "",
    log_root: Path | None = None,
    show_progress: bool = True,
    verbose: bool = False,
) -> RunResult:
    """Train the experts of a config and return the run folder and its summary.

    production: every expert, each in its own process, into `log_root/<config>/version_N` (default
    `<repo>/log`); otherwise a debug run: only the first expert, in this process (breakpoints
    work), at most 10 epochs, into /tmp/nt_pytorch_debug_log. solo: one network on all data.
    verbose: Lightning's banners and routine warnings in the expert logs too.
    """
    started = time.time()
    _setup_console()
    experts = [-1] if solo else None
    resolved = resolve_config(config, overrides, experts=experts)
    if not production:
        first = resolved["global"]["experts"][0]
        resolved = resolve_config(config, overrides, experts=[first])
        for c in resolved["experts"].values():
            c["epochs"] = min(c["epochs"], DEBUG_MAX_EPOCHS)
    root = Path(log_root) if log_root else (REPO_ROOT / "log" if production else DEBUG_ROOT)
    # earlier runs named by compare_to are production runs: under log/ also for a debug run
    runs_root = Path(log_root) if log_root else REPO_ROOT / "log"
    ensure_writable(root)
    if production:
        start_process_server()
    # every check a user's mistake can fail comes before a run folder is made
    for split, ps in data_paths(resolved["global"]).items():
        for p in ps:
            if p.is_dir():
                raise UserError(f"data file for '{split}' is a directory: {p}")
            if not p.is_file():
                raise UserError(f"data file for '{split}' not found: {p}")
    stores = load_data(resolved["global"], runs_root)
    counts = check_rows(stores, resolved)
    ensure_writable(root, min_free_mb=_megabytes(artifacts.estimated_run_bytes(stores, resolved)))
    for key, config_ in resolved["experts"].items():
        if config_.get("load_pre_trained_weights"):
            artifacts.check_weights_file(config_["load_pre_trained_weights"], [key], resolved["experts"])
    folder = create_run_folder(root, resolved["name"])
    handler = _setup_logging(folder)
    try:
        with RunLock(folder).acquire("train"), stop_on_signals():
            log.info("run folder %s (%s, experts %s)", folder, "production" if production else "debug",
                     list(resolved["experts"]))
            for split, store in stores.items():
                log.info("%s: %d rows from %s", split, len(store), ", ".join(s["path"] for s in store.sources))
            resolved["description"] = description
            resolved["mode"] = "production" if production else "debug"
            resolved["runs_root"] = str(runs_root)
            artifacts.write_json(folder / "config.json", resolved)
            git_id = write_git_snapshot(folder, REPO_ROOT)
            log.info("git %s", git_id or "unavailable (see git_id.txt)")
            artifacts.start_summary(folder, resolved, stores, git_id, description, started)
            return _run_and_assemble(folder, resolved, stores, counts, {}, show_progress, started, verbose=verbose)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _megabytes(n_bytes: int) -> int:
    return max(50, -(-n_bytes // 2**20))


def _run_and_assemble(folder: Path, resolved: dict, stores: dict[str, ColumnStore], counts: dict[str, int],
                      resume_from: dict[str, Path | None], show: bool, started: float,
                      unplotted: list[tuple[str, str]] = (), verbose: bool = False) -> RunResult:
    """Train the experts in `counts` (in processes for production runs), then assemble the folder.

    On Ctrl-C the folder is still assembled from what finished, summary.json says "interrupted",
    the journal gets its line, and KeyboardInterrupt goes on to the caller.
    """
    root = folder.parent.parent
    journal = {"time": _now(), "config": resolved["name"], "folder": str(folder),
               "description": resolved.get("description", "")}
    try:
        tables_written = False
        if resolved["mode"] == "production":
            tables_written = _run_parallel(folder, resolved, stores, counts, resume_from, show, unplotted, verbose)
        else:
            for key, split in unplotted:
                artifacts.write_expert_plots(folder / key, resolved["experts"][key], stores[split], split)
            _run_in_process(folder, list(counts), stores, resume_from, show, verbose)
    except KeyboardInterrupt:
        log.info("interrupted: writing what the finished experts left (predictions, weights, summary)")
        artifacts.assemble(folder, stores)
        _write_report(folder, stores)
        append_journal(root / "log.txt", {**journal, "description": journal["description"] + " [interrupted]"})
        log.warning("interrupted; resume with: python neuro_trigger/main.py --resume %s", folder)
        raise
    log.info("all experts done: writing the prediction tables, weights.json and summary.json" if not tables_written
             else "all experts done: writing weights.json and summary.json")
    summary = artifacts.assemble(folder, stores, tables_written=tables_written)
    _write_report(folder, stores)
    failed = summary["status"] != "finished"
    append_journal(root / "log.txt", {**journal, "description": journal["description"] + (" [failed]" if failed
                                                                                          else "")})
    for line in verdict_lines(summary, resolved):
        log.info("%s", line)
    if failed:
        log.error("failed after %.1f s: %s; see the expert logs there, continue with: "
                  "python neuro_trigger/main.py --resume %s", time.time() - started, folder, folder)
    else:
        log.info("done in %.1f s: %s", time.time() - started, folder)
    return RunResult(folder, summary)


def _write_report(folder: Path, stores: dict[str, ColumnStore]) -> None:
    """report.html of the run (it never fails a run: a problem there is a warning)."""
    from neuro_trigger.run.report import write_run_report

    log.info("writing report.html")
    write_run_report(folder, stores)


def verdict_lines(summary: dict[str, Any], resolved: dict[str, Any], split: str = "val") -> list[str]:
    """One line per expert for the console: how it ended, its epochs, and new against old on `split`."""
    lines = []
    metrics = summary.get("metrics", {}).get(split, {}).get("experts", {})
    for key, state in summary["experts"].items():
        status = state.get("status", "unknown")
        if status != "finished":
            lines.append(f"{key}: {status}" + (f": {state['error']}" if state.get("error") else ""))
            continue
        epochs, most = state.get("epochs_done", 0), resolved["experts"][key]["epochs"]
        stop = f"early stop after {epochs}/{most} epochs" if epochs < most else f"{epochs}/{most} epochs"
        m = metrics.get(key, {}).get("unfiltered", {})
        lines.append(f"{key}: {stop}; {split} z resolution {_number(m, 'z_diff_std_cm', '.2f')} cm "
                     f"(old {_number(m, 'old_z_diff_std_cm', '.2f')} cm), "
                     f"loss vs old {_number(m, 'loss_vs_old', '.3f')}")
    return lines


def _number(metrics: dict[str, Any], name: str, fmt: str) -> str:
    value = metrics.get(name)
    return format(value, fmt) if isinstance(value, int | float) else "n/a"


def resume(folder: Path, show_progress: bool = True, verbose: bool = False) -> RunResult:
    """Continue a run: every expert not finished goes on from its last checkpoint (or starts, if it
    has none); finished experts are kept as they are. Then the folder is assembled as after any run."""
    started = time.time()
    _setup_console()
    folder = Path(folder).resolve()
    if not (folder / "config.json").is_file() or not (folder / "summary.json").is_file():
        raise UserError(f"--resume {folder}: not a run folder (no config.json / summary.json)")
    resolved = artifacts.read_json(folder / "config.json", "--resume")
    summary = artifacts.read_json(folder / "summary.json", "--resume")
    with RunLock(folder).acquire("--resume"):
        for key in resolved["experts"]:
            state = _read_status(folder, key)
            if state.get("status") == "running" and state.get("pid") and \
                    process_alive(state["pid"], state.get("pid_start")):
                raise UserError(f"--resume {folder}: {key} is still training in process {state['pid']} "
                                f"(left from the run that started it); stop it first (kill {state['pid']})")
        unplotted = _missing_figures(folder, resolved)
        if summary.get("status") == "finished" and not unplotted:
            log.info("%s finished already and is complete: nothing to resume, nothing changed", folder)
            return RunResult(folder, summary)
        handler = _setup_logging(folder)
        try:
            with stop_on_signals():
                return _resume(folder, resolved, summary, unplotted, show_progress, started, verbose)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _missing_figures(folder: Path, resolved: dict[str, Any]) -> list[tuple[str, str]]:
    """(expert, split) of finished experts that lack any of their figures (a run stopped while drawing them)."""
    from neuro_trigger.run.plots import figure_file, figure_names

    missing = []
    for key, config in resolved["experts"].items():
        if _status_of(folder, key) != "finished":
            continue
        files = [figure_file(name) for name in figure_names(config["out_size"])]
        missing += [(key, split) for split in artifacts.PLOT_SPLITS
                    if not all((folder / key / "plots" / split / f).is_file() for f in files)]
    return missing


def _resume(folder: Path, resolved: dict[str, Any], summary: dict[str, Any], unplotted: list[tuple[str, str]],
            show_progress: bool, started: float, verbose: bool) -> RunResult:
    if resolved["mode"] == "production":
        start_process_server()
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    for split, store in stores.items():
        recorded = [s["sha256"] for s in summary["data"][split]]
        if recorded != [s["sha256"] for s in store.sources]:
            raise UserError(f"--resume {folder}: the {split} data files changed since the run started")
    counts = check_rows(stores, resolved)
    todo = {k: n for k, n in counts.items() if _status_of(folder, k) != "finished"}
    ensure_writable(folder, min_free_mb=_megabytes(artifacts.estimated_run_bytes(
        stores, {**resolved, "experts": {k: resolved["experts"][k] for k in todo}})))
    unplotted = [(k, split) for k, split in unplotted if split in stores]
    resume_from = {}
    for key in todo:
        last = folder / key / "ckpts" / "last.ckpt"
        resume_from[key] = last if last.is_file() else None
    log.info("resuming %s: %s", folder, ", ".join(
        f"{k} from {'its last checkpoint' if resume_from[k] else 'the start'}" for k in todo) or "nothing to train")
    if unplotted:
        log.info("drawing the missing figures of %s", ", ".join(f"{k} ({split})" for k, split in unplotted))
    return _run_and_assemble(folder, resolved, stores, todo, resume_from, show_progress, started, unplotted,
                             verbose)


def _run_in_process(folder: Path, keys: list[str], stores: dict[str, ColumnStore],
                    resume_from: dict[str, Path | None], show: bool, verbose: bool = False) -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(threads_per_expert(1))
    view = ProgressView(keys, show)
    for key in keys:
        handler = _expert_logging(folder, key)
        try:
            run_expert(folder, key, stores, view.update, resume_from.get(key), verbose=verbose)
        except (UserError, KeyboardInterrupt):
            raise
        except Exception as error:
            log.exception("%s failed", key)
            _write_failure(folder, key, error)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def threads_per_expert(slots: int) -> int:
    """CPU threads for each of `slots` experts training at once.

    Half the cores are shared out, at most 4 per expert: the networks are tiny, and an OpenMP
    thread waiting for a core costs far more than it gives. Measured on 2 cores, batch 2048:
    one thread 1.8 ms per step, two threads 57 ms while other processes kept both cores busy
    (benchmark: 470k vs 129k samples/s with other work running; 466k vs 684k on a quiet machine).
    The risk of a 4x loss outweighs a 1.5x gain, so a 2-core machine starts one thread per expert.
    Cores freed later are offered to the experts still training; ThreadShare keeps them only where
    its chunks then train faster.
    """
    return max(1, min(4, cpu_cores() // (2 * slots)))


# What every expert process needs, imported once in the fork server: a process forked from it starts
# in a fraction of a second instead of the 5-7 s a fresh interpreter takes to import torch and lightning.
# Only third-party libraries: this project's own modules are imported by each job from the files as they
# are when it starts, so a notebook that edits a module runs the code that git_diff.txt records.
PRELOAD = ["torch", "lightning", "torch.utils.tensorboard", "fsspec.implementations.local", "pandas",
           "matplotlib.figure", "matplotlib.backends.backend_agg"]


def process_context() -> mp.context.BaseContext:
    """Where expert processes come from: a fork server that has imported PRELOAD (Linux, macOS), else
    fresh interpreters (spawn). Nothing in the server touches CUDA or starts threads, so forking it is safe."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def start_process_server() -> None:
    """Start the fork server now, so that its imports overlap with loading the data."""
    if "forkserver" in mp.get_all_start_methods():
        process_context()
        from multiprocessing import forkserver

        forkserver.ensure_running()


def stop_process_server() -> None:
    """End the fork server now, when no job of it is left. Left to itself it ends once this process has
    ended, after tearing down torch and lightning, and until then it holds the console's output open
    (a shell pipe or a subprocess reading it would wait). Python has no public call for this."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server._stop()


def _run_parallel(folder: Path, resolved: dict, stores: dict[str, ColumnStore], counts: dict[str, int],
                  resume_from: dict[str, Path | None], show: bool, unplotted: list[tuple[str, str]] = (),
                  verbose: bool = False) -> bool:
    """The experts in `counts` as processes, the largest first, at most `workers` (on CPU at most one
    per core) at once; the split data are shared with them, not copied. Returns whether the prediction
    tables were written (by a job of their own, once every expert has trained)."""
    import torch

    keys = sorted(counts, key=lambda k: -counts[k])
    if not keys and not unplotted:
        return False
    workers = resolved["global"]["workers"]
    jobs = len(keys) * (1 + len(artifacts.PLOT_SPLITS)) + len(unplotted)
    slots = max(1, min(workers, jobs))
    if not torch.cuda.is_available():
        slots = min(slots, cpu_cores())
    ctx = process_context()
    threads = ctx.Value("i", threads_per_expert(slots))
    adaptive = bool(resolved["global"].get("adaptive_threads", False))
    run_pid = os.getpid()
    log.info("%d processes at a time (trainings, then plots), %d CPU thread(s) per training", slots,
             threads.value)
    shared = {split: store.to_shared() for split, store in stores.items()}
    progress = ctx.Queue()
    view = ProgressView(keys, show)
    # Jobs: ("train", key) trains an expert and writes its predictions; ("plots", key, split) then draws
    # its figures; ("tables",) writes the run's prediction tables once no expert is left to train.
    # As jobs of their own, plots and tables keep every core busy while the last experts train.
    pending: list[tuple[str, ...]] = [("train", key) for key in keys] + [("plots", *job) for job in unplotted]
    running: dict[tuple[str, ...], Any] = {}
    tables_written = False
    try:
        while pending or running:
            while pending and len(running) < slots:
                job = pending.pop(0)
                if job[0] == "train":
                    proc = ctx.Process(target=_child, name=job[1],
                                       args=(folder, job[1], shared, threads, progress, resume_from.get(job[1]),
                                             run_pid, adaptive, verbose))
                    view.update({"expert": job[1], "status": "started"})
                elif job[0] == "plots":
                    proc = ctx.Process(target=_plot_child, name=f"{job[1]}-{job[2]}-plots",
                                       args=(folder, job[1], job[2], shared[job[2]], run_pid))
                else:
                    proc = ctx.Process(target=_tables_child, name="tables", args=(folder, shared, run_pid))
                try:
                    proc.start()
                except Exception as error:  # noqa: BLE001 - e.g. an argument that cannot be sent to a process
                    if job[0] != "train":
                        raise
                    reason = f"its process could not be started: {type(error).__name__}: {error}"
                    _mark_failed_at_start(folder, job[1], reason)
                    view.update({"expert": job[1], "status": "failed", "error": reason})
                    continue
                running[job] = proc
            # until a job ends (its sentinel) or 0.2 s pass: a freed slot is refilled at once
            mp.connection.wait([proc.sentinel for proc in running.values()], timeout=0.2)
            _show_progress(progress, view)
            for job, proc in list(running.items()):
                if proc.exitcode is None:
                    continue
                del running[job]
                if adaptive and not pending and running and not torch.cuda.is_available():
                    # the jobs still running may take over the freed cores (ThreadShare keeps them only if faster)
                    threads.value = max(1, min(4, cpu_cores() // len(running)))
                if job[0] == "tables":
                    tables_written = proc.exitcode == 0
                    if not tables_written:
                        log.warning("writing the prediction tables failed (exit code %s), see app.log; "
                                    "trying again", proc.exitcode)
                    continue
                key = job[1]
                if job[0] == "plots":
                    if proc.exitcode != 0:
                        log.warning("%s: the %s plots failed (exit code %s), see %s.log", key, job[2],
                                    proc.exitcode, key)
                    continue
                _record_exit(folder, key, proc.exitcode)
                status = _status_of(folder, key)
                if status != "finished":
                    error = _read_status(folder, key).get("error")
                    view.update({"expert": key, "status": status, **({"error": error} if error else {})})
                else:
                    pending += [("plots", key, split) for split in artifacts.PLOT_SPLITS if split in shared]
                if not any(j[0] == "train" for j in [*pending, *running]):
                    pending.insert(0, ("tables",))
                    log.info("every expert has trained: drawing the figures (%d jobs) and writing the prediction "
                             "tables", sum(j[0] == "plots" for j in [*pending, *running]))
        _show_progress(progress, view)
        return tables_written
    except KeyboardInterrupt:
        log.warning("interrupted: stopping every expert")
        for proc in running.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        deadline = time.time() + 20
        alive = [proc for proc in running.values() if proc.is_alive()]
        while alive and time.time() < deadline:
            # keep reading their progress: a job whose messages fill the pipe cannot exit
            mp.connection.wait([proc.sentinel for proc in alive], timeout=0.2)
            _show_progress(progress, view)
            alive = [proc for proc in alive if proc.is_alive()]
        for job, proc in running.items():
            if proc.is_alive():
                log.warning("%s did not stop within 20 s: killed", proc.name)
                proc.kill()
            proc.join()
            if job[0] == "train":
                _record_exit(folder, job[1], proc.exitcode, interrupted=True)
        for job in pending:
            if job[0] == "train":
                artifacts.write_json(folder / job[1] / "status.json", {"status": "interrupted", "epochs_done": 0})
        raise
    finally:
        view.close()
        for handle in shared.values():
            handle.release()


def _show_progress(progress, view: ProgressView) -> None:
    """Every progress message the expert processes have sent so far, to the console view."""
    while True:
        try:
            view.update(progress.get_nowait())
        except queue_module.Empty:
            return


def _status_of(folder: Path, key: str) -> str:
    return _read_status(folder, key).get("status", "unknown")


def _read_status(folder: Path, key: str) -> dict[str, Any]:
    path = folder / key / "status.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _record_exit(folder: Path, key: str, exitcode: int | None, interrupted: bool = False) -> None:
    """A process that died without writing a final status (killed by a signal, say) is marked here."""
    status = _read_status(folder, key)
    if status.get("status") in ("finished", "failed", "interrupted"):
        return
    if interrupted or exitcode in (130, 143, 129):
        status.update(status="interrupted")
    elif status.get("pid") is None:
        # it never reached run_expert: the import of its code or the start of the process failed
        _mark_failed_at_start(folder, key, f"its process died before the expert started (exit code {exitcode}); "
                                           "the error is above on the console. A script that calls train() "
                                           "must do so under `if __name__ == \"__main__\":`")
        return
    elif exitcode is not None and exitcode < 0:
        status.update(status="failed", error=f"killed by signal {signal.Signals(-exitcode).name}")
    else:
        status.update(status="failed", error=f"process exited with code {exitcode}")
    status["ended"] = _now()
    artifacts.write_json(folder / key / "status.json", status)


def _mark_failed_at_start(folder: Path, key: str, reason: str) -> None:
    """An expert whose process never started training: the reason goes to its status, its log and the console."""
    log.error("%s failed: %s", key, reason)
    with open(folder / f"{key}.log", "a") as f:
        f.write(f"{_now()} ERROR {key} failed: {reason}\n")
    artifacts.write_json(folder / key / "status.json", {"status": "failed", "error": reason, "ended": _now()})


class ProgressView:
    """Every expert's progress at once: redrawn in place on a terminal, a line per epoch elsewhere."""

    def __init__(self, keys: list[str], show: bool = True, min_interval: float = 1.0) -> None:
        self.rows = {k: "waiting" for k in keys}
        self.show = show
        self.tty = sys.stderr.isatty()
        self.drawn = 0
        self.last = 0.0
        self.min_interval = min_interval

    def update(self, message: dict) -> None:
        key = message["expert"] if isinstance(message["expert"], str) else f"expert_{message['expert']}"
        status = message.get("status", "")
        if "epoch" in message and status in ("training", "finished"):
            text = f"epoch {message['epoch'] + 1:>4}/{message.get('max_epochs', '?')}  " \
                   f"val_loss {message.get('val_loss', math.nan):.5f}"
            ratio = message.get("val_loss_vs_old_loss")
            if ratio is not None and not math.isnan(ratio):
                text += f"  vs old {ratio:.3f}"
            text = f"{status:<9} {text}"
        else:
            text = status + (f": {message['error']}" if message.get("error") else "")
        if status != "training" and self.rows.get(key) == text:
            return  # said already (a failure is reported by the process and again from its status)
        self.rows[key] = text
        if not self.show:
            return
        now = time.time()
        if self.tty:
            if now - self.last >= self.min_interval or status not in ("training",):
                self._redraw()
                self.last = now
        elif status != "training" or now - self.last >= 10 * self.min_interval:
            print(f"{key}: {text}", file=sys.stderr, flush=True)
            self.last = now

    def _redraw(self) -> None:
        if self.drawn:
            sys.stderr.write(f"\x1b[{self.drawn}F")
        for key, text in self.rows.items():
            sys.stderr.write(f"\x1b[2K{key:>10}  {text}\n")
        sys.stderr.flush()
        self.drawn = len(self.rows)

    def close(self) -> None:
        if self.show and self.tty:
            self._redraw()
