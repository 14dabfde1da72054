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
    mark_interrupted,
    read_progress,
    read_status,
    status_of,
)
from neuro_trigger.runner.console import ProgressView
from neuro_trigger.runner.slurm_jobs import assemble_folder, note_job
from neuro_trigger.runner.slurm_queue import job_ids, queued_jobs, run_command
from neuro_trigger.runner.stalls import StallWatch, mark_stalled

log = logging.getLogger("neuro_trigger")


def follow(folder: Path, submission: dict[str, Any], keys: list[str], show: bool = True,
           poll_s: float = 1.0) -> dict[str, Any]:
    """Show each job of the run as it is (the experts from their status and progress files and squeue, then the
    figures, tables and assemble jobs from summary.json and squeue) until the assemble job has written
    summary.json; if every job is gone without it (cancelled), assemble here. Returns the summary."""
    view = ProgressView(keys, show)
    ids = job_ids(submission)
    settings = json.loads((folder / "config.json").read_text(encoding="utf-8"))["global"]
    stalls = StallWatch(settings["stall_warn_s"], settings["stall_stop_s"], view.update, clock=time.time)
    seen: dict[str, dict[str, Any]] = {}
    waited: dict[str, float] = {}  # when a requeued expert was last seen waiting: its silence counts from then
    gone_since = None

    def show_rows(rows: list[dict[str, Any]]) -> None:
        for message in rows:
            if message != seen.get(message["expert"]):
                view.update(message)
                seen[message["expert"]] = message

    try:
        while True:
            queued = queued_jobs(ids)
            show_rows([_expert_row(folder, key, submission["experts"].get(key), queued, stalls, waited)
                       for key in keys])
            summary = read_json(folder / "summary.json", "summary.json")
            if all(seen[key]["status"] in ENDED for key in keys):  # the experts have ended: the other jobs' turn
                show_rows(_side_rows(summary, submission, queued))
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


STARTING = ("CONFIGURING", "RUNNING")  # squeue's states of a job that has its node but may not have begun yet
WAITING = ("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED")  # a job waiting for a node, again after a requeue


def _expert_row(folder: Path, key: str, job: str | None, queued: dict[str, str] | None, stalls: StallWatch,
                waited: dict[str, float]) -> dict[str, Any]:
    """What an expert's job is doing: `queued` (pending), `starting` (SLURM runs it, it has not yet written its
    status: Python starts, the data load), then as its status and progress say; `requeued` after a time limit
    or a preemption, until it runs again (however long that takes, it is no stall). A status left by an earlier
    job of the expert is not this one's."""
    state = read_status(folder, key)
    slurm = (queued or {}).get(job) if job else None
    if state.get("slurm_job_id") != job:
        return {"expert": key, "status": "starting" if slurm in STARTING else "queued"}
    status = state.get("status", "queued")
    if status in ("running", "interrupted") and slurm in WAITING:
        stalls.forget(key)
        waited[key] = time.time()
        return {"expert": key, "status": "requeued"}
    if status == "running":
        _watch(folder, key, job, stalls, waited.get(key, 0.0))
        state = read_status(folder, key)
        status = state.get("status", "queued")
    if status == "running":
        progress = read_progress(folder, key)
        return {**progress, "expert": key, "status": progress.get("status", "started")}
    return {"expert": key, "status": status, **({"error": state["error"]} if state.get("error") else {})}


SIDE = (("figures", "plots"), ("tables", "tables"), ("assemble", "assemble"))  # summary.json's name, the record's


def _side_rows(summary: dict[str, Any], submission: dict[str, Any],
               queued: dict[str, str] | None) -> list[dict[str, Any]]:
    """The figures, tables and assemble jobs: how they ended (summary.json, which they write), else what squeue says
    of them (queued, running), else gone without a word (cancelled or killed)."""
    rows = []
    for name, recorded in SIDE:
        if recorded not in submission:
            continue
        entry = summary.get("jobs", {}).get(name, {})
        status = entry.get("status", "queued")
        if status not in ("finished", "failed", "interrupted") and queued is not None:
            states = {s for j, s in queued.items() if j.split("_")[0] == submission[recorded]}
            status = "running" if states & set(STARTING) else "queued" if states else "gone"
        row = {"expert": name, "status": status}
        if status == "gone":
            row["error"] = f"SLURM job {submission[recorded]} left the queue without a word (cancelled? killed?)"
        elif entry.get("error"):
            row["error"] = entry["error"]
        rows.append(row)
    return rows


def _watch(folder: Path, key: str, job: str | None, stalls: StallWatch, since: float = 0.0) -> None:
    """A running expert's signs of progress are its status and progress files being written (or its job starting
    again at `since`, after a requeue); one silent past stall_stop_s has its job cancelled, then is marked failed."""
    signs = [p.stat().st_mtime for p in (folder / key / "status.json", folder / key / "progress.json") if p.exists()]
    if signs or since:
        stalls.heard(key, max([*signs, since]))
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
    for key in json.loads((folder / "config.json").read_text(encoding="utf-8"))["experts"]:
        if status_of(folder, key) == "running":  # its job is gone: it was killed before it could say so
            mark_interrupted(folder, key)
    assemble_folder(folder, interrupted)
    for name, _ in SIDE:  # the jobs that never said how they ended
        if read_json(folder / "summary.json", "summary.json").get("jobs", {}).get(name, {}).get("status") in (
                "queued", "running"):
            note_job(folder, name, "cancelled")
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
