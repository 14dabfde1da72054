"""A sweep's trials as a SLURM job array (`--sweep NAME -p --launcher slurm`), from the submitting machine.

The settings are the run launcher's (the config's `slurm` block, then `--slurm`), checked by it before the sweep
folder is made (runner/slurm.py: sbatch --test-only, GPUs). The sweep's configs are resolved here: the configs its
config is made of go to the sweep folder's configs.json, which its jobs resolve against (sweep/agent.py). The job
array holds W agents, W = the config's `workers` (`-m workers=N`), at most the trials left; each trains trials one
after another until the studies have their trials. One job, after every agent has ended (`afterany`), finishes
the sweep: trials.csv, best/, report.html, summary.json. Every job id goes to slurm_jobs.json as it is submitted.

The command then follows the trials, one line per ended trial, until the finish job is done (finishing the sweep
itself if that job is gone without doing it); Ctrl-C cancels the sweep's jobs. `--detach` returns once submitted.
"""
from __future__ import annotations

import logging
import pickle
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submitit.core.utils import FailedJobError, FailedSubmissionError

from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.errors import UserError
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.status import now
from neuro_trigger.runner.slurm import _executor, _submitted, check_cluster, expert_settings, sbatch_options
from neuro_trigger.runner.slurm_queue import JOBS_FILE, cancel, last_line, queued_jobs, read_jobs, run_command
from neuro_trigger.sweep.agent import (
    CONFIGS_FILE,
    Agent,
    check_snapshot,
    configs_snapshot,
    finish_job,
    finished_by,
    pinned_configs,
    save_configs,
    saved_configs,
)
from neuro_trigger.sweep.space import Sweep
from neuro_trigger.sweep.trial import RECORD

log = logging.getLogger("neuro_trigger")

Finish = Callable[..., Any]  # sweep/api.py's _finish(folder, spec, stores, git_id, started, interrupted=False)
SIZED = ("time_min", "mem_gb", "cpus_per_expert", "gpus_per_expert")  # an agent gets the most any expert asks


@dataclass
class Plan:
    """A SLURM sweep's checked settings: the `--slurm` ones, its agents' jobs', its finish job's, the configs its
    jobs resolve against, and its `workers` (the agents at most)."""

    cli: dict[str, Any]
    agents: dict[str, Any]
    side: dict[str, Any]
    configs: dict[str, dict]
    workers: int


def check(spec: Sweep, base: dict[str, Any], cli: dict[str, Any], root: Path,
          configs: dict[str, dict] | None = None) -> Plan:
    """Everything about the cluster a user can get wrong, before a sweep folder is made. An agent's job gets the
    settings of the config's `slurm` block and `--slurm` (time, memory and GPUs the most any expert's block asks);
    its cores: `--slurm cpus_per_expert` if given, else the threads a trial trains on (`threads`, 1 when unset)."""
    settings = check_cluster(base, cli)
    agents = expert_settings(base["global"], cli)
    for expert in settings["experts"].values():
        agents.update({key: max(agents[key], expert[key]) for key in SIZED})
    threads = max(config["threads"] or 1 for config in base["experts"].values())
    agents["cpus_per_expert"] = cli.get("cpus_per_expert", threads)
    if agents["cpus_per_expert"] > threads:
        log.warning("each agent's job gets %d cores (cpus_per_expert) and a trial trains on %d thread(s) (its "
                    "config's `threads`, 1 when unset): add -m threads=%d to use them", agents["cpus_per_expert"],
                    threads, agents["cpus_per_expert"])
    test = run_command(["sbatch", "--test-only", *sbatch_options(agents), "--wrap=true"])
    if test.returncode != 0:
        raise UserError(f"--launcher slurm: sbatch refuses the sweep's agents' {' '.join(sbatch_options(agents))}: "
                        f"{last_line(test.stderr)}")
    if Path(root).resolve().is_relative_to("/tmp"):
        log.warning("the sweep folder is under /tmp: SLURM jobs on other nodes cannot see it (fine on a "
                    "single-node cluster); give a log root on a shared filesystem otherwise")
    configs = configs if configs is not None else configs_snapshot(spec.config)
    check_snapshot(spec, configs, base)
    return Plan(cli, agents, settings["side"], configs, base["global"]["workers"])


def check_resume(folder: Path, spec: Sweep, launcher: str, cli: dict[str, Any]) -> Plan | None:
    """Before a resume: none of the sweep's jobs may still be queued or running. On SLURM, the settings it was
    submitted with (unless `--slurm` gives others) and the configs of its configs.json, checked again."""
    refuse_live_jobs(folder)
    if launcher != "slurm":
        return None
    recorded = read_jobs(folder)
    cli = cli or (recorded[-1].get("slurm", {}) if recorded else {})
    configs = saved_configs(folder) if (folder / CONFIGS_FILE).is_file() else configs_snapshot(spec.config)
    base = resolve_config(spec.config, spec.overrides, experts=list(spec.experts), configs=configs)
    return check(spec, base, cli, folder, configs)


