"""The one owner of `<expert>/status.json`: how far an expert got, written only by this module.

An expert's status is one of "running", "finished", "failed", "interrupted" (and "queued" /
"not started" before it ran). The expert's process writes it as it goes; the runner (or a SLURM job)
marks an expert whose process ended without saying how. `progress.json` beside it holds the latest
epoch, for a console that follows a run from outside its processes.
"""
from __future__ import annotations

import json
import logging
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neuro_trigger.run.files import write_json

log = logging.getLogger("neuro_trigger")

ENDED = ("finished", "failed", "interrupted")
STOP_EXIT_CODES = (130, 143, 129)  # SIGINT, SIGTERM, SIGHUP turned into a clean stop


def now() -> str:
    return datetime.now(UTC).astimezone().isoformat(timespec="seconds")


def read_status(folder: Path, key: str) -> dict[str, Any]:
    """An expert's status, or {} while there is none (or it is being written)."""
    try:
        return json.loads((folder / key / "status.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def status_of(folder: Path, key: str) -> str:
    return read_status(folder, key).get("status", "unknown")


def summary_status(folder: Path, key: str) -> dict[str, Any]:
    """An expert's status as summary.json records it: "not started" when it has none."""
    return read_status(folder, key) or {"status": "not started"}


def write_status(folder: Path, key: str, status: dict[str, Any]) -> None:
    (folder / key).mkdir(exist_ok=True)
    write_json(folder / key / "status.json", status)


def update_status(folder: Path, key: str, **fields: Any) -> dict[str, Any]:
    status = read_status(folder, key)
    status.update(fields)
    write_status(folder, key, status)
    return status


def write_failure(folder: Path, key: str, error: BaseException) -> None:
    update_status(folder, key, status="failed", error=f"{type(error).__name__}: {error}", ended=now())


def mark_failed_at_start(folder: Path, key: str, reason: str) -> None:
    """An expert whose process never started training: the reason goes to its status, its log and the console."""
    log.error("%s failed: %s", key, reason)
    note_in_log(folder, key, f"ERROR {key} failed: {reason}")
    write_status(folder, key, {"status": "failed", "error": reason, "ended": now()})


def record_exit(folder: Path, key: str, exitcode: int | None, interrupted: bool = False) -> None:
    """A process that died without writing a final status (killed by a signal, say) is marked here, with the
    epochs its last checkpoint holds (what --resume goes on from) and a line in its log, which it could not
    write itself."""
    status = read_status(folder, key)
    if status.get("status") in ENDED:
        return
    if interrupted or exitcode in STOP_EXIT_CODES:
        status.update(status="interrupted")
    elif status.get("pid") is None:
        # it never reached run_expert: the import of its code or the start of the process failed
        mark_failed_at_start(folder, key, f"its process died before the expert started (exit code {exitcode}); "
                                          "the error is above on the console. A script that calls train() "
                                          "must do so under `if __name__ == \"__main__\":`")
        return
    elif exitcode is not None and exitcode < 0:
        status.update(status="failed", error=f"killed by signal {signal.Signals(-exitcode).name}")
    else:
        status.update(status="failed", error=f"process exited with code {exitcode}")
    if status.get("epochs_done") is None:
        status["epochs_done"] = epochs_in_checkpoint(last_checkpoint(folder, key))
    status["ended"] = now()
    write_status(folder, key, status)
    how = f"killed by signal {signal.Signals(-exitcode).name}" if exitcode is not None and exitcode < 0 else \
        f"ended with exit code {exitcode}"
    note_in_log(folder, key, f"WARNING {key}: its process {how} before it could say so; marked {status['status']}, "
                f"its last checkpoint holds {status['epochs_done']} epoch(s)")


def mark_interrupted(folder: Path, key: str) -> None:
    """An expert whose process or job ended before it could say so: interrupted, with the epochs its last
    checkpoint holds (what --resume goes on from)."""
    update_status(folder, key, status="interrupted", ended=now(),
                  epochs_done=epochs_in_checkpoint(last_checkpoint(folder, key)))


def note_in_log(folder: Path, key: str, line: str) -> None:
    """A line (after the time) in `expert_N.log`, written for the expert by whoever saw what its process could
    not say."""
    with open(folder / f"{key}.log", "a", encoding="utf-8") as f:
        f.write(f"{now()} {line}\n")


def last_checkpoint(folder: Path, key: str) -> Path:
    """Where an expert keeps the whole training state it resumes from."""
    return folder / key / "ckpts" / "last.ckpt"


def epochs_in_checkpoint(checkpoint: Path) -> int:
    """The epochs trained in the state a checkpoint holds (0 where there is none): what a resume goes on from."""
    if not checkpoint.is_file():
        return 0
    import torch

    try:
        return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["epoch"]) + 1
    except Exception:  # noqa: BLE001 - a checkpoint cut short by a kill: a resume starts over
        return 0


def write_progress(folder: Path, key: str, message: dict[str, Any]) -> None:
    """The latest progress message of an expert (epoch, val_loss), for a console following from outside."""
    write_json(folder / key / "progress.json", message)


def read_progress(folder: Path, key: str) -> dict[str, Any]:
    try:
        return json.loads((folder / key / "progress.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
