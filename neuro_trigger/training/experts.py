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
    if any(p.resolve().parent == toy_dir and not p.exists() for p in wanted):
        log.info("generating the embedded toy data set into %s (first use)", toy_dir)
        toy_mc.ensure_default_dataset()
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
               report=None, resume_from: Path | None = None, threads=None, plots: bool = True) -> dict[str, Any]:
    """Train one expert of the run in `folder` and write its part of the folder; returns its status.

    Without `stores` the data are loaded here (a batch job); `report` receives progress dicts;
    `resume_from` is a checkpoint to continue from. On Ctrl-C the status says "interrupted" with
    the number of epochs done, and KeyboardInterrupt is raised. `threads` (a shared integer) is
    the CPU thread count the runner grants this expert; it is read at every epoch start. `plots`
    False leaves the figures to artifacts.write_expert_plots (a parallel run draws them in jobs of their own).
    """
    import lightning as L
    import torch

    from neuro_trigger.training.batches import EvalBatches, TrainBatches
    from neuro_trigger.training.module import ExpertModule

    report = report or (lambda message: None)
    resolved = json.loads((folder / "config.json").read_text())
    config = resolved["experts"][key]
    expert_dir = folder / key
    expert_dir.mkdir(exist_ok=True)
    status: dict[str, Any] = {"status": "running", "started": _now(), "pid": os.getpid()}
    artifacts.write_json(expert_dir / "status.json", status)
    if stores is None:
        stores = load_data(config, folder.parent.parent)
    L.seed_everything(config["seed"], workers=True, verbose=False)
    out = config["out_size"]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
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

    from neuro_trigger.training.callbacks import ProgressReport, TensorBoardPlots, ThreadShare

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
                   TensorBoardPlots(config["plot_every"], config["out_size"])]
        + ([ThreadShare(threads)] if threads is not None else []),
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1_000_000,  # metrics are logged per epoch only
    )
    return trainer, checkpoint


