"""Run or resume a sweep: what `main.py --sweep` calls, and what tests and notebooks call.

`sweep()` checks the sweep whole and the data before anything trains, makes `<log root>/sweeps/<name>/version_N/`
(sweep.json: the sweep as it was run; git_id.txt, git_diff.txt; optuna.journal: one study per expert), trains the
trials (sweep/local.py; on SLURM a job array, and a job that finishes the sweep: sweep/slurm.py), then writes
trials.csv, the best/ folder and report.html, and ends with one line per expert. `resume_sweep()` goes on with a
stopped one: finished trials are kept, stopped ones go on from their checkpoints, the samplers from the journal.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.selection import check_data_files, check_rows, load_data
from neuro_trigger.errors import UserError
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.folder import create_run_folder, ensure_writable, write_git_snapshot
from neuro_trigger.run.status import last_checkpoint, now, read_status
from neuro_trigger.runner.api import DEBUG_ROOT
from neuro_trigger.runner.console import setup_console, setup_logging
from neuro_trigger.runner.options import check_launcher
from neuro_trigger.runner.processes import start_process_server
from neuro_trigger.runner.slurm_queue import JOBS_FILE
from neuro_trigger.sweep import records as trial_records
from neuro_trigger.sweep import studies
from neuro_trigger.sweep.best import best_records, build_best
from neuro_trigger.sweep.local import PRELOAD as SWEEP_PRELOAD
from neuro_trigger.sweep.local import TrialQueue, on_cpu, run_trials
from neuro_trigger.sweep.space import Sweep, load_sweep
from neuro_trigger.sweep.trial import trial_folder
from neuro_trigger.training.devices import check_hardware
from neuro_trigger.training.stopping import RunLock, process_alive, stop_on_signals

if TYPE_CHECKING:
    from neuro_trigger.sweep.slurm import Plan

log = logging.getLogger("neuro_trigger")

SWEEP_FILE = "sweep.json"


@dataclass
class SweepResult:
    """What a sweep left: its folder, every trial's record, the best record per expert, its best/ folder."""

    folder: Path
    records: list[dict[str, Any]]
    best: dict[int, dict[str, Any]]
    best_folder: Path | None
    submitted: bool = False  # a detached SLURM sweep: its jobs were submitted, nothing has ended yet

    @property
    def ok(self) -> bool:
        """Every expert has a finished trial (or the sweep's jobs were submitted, detached)."""
        return self.submitted or bool(self.records) and {r["expert"] for r in self.records} <= set(self.best)


def is_sweep_folder(folder: Path) -> bool:
    return (Path(folder) / SWEEP_FILE).is_file()


