"""Train or resume a run: what the CLI calls and what tests and notebooks call.

`train()` checks everything a user's mistake can fail, makes the run folder, loads each split once,
has a launcher train the experts (runner/local.py: processes of this machine), and assembles the
folder; `resume()` continues a run that was stopped or failed.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.selection import check_data_files, check_rows, load_data
from neuro_trigger.errors import UserError
from neuro_trigger.judge.assemble import missing_run_files, start_summary
from neuro_trigger.judge.expert_results import PLOT_SPLITS, write_expert_plots
from neuro_trigger.judge.run_size import estimated_run_bytes
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.run.folder import create_run_folder, ensure_writable, write_git_snapshot
from neuro_trigger.run.status import last_checkpoint, read_status, status_of
from neuro_trigger.run.weights import check_weights_file
from neuro_trigger.runner.console import setup_console, setup_logging
from neuro_trigger.runner.finish import finish_run, log_end
from neuro_trigger.runner.local import run_in_process, run_parallel
from neuro_trigger.runner.options import check_launcher
from neuro_trigger.runner.processes import start_process_server
from neuro_trigger.training.devices import check_hardware
from neuro_trigger.training.stopping import RunLock, process_alive, stop_on_signals

log = logging.getLogger("neuro_trigger")

DEBUG_ROOT = Path("/tmp/nt_pytorch_debug_log")
DEBUG_MAX_EPOCHS = 10


@dataclass
class RunResult:
    """What a run left behind: its folder, the summary written there, and whether every expert finished."""

    folder: Path
    summary: dict[str, Any]
    submitted: bool = False  # a detached SLURM run: its jobs were submitted, nothing has ended yet

    @property
    def ok(self) -> bool:
        return self.submitted or all(e["status"] == "finished" for e in self.summary["experts"].values())


def train(
    config: str | dict[str, Any],
    overrides: list[str] | tuple[str, ...] = (),
    *,
    production: bool = False,
    solo: bool = False,
    description: str = "",
    log_root: Path | None = None,
    show_progress: bool = True,
    verbose: bool = False,
    launcher: str = "local",
    slurm: list[str] | tuple[str, ...] = (),
    detach: bool = False,
) -> RunResult:
    """Train the experts of a config and return the run folder and its summary.

    production: every expert, each in its own process, into `log_root/<config>/version_N` (default
    `<repo>/log`); otherwise a debug run: only the first expert, in this process (breakpoints
    work), at most 10 epochs, into /tmp/nt_pytorch_debug_log. solo: one network on all data.
    verbose: Lightning's banners and routine warnings in the expert logs too. launcher: "local" (processes
    of this machine) or "slurm" (jobs of a SLURM cluster, with `slurm` KEY=VALUE settings; `detach`: return
    once submitted).
    """
    started = time.time()
    setup_console()
    cli_slurm = check_launcher(launcher, slurm, detach, production)
    experts = [-1] if solo else None
    resolved = resolve_config(config, overrides, experts=experts)
    if not production:
        first = resolved["global"]["experts"][0]
        resolved = resolve_config(config, overrides, experts=[first])
        for c in resolved["experts"].values():
            c["epochs"] = min(c["epochs"], DEBUG_MAX_EPOCHS)
    root = Path(log_root) if log_root else (REPO_ROOT / "log" if production else DEBUG_ROOT)
    # earlier runs named by compare_to are production runs: under log/ also for a debug run
    runs_root = Path(log_root) if log_root else REPO_ROOT / "log"
    ensure_writable(root)
    if production and launcher == "local":
        start_process_server()
    # every check a user's mistake can fail comes before a run folder is made; the hardware's first, before
    # the data are read (or the default data set generated: a minute on first use)
    settings = _check_hardware(resolved, launcher, cli_slurm, root)
    check_data_files(resolved["global"])
    stores = load_data(resolved["global"], runs_root)
    counts = check_rows(stores, resolved)
    ensure_writable(root, min_free_mb=_megabytes(estimated_run_bytes(stores, resolved)))
    for key, config_ in resolved["experts"].items():
        if config_.get("load_pre_trained_weights"):
            check_weights_file(config_["load_pre_trained_weights"], [key], resolved["experts"])
    folder = create_run_folder(root, resolved["name"])
    handler = setup_logging(folder)
    try:
        with RunLock(folder).acquire("train"), stop_on_signals():
            log.info("run folder %s (%s, experts %s)", folder, "production" if production else "debug",
                     list(resolved["experts"]))
            for split, store in stores.items():
                log.info("%s: %d rows from %s", split, len(store), ", ".join(s["path"] for s in store.sources))
            warn_few_steps(resolved, counts)  # after every check: a mistake stays the only line on stderr
            resolved["description"] = description
            resolved["mode"] = "production" if production else "debug"
            resolved["runs_root"] = str(runs_root)
            resolved["launcher"] = {"name": launcher, "slurm": cli_slurm} if launcher == "slurm" else {"name": launcher}
            write_json(folder / "config.json", resolved)
            git_id = write_git_snapshot(folder, REPO_ROOT)
            log.info("git %s", git_id or "unavailable (see git_id.txt)")
            start_summary(folder, resolved, stores, git_id, description, started)
            if launcher == "slurm":
                return _on_slurm(folder, resolved, stores, list(counts), [], settings, show_progress, detach,
                                 started, verbose)
            return _run_and_assemble(folder, resolved, stores, counts, {}, show_progress, started, verbose=verbose)
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def _check_hardware(resolved: dict[str, Any], launcher: str, cli_slurm: dict[str, Any],
                    root: Path) -> dict[str, dict[str, Any]]:
    """The hardware the config asks for, where the experts will run; for SLURM each expert's job settings."""
    if launcher == "local":
        check_hardware(resolved)
        return {}
    from neuro_trigger.runner import slurm as slurm_launcher

    settings = slurm_launcher.check_cluster(resolved, cli_slurm)
    if Path(root).resolve().is_relative_to("/tmp"):
        log.warning("the run folder is under /tmp: SLURM jobs on other nodes cannot see it (fine on a "
                    "single-node cluster); give a log root on a shared filesystem otherwise")
    return settings


