"""The local launcher: a run's experts as processes of this machine.

Processes come from a fork server that has imported the heavy libraries once. The experts start in the
order, and train on the CPU threads, of the run's thread plan (runner/plan.py), decided before the first
one starts and recorded in app.log and summary.json; then come each finished expert's figures and the job
assembling the run's files. At most `workers` jobs run at once, and on CPU their threads never outnumber the
cores. The split data are shared with the jobs as read-only memory maps, never copied. A debug run trains
its one expert in this process instead.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue as queue_module
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from neuro_trigger import cpu_cores
from neuro_trigger.data.dataset import ColumnStore, SharedColumns
from neuro_trigger.data.selection import expert_rows
from neuro_trigger.errors import UserError
from neuro_trigger.judge.assemble import assemble
from neuro_trigger.judge.expert_results import PLOT_SPLITS, write_expert_plots, write_report_figures
from neuro_trigger.judge.report import FIGURE_SPLITS
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.status import (
    mark_failed_at_start,
    read_status,
    record_exit,
    status_of,
    write_failure,
    write_status,
)
from neuro_trigger.runner.console import ProgressView, expert_key
from neuro_trigger.runner.plan import Job, Plan, make_plan
from neuro_trigger.runner.processes import process_context
from neuro_trigger.runner.stalls import StallWatch, mark_stalled
from neuro_trigger.training.devices import torch_device
from neuro_trigger.training.expert import expert_logging, run_expert
from neuro_trigger.training.stopping import job_process

log = logging.getLogger("neuro_trigger")

# The work of an expert's figure jobs in rows' worth of training arithmetic (runner/plan.py's unit), for the
# plan: a job of 11 figures took as long as about 1.0M rows of expert 0's training on one thread, report.html's
# 7 figures about 0.6-1.0M (docs/performance.md, "Issue 24").
FIGURE_JOB_ROWS = {"plots": 1_000_000, "report": 700_000}


def job_output(folder: Path, log_name: str) -> None:
    """A job's stdout and stderr go to its log in the run folder."""
    log_fd = os.open(folder / log_name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o666)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)


def _child(folder: Path, key: str, handles: dict[str, SharedColumns], threads: int, progress,
           resume_from: Path | None, run_pid: int, verbose: bool) -> None:
    """Entry point of an expert process: its output goes to its own log, its status to status.json. It trains on
    `threads` CPU threads, the plan's, from start to end. An interrupt before its training started exits 130
    too: the parent reads the status and marks it interrupted."""
    import torch

    with job_process(run_pid):
        job_output(folder, f"{key}.log")
        expert_logging(folder, key)
        torch.set_num_threads(threads)
        log.info("%s: process %d started, %d CPU thread(s) as the run's plan says", key, os.getpid(),
                 torch.get_num_threads())
        stores = {split: ColumnStore.from_shared(h) for split, h in handles.items()}
        try:
            run_expert(folder, key, stores, progress.put, resume_from, plots=False, verbose=verbose)
        except KeyboardInterrupt:
            progress.cancel_join_thread()  # never wait at exit for a runner that may no longer read
            raise
        except BaseException as error:  # noqa: BLE001 - every failure must reach status.json
            log.error("%s failed:\n%s", key, traceback.format_exc())
            write_failure(folder, key, error)
            progress.put({"expert": key, "status": "failed", "error": str(error)})
            sys.exit(1)


def _figures_child(folder: Path, key: str, split: str, handle: SharedColumns, run_pid: int, report: bool) -> None:
    """Entry point of a figures job: one finished expert's figures on one split, or (`report`) report.html's."""
    with job_process(run_pid):
        job_output(folder, f"{key}.log")
        expert_logging(folder, key)
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))["experts"][key]
        store = ColumnStore.from_shared(handle)
        try:
            if report:
                write_report_figures(folder / key, config, store, split)
            else:
                write_expert_plots(folder / key, config, store, split, report_figures=False)
        except Exception:  # noqa: BLE001 - the expert's results stand; its log says what went wrong
            log.error("%s: the %s %sfigures failed:\n%s", key, split, "report " if report else "",
                      traceback.format_exc())
            sys.exit(1)


def _assemble_child(folder: Path, handles: dict[str, SharedColumns], run_pid: int) -> None:
    """Entry point of the job assembling the run's files (prediction tables, weights.json, summary.json) once
    every expert has trained, while the last figures are still drawn."""
    with job_process(run_pid):
        job_output(folder, "app.log")
        try:
            assemble(folder, {split: ColumnStore.from_shared(h) for split, h in handles.items()})
        except Exception:  # noqa: BLE001 - the parent assembles the folder itself after a failure here
            traceback.print_exc()
            sys.exit(1)


