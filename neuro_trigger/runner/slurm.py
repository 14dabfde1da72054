"""The SLURM launcher: a run's experts as jobs of a SLURM cluster, submitted with submitit.

One job array trains the experts (one task each, `run_expert` on the shared run folder, the data
loaded by the job itself from the parse cache); a job array draws the figures (a task per expert) and one job writes
the prediction tables once the experts have ended; an `assemble` job then writes summary.json,
weights.json and report.html. Every dependency is `afterany`, so a failed or cancelled expert never
leaves a job waiting for ever, and the summary tells what happened to each.

Here: the settings and their checks before anything is made, and submitting; the jobs themselves are in
runner/slurm_jobs.py, following them in runner/slurm_follow.py, what SLURM holds of a run in runner/slurm_queue.py.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import submitit
from submitit.core.utils import FailedJobError, FailedSubmissionError

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.schema import SLURM_KEYS
from neuro_trigger.errors import UserError
from neuro_trigger.judge.expert_results import PLOT_SPLITS
from neuro_trigger.run.files import write_json
from neuro_trigger.run.folder import append_journal
from neuro_trigger.run.status import mark_interrupted, now, status_of
from neuro_trigger.runner.slurm_jobs import ExpertJob, assemble_job, plots_job, refresh_summary, tables_job
from neuro_trigger.runner.slurm_queue import JOBS_FILE, cancel, job_ids, last_line, queued_jobs, read_jobs, run_command

log = logging.getLogger("neuro_trigger")

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


def side_settings(resolved: dict[str, Any], cli: dict[str, Any]) -> dict[str, Any]:
    """The settings of the run's other jobs (figures, tables, assembling): the run's `slurm` block and `--slurm` as
    for the experts (partition, account, `extra`), with one core, no GPU, side_time_min and side_mem_gb."""
    settings = expert_settings(resolved["global"], cli)
    return {**settings, "time_min": settings["side_time_min"], "mem_gb": settings["side_mem_gb"],
            "cpus_per_expert": 1, "gpus_per_expert": 0}


def warning_margin_s(time_min: int) -> int:
    """How long before its time limit a job is told (USR2: submitit requeues an expert's job, which keeps its
    checkpoint): 120 s, but at most a quarter of the limit. SLURM checks its jobs' limits about every 30 s and
    sends the warning up to that much early, so a 120 s margin on a 1 or 2 minute limit came at the first check
    and requeued the job before it had trained."""
    return min(120, time_min * 60 // 4)


def check_cluster(resolved: dict[str, Any], cli: dict[str, Any]) -> dict[str, Any]:
    """Everything about the cluster a user can get wrong, before any run folder: SLURM there and reachable,
    settings sbatch accepts (the experts' and the other jobs'), hardware the jobs will have. Returns the settings:
    {"experts": each expert's, "side": the other jobs'}."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        raise UserError("--launcher slurm: SLURM is not installed here (no sbatch/squeue on PATH)")
    probe = run_command(["sinfo", "-h", "-o", "%P"])
    if probe.returncode != 0:
        raise UserError(f"--launcher slurm: SLURM is not reachable: sinfo says: {last_line(probe.stderr)}")
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
        if s["gpus_per_expert"]:
            _check_gpus(key, s)
    for options in {tuple(sbatch_options(s)) for s in settings.values()}:
        test = run_command(["sbatch", "--test-only", *options, "--wrap=true"])
        if test.returncode != 0:
            raise UserError(f"--launcher slurm: sbatch refuses {' '.join(options)}: {last_line(test.stderr)}")
    side = side_settings(resolved, cli)
    test = run_command(["sbatch", "--test-only", *sbatch_options(side), "--wrap=true"])
    if test.returncode != 0:
        raise UserError(f"--launcher slurm: sbatch refuses the figures, tables and assemble jobs' "
                        f"{' '.join(sbatch_options(side))} (side_time_min, side_mem_gb, and partition, account and "
                        f"extra as for the experts): {last_line(test.stderr)}")
    return {"experts": settings, "side": side}


def _check_gpus(key: str, settings: dict[str, Any]) -> None:
    """GPUs asked of a partition whose nodes have none: one line that says so (sbatch only says 'Invalid generic
    resource (gres) specification')."""
    partition = settings["partition"]
    shown = run_command(["sinfo", "-h", "-o", "%G", *(["-p", partition] if partition else [])])
    if shown.returncode == 0 and not any("gpu" in line for line in shown.stdout.splitlines()):
        where = f"partition '{partition}' has" if partition else "this cluster has"
        raise UserError(f"{key}: gpus_per_expert={settings['gpus_per_expert']} asks for GPUs, but {where} no GPU "
                        f"(no node lists one in sinfo); pick a partition with GPUs (--slurm partition=NAME) or train "
                        f"on CPUs (gpus_per_expert=0, -m accelerator=cpu)")