def _on_slurm(folder: Path, resolved: dict[str, Any], stores: dict[str, ColumnStore], keys: list[str],
              unplotted: list[tuple[str, str]], settings: dict[str, dict[str, Any]], show: bool, detach: bool,
              started: float, verbose: bool) -> RunResult:
    """Submit the run's jobs; follow them on the console (Ctrl-C cancels them) unless `detach`."""
    from neuro_trigger.runner import slurm as slurm_launcher
    from neuro_trigger.runner import slurm_follow, slurm_queue

    submission = slurm_launcher.submit(folder, resolved, keys, unplotted, settings, verbose,
                                       detached_since=started if detach else None)
    log.info("submitted to SLURM: experts %s, figures %s, tables %s, assemble %s",
             ", ".join(f"{k} {j}" for k, j in submission["experts"].items()) or "none",
             submission.get("plots", "none"), submission["tables"], submission["assemble"])
    if detach:
        slurm_launcher.print_detached(folder, submission)
        return RunResult(folder, read_json(folder / "summary.json", "summary.json"), submitted=True)
    try:
        summary = slurm_follow.follow(folder, submission, keys, show)
    except KeyboardInterrupt:
        log.warning("interrupted: cancelling the run's SLURM jobs")
        slurm_queue.cancel(slurm_queue.all_job_ids(folder))
        slurm_queue.wait_for_experts(folder, keys)
        slurm_follow.assemble_here(folder, interrupted=True)
        log.warning("interrupted; resume with: python neuro_trigger/main.py --resume %s", folder)
        raise
    return _report_end(folder, resolved, summary, started)


def _report_end(folder: Path, resolved: dict[str, Any], summary: dict[str, Any], started: float) -> RunResult:
    log_end(folder, resolved, summary, started)
    return RunResult(folder, summary)


MIN_STEPS_PER_EPOCH = 8


