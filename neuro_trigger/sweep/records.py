"""Every trial of a sweep as one record, and `trials.csv`: trial, expert, state, epochs, objective, folder, then
one column per parameter of the space.

A trial's record is its trial.json where it wrote one; a trial that was handed out and has none was stopped
("interrupted": a resume goes on with it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from neuro_trigger.run.files import read_json
from neuro_trigger.sweep import studies
from neuro_trigger.sweep.space import Sweep
from neuro_trigger.sweep.trial import new_record, read_record, trial_folder

STATES = ("finished", "pruned", "failed", "interrupted")
COLUMNS = ["trial", "expert", "state", "epochs", "objective", "folder"]


def column(key: str) -> str:
    """The trials.csv column of a space key: the key itself, or `space.<key>` where that names one of COLUMNS
    (a sweep over `epochs`)."""
    return f"space.{key}" if key in COLUMNS else key


def collect(sweep_folder: Path, sweep: Sweep) -> list[dict[str, Any]]:
    """The record of every trial handed out so far, by expert and trial number."""
    records = []
    for expert, trials in studies.all_trials(sweep_folder, sweep).items():
        for trial in sorted(trials, key=lambda t: t.number):
            folder = trial_folder(sweep_folder, expert, trial.number)
            record = read_record(folder)
            if record is None:
                status = folder / f"expert_{expert}" / "status.json"
                epochs = read_json(status, "status.json").get("epochs_done", 0) if status.is_file() else 0
                record = new_record(sweep_folder, studies.Asked(expert, trial.number, dict(trial.params)),
                                    "interrupted", epochs=epochs or 0)
            records.append(record)
    return records


def write_trials_csv(sweep_folder: Path, sweep: Sweep, records: list[dict[str, Any]]) -> Path:
    """trials.csv of the sweep folder, written whole each time (atomically: a reader never sees half of it)."""
    keys = [p.key for p in sweep.params]
    rows = [{**{c: r.get(c) for c in COLUMNS}, **{column(k): r["params"].get(k) for k in keys}} for r in records]
    table = pd.DataFrame(rows, columns=COLUMNS + [column(k) for k in keys])
    table["expert"] = table["expert"].map(lambda e: f"expert_{e}")
    path = sweep_folder / "trials.csv"
    partial = path.with_suffix(".csv.partial")
    table.to_csv(partial, index=False, encoding="utf-8")
    partial.replace(path)
    return path


def state_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    return {state: sum(r["state"] == state for r in records) for state in STATES}
