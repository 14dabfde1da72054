"""The SLURM launcher's jobs, as they run on the nodes: an expert's training (requeued after a time limit or a
preemption, it goes on from its last checkpoint), one expert's figures, the run's prediction tables, and the
assembling of the run folder. Each loads the data itself, from the parse cache.

The experts' status files are the source of truth, not SLURM: without accounting storage nobody learns from
SLURM how a cancelled job ended. An expert job stopped by SIGTERM (scancel, a time limit, a preemption) writes
its status and keeps its last checkpoint; when SLURM or submitit requeues it, it goes on from that checkpoint.

Every job says in summary.json what it is doing as it starts and ends (`refresh_summary`): the experts from
their status files, the other jobs in its "jobs" part. A detached run's summary.json thus tells what each job
does, and its app.log gets the verdict and the "done" line from the assemble job.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import submitit

from neuro_trigger.data.selection import load_data
from neuro_trigger.judge.expert_results import write_expert_plots
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.prediction_tables import write_prediction_tables
from neuro_trigger.run.status import (
    ENDED,
    last_checkpoint,
    mark_interrupted,
    read_status,
    status_of,
    write_failure,
    write_progress,
)
from neuro_trigger.runner.console import setup_logging
from neuro_trigger.runner.finish import finish_run, log_end
from neuro_trigger.training.expert import expert_logging, run_expert, slurm_job_id
from neuro_trigger.training.stopping import stop_job_on_signals

log = logging.getLogger("neuro_trigger")

SIDE_JOBS = ("figures", "tables", "assemble")  # the jobs of a run besides its experts, in the order they run


# ---------------------------------------------------------------------------------------------- summary.json
def refresh_summary(folder: Path, change: Callable[[dict[str, Any]], None] | None = None,
                    final: bool = False) -> dict[str, Any]:
    """summary.json's experts as their status files say, `change` applied to it, and the run's status from its
    experts: "running" while one is queued or running; once each has ended and not all finished, "interrupted"
    or "failed" (all finished: the assemble job says "finished"). An expert whose status file is missing or
    left from an earlier job keeps its entry ("queued", with the job it waits in) unless `final`, where it
    is "not started". Assembling the folder later replaces the experts and the metrics with the whole summary."""
    with open(folder / ".summary.lock", "a", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = read_json(folder / "summary.json", "summary.json")
        for key, entry in summary["experts"].items():
            state = read_status(folder, key)
            if state and (final or entry.get("slurm_job_id") in (None, state.get("slurm_job_id"))):
                summary["experts"][key] = state
            elif final:
                summary["experts"][key] = {"status": "not started"}
        if change is not None:
            change(summary)
        states = {e["status"] for e in summary["experts"].values()}
        if states & {"queued", "running"}:
            summary["status"] = "running"
        elif states != {"finished"} and summary.get("status") == "running":
            summary["status"] = "interrupted" if "interrupted" in states else "failed"
        write_json(folder / "summary.json", summary)
        return summary


def note_job(folder: Path, name: str, status: str, error: str | None = None, expert: str | None = None) -> None:
    """What a job besides the experts is doing, in summary.json's "jobs" (the figures job: per expert)."""
    def change(summary: dict[str, Any]) -> None:
        job = summary.setdefault("jobs", {}).setdefault(name, {})
        if expert is None:
            job.update(status=status, **({"error": error} if error else {}))
            return
        job.setdefault("experts", {})[expert] = status
        if error:
            job["error"] = f"{expert}: {error}"
        job["status"] = overall(job["experts"].values())

    refresh_summary(folder, change)


def overall(states) -> str:
    """One state for a job of several tasks (the figures, a task per expert)."""
    states = {"finished" if s == "skipped" else s for s in states}
    if "running" in states or ("queued" in states and len(states) > 1):
        return "running"
    return next((s for s in ("queued", "failed", "interrupted") if s in states), "finished")


def _side_job(folder: Path, name: str, work: Callable[[], str], expert: str | None = None) -> str:
    """`work` as the run's `name` job: its start and its end in summary.json."""
    note_job(folder, name, "running", expert=expert)
    try:
        result = work()
    except KeyboardInterrupt:  # scancel's SIGTERM
        note_job(folder, name, "interrupted", expert=expert)
        raise
    except BaseException as error:
        note_job(folder, name, "failed", f"{type(error).__name__}: {error}", expert=expert)
        raise
    note_job(folder, name, result if result == "skipped" else "finished", expert=expert)
    return result


