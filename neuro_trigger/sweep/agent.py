"""A SLURM sweep's jobs as they run on the nodes: the agents of its job array, each training one trial after
another in its own process until the studies have their trials, and the job that finishes the sweep.

The jobs never read the configs file: they resolve against `configs.json` of the sweep folder, the configs the
sweep's config is made of as they were when it was submitted (a configs file edited since, or a config that only
a test or a notebook defined, changes nothing). An agent takes first a stopped trial nobody holds (it goes on from
its last checkpoint), else asks the studies as a local sweep does (local.TrialQueue). It holds its trial by a lock
on the trial's folder (RunLock: the kernel lets go of it however the agent ends), and agents take trials one at a
time under the sweep's `agents.lock`, so two agents never take the same trial. A trial that wrote its record
(trial.json) is never trained again: where its study was not told (a stop in between), the next agent tells it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import types
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import submitit

from neuro_trigger.config import sources
from neuro_trigger.config.resolution import config_chain, resolve_config
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.selection import check_rows, load_data
from neuro_trigger.errors import UserError
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.status import last_checkpoint, now
from neuro_trigger.runner.console import setup_logging
from neuro_trigger.sweep import studies
from neuro_trigger.sweep.local import TrialQueue
from neuro_trigger.sweep.space import Sweep
from neuro_trigger.sweep.trial import prepare_trial, read_record, train_trial, trial_folder
from neuro_trigger.training.expert import expert_logging, slurm_job_id
from neuro_trigger.training.stopping import RunLock, stop_job_on_signals

log = logging.getLogger("neuro_trigger")

SWEEP_FILE = "sweep.json"  # the sweep as it was run (sweep/api.py writes it)
CONFIGS_FILE = "configs.json"  # the configs the sweep's config is made of, as they were at submission
CLAIM_LOCK = "agents.lock"
FINISHED = "finished.json"  # under slurm/: the job that finished the sweep, once it has


# ---------------------------------------------------------------------------------------------- the configs
def configs_snapshot(config: str) -> dict[str, dict]:
    """The configs of `config`'s `extends` chain, from the configs file, as the jobs resolve against them."""
    configs, source_file = sources.load_configs()
    return {name: configs[name] for name in config_chain(config, configs, source_file)}


def check_snapshot(spec: Sweep, configs: Mapping[str, dict], base: dict[str, Any]) -> None:
    """The snapshot, written as JSON and read back, resolves to the config the sweep checked (a value JSON cannot
    keep as it is would make the jobs train another config)."""
    again = resolve_config(spec.config, spec.overrides, experts=list(spec.experts),
                           configs=json.loads(json.dumps(configs)))
    if json.dumps(again, sort_keys=True) != json.dumps(base, sort_keys=True):
        raise UserError(f"--launcher slurm: config '{spec.config}' holds values that JSON cannot keep as they are "
                        f"(a tuple, a set?); a SLURM sweep's jobs read the config as JSON: write them as lists")


def saved_configs(folder: Path) -> dict[str, dict]:
    return read_json(folder / CONFIGS_FILE, CONFIGS_FILE)["configs"]


def save_configs(folder: Path, config: str, configs: Mapping[str, dict]) -> None:
    write_json(folder / CONFIGS_FILE, {"config": config, "configs": dict(configs), "saved": now()})


@contextlib.contextmanager
def pinned_configs(folder: Path) -> Iterator[None]:
    """While inside, every config this process resolves comes from the sweep folder's configs.json, not from the
    configs file (a module of that name stands in for it; the one before is back on leaving)."""
    module = types.ModuleType("configs", "the configs of a sweep, as they were at its submission")
    module.configs, module.sweeps = saved_configs(folder), {}
    before = sys.modules.get("configs")
    sys.modules["configs"] = module
    try:
        yield
    finally:
        if before is None:
            sys.modules.pop("configs", None)
        else:
            sys.modules["configs"] = before


def sweep_data(folder: Path, saved: dict[str, Any], base: dict[str, Any]) -> dict[str, ColumnStore]:
    """The sweep's data, loaded here; files changed since the sweep started are an error."""
    stores = load_data(base["global"], Path(saved["runs_root"]))
    for split, store in stores.items():
        if [s["sha256"] for s in saved["data"][split]] != [s["sha256"] for s in store.sources]:
            raise UserError(f"{folder}: the {split} data files changed since the sweep started")
    return stores


# ---------------------------------------------------------------------------------------------- claiming
@dataclass
class Claim:
    """A trial an agent holds: the trial, the checkpoint it goes on from, the lock on its folder."""

    asked: studies.Asked
    resume_from: Path | None
    lock: RunLock