def warn_few_steps(resolved: dict[str, Any], counts: dict[str, int]) -> None:
    """One warning per expert whose training rows give fewer than MIN_STEPS_PER_EPOCH optimiser steps per
    epoch at its batch size (at 2048, a small real sample trains one step per epoch)."""
    for key, rows in counts.items():
        config = resolved["experts"][key]
        batch = config["batch_size"]
        whole, left = divmod(rows, min(batch, rows))
        steps = whole + (left > 1 and not config.get("drop_last", True))  # as training.batches.TrainBatches takes them
        if steps < MIN_STEPS_PER_EPOCH:
            log.warning("%s: %d training rows at batch_size %d give %d optimiser step(s) per epoch (fewer than "
                        "%d): the network will hardly train; lower batch_size (e.g. -m %s.batch_size=%d)", key,
                        rows, batch, steps, MIN_STEPS_PER_EPOCH, key, max(1, rows // (4 * MIN_STEPS_PER_EPOCH)))


def _megabytes(n_bytes: int) -> int:
    return max(50, -(-n_bytes // 2**20))


def _run_and_assemble(folder: Path, resolved: dict, stores: dict[str, ColumnStore], counts: dict[str, int],
                      resume_from: dict[str, Path | None], show: bool, started: float,
                      unplotted: list[tuple[str, str]] = (), verbose: bool = False) -> RunResult:
    """Train the experts in `counts` (in processes for production runs), then assemble the folder.

    On Ctrl-C the folder is still assembled from what finished, summary.json says "interrupted",
    the journal gets its line, and KeyboardInterrupt goes on to the caller.
    """
    try:
        assembled = False
        if resolved["mode"] == "production":
            assembled = run_parallel(folder, resolved, stores, counts, resume_from, show, unplotted, verbose)
        else:
            for key, split in unplotted:
                write_expert_plots(folder / key, resolved["experts"][key], stores[split], split)
            run_in_process(folder, list(counts), stores, resume_from, show, verbose)
    except KeyboardInterrupt:
        log.info("interrupted: writing what the finished experts left (predictions, weights, summary)")
        finish_run(folder, stores, interrupted=True)
        log.warning("interrupted; resume with: python neuro_trigger/main.py --resume %s", folder)
        raise
    log.info("all experts done: writing the prediction tables, weights.json and summary.json" if not assembled
             else "all experts done, the run's files assembled")
    summary = finish_run(folder, stores, assembled=assembled)
    return _report_end(folder, resolved, summary, started)


def resume(folder: Path, show_progress: bool = True, verbose: bool = False, launcher: str | None = None,
           slurm: list[str] | tuple[str, ...] = (), detach: bool = False) -> RunResult:
    """Continue a run: every expert not finished goes on from its last checkpoint (or starts, if it
    has none); finished experts are kept as they are. Then the folder is assembled as after any run.
    The launcher is the one the run was started with unless `launcher` names another."""
    started = time.time()
    setup_console()
    folder = Path(folder).resolve()
    if not (folder / "config.json").is_file() or not (folder / "summary.json").is_file():
        raise UserError(f"--resume {folder}: not a run folder (no config.json / summary.json)")
    resolved = read_json(folder / "config.json", "--resume")
    summary = read_json(folder / "summary.json", "--resume")
    launcher = launcher or resolved.get("launcher", {}).get("name", "local")
    cli_slurm = check_launcher(launcher, slurm, detach, resolved.get("mode") == "production")
    if launcher == "slurm" and not slurm:
        cli_slurm = resolved.get("launcher", {}).get("slurm", {})
    _refuse_live_jobs(folder, resolved)
    with RunLock(folder).acquire("--resume"):
        for key in resolved["experts"]:
            state = read_status(folder, key)
            here = state.get("host", socket.gethostname()) == socket.gethostname()  # a pid means nothing elsewhere
            if state.get("status") == "running" and state.get("pid") and here and \
                    process_alive(state["pid"], state.get("pid_start")):
                raise UserError(f"--resume {folder}: {key} is still training in process {state['pid']} "
                                f"(left from the run that started it); stop it first (kill {state['pid']})")
        unplotted = _missing_figures(folder, resolved)
        lacking = missing_run_files(folder) if summary.get("status") == "finished" else []
        if summary.get("status") == "finished" and not unplotted and not lacking:
            log.info("%s finished already and is complete: nothing to resume, nothing changed", folder)
            return RunResult(folder, summary)
        handler = setup_logging(folder)
        try:
            if lacking:  # it stopped after its training (a crash while writing them): assembled again
                log.info("%s finished its training but lacks %s: assembling it again", folder, ", ".join(lacking))
            with stop_on_signals():
                return _resume(folder, resolved, summary, unplotted, show_progress, started, verbose,
                               launcher, cli_slurm, detach)
        finally:
            logging.getLogger().removeHandler(handler)
            handler.close()


def _missing_figures(folder: Path, resolved: dict[str, Any]) -> list[tuple[str, str]]:
    """(expert, split) of finished experts that lack any of their figures (a run stopped while drawing them)."""
    from neuro_trigger.judge.figure_files import figure_file
    from neuro_trigger.judge.plots import figure_names

    missing = []
    for key, config in resolved["experts"].items():
        if status_of(folder, key) != "finished":
            continue
        files = [figure_file(name) for name in figure_names(config["out_size"])]
        missing += [(key, split) for split in PLOT_SPLITS
                    if not all((folder / key / "plots" / split / f).is_file() for f in files)]
    return missing


def _refuse_live_jobs(folder: Path, resolved: dict[str, Any]) -> None:
    """--resume refuses while any job recorded for the run is still queued or running on SLURM, whatever launched
    it: the SLURM launcher (slurm_jobs.json), or a run inside a SLURM job (an expert running there says so)."""
    from neuro_trigger.runner import slurm_queue

    ids = slurm_queue.all_job_ids(folder) + [
        state["slurm_job_id"] for key in resolved["experts"]
        if (state := read_status(folder, key)).get("status") == "running" and state.get("slurm_job_id")]
    if not ids:
        return
    queued = slurm_queue.queued_jobs(ids)
    if queued is None:
        raise UserError(f"--resume {folder}: cannot ask SLURM whether the {len(ids)} job(s) recorded for this run "
                        f"are still queued or running (squeue fails here); resume it where squeue answers")
    if queued:
        ids = ", ".join(f"{j} ({state.lower()})" for j, state in sorted(queued.items()))
        raise UserError(f"--resume {folder}: jobs of this run are still on SLURM: {ids}; wait for them or "
                        f"scancel them first")


def _resume(folder: Path, resolved: dict[str, Any], summary: dict[str, Any], unplotted: list[tuple[str, str]],
            show_progress: bool, started: float, verbose: bool, launcher: str = "local",
            cli_slurm: dict[str, Any] | None = None, detach: bool = False) -> RunResult:
    if resolved["mode"] == "production" and launcher == "local":
        start_process_server()
    stores = load_data(resolved["global"], Path(resolved.get("runs_root", folder.parent.parent)))
    for split, store in stores.items():
        recorded = [s["sha256"] for s in summary["data"][split]]
        if recorded != [s["sha256"] for s in store.sources]:
            raise UserError(f"--resume {folder}: the {split} data files changed since the run started")
    counts = check_rows(stores, resolved)
    todo = {k: n for k, n in counts.items() if status_of(folder, k) != "finished"}
    ensure_writable(folder, min_free_mb=_megabytes(estimated_run_bytes(
        stores, {**resolved, "experts": {k: resolved["experts"][k] for k in todo}})))
    unplotted = [(k, split) for k, split in unplotted if split in stores]
    settings = _check_hardware({**resolved, "experts": {k: resolved["experts"][k] for k in todo}}, launcher,
                               cli_slurm or {}, folder.parent.parent)
    resume_from = {}
    for key in todo:
        last = last_checkpoint(folder, key)
        resume_from[key] = last if last.is_file() else None
    log.info("resuming %s: %s", folder, ", ".join(
        f"{k} from {'its last checkpoint' if resume_from[k] else 'the start'}" for k in todo) or "nothing to train")
    if unplotted:
        log.info("drawing the missing figures of %s", ", ".join(f"{k} ({split})" for k, split in unplotted))
    if launcher == "slurm":
        return _on_slurm(folder, resolved, stores, list(todo), unplotted, settings, show_progress, detach, started,
                         verbose)
    return _run_and_assemble(folder, resolved, stores, todo, resume_from, show_progress, started, unplotted,
                             verbose)