def _job_output() -> None:
    """This job's lines go to its own SLURM log (slurm/<job id>/..._log.out: stderr, where submitit sends it),
    not into an expert's log."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _stores(folder: Path, resolved: dict[str, Any]):
    return load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))


# ---------------------------------------------------------------------------------------------- the jobs
class ExpertJob(submitit.helpers.Checkpointable):
    """Trains one expert; requeued after a time limit or preemption, it continues from its last checkpoint."""

    def __call__(self, folder: str, key: str, verbose: bool = False) -> str:
        folder = Path(folder)
        stop_job_on_signals()  # scancel's SIGTERM stops the training cleanly (submitit would ignore it)
        log.setLevel(logging.INFO)
        expert_logging(folder, key)
        state = read_status(folder, key)
        if state.get("status") == "finished":
            return "finished"
        last = last_checkpoint(folder, key)
        resume_from = last if last.is_file() else None
        if resume_from is not None:
            log.info("%s: SLURM job %s continues from %s", key, slurm_job_id(), resume_from)
        import torch

        # the config's `threads`, else the job's own cores, at most 4: more only wait on each other (runner/plan.py)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))["experts"][key]
        threads = config.get("threads") or max(1, min(4, int(os.environ.get("SLURM_CPUS_PER_TASK", "1"))))
        torch.set_num_threads(threads)
        log.info("%s: training on %d CPU thread(s)", key, threads)
        last_report = [0.0]

        def report(message: dict[str, Any]) -> None:
            if not last_report[0]:  # its first sign: summary.json says it runs
                refresh_summary(folder)
            if time.time() - last_report[0] >= 1 or message.get("status") != "training":
                write_progress(folder, key, message)
                last_report[0] = time.time()

        try:
            resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            run_expert(folder, key, _stores(folder, resolved), report, resume_from, plots=False, verbose=verbose)
        except KeyboardInterrupt:
            if status_of(folder, key) not in ENDED:  # stopped before run_expert could say so
                mark_interrupted(folder, key)
            refresh_summary(folder)
            raise
        except BaseException as error:
            if not isinstance(error, SystemExit):
                log.exception("%s failed", key)
                write_failure(folder, key, error)
                refresh_summary(folder)
            raise
        refresh_summary(folder)
        return "finished"


def plots_job(folder: str, key: str, splits: list[str]) -> str:
    """The figures of one expert on the given splits, if it finished (one job: each job pays the imports)."""
    folder = Path(folder)
    stop_job_on_signals()
    _job_output()

    def draw() -> str:
        if status_of(folder, key) != "finished":
            log.info("%s: not finished, no figures to draw", key)
            return "skipped"
        log.info("%s: drawing its figures (%s) in SLURM job %s", key, ", ".join(splits), slurm_job_id())
        resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        stores = _stores(folder, resolved)
        for split in splits:
            write_expert_plots(folder / key, resolved["experts"][key], stores[split], split)
        return "drawn"

    return _side_job(folder, "figures", draw, expert=key)


def tables_job(folder: str) -> str:
    """The run's prediction tables from every finished expert; a marker tells the assemble job."""
    folder = Path(folder)
    stop_job_on_signals()
    _job_output()

    def write() -> str:
        resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        write_prediction_tables(folder, _stores(folder, resolved))
        (folder / "slurm" / "tables.done").write_text(json.dumps(_finished_experts(folder, resolved)), encoding="utf-8")
        return "written"

    return _side_job(folder, "tables", write)


def assemble_job(folder: str, started: float | None = None) -> str:
    """summary.json, weights.json, report.html and the journal line, once every other job has ended; its lines go
    to app.log too. `started` (a detached run: nobody follows it): the verdict and the "done" line as well."""
    folder = Path(folder)
    stop_job_on_signals()
    setup_logging(folder)  # app.log, and the job's own log
    log.info("assembling the run's files (SLURM job %s)", slurm_job_id())

    def assemble() -> str:
        summary = assemble_folder(folder)
        if started is not None:
            log_end(folder, json.loads((folder / "config.json").read_text(encoding="utf-8")), summary, started)
        return summary["status"]

    return _side_job(folder, "assemble", assemble)


def assemble_folder(folder: Path, interrupted: bool = False) -> dict[str, Any]:
    """The assemble job's work: the run-level files from whatever experts finished; returns the summary."""
    resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    marker = folder / "slurm" / "tables.done"
    tables_written = marker.is_file() and \
        json.loads(marker.read_text(encoding="utf-8")) == _finished_experts(folder, resolved)
    return finish_run(folder, _stores(folder, resolved), tables_written=tables_written, interrupted=interrupted)


def _finished_experts(folder: Path, resolved: dict[str, Any]) -> list[str]:
    return [k for k in resolved["experts"] if status_of(folder, k) == "finished"]