def sweep(name: str, overrides: list[str] | tuple[str, ...] = (), *, production: bool = False,
          trials: int | None = None, description: str = "", log_root: Path | None = None, verbose: bool = False,
          launcher: str = "local", slurm: list[str] | tuple[str, ...] = (), detach: bool = False) -> SweepResult:
    """Run the sweep `name` of configs/__init__.py. production: every expert of its config, trials in parallel
    processes, into `log_root/sweeps/<name>/version_N` (default `<repo>/log`); otherwise a debug sweep: the first
    expert, at most 3 trials of at most 10 epochs, in this process, under /tmp/nt_pytorch_debug_log.
    `overrides` (-m) apply to every trial; `trials` caps the trials per expert."""
    started = time.time()
    setup_console()
    cli_slurm = check_launcher(launcher, slurm, detach, production)
    spec = load_sweep(name, overrides, trials, debug=not production)
    base = resolve_config(spec.config, overrides, experts=list(spec.experts))
    root = Path(log_root) if log_root else (REPO_ROOT / "log" if production else DEBUG_ROOT)
    runs_root = Path(log_root) if log_root else REPO_ROOT / "log"
    ensure_writable(root)
    if production and launcher == "local":
        start_process_server(SWEEP_PRELOAD)
    if launcher == "slurm":
        from neuro_trigger.sweep import slurm as on_slurm

        plan = on_slurm.check(spec, base, cli_slurm, root)
    else:
        check_hardware(base)
    check_data_files(base["global"])
    stores = load_data(base["global"], runs_root)
    counts = check_rows(stores, base)
    folder = create_run_folder(root / "sweeps", spec.name)
    handler = setup_logging(folder)
    try:
        with RunLock(folder).acquire("sweep"), stop_on_signals():
            log.info("sweep folder %s (%s, %s sampler, %d trial(s) per expert, experts %s)", folder,
                     "production" if production else "debug", spec.sampler, spec.trials, list(spec.experts))
            write_json(folder / SWEEP_FILE, {
                "sweep": spec.as_dict(), "description": description, "mode": "production" if production else "debug",
                "runs_root": str(runs_root), "launcher": launcher, "started": now(),
                "workers": base["global"]["workers"],
                "data": {split: store.sources for split, store in stores.items()}})
            git_id = write_git_snapshot(folder, REPO_ROOT)
            log.info("git %s", git_id or "unavailable (see git_id.txt)")
            studies.create_studies(folder, spec)
            if launcher == "slurm":
                return _on_slurm(folder, spec, plan, stores, git_id, started, detach, verbose)
            return _run(folder, spec, stores, counts, production, git_id, verbose, [], started)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def resume_sweep(folder: Path, verbose: bool = False, launcher: str | None = None,
                 slurm: list[str] | tuple[str, ...] = (), detach: bool = False) -> SweepResult:
    """Go on with a stopped sweep: trials that ended are kept, stopped ones go on from their last checkpoint, new
    ones are asked for until each expert has its trials; then trials.csv, best/ and report.html are written again.
    On the launcher the sweep ran on unless `launcher` names another (a SLURM sweep: its settings again unless
    `slurm` gives others; none of its jobs may still be on SLURM)."""
    started = time.time()
    setup_console()
    folder = Path(folder).resolve()
    saved = read_json(folder / SWEEP_FILE, "--resume")
    spec = Sweep.from_dict(saved["sweep"])
    production = saved["mode"] == "production"
    launcher = launcher or saved.get("launcher", "local")
    cli_slurm = check_launcher(launcher, slurm, detach, production)
    plan = None
    if launcher == "slurm" or (folder / JOBS_FILE).is_file():
        from neuro_trigger.sweep import slurm as on_slurm

        plan = on_slurm.check_resume(folder, spec, launcher, cli_slurm)
    with RunLock(folder).acquire("--resume"):
        if production and launcher == "local":
            start_process_server(SWEEP_PRELOAD)
        base = resolve_config(spec.config, spec.overrides, experts=list(spec.experts),
                              configs=plan.configs if plan else None)
        stores = load_data(base["global"], Path(saved["runs_root"]))
        for split, store in stores.items():
            if [s["sha256"] for s in saved["data"][split]] != [s["sha256"] for s in store.sources]:
                raise UserError(f"--resume {folder}: the {split} data files changed since the sweep started")
        counts = check_rows(stores, base)
        handler = setup_logging(folder)
        try:
            with stop_on_signals():
                git_id = (folder / "git_id.txt").read_text(encoding="utf-8").split()[0] \
                    if (folder / "git_id.txt").is_file() else None
                left = []
                for expert in spec.experts:
                    for asked in studies.unfinished(folder, spec, expert):
                        _refuse_live_trial(trial_folder(folder, expert, asked.number), f"expert_{expert}")
                        last = last_checkpoint(trial_folder(folder, expert, asked.number), f"expert_{expert}")
                        left.append((asked, last if last.is_file() else None))
                log.info("resuming sweep %s: %d trial(s) go on%s", folder, len(left), "".join(
                    f", expert_{a.expert} trial {a.number} from its last checkpoint" for a, c in left if c))
                if plan is not None:
                    return _on_slurm(folder, spec, plan, stores, git_id, started, detach, verbose)
                return _run(folder, spec, stores, counts, production, git_id, verbose, left, started)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _refuse_live_trial(trial: Path, key: str) -> None:
    """A trial of the stopped sweep still training (a process that has not noticed the stop yet) is not started
    twice."""
    state = read_status(trial, key)
    if state.get("status") == "running" and state.get("pid") and state.get("host") == socket.gethostname() and \
            process_alive(state["pid"], state.get("pid_start")):
        raise UserError(f"--resume: {trial} is still training in process {state['pid']}; wait for it to stop "
                        f"(it stops by itself once the sweep's command is gone) or kill it")