def _child(folder: Path, key: str, handles: dict[str, SharedColumns], threads, progress,
           resume_from: Path | None) -> None:
    """Entry point of an expert process: its output goes to its own log, its status to status.json."""
    import torch

    log_fd = os.open(folder / f"{key}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    _expert_logging(folder, key)
    torch.set_num_threads(threads.value)
    stores = {split: ColumnStore.from_shared(h) for split, h in handles.items()}
    try:
        run_expert(folder, key, stores, progress.put, resume_from, threads, plots=False)
    except KeyboardInterrupt:
        progress.put({"expert": key, "status": "interrupted"})
        sys.exit(130)  # the parent marks an expert interrupted before its training started
    except BaseException as error:  # noqa: BLE001 - every failure must reach status.json
        log.error("%s failed:\n%s", key, traceback.format_exc())
        _write_failure(folder, key, error)
        progress.put({"expert": key, "status": "failed", "error": str(error)})
        sys.exit(1)


def _plot_child(folder: Path, key: str, split: str, handle: SharedColumns) -> None:
    """Entry point of a plotting job: the figures of one finished expert on one split."""
    log_fd = os.open(folder / f"{key}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    _expert_logging(folder, key)
    config = json.loads((folder / "config.json").read_text())["experts"][key]
    try:
        artifacts.write_expert_plots(folder / key, config, ColumnStore.from_shared(handle), split)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - the expert's results stand; its log says what went wrong
        log.error("%s: the %s plots failed:\n%s", key, split, traceback.format_exc())
        sys.exit(1)


def _tables_child(folder: Path, handles: dict[str, SharedColumns]) -> None:
    """Entry point of the job writing the run's prediction tables once every expert has trained."""
    log_fd = os.open(folder / "app.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        artifacts.write_prediction_tables(folder, {split: ColumnStore.from_shared(h) for split, h in handles.items()})
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:  # noqa: BLE001 - the parent writes them itself after a failure here
        traceback.print_exc()
        sys.exit(1)


def _write_failure(folder: Path, key: str, error: BaseException) -> None:
    path = folder / key / "status.json"
    status = json.loads(path.read_text()) if path.exists() else {}
    status.update(status="failed", error=f"{type(error).__name__}: {error}", ended=_now())
    artifacts.write_json(path, status)


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


def _setup_logging(folder: Path) -> logging.Handler:
    handler = logging.FileHandler(folder / "app.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    if not any(isinstance(h, _Console) for h in log.handlers):
        console = _Console()
        console.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(console)
    log.setLevel(logging.INFO)
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
) -> RunResult:
    """Train the experts of a config and return the run folder and its summary.

    production: every expert, each in its own process, into `log_root/<config>/version_N` (default
    `<repo>/log`); otherwise a debug run: only the first expert, in this process (breakpoints
    work), at most 10 epochs, into /tmp/nt_pytorch_debug_log. solo: one network on all data.
    """
    started = time.time()
    experts = [-1] if solo else None
    resolved = resolve_config(config, overrides, experts=experts)
    if not production:
        first = resolved["global"]["experts"][0]
        resolved = resolve_config(config, overrides, experts=[first])
        for c in resolved["experts"].values():
            c["epochs"] = min(c["epochs"], DEBUG_MAX_EPOCHS)
    root = Path(log_root) if log_root else (REPO_ROOT / "log" if production else DEBUG_ROOT)
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
    stores = load_data(resolved["global"], root)
    counts = check_rows(stores, resolved)
    for key, config_ in resolved["experts"].items():
        if config_.get("load_pre_trained_weights"):
            artifacts.check_weights_file(config_["load_pre_trained_weights"], [key], resolved["experts"])
    folder = create_run_folder(root, resolved["name"])
    handler = _setup_logging(folder)
    try:
        log.info("run folder %s (%s, experts %s)", folder, "production" if production else "debug",
                 list(resolved["experts"]))
        for split, store in stores.items():
            log.info("%s: %d rows from %s", split, len(store), ", ".join(s["path"] for s in store.sources))
        resolved["description"] = description
        resolved["mode"] = "production" if production else "debug"
        artifacts.write_json(folder / "config.json", resolved)
        git_id = write_git_snapshot(folder, REPO_ROOT)
        log.info("git %s", git_id or "unavailable (see git_id.txt)")
        artifacts.start_summary(folder, resolved, stores, git_id, description, started)
        return _run_and_assemble(folder, resolved, stores, counts, {}, show_progress, started)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run_and_assemble(folder: Path, resolved: dict, stores: dict[str, ColumnStore], counts: dict[str, int],
                      resume_from: dict[str, Path | None], show: bool, started: float,
                      unplotted: list[tuple[str, str]] = ()) -> RunResult:
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
            tables_written = _run_parallel(folder, resolved, stores, counts, resume_from, show, unplotted)
        else:
            for key, split in unplotted:
                artifacts.write_expert_plots(folder / key, resolved["experts"][key], stores[split], split)
            _run_in_process(folder, list(counts), stores, resume_from, show)
    except KeyboardInterrupt:
        artifacts.assemble(folder, stores)
        append_journal(root / "log.txt", {**journal, "description": journal["description"] + " [interrupted]"})
        log.warning("interrupted; resume with: python neuro_trigger/main.py --resume %s", folder)
        raise
    summary = artifacts.assemble(folder, stores, tables_written=tables_written)
    append_journal(root / "log.txt", journal)
    log.info("done in %.1f s: %s", time.time() - started, folder)
    return RunResult(folder, summary)


def resume(folder: Path, show_progress: bool = True) -> RunResult:
    """Continue a run: every expert not finished goes on from its last checkpoint (or starts, if it
    has none); finished experts are kept as they are. Then the folder is assembled as after any run."""
    started = time.time()
    folder = Path(folder).resolve()
    if not (folder / "config.json").is_file() or not (folder / "summary.json").is_file():
        raise UserError(f"--resume {folder}: not a run folder (no config.json / summary.json)")
    resolved = artifacts.read_json(folder / "config.json", "--resume")
    summary = artifacts.read_json(folder / "summary.json", "--resume")
    handler = _setup_logging(folder)
    try:
        start_process_server()
        stores = load_data(resolved["global"], folder.parent.parent)
        for split, store in stores.items():
            recorded = [s["sha256"] for s in summary["data"][split]]
            if recorded != [s["sha256"] for s in store.sources]:
                raise UserError(f"--resume {folder}: the {split} data files changed since the run started")
        counts = check_rows(stores, resolved)
        todo = {k: n for k, n in counts.items() if _status_of(folder, k) != "finished"}
        # a finished expert whose plots were still being drawn when the run stopped gets them now
        unplotted = [(k, split) for k in counts if k not in todo for split in artifacts.PLOT_SPLITS
                     if split in stores and not any((folder / k / "plots" / split).glob("*.png"))]
        resume_from = {}
        for key in todo:
            last = folder / key / "ckpts" / "last.ckpt"
            resume_from[key] = last if last.is_file() else None
        log.info("resuming %s: %s", folder, ", ".join(
            f"{k} from {'its last checkpoint' if resume_from[k] else 'the start'}" for k in todo) or "nothing to train")
        return _run_and_assemble(folder, resolved, stores, todo, resume_from, show_progress, started, unplotted)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _run_in_process(folder: Path, keys: list[str], stores: dict[str, ColumnStore],
                    resume_from: dict[str, Path | None], show: bool) -> None:
    import torch

    if not torch.cuda.is_available():
        torch.set_num_threads(threads_per_expert(1))
    view = ProgressView(keys, show)
    for key in keys:
        handler = _expert_logging(folder, key)
        try:
            run_expert(folder, key, stores, view.update, resume_from.get(key))
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
PRELOAD = ["torch", "lightning", "torch.utils.tensorboard", "fsspec.implementations.local",
           "neuro_trigger.training.experts", "neuro_trigger.training.module", "neuro_trigger.training.callbacks",
           "neuro_trigger.run.artifacts", "neuro_trigger.run.plots"]


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


def _run_parallel(folder: Path, resolved: dict, stores: dict[str, ColumnStore], counts: dict[str, int],
                  resume_from: dict[str, Path | None], show: bool, unplotted: list[tuple[str, str]] = ()) -> bool:
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
                                       args=(folder, job[1], shared, threads, progress, resume_from.get(job[1])))
                    view.update({"expert": job[1], "status": "started"})
                elif job[0] == "plots":
                    proc = ctx.Process(target=_plot_child, name=f"{job[1]}-{job[2]}-plots",
                                       args=(folder, job[1], job[2], shared[job[2]]))
                else:
                    proc = ctx.Process(target=_tables_child, name="tables", args=(folder, shared))
                proc.start()
                running[job] = proc
            # until a job ends (its sentinel) or 0.2 s pass: a freed slot is refilled at once
            mp.connection.wait([proc.sentinel for proc in running.values()], timeout=0.2)
            _show_progress(progress, view)
            for job, proc in list(running.items()):
                if proc.exitcode is None:
                    continue
                del running[job]
                if not pending and running and not torch.cuda.is_available():
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
                    view.update({"expert": key, "status": status})
                else:
                    pending += [("plots", key, split) for split in artifacts.PLOT_SPLITS if split in shared]
                if not any(j[0] == "train" for j in [*pending, *running]):
                    pending.insert(0, ("tables",))
        _show_progress(progress, view)
        return tables_written
    except KeyboardInterrupt:
        log.warning("interrupted: stopping every expert")
        for proc in running.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        deadline = time.time() + 20
        for job, proc in running.items():
            proc.join(max(0.1, deadline - time.time()))
            if proc.is_alive():
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
    path = folder / key / "status.json"
    return json.loads(path.read_text())["status"] if path.exists() else "unknown"


def _record_exit(folder: Path, key: str, exitcode: int | None, interrupted: bool = False) -> None:
    """A process that died without writing a final status (killed by a signal, say) is marked here."""
    path = folder / key / "status.json"
    status = json.loads(path.read_text()) if path.exists() else {}
    if status.get("status") in ("finished", "failed", "interrupted"):
        return
    if interrupted or exitcode == 130:
        status.update(status="interrupted")
    elif exitcode is not None and exitcode < 0:
        status.update(status="failed", error=f"killed by signal {signal.Signals(-exitcode).name}")
    else:
        status.update(status="failed", error=f"process exited with code {exitcode}")
    status["ended"] = _now()
    path.parent.mkdir(exist_ok=True)
    artifacts.write_json(path, status)


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