def run_in_process(folder: Path, keys: list[str], stores: dict[str, ColumnStore],
                    resume_from: dict[str, Path | None], show: bool, verbose: bool = False) -> None:
    """The experts `keys`, one after the other, in this process (a debug run), each on the threads of the
    run's plan for one job at a time."""
    import torch

    resolved = read_json(folder / "config.json", "config.json")
    counts = {key: len(expert_rows(stores["train"], resolved["experts"][key])) for key in keys}
    on_cpu = all(torch_device(resolved["experts"][key]).type == "cpu" for key in keys)
    plan = plan_run(folder, resolved, counts, on_cpu, workers=1)
    before = torch.get_num_threads()
    view = ProgressView(keys, show)
    try:
        for key in keys:
            torch.set_num_threads(plan.threads()[key])
            handler = expert_logging(folder, key)
            try:
                run_expert(folder, key, stores, view.update, resume_from.get(key), verbose=verbose)
            except (UserError, KeyboardInterrupt):
                raise
            except Exception as error:
                log.exception("%s failed", key)
                write_failure(folder, key, error)
            finally:
                logging.getLogger().removeHandler(handler)
                handler.close()
    finally:
        torch.set_num_threads(before)


def plan_run(folder: Path, resolved: dict, counts: dict[str, int], on_cpu: bool, workers: int,
             figure_jobs: tuple[str, ...] = ()) -> Plan:
    """The thread plan of the experts in `counts` (their training rows), each followed by `figure_jobs` ("plots",
    "report"), logged and recorded in summary.json as "plan". An expert's threads are fixed beforehand by the
    config's `threads` or, in a resumed run, by the plan that run recorded (it goes on as it started); on a GPU
    each expert takes one CPU thread. A run folder keeps the plan of its first launch: a resume only logs its
    own."""
    summary = read_json(folder / "summary.json", "summary.json")
    recorded = summary.get("plan", {}).get("experts", {})
    jobs = []
    for key, rows in counts.items():
        config = resolved["experts"][key]
        epochs = max(1, config["epochs"] - (read_status(folder, key).get("epochs_done") or 0))
        if config.get("threads"):
            fixed, by = config["threads"], "config"
        elif key in recorded:
            fixed, by = recorded[key]["threads"], "earlier plan"
        else:
            fixed, by = (None if on_cpu else 1), "plan"
        jobs.append(Job(key, rows, epochs, config["batch_size"], fixed, by,
                        tuple(FIGURE_JOB_ROWS[kind] for kind in figure_jobs)))
    cores = cpu_cores() if on_cpu else max(1, workers)
    plan = make_plan(jobs, cores, workers)
    log.info("%s%s", "resumed: " if recorded else "", plan.describe())
    for job in plan.jobs:
        if job.threads > cores:
            log.warning("%s: %d threads on %d cores: it trains alone, and its threads wait for each other",
                        job.key, job.threads, cores)
    if not recorded:
        summary["plan"] = plan.as_dict()
        write_json(folder / "summary.json", summary)
    return plan