@contextlib.contextmanager
def _agents_lock(folder: Path) -> Iterator[None]:
    """One agent at a time looks for its next trial (flock: let go of by the kernel if the agent dies)."""
    with open(folder / CLAIM_LOCK, "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _claim(folder: Path, spec: Sweep, asked: studies.Asked) -> Claim | None:
    """The trial, held; None where another agent holds it, or where it ended already (its study is told so)."""
    trial = trial_folder(folder, asked.expert, asked.number)
    trial.mkdir(parents=True, exist_ok=True)
    try:
        lock = RunLock(trial).acquire("agent")
    except UserError:  # another agent trains it
        return None
    record = read_record(trial)
    if record is not None:  # it ended; its agent stopped before telling the study
        studies.tell(folder, spec, record["expert"], record["trial"], record["state"], record["objective"])
        lock.release()
        return None
    last = last_checkpoint(trial, f"expert_{asked.expert}")
    return Claim(asked, last if last.is_file() else None, lock)


def next_trial(folder: Path, spec: Sweep, rows: dict[int, int]) -> Claim | None:
    """The next trial for this agent, held: a stopped one nobody holds, else a new one from the studies (as
    local.TrialQueue asks, the expert with the most work left first); None when the studies have their trials."""
    with _agents_lock(folder):
        for expert in spec.experts:
            for asked in studies.unfinished(folder, spec, expert):
                claim = _claim(folder, spec, asked)
                if claim is not None:
                    return claim
        job = TrialQueue(folder, spec, rows, []).next()
        if job is None:
            return None
        claim = _claim(folder, spec, job[0])
        if claim is None:
            raise RuntimeError(f"expert_{job[0].expert} trial {job[0].number} was just asked for, yet is held")
        return claim


# ---------------------------------------------------------------------------------------------- the jobs
def _job_output() -> None:
    """This job's lines go to its SLURM log (stderr, where submitit sends it), with their times."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)


def _opened(folder: Path) -> tuple[Sweep, dict[str, Any], dict[str, ColumnStore], str | None]:
    """The sweep, its base config and data, its git id: what every job of it starts from (configs pinned)."""
    saved = read_json(folder / SWEEP_FILE, SWEEP_FILE)
    spec = Sweep.from_dict(saved["sweep"])
    base = resolve_config(spec.config, spec.overrides, experts=list(spec.experts))
    git = folder / "git_id.txt"
    words = git.read_text(encoding="utf-8").split() if git.is_file() else []
    return spec, base, sweep_data(folder, saved, base), words[0] if words else None


class Agent(submitit.helpers.Checkpointable):
    """One task of a sweep's job array: trains trials one after another until the studies have their trials.
    Requeued after a time limit or a preemption, it starts again and first takes the trial it stopped."""

    def __call__(self, folder: str, verbose: bool = False) -> str:
        folder = Path(folder)
        stop_job_on_signals()  # scancel's SIGTERM stops a trial cleanly: it keeps its last checkpoint
        _job_output()
        with pinned_configs(folder):
            spec, base, stores, git_id = _opened(folder)
            counts = check_rows(stores, base)
            rows = {expert: counts[f"expert_{expert}"] for expert in spec.experts}
            log.info("agent %s (process %d): trials of sweep %s", slurm_job_id(), os.getpid(), folder)
            trained = 0
            while (claim := next_trial(folder, spec, rows)) is not None:
                with claim.lock:
                    _train(folder, spec, claim, stores, git_id, verbose)
                    trained += 1
        log.info("agent %s: the studies have their trials; %d trained here", slurm_job_id(), trained)
        return f"{trained} trial(s)"


def _train(folder: Path, spec: Sweep, claim: Claim, stores: dict[str, ColumnStore], git_id: str | None,
           verbose: bool) -> None:
    """One trial, in this process, on the CPU threads its config says (1 unless `threads` is set, as locally)."""
    import torch

    asked, key = claim.asked, f"expert_{claim.asked.expert}"
    trial = trial_folder(folder, asked.expert, asked.number)
    handler = expert_logging(trial, key)
    try:
        try:
            prepare_trial(folder, spec, asked, stores, True, git_id)
            threads = read_json(trial / "config.json", "config.json")["experts"][key]["threads"]
        except UserError:
            threads = 1  # its config is refused: train_trial records why
        torch.set_num_threads(threads)
        how = f"continues from {claim.resume_from}" if claim.resume_from else "trains it"
        log.info("%s trial %d: SLURM job %s %s (%d CPU thread(s))", key, asked.number, slurm_job_id(), how, threads)
        try:
            record = train_trial(folder, spec, asked, stores, True, git_id, claim.resume_from, verbose)
        except KeyboardInterrupt:
            log.warning("%s trial %d stopped: it keeps its last checkpoint; the next agent (or --resume) goes on "
                        "with it", key, asked.number)
            raise
        log.info("%s trial %d %s after %d epoch(s)", key, asked.number, record["state"], record["epochs"])
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def finish_job(folder: str, started: float, finish: Callable[..., Any]) -> str:
    """The sweep's last job, once every agent has ended (however): `finish` (sweep/api.py's) writes trials.csv,
    best/, report.html and summary.json from the trials' records; its lines go to app.log too."""
    folder = Path(folder)
    stop_job_on_signals()
    handler = setup_logging(folder)
    try:
        with pinned_configs(folder):
            spec, _, stores, git_id = _opened(folder)
            log.info("finishing the sweep in SLURM job %s: trials.csv, best/, report.html, summary.json",
                     slurm_job_id())
            finish(folder, spec, stores, git_id, started)
        summary = read_json(folder / "summary.json", "summary.json")
        write_json(folder / "slurm" / FINISHED, {"job": slurm_job_id(), "status": summary["status"], "time": now()})
        return summary["status"]
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def finished_by(folder: Path) -> str | None:
    """The job that finished the sweep last (None before any did)."""
    path = folder / "slurm" / FINISHED
    return read_json(path, FINISHED).get("job") if path.is_file() else None
