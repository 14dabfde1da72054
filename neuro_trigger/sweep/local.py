"""A sweep's trials on this machine: each trial a process from the one fork server of the sweep, as many at once as
a run has experts at once (`workers`, on CPU at most one per core, one thread each), the largest expert's trials
first. A trial is asked for only when a process is free to train it, so each proposal knows every result before
it. A debug sweep trains its trials one after the other in this process (breakpoints work).
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from neuro_trigger import cpu_cores
from neuro_trigger.data.dataset import ColumnStore, SharedColumns
from neuro_trigger.errors import UserError
from neuro_trigger.run.files import read_json
from neuro_trigger.runner.local import job_output
from neuro_trigger.runner.processes import process_context
from neuro_trigger.sweep import studies
from neuro_trigger.sweep.space import Sweep
from neuro_trigger.sweep.trial import finish_trial, new_record, prepare_trial, read_record, train_trial, trial_folder
from neuro_trigger.training.devices import torch_device
from neuro_trigger.training.expert import expert_logging
from neuro_trigger.training.stopping import job_process

log = logging.getLogger("neuro_trigger")

Job = tuple[studies.Asked, Path | None]  # a trial and the checkpoint it goes on from
# what a sweep's fork server imports beside a run's: a trial is a short process, and importing this project's
# training, judging and Optuna anew in each would cost it seconds
PRELOAD = ("optuna", "neuro_trigger.sweep.trial")


def _trial_child(sweep_folder: Path, sweep: dict[str, Any], asked: studies.Asked,
                 handles: dict[str, SharedColumns], resume_from: Path | None, run_pid: int, git_id: str | None,
                 verbose: bool) -> None:
    """Entry point of a trial's process: its output to the trial folder's expert log, on the trial's threads."""
    import torch

    with job_process(run_pid):
        folder = trial_folder(sweep_folder, asked.expert, asked.number)
        folder.mkdir(parents=True, exist_ok=True)
        key = f"expert_{asked.expert}"
        job_output(folder, f"{key}.log")
        expert_logging(folder, key)
        stores = {split: ColumnStore.from_shared(h) for split, h in handles.items()}
        torch.set_num_threads(1)
        train_trial(sweep_folder, Sweep.from_dict(sweep), asked, stores, True, git_id, resume_from, verbose)


class TrialQueue:
    """Hands out the next trial to train: first the trials a stopped sweep left unfinished, then new ones from the
    studies, the expert with the most work left first (its rows x the trials it has left)."""

    def __init__(self, sweep_folder: Path, sweep: Sweep, rows: dict[int, int], left: list[Job]) -> None:
        self.sweep_folder, self.sweep, self.rows = sweep_folder, sweep, rows
        self.left = deque(left)
        self.asked = {e: sum(1 for t in studies.all_trials(sweep_folder, sweep)[e]) for e in sweep.experts}
        self.done: set[int] = set()

    def next(self) -> Job | None:
        if self.left:
            return self.left.popleft()
        while len(self.done) < len(self.sweep.experts):
            expert = max((e for e in self.sweep.experts if e not in self.done),
                         key=lambda e: (self.rows[e] * (self.sweep.budget(e) - self.asked[e]), -e))
            asked = studies.ask(self.sweep_folder, self.sweep, expert)
            if asked is None:
                self.done.add(expert)
                continue
            self.asked[expert] += 1
            return asked, None
        return None


def run_trials(sweep_folder: Path, sweep: Sweep, stores: dict[str, ColumnStore], queue: TrialQueue,
               production: bool, git_id: str | None, verbose: bool, workers: int, on_cpu: bool,
               ended: Callable[[dict[str, Any]], None]) -> None:
    """Train every trial the queue hands out; `ended` gets each trial's record as it ends."""
    if not production:
        while (job := queue.next()) is not None:
            handler = expert_logging(sweep_folder, f"expert_{job[0].expert}")
            try:
                ended(train_trial(sweep_folder, sweep, job[0], stores, False, git_id, job[1], verbose))
            finally:
                logging.getLogger().removeHandler(handler)
                handler.close()
        return
    slots = max(1, min(workers, cpu_cores()) if on_cpu else workers)
    log.info("at most %d trial(s) at a time%s", slots, ", one CPU thread each" if on_cpu else "")
    ctx = process_context(PRELOAD)
    shared = {split: store.to_shared() for split, store in stores.items()}
    running: dict[Any, Job] = {}
    exhausted = False
    try:
        while running or not exhausted:
            while not exhausted and len(running) < slots:
                job = queue.next()
                if job is None:
                    exhausted = True
                    break
                try:  # its config is made here: a trial process reads its config.json, never the configs file
                    prepare_trial(sweep_folder, sweep, job[0], stores, True, git_id)
                except UserError as error:
                    ended(finish_trial(sweep_folder, sweep, new_record(sweep_folder, job[0], error=str(error))))
                    continue
                proc = ctx.Process(target=_trial_child, name=f"expert_{job[0].expert}-trial_{job[0].number}",
                                   args=(sweep_folder, sweep.as_dict(), job[0], shared, job[1], os.getpid(),
                                         git_id, verbose))
                proc.start()
                running[proc] = job
            if running:
                mp.connection.wait([proc.sentinel for proc in running], timeout=1.0)
            for proc in [p for p in running if p.exitcode is not None]:
                asked, _ = running.pop(proc)
                ended(_ended(sweep_folder, sweep, asked, proc.exitcode))
    except KeyboardInterrupt:
        log.warning("interrupted: stopping %d trial(s), each keeps its last checkpoint", len(running))
        for proc in running:
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        deadline = time.time() + 20
        for proc in running:
            proc.join(max(0.0, deadline - time.time()))
            if proc.is_alive():
                log.warning("%s did not stop within 20 s: killed", proc.name)
                proc.kill()
                proc.join()
        raise
    finally:
        for handle in shared.values():
            handle.release()


def _ended(sweep_folder: Path, sweep: Sweep, asked: studies.Asked, exitcode: int) -> dict[str, Any]:
    """The record of a trial whose process ended: its own, or where it left none, a failure (a crash of the
    process itself) or, stopped by a signal, the state "interrupted" (a resume goes on with it)."""
    record = read_record(trial_folder(sweep_folder, asked.expert, asked.number))
    if record is not None:
        return record
    folder = trial_folder(sweep_folder, asked.expert, asked.number)
    record = new_record(sweep_folder, asked, "interrupted", epochs=_epochs_done(folder, asked.expert))
    if exitcode in (130, 143, 129, -signal.SIGINT, -signal.SIGTERM):
        return record
    record.update(state="failed", error=f"its process ended with exit code {exitcode} (see its log)")
    return finish_trial(sweep_folder, sweep, record)


def _epochs_done(folder: Path, expert: int) -> int:
    status = folder / f"expert_{expert}" / "status.json"
    return read_json(status, "status.json").get("epochs_done", 0) or 0 if status.is_file() else 0


def on_cpu(configs: list[dict[str, Any]]) -> bool:
    return all(torch_device(c).type == "cpu" for c in configs)