# ---------------------------------------------------------------------------------------------- submitting
def _executor(folder: Path, name: str, settings: dict[str, Any], dependency: str | None = None):
    """A submitit executor for jobs with these settings (an expert's, or side_settings for the other jobs)."""
    executor = submitit.SlurmExecutor(folder=folder / "slurm" / "%j", max_num_timeout=10)
    params: dict[str, Any] = {
        "job_name": name, "setup": [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}${{PYTHONPATH:+:$PYTHONPATH}}"],
        "signal_delay_s": warning_margin_s(settings["time_min"]), "stderr_to_stdout": True,
        "time": settings["time_min"], "cpus_per_task": settings["cpus_per_expert"],
        "mem": f"{max(1, round(settings['mem_gb'] * 1024))}M", "array_parallelism": settings["array_parallelism"],
        "additional_parameters": {"kill_on_invalid_dep": "yes", **settings["extra"]}}
    if settings["partition"]:
        params["partition"] = settings["partition"]
    if settings["account"]:
        params["account"] = settings["account"]
    if settings["gpus_per_expert"]:
        params["gpus_per_node"] = settings["gpus_per_expert"]
    if dependency:
        params["dependency"] = dependency
    executor.update_parameters(**params)
    return executor


def _submitted(executor, calls: list[tuple]) -> list[str]:
    """Submit these (function, *arguments) calls as one job (one call) or one array; their job ids. sbatch's own
    words on a refusal stay in the exception (submitit prints them to stderr as well: kept off the console)."""
    with contextlib.redirect_stderr(io.StringIO()):
        if len(calls) == 1:
            return [executor.submit(*calls[0]).job_id]
        with executor.batch():
            jobs = [executor.submit(*call) for call in calls]
        return [job.job_id for job in jobs]


def submit(folder: Path, resolved: dict[str, Any], keys: list[str], unplotted: list[tuple[str, str]],
           settings: dict[str, Any], verbose: bool = False, detached_since: float | None = None) -> dict[str, Any]:
    """Submit the experts in `keys`, the figures (of those and of `unplotted`), the tables and the assemble job;
    each job id goes to slurm_jobs.json (appended to on a resume) the moment it is submitted. A refused submission
    cancels what this one submitted, leaves an honest folder and raises UserError. `detached_since`: nobody
    follows the run, so the assemble job also logs its verdict and "done" (the run started then)."""
    name = resolved["name"]
    slurm_dir = folder / "slurm"
    slurm_dir.mkdir(exist_ok=True)
    before = {p.name for p in slurm_dir.iterdir()}
    (slurm_dir / "tables.done").unlink(missing_ok=True)
    record = read_jobs(folder)
    submission: dict[str, Any] = {"experts": {}}
    record.append(submission)
    _note_visibility(folder, settings)
    job = "experts"
    try:
        groups: dict[str, list[str]] = {}
        for key in keys:  # experts with the same settings share one job array
            groups.setdefault(json.dumps(settings["experts"][key], sort_keys=True), []).append(key)
        for group_keys in groups.values():
            executor = _executor(folder, f"nt-{name}", settings["experts"][group_keys[0]])
            ids = _submitted(executor, [(ExpertJob(), str(folder), key, verbose) for key in group_keys])
            submission["experts"].update(zip(group_keys, ids, strict=True))
            write_json(folder / JOBS_FILE, record)
        arrays = sorted({job_id.split("_")[0] for job_id in submission["experts"].values()})
        after_experts = ("afterany:" + ":".join(arrays)) if arrays else None
        plot_jobs: dict[str, list[str]] = {key: list(PLOT_SPLITS) for key in keys}
        for key, split in unplotted:
            plot_jobs.setdefault(key, []).append(split)
        side = settings["side"]
        if plot_jobs:
            job = "figures"
            ids = _submitted(_executor(folder, f"nt-{name}-plots", side, after_experts),
                             [(plots_job, str(folder), key, splits) for key, splits in plot_jobs.items()])
            submission["plots"] = ids[0].split("_")[0]
            write_json(folder / JOBS_FILE, record)
        job = "tables"
        submission["tables"] = _submitted(_executor(folder, f"nt-{name}-tables", side, after_experts),
                                          [(tables_job, str(folder))])[0]
        write_json(folder / JOBS_FILE, record)
        job = "assemble"
        before_assembling = [*arrays, *([submission["plots"]] if "plots" in submission else []), submission["tables"]]
        submission["assemble"] = _submitted(
            _executor(folder, f"nt-{name}-assemble", side, "afterany:" + ":".join(before_assembling)),
            [(assemble_job, str(folder), detached_since)])[0]
        write_json(folder / JOBS_FILE, record)
    except (FailedJobError, FailedSubmissionError, OSError) as error:
        reason = f"sbatch refused the {job} job: {last_line(str(error))}"
        withdraw(folder, submission, before, reason)
        raise UserError(f"--launcher slurm: {reason}; the jobs submitted before it are cancelled and the run is "
                        f"marked failed; fix that and continue with: python neuro_trigger/main.py --resume "
                        f"{folder}") from None
    except KeyboardInterrupt:
        withdraw(folder, submission, before, "interrupted while submitting the run's jobs", "interrupted")
        raise
    refresh_summary(folder, lambda summary: _submitted_to_summary(summary, submission, plot_jobs))
    return submission


