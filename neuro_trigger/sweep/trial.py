"""One trial: one expert trained with one set of parameters, as a run folder of its own.

`trials/expert_<N>/trial_<k>/` is a production run folder holding one expert (config.json, summary.json,
weights.json, the expert's folder with its checkpoints, logs and results), so evaluate.py and compare.py work on
it; its figures and prediction tables are left out (the sweep's best/ folder has them). The trial reports its
validation loss to its study after every epoch and stops when the pruner says so; when it ends it writes
`trial.json` (its record) and then tells its study, so a trial that has written its record is never trained again.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np

from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.judge.assemble import assemble, start_summary
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.status import status_of
from neuro_trigger.sweep import studies
from neuro_trigger.sweep.space import Sweep
from neuro_trigger.training.expert import monitored_loss, run_expert

log = logging.getLogger("neuro_trigger")

RECORD = "trial.json"
DEBUG_MAX_EPOCHS = 10


def trial_folder(sweep_folder: Path, expert: int, number: int) -> Path:
    return sweep_folder / "trials" / f"expert_{expert}" / f"trial_{number:03d}"


def read_record(folder: Path) -> dict[str, Any] | None:
    """A trial's record (trial.json), or None while it has none (not ended, or stopped)."""
    path = folder / RECORD
    return read_json(path, RECORD) if path.is_file() else None


def prepare_trial(sweep_folder: Path, sweep: Sweep, asked: studies.Asked, stores: dict[str, ColumnStore],
                  production: bool, git_id: str | None) -> Path:
    """The trial's run folder with its config.json and summary.json (kept as they are when it exists: a resumed
    trial). A value the config refuses in combination raises UserError."""
    folder = trial_folder(sweep_folder, asked.expert, asked.number)
    if (folder / "config.json").is_file():
        return folder
    key = f"expert_{asked.expert}"
    resolved = resolve_config(sweep.config, sweep.trial_overrides(asked.expert, asked.params),
                              experts=[asked.expert])
    config = resolved["experts"][key]
    config["threads"] = config["threads"] or 1  # trials fill the cores one thread each; best/ trains the same
    if not production:
        config["epochs"] = min(config["epochs"], DEBUG_MAX_EPOCHS)
    folder.mkdir(parents=True, exist_ok=True)  # a SLURM agent made it to hold its lock there
    params = ", ".join(f"{k}={v!r}" for k, v in asked.params.items())
    resolved.update(description=f"sweep {sweep.name}, {key} trial {asked.number}: {params}", mode="production",
                    runs_root=str(sweep_folder.parent.parent.parent), launcher={"name": "local"},
                    sweep={"folder": str(sweep_folder), "expert": asked.expert, "trial": asked.number,
                           "params": asked.params})
    write_json(folder / "config.json", resolved)
    start_summary(folder, resolved, stores, git_id, resolved["description"], time.time())
    return folder


class PruningReport(L.Callback):
    """The monitored validation loss to the trial's study after each epoch; stops the training when the study's
    pruner says the trial is clearly worse than its peers at that epoch."""

    def __init__(self, sweep_folder: Path, sweep: Sweep, expert: int, number: int, monitor: str) -> None:
        import optuna

        study = studies.open_study(sweep_folder, sweep, expert)
        self.trial = optuna.trial.Trial(study, studies.trial_id(sweep_folder, sweep, expert, number))
        self.monitor = monitor
        self.pruned = False

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or not math.isfinite(float(value)):
            return
        self.trial.report(float(value), trainer.current_epoch)
        if self.trial.should_prune():
            self.pruned = True
            trainer.should_stop = True
            log.info("pruned after epoch %d: its %s %.5g is worse than its peers' there",
                     trainer.current_epoch + 1, self.monitor, float(value))


def objective_of(folder: Path, key: str, sweep: Sweep) -> float:
    """The trial's objective from its expert's validation results (NaN where it has none)."""
    if sweep.objective == "val_loss":
        return float(read_json(folder / key / "status.json", "status.json").get("best_val_loss", math.nan))
    result = read_json(folder / key / "result_val.json", "result_val.json")
    if sweep.objective == "z_resolution":
        return float(result.get("filtered", result["unfiltered"])["z_diff_std_cm"])
    roc = result["trigger"]["new"]["roc"]
    efficiency, rejection = np.asarray(roc["efficiency"], float), np.asarray(roc["rejection"], float)
    if not len(efficiency) or not efficiency.max() >= sweep.target_efficiency:
        return math.nan
    return float(np.interp(sweep.target_efficiency, efficiency, rejection))


def train_trial(sweep_folder: Path, sweep: Sweep, asked: studies.Asked, stores: dict[str, ColumnStore],
                production: bool = True, git_id: str | None = None, resume_from: Path | None = None,
                verbose: bool = False, report=None) -> dict[str, Any]:
    """Train the trial (or go on from `resume_from`), write its record and tell its study; returns the record.
    A failure of the trial (its config refused, an exception, a loss that is not a number) is its record's
    state "failed" with the reason; a stop (Ctrl-C, SIGTERM) leaves no record and raises KeyboardInterrupt."""
    key = f"expert_{asked.expert}"
    folder = trial_folder(sweep_folder, asked.expert, asked.number)
    record = new_record(sweep_folder, asked)
    try:
        prepare_trial(sweep_folder, sweep, asked, stores, production, git_id)
        config = read_json(folder / "config.json", "config.json")["experts"][key]
        pruning = PruningReport(sweep_folder, sweep, asked.expert, asked.number, monitored_loss(config))
        if status_of(folder, key) == "finished":  # trained before a stop that came before its record
            status = read_json(folder / key / "status.json", "status.json")
        else:
            status = run_expert(folder, key, stores, report, resume_from, plots=False, verbose=verbose,
                                callbacks=(pruning,))
        assemble(folder, stores, tables_written=True)  # weights.json and summary.json; no prediction tables
        value = objective_of(folder, key, sweep)
        record.update(epochs=status.get("epochs_done", 0), objective=value if math.isfinite(value) else None)
        if pruning.pruned:
            record["state"] = "pruned"
        elif math.isfinite(value):
            record["state"] = "finished"
        else:
            record["error"] = f"its objective {sweep.objective} is not a number (a loss that diverged?)"
    except KeyboardInterrupt:
        raise
    except Exception as error:  # noqa: BLE001 - any failure of one trial is that trial's, the sweep goes on
        log.exception("%s trial %d failed", key, asked.number)
        record["error"] = f"{type(error).__name__}: {error}"
        if (folder / key / "status.json").is_file() and status_of(folder, key) == "finished":
            record["epochs"] = read_json(folder / key / "status.json", "status.json").get("epochs_done", 0)
    return finish_trial(sweep_folder, sweep, record)


def new_record(sweep_folder: Path, asked: studies.Asked, state: str = "failed", error: str | None = None,
               epochs: int = 0) -> dict[str, Any]:
    """A trial's record before its end is known."""
    folder = trial_folder(sweep_folder, asked.expert, asked.number)
    return {"trial": asked.number, "expert": asked.expert, "params": asked.params, "state": state,
            "epochs": epochs, "objective": None, "folder": str(folder.relative_to(sweep_folder)), "error": error}


def finish_trial(sweep_folder: Path, sweep: Sweep, record: dict[str, Any]) -> dict[str, Any]:
    """Write the trial's record, then tell its study (a stop in between leaves the record; a resume tells it)."""
    folder = sweep_folder / record["folder"]
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / RECORD, record)
    studies.tell(sweep_folder, sweep, record["expert"], record["trial"], record["state"], record["objective"])
    return record