def _run(folder: Path, spec: Sweep, stores, counts: dict[str, int], production: bool, git_id: str | None,
         verbose: bool, left: list, started: float) -> SweepResult:
    """Train the trials, then write what the sweep leaves; on a stop, what the ended trials give, then re-raise."""
    base = resolve_config(spec.config, spec.overrides, experts=list(spec.experts))
    rows = {expert: counts[f"expert_{expert}"] for expert in spec.experts}
    queue = TrialQueue(folder, spec, rows, left)
    total = sum(spec.budget(e) for e in spec.experts)
    done = [sum(r["state"] != "interrupted" for r in trial_records.collect(folder, spec))]

    def trial_ended(record: dict[str, Any]) -> None:
        done[0] += record["state"] != "interrupted"
        value = f", {spec.objective} {record['objective']:.4g}" if record["objective"] is not None else ""
        params = ", ".join(f"{k}={v!r}" for k, v in record["params"].items())
        error = f": {record['error']}" if record.get("error") else ""
        log.info("expert_%d trial %d %s after %d epoch(s)%s (%s)%s [%d/%d]", record["expert"], record["trial"],
                 record["state"], record["epochs"], value, params, error, done[0], total)

    try:
        run_trials(folder, spec, stores, queue, production, git_id, verbose, base["global"]["workers"],
                   on_cpu(list(base["experts"].values())), trial_ended)
    except KeyboardInterrupt:
        log.warning("interrupted: writing trials.csv and best/ from the trials that ended")
        _finish(folder, spec, stores, git_id, started, interrupted=True, production=production)
        log.warning("interrupted; resume with: python neuro_trigger/main.py --resume %s", folder)
        raise
    return _finish(folder, spec, stores, git_id, started, production=production)


def _on_slurm(folder: Path, spec: Sweep, plan: Plan, stores, git_id: str | None, started: float, detach: bool,
              verbose: bool) -> SweepResult:
    """The trials as a SLURM job array and a job that finishes the sweep with `_finish` (sweep/slurm.py)."""
    from neuro_trigger.sweep import slurm as on_slurm

    if not on_slurm.run(folder, spec, plan, stores, git_id, started, detach, verbose, _finish):
        return SweepResult(folder, [], {}, None, submitted=True)
    records = trial_records.collect(folder, spec)
    return SweepResult(folder, records, best_records(records, spec), folder / "best" if (folder / "best").is_dir()
                       else None)


def _finish(folder: Path, spec: Sweep, stores, git_id: str | None, started: float,
            interrupted: bool = False, production: bool = True) -> SweepResult:
    """trials.csv, best/, report.html and summary.json from every trial's record; the last lines per expert."""
    records = trial_records.collect(folder, spec)
    trial_records.write_trials_csv(folder, spec, records)
    best = best_records(records, spec)
    best_folder = build_best(folder, spec, stores, records, git_id, production)
    counts = trial_records.state_counts(records)
    status = "interrupted" if interrupted or counts["interrupted"] else "finished" if best else "failed"
    write_json(folder / "summary.json", {
        "sweep": spec.name, "config": spec.config, "status": status, "objective": spec.objective,
        "direction": spec.direction, "trials": counts, "end_time": now(),
        "best": {f"expert_{e}": {k: r[k] for k in ("trial", "objective", "params", "folder", "epochs")}
                 for e, r in sorted(best.items())}})
    _write_report(folder)
    for expert in spec.experts:
        if expert in best:
            r = best[expert]
            params = ", ".join(f"{k}={v!r}" for k, v in r["params"].items())
            log.info("expert_%d: best %s %.4g (trial %d: %s) %s", expert, spec.objective, r["objective"],
                     r["trial"], params, folder / r["folder"])
        else:
            log.info("expert_%d: no finished trial", expert)
    log.info("sweep %s in %.1f s: %s", status, time.time() - started, folder)
    return SweepResult(folder, records, best, best_folder)


def _write_report(folder: Path) -> None:
    """The sweep's report.html (never fails the sweep: a problem there is a warning)."""
    from neuro_trigger.sweep.report import write_sweep_report

    write_sweep_report(folder)
