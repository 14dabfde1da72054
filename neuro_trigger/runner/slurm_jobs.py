"""The SLURM launcher's jobs, as they run on the nodes: an expert's training (requeued after a time limit or a
preemption, it goes on from its last checkpoint), one expert's figures, the run's prediction tables, and the
assembling of the run folder. Each loads the data itself, from the parse cache.

The experts' status files are the source of truth, not SLURM: without accounting storage nobody learns from
SLURM how a cancelled job ended. An expert job stopped by SIGTERM (scancel, a time limit, a preemption) writes
its status and keeps its last checkpoint; when SLURM or submitit requeues it, it goes on from that checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import submitit

from neuro_trigger.data.selection import load_data
from neuro_trigger.judge.assemble import refresh_summary
from neuro_trigger.judge.expert_results import write_expert_plots
from neuro_trigger.run.prediction_tables import write_prediction_tables
from neuro_trigger.run.status import ENDED, now, read_status, status_of, update_status, write_failure, write_progress
from neuro_trigger.runner.finish import finish_run
from neuro_trigger.training.expert import expert_logging, run_expert, slurm_job_id
from neuro_trigger.training.stopping import stop_job_on_signals

log = logging.getLogger("neuro_trigger")


def _job_logging(folder: Path, key: str) -> None:
    logging.getLogger("neuro_trigger").setLevel(logging.INFO)
    expert_logging(folder, key)


class ExpertJob(submitit.helpers.Checkpointable):
    """Trains one expert; requeued after a time limit or preemption, it continues from its last checkpoint."""

    def __call__(self, folder: str, key: str, verbose: bool = False) -> str:
        folder = Path(folder)
        stop_job_on_signals()  # scancel's SIGTERM stops the training cleanly (submitit would ignore it)
        _job_logging(folder, key)
        state = read_status(folder, key)
        if state.get("status") == "finished":
            return "finished"
        last = folder / key / "ckpts" / "last.ckpt"
        resume_from = last if last.is_file() else None
        if resume_from is not None:
            log.info("%s: SLURM job %s continues from %s", key, slurm_job_id(), resume_from)
        import torch

        # the job's own cores, at most 4: more threads than that only wait on each other (runner/local.py)
        torch.set_num_threads(max(1, min(4, int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))))
        last_report = [0.0]

        def report(message: dict[str, Any]) -> None:
            if time.time() - last_report[0] >= 1 or message.get("status") != "training":
                write_progress(folder, key, message)
                last_report[0] = time.time()

        try:
            resolved = json.loads((folder / "config.json").read_text())
            stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
            run_expert(folder, key, stores, report, resume_from, plots=False, verbose=verbose)
        except KeyboardInterrupt:
            if status_of(folder, key) not in ENDED:
                update_status(folder, key, status="interrupted", ended=now())
            refresh_summary(folder)
            raise
        except BaseException as error:
            if not isinstance(error, SystemExit):
                log.exception("%s failed", key)
                write_failure(folder, key, error)
                refresh_summary(folder)
            raise
        return "finished"


def plots_job(folder: str, key: str, splits: list[str]) -> str:
    """The figures of one expert on the given splits, if it finished (one job: each job pays the imports)."""
    folder = Path(folder)
    stop_job_on_signals()
    if status_of(folder, key) != "finished":
        return "skipped"
    _job_logging(folder, key)
    resolved = json.loads((folder / "config.json").read_text())
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    for split in splits:
        write_expert_plots(folder / key, resolved["experts"][key], stores[split], split)
    return "drawn"


def tables_job(folder: str) -> str:
    """The run's prediction tables from every finished expert; a marker tells the assemble job."""
    folder = Path(folder)
    stop_job_on_signals()
    resolved = json.loads((folder / "config.json").read_text())
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    write_prediction_tables(folder, stores)
    (folder / "slurm" / "tables.done").write_text(json.dumps(_finished_experts(folder, resolved)))
    return "written"


def assemble_job(folder: str, interrupted: bool = False) -> str:
    """summary.json, weights.json, report.html and the journal line, once every other job has ended."""
    folder = Path(folder)
    if not interrupted:
        stop_job_on_signals()
    resolved = json.loads((folder / "config.json").read_text())
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    marker = folder / "slurm" / "tables.done"
    tables_written = marker.is_file() and json.loads(marker.read_text()) == _finished_experts(folder, resolved)
    summary = finish_run(folder, stores, tables_written=tables_written, interrupted=interrupted)
    return summary["status"]


def _finished_experts(folder: Path, resolved: dict[str, Any]) -> list[str]:
    return [k for k in resolved["experts"] if status_of(folder, k) == "finished"]
