"""The SLURM launcher: a run's experts as jobs of a SLURM cluster, submitted with submitit.

One job array trains the experts (one task each, `run_expert` on the shared run folder, the data
loaded by the job itself from the parse cache); a job array draws the figures (a task per expert) and one job writes
the prediction tables once the experts have ended; an `assemble` job then writes summary.json,
weights.json and report.html. Every dependency is `afterany`, so a failed or cancelled expert never
leaves a job waiting for ever, and the summary tells what happened to each.

The experts' status files are the source of truth, not SLURM: without accounting storage nobody
learns from SLURM how a cancelled job ended. An expert job stopped by SIGTERM (scancel, a time
limit, a preemption) writes its status and keeps its last checkpoint; when SLURM or submitit requeues
it, it goes on from that checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import submitit

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.schema import SLURM_KEYS
from neuro_trigger.data.selection import load_data
from neuro_trigger.errors import UserError
from neuro_trigger.judge.assemble import refresh_summary
from neuro_trigger.judge.expert_results import PLOT_SPLITS, write_expert_plots
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.prediction_tables import write_prediction_tables
from neuro_trigger.run.status import (
    ENDED,
    epochs_in_checkpoint,
    now,
    read_progress,
    read_status,
    status_of,
    update_status,
    write_failure,
    write_progress,
)
from neuro_trigger.runner.console import ProgressView
from neuro_trigger.runner.finish import finish_run
from neuro_trigger.runner.stalls import StallWatch, mark_stalled
from neuro_trigger.training.expert import expert_logging, run_expert
from neuro_trigger.training.stopping import stop_job_on_signals

log = logging.getLogger("neuro_trigger")

JOBS_FILE = "slurm_jobs.json"  # the run's job ids, for following, resuming and scancel
SQUEUE_TIMEOUT_S = 30
SLURM_DEFAULTS = {name: key.default for name, key in SLURM_KEYS.items()}


# ---------------------------------------------------------------------------------------------- settings
def expert_settings(config: dict[str, Any], cli: dict[str, Any]) -> dict[str, Any]:
    """An expert's SLURM settings: its config's `slurm` block (defaults filled in), then `--slurm`."""
    settings = {**SLURM_DEFAULTS, **(config.get("slurm") or {})}
    settings["extra"] = {**(settings.get("extra") or {}), **cli.get("extra", {})}
    settings.update({k: v for k, v in cli.items() if k != "extra"})
    return settings


def sbatch_options(settings: dict[str, Any]) -> list[str]:
    """The sbatch options these settings stand for (what the submitted jobs get, and what is checked)."""
    options = [f"--time={settings['time_min']}", f"--cpus-per-task={settings['cpus_per_expert']}",
               f"--mem={max(1, round(settings['mem_gb'] * 1024))}M"]
    if settings["partition"]:
        options.append(f"--partition={settings['partition']}")
    if settings["account"]:
        options.append(f"--account={settings['account']}")
    if settings["gpus_per_expert"]:
        options.append(f"--gpus-per-node={settings['gpus_per_expert']}")
    options += [f"--{name}={value}" for name, value in settings["extra"].items()]
    return options


def check_cluster(resolved: dict[str, Any], cli: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Everything about the cluster a user can get wrong, before any run folder: SLURM there and reachable,
    settings sbatch accepts, hardware the jobs will have. Returns each expert's settings."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise UserError("--launcher slurm: SLURM is not installed here (no sbatch/squeue on PATH)")
    probe = _run(["sinfo", "-h", "-o", "%P"])
    if probe.returncode != 0:
        raise UserError(f"--launcher slurm: SLURM is not reachable: sinfo says: {_first_line(probe.stderr)}")
    settings = {key: expert_settings(config, cli) for key, config in resolved["experts"].items()}
    for key, config in resolved["experts"].items():
        s = settings[key]
        gpu = config.get("accelerator") in ("gpu", "cuda")
        if gpu and s["gpus_per_expert"] < config.get("devices", 1):
            raise UserError(f"{key}: accelerator '{config['accelerator']}' with devices={config.get('devices', 1)} "
                            f"needs SLURM setting gpus_per_expert >= {config.get('devices', 1)} "
                            f"(it is {s['gpus_per_expert']})")
        if not gpu and s["gpus_per_expert"] == 0 and str(config.get("precision", "")).startswith("16"):
            raise UserError(f"{key}: precision '{config['precision']}' needs a GPU; its SLURM jobs get none "
                            f"(gpus_per_expert=0)")
    for options in {tuple(sbatch_options(s)) for s in settings.values()}:
        test = _run(["sbatch", "--test-only", *options, "--wrap=true"])
        if test.returncode != 0:
            raise UserError(f"--launcher slurm: sbatch refuses {' '.join(options)}: {_first_line(test.stderr)}")
    return settings


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return subprocess.CompletedProcess(command, 1, "", f"{command[0]} did not answer in {SQUEUE_TIMEOUT_S} s")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


# ---------------------------------------------------------------------------------------------- the jobs
def _job_logging(folder: Path, key: str) -> None:
    logging.getLogger("neuro_trigger").setLevel(logging.INFO)
    expert_logging(folder, key)


class ExpertJob(submitit.helpers.Checkpointable):
    """Trains one expert; requeued after a time limit or preemption, it continues from its last checkpoint."""

    def __call__(self, folder: str, key: str, verbose: bool = False) -> str:
        folder = Path(folder)
        stop_job_on_signals()  # scancel's SIGTERM stops the training cleanly (submitit would ignore it)
        _job_logging(folder, key)
        state = read_status(folder, key)
        if state.get("status") == "finished":
            return "finished"
        last = folder / key / "ckpts" / "last.ckpt"
        resume_from = last if last.is_file() else None
        if resume_from is not None:
            log.info("%s: SLURM job %s continues from %s", key, os.environ.get("SLURM_JOB_ID"), resume_from)
        import torch

        # the job's own cores, at most 4: more threads than that only wait on each other (runner/local.py)
        torch.set_num_threads(max(1, min(4, int(os.environ.get("SLURM_CPUS_PER_TASK", "1")))))
        last_report = [0.0]

        def report(message: dict[str, Any]) -> None:
            if time.time() - last_report[0] >= 1 or message.get("status") != "training":
                write_progress(folder, key, message)
                last_report[0] = time.time()

        try:
            resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
            run_expert(folder, key, stores, report, resume_from, plots=False, verbose=verbose)
        except KeyboardInterrupt:
            if status_of(folder, key) not in ENDED:
                update_status(folder, key, status="interrupted", ended=now())
            refresh_summary(folder)
            raise
        except BaseException as error:
            if not isinstance(error, SystemExit):
                log.exception("%s failed", key)
                write_failure(folder, key, error)
                refresh_summary(folder)
            raise
        return "finished"


def plots_job(folder: str, key: str, splits: list[str]) -> str:
    """The figures of one expert on the given splits, if it finished (one job: each job pays the imports)."""
    folder = Path(folder)
    stop_job_on_signals()
    if status_of(folder, key) != "finished":
        return "skipped"
    _job_logging(folder, key)
    resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    for split in splits:
        write_expert_plots(folder / key, resolved["experts"][key], stores[split], split)
    return "drawn"


def tables_job(folder: str) -> str:
    """The run's prediction tables from every finished expert; a marker tells the assemble job."""
    folder = Path(folder)
    stop_job_on_signals()
    resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    write_prediction_tables(folder, stores)
    (folder / "slurm" / "tables.done").write_text(json.dumps(_finished_experts(folder, resolved)), encoding="utf-8")
    return "written"