def _submitted_to_summary(summary: dict[str, Any], submission: dict[str, Any],
                          plot_jobs: dict[str, list[str]]) -> None:
    """The run goes on: its status "running", each submitted expert "queued" in its job, each other job queued."""
    summary.update(status="running", end_time=None)
    summary.pop("error", None)
    for key, job_id in submission["experts"].items():
        summary["experts"][key] = {"status": "queued", "slurm_job_id": job_id}
    jobs = summary.setdefault("jobs", {})
    if "plots" in submission:
        jobs["figures"] = {"job": submission["plots"], "status": "queued",
                           "experts": {key: "queued" for key in plot_jobs}}
    else:
        jobs.pop("figures", None)
    jobs["tables"] = {"job": submission["tables"], "status": "queued"}
    jobs["assemble"] = {"job": submission["assemble"], "status": "queued"}


def _note_visibility(folder: Path, settings: dict[str, Any]) -> None:
    """Once per submission: what the jobs need to see on the nodes, and a time limit's shortened warning."""
    log.warning("the SLURM jobs run %s with the code of %s, read the parse cache in %s and write into %s: the nodes "
                "must see these paths (a filesystem they share with this machine)", sys.executable, REPO_ROOT,
                REPO_ROOT / "data_cache", folder)
    short = sorted({s["time_min"] for s in settings["experts"].values() if warning_margin_s(s["time_min"]) < 120})
    for minutes in short:
        log.info("time_min=%d: an expert's job is told %d s (a quarter of its time limit) before the limit to keep "
                 "its checkpoint and be requeued", minutes, warning_margin_s(minutes))


def withdraw(folder: Path, submission: dict[str, Any], before: set[str], reason: str,
             status: str = "failed") -> None:
    """A submission that could not be completed: cancel the jobs it submitted (and wait until SLURM has let them
    go, so that what the experts wrote is final), remove the pickles and submission files it left, and say in
    summary.json, app.log and the journal that the run `status` and why."""
    submitted = job_ids(submission)
    cancel(submitted)
    deadline = time.time() + 150  # KillWait is 30 s by default
    while queued_jobs(submitted) and time.time() < deadline:
        time.sleep(1)
    for key in submission["experts"]:
        if status_of(folder, key) == "running":  # killed before it could say so
            mark_interrupted(folder, key)
    slurm_dir = folder / "slurm"
    job_dirs = {p for p in slurm_dir.iterdir() if p.is_dir() and p.name.split("_")[0] in
                {j.split("_")[0] for j in submitted}}
    new = [p for p in slurm_dir.iterdir() if p.name not in before and not p.is_dir()]
    for file in [*new, *(f for d in job_dirs for f in d.iterdir())]:
        if file.name.endswith((".pkl", "_submission.sh")) or file.name.startswith(".submission_file_"):
            file.unlink(missing_ok=True)
    for directory in job_dirs:
        if not any(directory.iterdir()):
            directory.rmdir()

    def failed(summary: dict[str, Any]) -> None:
        summary.update(status=status, error=reason, end_time=now())
        names = {"figures": "plots", "tables": "tables", "assemble": "assemble"}
        summary["jobs"] = {job: {"job": submission[name], "status": "cancelled"} if name in submission
                           else {"status": "not submitted"} for job, name in names.items()}

    refresh_summary(folder, failed, final=True)
    logging.getLogger().error("%s", reason)  # app.log (the console gets it as the command's error line)
    resolved = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    append_journal(folder.parent.parent / "log.txt", {"time": now(), "config": resolved["name"], "folder": str(folder),
                                                      "description": resolved.get("description", "") + f" [{status}]"})


def print_detached(folder: Path, submission: dict[str, Any]) -> None:
    arrays = sorted({j.split("_")[0] for j in submission["experts"].values()})
    print(f"submitted: experts {', '.join(arrays) or '-'} ({len(submission['experts'])} tasks), "
          f"figures {submission.get('plots', '-')}, tables {submission['tables']}, "
          f"assemble {submission['assemble']}; the job ids are kept in {folder / JOBS_FILE}", file=sys.stderr)
    print(f"each job's log: {folder / 'slurm'}/<job id>/ (an expert's own lines also in {folder}/expert_N.log); "
          f"follow with: squeue -j {','.join([*arrays, submission['assemble']])}; the run is done when "
          f"{folder / 'summary.json'} says so (it tells what each job is doing); continue a stopped run with: "
          f"python neuro_trigger/main.py --resume {folder}", file=sys.stderr)