def run_parallel(folder: Path, resolved: dict, stores: dict[str, ColumnStore], counts: dict[str, int],
                  resume_from: dict[str, Path | None], show: bool, unplotted: list[tuple[str, str]] = (),
                  verbose: bool = False) -> bool:
    """The experts in `counts` (their training rows) as processes, in the order and on the threads of the run's
    plan (`plan_run`), at most `workers` jobs at once and on CPU no more threads than cores; the split data are
    shared with them, not copied. Returns whether the run's folder was assembled (by a job of its own, once
    every expert has trained: judge.assemble). Experts on a GPU share it: `workers` of them at once; none of
    the processes is forked from one that has initialised CUDA."""
    if not counts and not unplotted:
        return False
    workers = resolved["global"]["workers"]
    # a finished expert's figures: one job per split, and one for report.html's figures
    figure_jobs = [("plots", split) for split in PLOT_SPLITS if split in stores] + \
        [("report", split) for split in FIGURE_SPLITS if split in stores]
    on_cpu = all(torch_device(resolved["experts"][k]).type == "cpu" for k in counts)
    plan = plan_run(folder, resolved, counts, on_cpu, workers, tuple(kind for kind, _ in figure_jobs)) \
        if counts else None
    keys = [job.key for job in plan.jobs] if plan else []
    threads = plan.threads() if plan else {}
    # Jobs: ("train", key) trains an expert and writes its predictions; ("plots", key, split) then draws
    # its figures and ("report", key, split) report.html's; ("assemble",) writes the run's prediction tables,
    # weights.json and summary.json once no expert is left to train. As jobs of their own, they keep every
    # core busy while the last experts train, and the run's end waits only for the longest of them.
    pending: list[tuple[str, ...]] = [("train", key) for key in keys] + [("plots", *job) for job in unplotted] \
        + [("report", key, split) for key, split in unplotted if split in FIGURE_SPLITS]
    slots = max(1, min(workers, len(pending) + len(keys) * len(figure_jobs)))
    cores = cpu_cores() if on_cpu else None  # on a GPU only `workers` limits the jobs at once
    if cores:
        slots = min(slots, cores)
    ctx = process_context()
    run_pid = os.getpid()
    log.info("at most %d processes at a time (trainings, then figures)", slots)
    shared = {split: store.to_shared() for split, store in stores.items()}
    progress = ctx.Queue()
    view = ProgressView(keys, show)
    stalls = StallWatch(resolved["global"]["stall_warn_s"], resolved["global"]["stall_stop_s"], view.update)
    running: dict[tuple[str, ...], Any] = {}
    assembled = False
    try:
        while pending or running:
            # in the plan's order: a job waits for the cores its threads need (no later job passes it)
            while pending and len(running) < slots and (
                    not running or cores is None or _cores_of(pending[0], threads) + sum(
                        _cores_of(j, threads) for j in running) <= cores):
                job = pending.pop(0)
                if job[0] == "train":
                    proc = ctx.Process(target=_child, name=job[1],
                                       args=(folder, job[1], shared, threads[job[1]], progress,
                                             resume_from.get(job[1]), run_pid, verbose))
                    view.update({"expert": job[1], "status": "started"})
                    stalls.heard(job[1])
                elif job[0] in ("plots", "report"):
                    proc = ctx.Process(target=_figures_child, name=f"{job[1]}-{job[2]}-{job[0]}",
                                       args=(folder, job[1], job[2], shared[job[2]], run_pid, job[0] == "report"))
                else:
                    proc = ctx.Process(target=_assemble_child, name="assemble", args=(folder, shared, run_pid))
                try:
                    proc.start()
                except Exception as error:  # noqa: BLE001 - e.g. an argument that cannot be sent to a process
                    if job[0] != "train":
                        raise
                    reason = f"its process could not be started: {type(error).__name__}: {error}"
                    mark_failed_at_start(folder, job[1], reason)
                    view.update({"expert": job[1], "status": "failed", "error": reason})
                    continue
                running[job] = proc
            # until a job ends (its sentinel) or 0.2 s pass: a freed slot is refilled at once
            mp.connection.wait([proc.sentinel for proc in running.values()], timeout=0.2)
            _show_progress(progress, view, stalls)
            for job, proc in list(running.items()):
                if job[0] == "train" and proc.exitcode is None:
                    silent = stalls.overdue(job[1], f"pid {proc.pid}")
                    if silent is not None:  # a hung process may not answer any other signal
                        proc.kill()
                        proc.join()
                        mark_stalled(folder, job[1], f"pid {proc.pid}", silent)
                if proc.exitcode is None:
                    continue
                del running[job]
                if job[0] == "train":
                    stalls.forget(job[1])
                if job[0] == "assemble":
                    assembled = proc.exitcode == 0
                    if not assembled:
                        log.warning("assembling the run's files failed (exit code %s), see app.log; "
                                    "trying again", proc.exitcode)
                    continue
                key = job[1]
                if job[0] in ("plots", "report"):
                    if proc.exitcode != 0:
                        log.warning("%s: the %s %s failed (exit code %s), see %s.log", key, job[2],
                                    "figures" if job[0] == "plots" else "report figures", proc.exitcode, key)
                    continue
                record_exit(folder, key, proc.exitcode)
                status = status_of(folder, key)
                if status != "finished":
                    error = read_status(folder, key).get("error")
                    view.update({"expert": key, "status": status, **({"error": error} if error else {})})
                else:
                    pending += [(kind, key, split) for kind, split in figure_jobs]
                if not any(j[0] == "train" for j in [*pending, *running]):
                    pending.insert(0, ("assemble",))  # the longest job of the run's end: first
                    log.info("every expert has trained: drawing the figures (%d jobs) and assembling the run's "
                             "files", sum(j[0] in ("plots", "report") for j in [*pending, *running]))
        _show_progress(progress, view, stalls)
        return assembled
    except KeyboardInterrupt:
        log.warning("interrupted: stopping every expert")
        for proc in running.values():
            if proc.is_alive():
                os.kill(proc.pid, signal.SIGINT)
        deadline = time.time() + 20
        alive = [proc for proc in running.values() if proc.is_alive()]
        while alive and time.time() < deadline:
            # keep reading their progress: a job whose messages fill the pipe cannot exit
            mp.connection.wait([proc.sentinel for proc in alive], timeout=0.2)
            _show_progress(progress, view, stalls)
            alive = [proc for proc in alive if proc.is_alive()]
        for job, proc in running.items():
            if proc.is_alive():
                log.warning("%s did not stop within 20 s: killed", proc.name)
                proc.kill()
            proc.join()
            if job[0] == "train":
                record_exit(folder, job[1], proc.exitcode, interrupted=True)
        for job in pending:
            if job[0] == "train":
                write_status(folder, job[1], {"status": "interrupted", "epochs_done": 0})
        raise
    finally:
        view.close()
        for handle in shared.values():
            handle.release()


def _cores_of(job: tuple[str, ...], threads: dict[str, int]) -> int:
    """The cores a job keeps busy: a training its plan's threads, any other job one."""
    return threads[job[1]] if job[0] == "train" else 1


def _show_progress(progress, view: ProgressView, stalls: StallWatch) -> None:
    """Every progress message the expert processes have sent so far, to the console view; each is a sign of
    progress of its expert."""
    while True:
        try:
            message = progress.get_nowait()
        except queue_module.Empty:
            return
        view.update(message)
        stalls.heard(expert_key(message))