def assemble_job(folder: str, interrupted: bool = False) -> str:
    """summary.json, weights.json, report.html and the journal line, once every other job has ended."""
    folder = Path(folder)
    if not interrupted:
        stop_job_on_signals()
    resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    marker = folder / "slurm" / "tables.done"
    tables_written = marker.is_file() and json.loads(marker.read_text("utf-8")) == _finished_experts(folder, resolved)
    summary = finish_run(folder, stores, tables_written=tables_written, interrupted=interrupted)
    return summary["status"]


def _finished_experts(folder: Path, resolved: dict[str, Any]) -> list[str]:
    return [k for k in resolved["experts"] if status_of(folder, k) == "finished"]


# ---------------------------------------------------------------------------------------------- submitting
def _executor(folder: Path, name: str, settings: dict[str, Any] | None, dependency: str | None = None):
    executor = submitit.SlurmExecutor(folder=folder / "slurm" / "%j", max_num_timeout=10)
    extra: dict[str, Any] = {"kill_on_invalid_dep": "yes"}
    params: dict[str, Any] = {"job_name": name, "setup": [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}"
                                                        "${PYTHONPATH:+:$PYTHONPATH}"],
                              "signal_delay_s": 120, "stderr_to_stdout": True}
    if settings is None:  # the small jobs: figures, tables, assembling
        params.update(time=60, cpus_per_task=1, mem="4G")
    else:
        params.update(time=settings["time_min"], cpus_per_task=settings["cpus_per_expert"],
                      mem=f"{max(1, round(settings['mem_gb'] * 1024))}M",
                      array_parallelism=settings["array_parallelism"])
        if settings["partition"]:
            params["partition"] = settings["partition"]
        if settings["account"]:
            params["account"] = settings["account"]
        if settings["gpus_per_expert"]:
            params["gpus_per_node"] = settings["gpus_per_expert"]
        extra.update(settings["extra"])
    if dependency:
        params["dependency"] = dependency
    params["additional_parameters"] = extra
    executor.update_parameters(**params)
    return executor


