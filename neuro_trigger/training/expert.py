"""One expert's training: `run_expert` trains it into an existing run folder and writes its part of the
folder; `build_trainer` is the one place its Lightning Trainer is configured.

It runs wherever a launcher puts it: in the debug run's own process, in a job process of a local
production run, or in a SLURM job (which loads the data itself, from the parse cache).
"""
from __future__ import annotations

import json
import logging
import math
import os
import socket
import warnings
from pathlib import Path
from typing import Any

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.selection import expert_rows, load_data
from neuro_trigger.judge.expert_results import PLOT_SPLITS, write_expert_plots, write_expert_results
from neuro_trigger.run.status import epochs_in_checkpoint, now, write_status
from neuro_trigger.run.weights import load_weights_into
from neuro_trigger.training.devices import torch_device, trainer_hardware
from neuro_trigger.training.stopping import process_start_time, signals_deferred

log = logging.getLogger("neuro_trigger")


def expert_logging(folder: Path, key: str) -> logging.Handler:
    handler = logging.FileHandler(folder / f"{key}.log", encoding="utf-8", errors="surrogateescape")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    return handler


def slurm_job_id() -> str | None:
    """The SLURM job this process runs in, as squeue and scancel name it: an array's task as `<array>_<task>`
    (its own job id, SLURM_JOB_ID, is another number); None outside SLURM."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def run_expert(folder: Path, key: str, stores: dict[str, ColumnStore] | None = None,
               report=None, resume_from: Path | None = None, plots: bool = True,
               verbose: bool = False, callbacks: tuple = ()) -> dict[str, Any]:
    """Train one expert of the run in `folder` and write its part of the folder; returns its status.

    Without `stores` the data are loaded here (a batch job); `report` receives progress dicts;
    `resume_from` is a checkpoint to continue from. On Ctrl-C the status says "interrupted" with
    the number of epochs done, and KeyboardInterrupt is raised; once the training is over, a stop waits until
    the results and the status "finished" are written, and is raised then. It trains on the CPU threads its
    launcher set (torch.set_num_threads; for local runs the plan of runner/plan.py). `plots` False leaves the
    figures to expert_results.write_expert_plots (a parallel run draws them in jobs of their own).
    `verbose` lets Lightning's banners and routine warnings through. `callbacks`: Lightning callbacks of the
    caller's, after the run's own (a sweep's pruning).
    """
    import lightning as L
    import torch

    from neuro_trigger.training.batches import EvalBatches, TrainBatches
    from neuro_trigger.training.module import ExpertModule
    from neuro_trigger.training.quiet import quiet_lightning

    quiet_lightning(verbose)
    report = report or (lambda message: None)
    resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config = resolved["experts"][key]
    expert_dir = folder / key
    expert_dir.mkdir(exist_ok=True)
    status: dict[str, Any] = {"status": "running", "started": now(), "pid": os.getpid(),
                              "pid_start": process_start_time(os.getpid()), "host": socket.gethostname()}
    if slurm_job_id():  # a SLURM job (of the SLURM launcher, or a local run inside one)
        status["slurm_job_id"] = slurm_job_id()
    write_status(folder, key, status)
    if stores is None:
        stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    L.seed_everything(config["seed"], workers=True, verbose=False)
    out = config["out_size"]
    device = torch_device(config)
    with warnings.catch_warnings():  # the shared columns are read-only maps; the tensors are only ever read
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensors = {s: (torch.from_numpy(st.x), torch.from_numpy(st.y[:, :out]), torch.from_numpy(st.y_old[:, :out]))
                   for s, st in stores.items()}
    train_rows = expert_rows(stores["train"], config)
    val_rows = expert_rows(stores["val"], config)
    log.info("%s: %d train rows, %d val rows, batch size %d, %s", key, len(train_rows), len(val_rows),
             config["batch_size"], "reweighted by " + json.dumps(config["dist"]) if config["dist"] else "shuffled")
    x, y, _ = tensors["train"]
    # a config.json written before the key existed trained without the last partial mini-batch: a resume goes on so
    drop_last = config.get("drop_last", True)
    train_batches = TrainBatches(x, y, train_rows, config["batch_size"], config["seed"], config["dist"], device,
                                 drop_last=drop_last)
    val_batches = EvalBatches(*tensors["val"], val_rows, device)

    module = ExpertModule(config)
    if config["dist"]:
        from neuro_trigger.data.sampling import bucket_weights

        module.set_val_weights(torch.from_numpy(bucket_weights(stores["val"].y[val_rows, 0], config["dist"])))
    if config.get("load_pre_trained_weights"):
        load_weights_into(module.model, config["load_pre_trained_weights"], key)
    first_epoch = epochs_in_checkpoint(Path(resume_from)) if resume_from is not None else 0
    trainer, checkpoint = build_trainer(config, expert_dir, report, first_epoch=first_epoch, callbacks=callbacks)
    log.info("%s: network and trainer built", key)
    if resume_from is not None:
        log.info("%s: resuming from %s (%d epochs done)", key, resume_from, first_epoch)
    try:
        fit_expert(trainer, module, train_batches, val_batches, ckpt_path=str(resume_from) if resume_from else None)
    except (KeyboardInterrupt, SystemExit) as stop:
        # Lightning turns Ctrl-C into a graceful stop followed by sys.exit(1)
        if isinstance(stop, SystemExit) and not trainer.interrupted:
            raise
        # epochs_done: the epochs last.ckpt holds, which a resume continues from (an interruption writes the state
        # of an epoch's end at most TimedCheckpoint.snapshot_every seconds before it)
        status.update(status="interrupted", epochs_done=checkpoint.saved_epochs, ended=now(),
                      last_checkpoint=str(checkpoint.last_model_path or ""))
        write_status(folder, key, status)
        log.warning("%s interrupted after %d epoch(s), %d of them in its last checkpoint", key,
                    trainer.current_epoch, checkpoint.saved_epochs)
        raise KeyboardInterrupt from None

    # the training is over: its results and its status "finished" are written whole before a stop (Ctrl-C,
    # SIGTERM, SIGHUP) is honoured, which is raised once they are; stopped in between, the expert would be left
    # "interrupted" without its epochs, and a resume would train it again. Its figures come after (a stop while
    # drawing them leaves them to a resume, which draws every missing figure), so a stop waits only for the files.
    with signals_deferred():
        best = checkpoint.best_model_path or checkpoint.last_model_path
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
        module.to("cpu").float()  # predictions and weights.json in float32 whatever the training precision
        write_expert_results(expert_dir, module, config, stores, plots=False)
        status.update(status="finished", epochs_done=trainer.current_epoch, best_checkpoint=str(Path(best).name),
                      monitor=monitored_loss(config),
                      best_val_loss=float(checkpoint.best_model_score) if checkpoint.best_model_score is not None
                      else math.nan, ended=now())
        write_status(folder, key, status)
        report({"expert": config["expert"], "status": "finished", "epoch": trainer.current_epoch - 1,
                "max_epochs": config["epochs"], "val_loss": status["best_val_loss"]})
    if plots:
        for split in PLOT_SPLITS:
            if split in stores:
                write_expert_plots(expert_dir, config, stores[split], split)
    return status


def fit_expert(trainer, module, train_batches, val_batches, ckpt_path: str | None = None) -> None:
    """``trainer.fit`` as a run makes it: the module validates itself on `val_batches` after each epoch's last
    chunk (ExpertModule.set_validation) instead of through Lightning's validation loop, which cost a sizeable
    share of a small expert's epoch (docs/performance.md)."""
    module.set_validation(val_batches)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="You defined a `validation_step` but have no `val_dataloader`")
        trainer.fit(module, train_dataloaders=train_batches, ckpt_path=ckpt_path)


