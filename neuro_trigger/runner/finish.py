"""The end of every run, whichever launcher trained it: the run-level files and the journal line.

Both launchers end here (runner/api.py after local runs, runner/slurm_jobs.py's assemble job), so neither
needs the other.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.judge.assemble import assemble
from neuro_trigger.run.files import read_json
from neuro_trigger.run.folder import append_journal
from neuro_trigger.run.status import now
from neuro_trigger.runner.console import verdict_lines

log = logging.getLogger("neuro_trigger")


def finish_run(folder: Path, stores: dict[str, ColumnStore], tables_written: bool = False,
               interrupted: bool = False, assembled: bool = False) -> dict[str, Any]:
    """The run-level files from what the experts left (summary.json, weights.json, predictions, report.html)
    and the run's line in the journal; used after every launcher. `assembled`: a job of the launcher has
    already written all but report.html (judge.assemble)."""
    resolved = read_json(folder / "config.json", "config.json")
    if assembled:
        summary = read_json(folder / "summary.json", "summary.json")
    else:
        summary = assemble(folder, stores, tables_written=tables_written)
    _write_report(folder, stores)
    note = " [interrupted]" if interrupted or summary["status"] == "interrupted" else \
        " [failed]" if summary["status"] != "finished" else ""
    append_journal(folder.parent.parent / "log.txt", {
        "time": now(), "config": resolved["name"], "folder": str(folder),
        "description": resolved.get("description", "") + note})
    return summary


def _write_report(folder: Path, stores: dict[str, ColumnStore]) -> None:
    """report.html of the run (it never fails a run: a problem there is a warning)."""
    from neuro_trigger.judge.run_report import write_run_report

    log.info("writing report.html")
    write_run_report(folder, stores)


def log_end(folder: Path, resolved: dict[str, Any], summary: dict[str, Any], started: float) -> None:
    """The run's last lines (console and app.log): the verdict per expert, then "done" or how to go on."""
    for line in verdict_lines(summary, resolved):
        log.info("%s", line)
    if summary["status"] != "finished":
        log.error("failed after %.1f s: %s; see the expert logs there, continue with: "
                  "python neuro_trigger/main.py --resume %s", time.time() - started, folder, folder)
    else:
        log.info("done in %.1f s: %s", time.time() - started, folder)