def submit(folder: Path, resolved: dict[str, Any], keys: list[str], unplotted: list[tuple[str, str]],
           settings: dict[str, dict[str, Any]], verbose: bool = False) -> dict[str, Any]:
    """Submit the experts in `keys`, the figures (of those and of `unplotted`), the tables and the assemble
    job; the job ids go to slurm_jobs.json (appended to on a resume). Returns this submission's ids."""
    name = resolved["name"]
    groups: dict[str, list[str]] = {}
    for key in keys:  # experts with the same settings share one job array
        groups.setdefault(json.dumps(settings[key], sort_keys=True), []).append(key)
    experts: dict[str, str] = {}
    for group_keys in groups.values():
        executor = _executor(folder, f"nt-{name}", settings[group_keys[0]])
        with executor.batch():
            jobs = [executor.submit(ExpertJob(), str(folder), key, verbose) for key in group_keys]
        experts.update({key: job.job_id for key, job in zip(group_keys, jobs, strict=True)})
    arrays = sorted({job_id.split("_")[0] for job_id in experts.values()})
    after_experts = ("afterany:" + ":".join(arrays)) if arrays else None
    plot_jobs: dict[str, list[str]] = {key: list(PLOT_SPLITS) for key in keys}
    for key, split in unplotted:
        plot_jobs.setdefault(key, []).append(split)
    others: dict[str, str] = {}
    if plot_jobs:
        executor = _executor(folder, f"nt-{name}-plots", None, after_experts)
        with executor.batch():
            jobs = [executor.submit(plots_job, str(folder), key, splits) for key, splits in plot_jobs.items()]
        others["plots"] = jobs[0].job_id.split("_")[0]
    (folder / "slurm").mkdir(exist_ok=True)
    (folder / "slurm" / "tables.done").unlink(missing_ok=True)
    others["tables"] = _executor(folder, f"nt-{name}-tables", None, after_experts).submit(
        tables_job, str(folder)).job_id
    before_assembling = [*arrays, *([others["plots"]] if "plots" in others else []), others["tables"]]
    others["assemble"] = _executor(folder, f"nt-{name}-assemble", None,
                                   "afterany:" + ":".join(before_assembling)).submit(assemble_job, str(folder)).job_id
    submission = {"experts": experts, **others}
    record = read_jobs(folder)
    record.append(submission)
    write_json(folder / JOBS_FILE, record)
    return submission


