"""Following a SLURM run from the submitting command: the live view of its jobs, read from the experts' status
and progress files and from squeue; experts that stop showing progress; and the assembling of the folder here
when every job is gone without doing it (cancelled)."""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from neuro_trigger.run.files import read_json
from neuro_trigger.run.status import (
    ENDED,
    epochs_in_checkpoint,
    now,
    read_progress,
    read_status,
    status_of,
    update_status,
)
from neuro_trigger.runner.console import ProgressView
from neuro_trigger.runner.slurm_jobs import assemble_job
from neuro_trigger.runner.slurm_queue import job_ids, queued_jobs, run_command
from neuro_trigger.runner.stalls import StallWatch, mark_stalled

log = logging.getLogger("neuro_trigger")


def follow(folder: Path, submission: dict[str, Any], keys: list[str], show: bool = True,
           poll_s: float = 1.0) -> dict[str, Any]:
    """Show the experts' progress (from their status and progress files) until the assemble job has written
    summary.json; if every job is gone without it (cancelled), assemble here. Returns the summary."""
    view = ProgressView(keys, show)
    ids = job_ids(submission)
    settings = json.loads((folder / "config.json").read_text())["global"]
    stalls = StallWatch(settings["stall_warn_s"], settings["stall_stop_s"], view.update, clock=time.time)
    seen: dict[str, str] = {}
    gone_since = None
    try:
        while True:
            for key in keys:
                status = read_status(folder, key).get("status", "queued")
                message = {"expert": key, "status": status}
                if status == "running":
                    _watch(folder, key, submission["experts"].get(key), stalls)
                    status = status_of(folder, key)
                if status == "running":
                    message = {**read_progress(folder, key), "expert": key}
                    message.setdefault("status", "started")
                elif status in ENDED and read_status(folder, key).get("error"):
                    message["error"] = read_status(folder, key)["error"]
                if message != seen.get(key):
                    view.update(message)
                    seen[key] = message
            summary = read_json(folder / "summary.json", "summary.json")
            queued = queued_jobs(ids)
            if queued is not None and submission["assemble"] not in queued and summary.get("status") != "running":
                return summary
            if queued == {}:
                gone_since = gone_since or time.time()
                if time.time() - gone_since > 10:  # the assembling job was cancelled: do its work here
                    log.warning("the run's SLURM jobs are gone without assembling the folder (cancelled?): "
                                "assembling it here")
                    return assemble_here(folder)
            time.sleep(poll_s)
    finally:
        view.close()


def _watch(folder: Path, key: str, job: str | None, stalls: StallWatch) -> None:
    """A running expert's signs of progress are its status and progress files being written; one silent past
    stall_stop_s has its job cancelled, then is marked failed."""
    signs = [p.stat().st_mtime for p in (folder / key / "status.json", folder / key / "progress.json") if p.exists()]
    if signs:
        stalls.heard(key, max(signs))
    job = read_status(folder, key).get("slurm_job_id") or job
    silent = stalls.overdue(key, f"SLURM job {job}")
    if silent is not None:
        if job:  # cancelled first: its SIGTERM makes a job that wakes up write "interrupted" as it stops
            run_command(["scancel", str(job)])
            deadline = time.time() + 120
            while queued_jobs([str(job)]) and time.time() < deadline:
                time.sleep(1)
        mark_stalled(folder, key, f"SLURM job {job}", silent)


def assemble_here(folder: Path, interrupted: bool = False) -> dict[str, Any]:
    """The assemble job's work, done by the submitting command (after scancel, say)."""
    for key in json.loads((folder / "config.json").read_text())["experts"]:
        if status_of(folder, key) == "running":  # its job is gone: it was killed before it could say so
            update_status(folder, key, status="interrupted", ended=now(),
                          epochs_done=epochs_in_checkpoint(folder / key / "ckpts" / "last.ckpt"))
    assemble_job(str(folder), interrupted)
    return json.loads((folder / "summary.json").read_text())