def monitored_loss(config: dict[str, Any]) -> str:
    """The validation loss early stopping and the best checkpoint follow (config key `monitor`): by default
    the reweighted one when batches are drawn reweighted, so that they pick what the reweighting aims at."""
    if config.get("monitor", "auto") != "auto":
        return config["monitor"]
    return "val_reweighted_loss" if config["dist"] else "val_loss"


def build_trainer(config: dict[str, Any], expert_dir: Path, report=None, first_epoch: int = 0,
                  callbacks: tuple = ()):
    """The one place an expert's Trainer is configured: loggers, checkpoints, early stopping, progress, plots.
    `first_epoch`: the epochs a resumed fit's checkpoint holds (metrics.csv keeps their rows); `callbacks`: more
    callbacks, after these."""
    import lightning as L
    from lightning.pytorch.plugins.environments import LightningEnvironment

    from neuro_trigger.training.callbacks import HParamsSummary, ProgressReport, TensorBoardPlots
    from neuro_trigger.training.checkpoints import (
        BufferedTensorBoardLogger,
        KeptCSVLogger,
        PatienceStopping,
        TimedCheckpoint,
    )

    monitor = monitored_loss(config)
    # best-epoch=N.ckpt and last.ckpt, written at save points (the first and last epoch, every SAVE_EVERY_S
    # seconds) and on an interruption rather than every epoch; the loggers are flushed at the same points
    checkpoint = TimedCheckpoint(expert_dir / "ckpts", monitor)
    trainer = L.Trainer(
        max_epochs=config["epochs"],
        **trainer_hardware(config),
        # one process, one device, wherever it runs: Lightning's own SLURM handling (ranks from srun,
        # requeue on SIGUSR1) would fight the SLURM launcher's, which requeues and resumes by itself
        plugins=[LightningEnvironment()],
        # both loggers write at the checkpoint's save points (and at the end), not every epoch
        logger=[BufferedTensorBoardLogger(str(expert_dir), name="tb", version="", default_hp_metric=False,
                                          max_queue=100_000),
                KeptCSVLogger(str(expert_dir), name="csv", version="", flush_logs_every_n_steps=1_000_000,
                              first_epoch=first_epoch)],
        callbacks=[checkpoint,
                   PatienceStopping(monitor, patience=config["early_stopping_patience"]),
                   ProgressReport(config["expert"], report or (lambda message: None)),
                   TensorBoardPlots(config["plot_every"], config["out_size"]),
                   HParamsSummary(config, monitor), *callbacks],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1_000_000,  # metrics are logged per epoch only
    )
    return trainer, checkpoint