def read_jobs(folder: Path) -> list[dict[str, Any]]:
    path = folder / JOBS_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []


def all_job_ids(folder: Path) -> list[str]:
    ids = []
    for submission in read_jobs(folder):
        ids += list(submission["experts"].values())
        ids += [v for k, v in submission.items() if k != "experts"]
    return ids


def queued_jobs(job_ids: list[str]) -> dict[str, str] | None:
    """Which of these jobs SLURM still has pending or running: {job id: state}; None if squeue failed."""
    if not job_ids:
        return {}
    arrays = sorted({j.split("_")[0] for j in job_ids})
    result = _run(["squeue", "-h", "-r", "-j", ",".join(arrays), "-o", "%i %T"])
    if result.returncode != 0:
        return None if "Invalid job id" not in result.stderr else {}
    states = dict(line.split() for line in result.stdout.splitlines() if line.strip())
    wanted = set(job_ids)
    return {j: s for j, s in states.items() if j in wanted or j.split("_")[0] in wanted}


def follow(folder: Path, submission: dict[str, Any], keys: list[str], show: bool = True,
           poll_s: float = 1.0) -> dict[str, Any]:
    """Show the experts' progress (from their status and progress files) until the assemble job has written
    summary.json; if every job is gone without it (cancelled), assemble here. Returns the summary."""
    view = ProgressView(keys, show)
    ids = [*submission["experts"].values(), *(v for k, v in submission.items() if k != "experts")]
    settings = json.loads((folder / "config.json").read_text(encoding="utf-8"))["global"]
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
            _run(["scancel", str(job)])
            deadline = time.time() + 120
            while queued_jobs([str(job)]) and time.time() < deadline:
                time.sleep(1)
        mark_stalled(folder, key, f"SLURM job {job}", silent)


def assemble_here(folder: Path, interrupted: bool = False) -> dict[str, Any]:
    """The assemble job's work, done by the submitting command (after scancel, say)."""
    for key in json.loads((folder / "config.json").read_text(encoding="utf-8"))["experts"]:
        if status_of(folder, key) == "running":  # its job is gone: it was killed before it could say so
            update_status(folder, key, status="interrupted", ended=now(),
                          epochs_done=epochs_in_checkpoint(folder / key / "ckpts" / "last.ckpt"))
    assemble_job(str(folder), interrupted)
    return json.loads((folder / "summary.json").read_text(encoding="utf-8"))


def wait_for_experts(folder: Path, keys: list[str], timeout_s: float = 90) -> None:
    """After scancel: wait (bounded) until no expert still says it is running, i.e. each has written how it
    stopped and kept its checkpoint; SLURM kills a job that takes longer than its KillWait."""
    deadline = time.time() + timeout_s
    while time.time() < deadline and any(status_of(folder, k) == "running" for k in keys):
        time.sleep(0.5)


def cancel(folder: Path) -> None:
    """scancel every job of the run still queued or running (Ctrl-C of an attached console)."""
    ids = all_job_ids(folder)
    queued = queued_jobs(ids) or {}
    if queued:
        arrays = sorted({j.split("_")[0] for j in queued})
        _run(["scancel", *arrays])


def print_detached(folder: Path, submission: dict[str, Any]) -> None:
    arrays = sorted({j.split("_")[0] for j in submission["experts"].values()})
    print(f"submitted: experts {', '.join(arrays)} ({len(submission['experts'])} tasks), "
          f"plots {submission.get('plots', '-')}, tables {submission['tables']}, "
          f"assemble {submission['assemble']}", file=sys.stderr)
    print(f"follow with: squeue -j {','.join([*arrays, submission['assemble']])}; the run is done when "
          f"{folder / 'summary.json'} says so; continue a stopped run with: "
          f"python neuro_trigger/main.py --resume {folder}", file=sys.stderr)
