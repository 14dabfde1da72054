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

import json
import logging
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any

import submitit

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.schema import SLURM_KEYS
from neuro_trigger.errors import UserError
from neuro_trigger.judge.expert_results import PLOT_SPLITS
from neuro_trigger.run.files import write_json
from neuro_trigger.runner.slurm_jobs import ExpertJob, assemble_job, plots_job, tables_job
from neuro_trigger.runner.slurm_queue import JOBS_FILE, last_line, read_jobs, run_command

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


def warning_margin_s(time_min: int) -> int:
    """How long before its time limit a job is told (USR2: submitit requeues an expert's job, which keeps its
    checkpoint): 120 s, but at most a quarter of the limit. SLURM checks its jobs' limits about every 30 s and
    sends the warning up to that much early, so a 120 s margin on a 1 or 2 minute limit came at the first check
    and requeued the job before it had trained."""
    return min(120, time_min * 60 // 4)


def check_cluster(resolved: dict[str, Any], cli: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Everything about the cluster a user can get wrong, before any run folder: SLURM there and reachable,
    settings sbatch accepts, hardware the jobs will have. Returns each expert's settings."""
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
    for options in {tuple(sbatch_options(s)) for s in settings.values()}:
        test = run_command(["sbatch", "--test-only", *options, "--wrap=true"])
        if test.returncode != 0:
            raise UserError(f"--launcher slurm: sbatch refuses {' '.join(options)}: {last_line(test.stderr)}")
    return settings

# ---------------------------------------------------------------------------------------------- submitting
def _executor(folder: Path, name: str, settings: dict[str, Any] | None, dependency: str | None = None):
    executor = submitit.SlurmExecutor(folder=folder / "slurm" / "%j", max_num_timeout=10)
    extra: dict[str, Any] = {"kill_on_invalid_dep": "yes"}
    params: dict[str, Any] = {"job_name": name, "setup": [f"export PYTHONPATH={shlex.quote(str(REPO_ROOT))}"
                                                        "${PYTHONPATH:+:$PYTHONPATH}"],
                              "stderr_to_stdout": True}
    if settings is None:  # the small jobs: figures, tables, assembling
        params.update(time=60, cpus_per_task=1, mem="4G", signal_delay_s=warning_margin_s(60))
    else:
        params.update(time=settings["time_min"], signal_delay_s=warning_margin_s(settings["time_min"]),
                      cpus_per_task=settings["cpus_per_expert"],
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


def print_detached(folder: Path, submission: dict[str, Any]) -> None:
    arrays = sorted({j.split("_")[0] for j in submission["experts"].values()})
    print(f"submitted: experts {', '.join(arrays)} ({len(submission['experts'])} tasks), "
          f"plots {submission.get('plots', '-')}, tables {submission['tables']}, "
          f"assemble {submission['assemble']}", file=sys.stderr)
    print(f"follow with: squeue -j {','.join([*arrays, submission['assemble']])}; the run is done when "
          f"{folder / 'summary.json'} says so; continue a stopped run with: "
          f"python neuro_trigger/main.py --resume {folder}", file=sys.stderr)