def sweep_job_ids(folder: Path) -> list[str]:
    """Every job id recorded for the sweep: its agents' array tasks and its finish jobs."""
    return [job for s in read_jobs(folder) for job in [*s.get("agents", []), *([s["finish"]] if s.get("finish")
                                                                               else [])]]


def refuse_live_jobs(folder: Path) -> None:
    ids = sweep_job_ids(folder)
    if not ids:
        return
    queued = queued_jobs(ids)
    if queued is None:
        raise UserError(f"--resume {folder}: cannot ask SLURM whether the {len(ids)} job(s) recorded for this sweep "
                        f"are still queued or running (squeue fails here); resume it where squeue answers")
    if queued:
        shown = ", ".join(f"{job} ({state.lower()})" for job, state in sorted(queued.items()))
        raise UserError(f"--resume {folder}: jobs of this sweep are still on SLURM: {shown}; wait for them or "
                        f"scancel them first")


# ---------------------------------------------------------------------------------------------- submitting
def _ended(folder: Path) -> list[Path]:
    """The records (trial.json) of the trials that ended."""
    return sorted((folder / "trials").glob(f"expert_*/trial_*/{RECORD}"))


def submit(folder: Path, spec: Sweep, plan: Plan, started: float, verbose: bool, finish: Finish) -> dict[str, Any]:
    """The agents (none when no trial is left) and the finish job, each id recorded the moment it is submitted;
    a refused submission cancels what this one submitted and raises UserError."""
    left = sum(spec.budget(e) for e in spec.experts) - len(_ended(folder))
    count = max(0, min(plan.workers, left))
    record = read_jobs(folder)
    submission: dict[str, Any] = {"agents": [], "finish": None, "slurm": plan.cli, "submitted": now()}
    record.append(submission)
    (folder / "slurm").mkdir(exist_ok=True)
    save_configs(folder, spec.config, plan.configs)
    job = "agents'"
    try:
        if count:
            submission["agents"] = _submitted(_executor(folder, f"nt-sweep-{spec.name}", plan.agents),
                                              [(Agent(), str(folder), verbose)] * count)
            write_json(folder / JOBS_FILE, record)
        job = "finish"
        arrays = sorted({j.split("_")[0] for j in submission["agents"]})
        after = ("afterany:" + ":".join(arrays)) if arrays else None
        submission["finish"] = _submitted(_executor(folder, f"nt-sweep-{spec.name}-finish", plan.side, after),
                                          [(finish_job, str(folder), started, finish)])[0]
        write_json(folder / JOBS_FILE, record)
    except (FailedJobError, FailedSubmissionError, OSError) as error:
        cancel(submission["agents"])
        raise UserError(f"--launcher slurm: sbatch refused the sweep's {job} job: {last_line(str(error))}; the jobs "
                        f"submitted before it are cancelled; fix that and continue with: python neuro_trigger/main.py "
                        f"--resume {folder}") from None
    except KeyboardInterrupt:
        cancel([*submission["agents"], *([submission["finish"]] if submission["finish"] else [])])
        raise
    log.info("submitted to SLURM: %d agent(s)%s (workers=%d, at most the %d trial(s) left), finish job %s",
             count, f" in {', '.join(arrays)}" if arrays else "", plan.workers, max(0, left), submission["finish"])
    return submission


def print_detached(folder: Path, submission: dict[str, Any]) -> None:
    arrays = sorted({j.split("_")[0] for j in submission["agents"]})
    print(f"submitted: agents {', '.join(arrays) or '-'} ({len(submission['agents'])} tasks), finish "
          f"{submission['finish']}; the job ids are kept in {folder / JOBS_FILE}", file=sys.stderr)
    print(f"each job's log: {folder / 'slurm'}/<job id>/, each trial's in its folder under {folder / 'trials'}; "
          f"follow with: squeue -j {','.join([*arrays, submission['finish']])}; the sweep is done when "
          f"{folder / 'slurm' / 'finished.json'} names job {submission['finish']} (trials.csv, best/, summary.json "
          f"written); continue a stopped sweep with: python neuro_trigger/main.py --resume {folder}", file=sys.stderr)


