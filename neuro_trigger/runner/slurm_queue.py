"""What SLURM holds of a run, asked from the submitting machine: the run's job ids (slurm_jobs.json), which of
them squeue still has, scancel, and waiting for cancelled experts to say how they stopped."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from neuro_trigger.run.status import status_of

JOBS_FILE = "slurm_jobs.json"  # the run's job ids, for following, resuming and scancel
SQUEUE_TIMEOUT_S = 30


def run_command(command: list[str]) -> subprocess.CompletedProcess:
    """A SLURM client command, bounded in time; a missing command or one that hangs is a failed one."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, "", f"{command[0]} did not answer in {SQUEUE_TIMEOUT_S} s")
    except OSError as error:
        return subprocess.CompletedProcess(command, 1, "", f"{command[0]}: {error.strerror or error}")


def last_line(text: str) -> str:
    """The line of a SLURM command's stderr that says what went wrong (its last non-empty one)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def read_jobs(folder: Path) -> list[dict[str, Any]]:
    path = folder / JOBS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def job_ids(submission: dict[str, Any]) -> list[str]:
    """Every job id of one submission: the experts' array tasks and the figures, tables and assemble jobs."""
    return [*submission.get("experts", {}).values(), *(v for k, v in submission.items() if k != "experts")]


def all_job_ids(folder: Path) -> list[str]:
    return [j for submission in read_jobs(folder) for j in job_ids(submission)]


def queued_jobs(ids: list[str]) -> dict[str, str] | None:
    """Which of these jobs SLURM still has pending or running: {job id: state}; None if squeue failed."""
    if not ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in ids})
    result = run_command(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i %T"])
    if result.returncode != 0:
        return None if "Invalid job id" not in result.stderr else {}
    states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    wanted = set(ids)
    return {j: s for j, s in states.items() if j in wanted or j.split("_")[0] in wanted}


def cancel(ids: list[str]) -> None:
    """scancel those of these jobs still queued or running."""
    queued = queued_jobs(ids) or {}
    if queued:
        run_command(["scancel", *sorted({j.split("_")[0] for j in queued})])


def wait_for_experts(folder: Path, keys: list[str], timeout_s: float = 90) -> None:
    """After scancel: wait (bounded) until no expert still says it is running, i.e. each has written how it
    stopped and kept its checkpoint; SLURM kills a job that takes longer than its KillWait."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(status_of(folder, k) == "running" for k in keys):
        time.sleep(0.5)