# ---------------------------------------------------------------------------------------------- following
def run(folder: Path, spec: Sweep, plan: Plan, stores: dict[str, ColumnStore], git_id: str | None, started: float,
        detach: bool, verbose: bool, finish: Finish) -> bool:
    """Submit the sweep's jobs; follow them until the sweep is finished (True), or return once submitted when
    `detach` (False). Ctrl-C cancels the jobs, finishes the sweep here from the trials that ended, and goes on."""
    submission = submit(folder, spec, plan, started, verbose, finish)
    if detach:
        print_detached(folder, submission)
        return False
    ids = [*submission["agents"], submission["finish"]]
    total = sum(spec.budget(e) for e in spec.experts)
    seen = set(_ended(folder))
    try:
        _follow(folder, spec, submission, ids, seen, total, stores, git_id, started, finish)
    except KeyboardInterrupt:
        log.warning("interrupted: cancelling the sweep's SLURM jobs (each trial keeps its last checkpoint)")
        cancel(ids)
        deadline = time.time() + 120  # each agent stops its trial and ends within SLURM's KillWait
        while queued_jobs(ids) and time.time() < deadline:
            time.sleep(1)
        _log_ended(folder, spec, seen, total)
        with pinned_configs(folder):
            finish(folder, spec, stores, git_id, started, interrupted=True)
        log.warning("interrupted; resume with: python neuro_trigger/main.py --resume %s", folder)
        raise
    return True


def _follow(folder: Path, spec: Sweep, submission: dict[str, Any], ids: list[str], seen: set[Path], total: int,
            stores: dict[str, ColumnStore], git_id: str | None, started: float, finish: Finish,
            poll_s: float = 2.0) -> None:
    """One line per trial as it ends, until the finish job is done; where every job is gone without it (the finish
    job cancelled or failed), the sweep is finished here."""
    gone_since = None
    told: set[str] = set()
    while True:
        _log_ended(folder, spec, seen, total)
        queued = queued_jobs(ids)
        for agent in [a for a in submission["agents"] if queued is not None and a not in queued and a not in told]:
            told.add(agent)
            _tell_failed_agent(folder, agent)
        if queued is not None and submission["finish"] not in queued and finished_by(folder) == submission["finish"]:
            _log_ended(folder, spec, seen, total)
            for line in _verdict(folder, spec, started):
                print(line, file=sys.stderr)  # app.log has them from the finish job
            return
        if queued == {}:
            gone_since = gone_since or time.time()
            if time.time() - gone_since > 5:
                log.warning("the sweep's SLURM jobs are gone and none finished it (its finish job cancelled or "
                            "failed? see %s): finishing it here", folder / "slurm" / submission["finish"])
                with pinned_configs(folder):
                    finish(folder, spec, stores, git_id, started)
                return
        else:
            gone_since = None
        time.sleep(poll_s)


def _tell_failed_agent(folder: Path, job: str) -> None:
    """A warning for an agent whose job ended in an error (submitit's result file says so)."""
    result = folder / "slurm" / job / f"{job}_0_result.pkl"
    try:
        with open(result, "rb") as handle:
            outcome, value = pickle.load(handle)
    except (OSError, pickle.UnpicklingError, EOFError, ValueError):
        return
    if outcome == "error":
        log.warning("agent %s failed: %s (its log: %s)", job, last_line(str(value)), result.with_name(
            f"{job}_0_log.out"))


def _log_ended(folder: Path, spec: Sweep, seen: set[Path], total: int) -> None:
    """A line for each trial that ended since the last look (as a local sweep logs them)."""
    for path in sorted(set(_ended(folder)) - seen, key=lambda p: p.stat().st_mtime):
        seen.add(path)
        r = read_json(path, RECORD)
        value = f", {spec.objective} {r['objective']:.4g}" if r["objective"] is not None else ""
        params = ", ".join(f"{k}={v!r}" for k, v in r["params"].items())
        error = f": {r['error']}" if r.get("error") else ""
        log.info("expert_%d trial %d %s after %d epoch(s)%s (%s)%s [%d/%d]", r["expert"], r["trial"], r["state"],
                 r["epochs"], value, params, error, len(seen), total)


def _verdict(folder: Path, spec: Sweep, started: float) -> list[str]:
    """The finish job's last lines, from summary.json: each expert's best trial, then how the sweep ended."""
    summary = read_json(folder / "summary.json", "summary.json")
    lines = []
    for expert in spec.experts:
        best = summary["best"].get(f"expert_{expert}")
        if best is None:
            lines.append(f"expert_{expert}: no finished trial")
            continue
        params = ", ".join(f"{k}={v!r}" for k, v in best["params"].items())
        lines.append(f"expert_{expert}: best {spec.objective} {best['objective']:.4g} (trial {best['trial']}: "
                     f"{params}) {folder / best['folder']}")
    return [*lines, f"sweep {summary['status']} in {time.time() - started:.1f} s: {folder}"]
