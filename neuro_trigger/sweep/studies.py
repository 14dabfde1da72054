"""One Optuna study per expert, in one journal file of the sweep folder (`optuna.journal`).

The journal is Optuna's storage for a shared filesystem without a database server: any process (a local trial,
a SLURM job on another node) opens it and asks for, reports to and finishes the trials of a study. Asking is
serialised by a lock file beside it, so that two processes never take the same grid point or one trial more than
the budget. A grid's points are enqueued in their fixed order when the sweep starts and handed out in that order.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro_trigger.sweep.space import Sweep

log = logging.getLogger("neuro_trigger")

JOURNAL = "optuna.journal"
ASK_LOCK = "optuna.ask.lock"


def quiet_optuna() -> None:
    """Optuna's own INFO lines (one per trial) stay out of the console; the sweep logs its own."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    optuna.logging.disable_propagation()


def storage(folder: Path):
    """The sweep's journal storage."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

    path = str(folder / JOURNAL)
    return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))


def study_name(expert: int) -> str:
    return f"expert_{expert}"


def _sampler(sweep: Sweep, expert: int, asked: int):
    """The expert's sampler, seeded by the sweep's seed, the expert and the trials asked so far (a resumed sweep
    does not propose again what its first proposals were)."""
    import optuna

    seed = sweep.seed * 1009 + expert * 101 + asked
    if sweep.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(2, sweep.trials // 3)))
    return optuna.samplers.RandomSampler(seed=seed)  # a grid's points are all enqueued: nothing is sampled


def _pruner(sweep: Sweep):
    import optuna

    if sweep.pruner == "percentile":  # "clearly worse": behind three quarters of the finished trials
        return optuna.pruners.PercentilePruner(75.0, n_startup_trials=sweep.pruner_startup_trials,
                                               n_warmup_steps=sweep.pruner_warmup_epochs)
    if sweep.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=sweep.pruner_startup_trials,
                                           n_warmup_steps=sweep.pruner_warmup_epochs)
    if sweep.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_early_stopping_rate=0)
    if sweep.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, sweep.pruner_warmup_epochs))
    return optuna.pruners.NopPruner()


def open_study(folder: Path, sweep: Sweep, expert: int, asked: int = 0):
    """The expert's study in the sweep's journal (created on first use)."""
    import optuna

    quiet_optuna()
    return optuna.create_study(study_name=study_name(expert), storage=storage(folder), load_if_exists=True,
                               direction=sweep.direction, sampler=_sampler(sweep, expert, asked),
                               pruner=_pruner(sweep))


def create_studies(folder: Path, sweep: Sweep) -> None:
    """Every expert's study; a grid's points enqueued in their order."""
    for expert in sweep.experts:
        study = open_study(folder, sweep, expert)
        if sweep.sampler == "grid":
            for point in sweep.grid(expert):
                study.enqueue_trial(point)


@contextmanager
def ask_lock(folder: Path):
    """One process at a time counts a study's trials and asks for the next one."""
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(str(folder / ASK_LOCK))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


@dataclass(frozen=True)
class Asked:
    """A trial handed out: its expert, its number in the expert's study, its parameters."""

    expert: int
    number: int
    params: dict[str, Any]


def ask(folder: Path, sweep: Sweep, expert: int) -> Asked | None:
    """The expert's next trial, or None when its study has its `trials` already."""
    import optuna

    with ask_lock(folder):
        trials = open_study(folder, sweep, expert).get_trials(deepcopy=False)
        started = [t for t in trials if t.state != optuna.trial.TrialState.WAITING]
        if len(started) >= sweep.budget(expert):
            return None
        study = open_study(folder, sweep, expert, asked=len(started))
        trial = study.ask({p.key: p.distribution() for p in sweep.params_of(expert)})
        return Asked(expert, trial.number, dict(trial.params))


def trial_id(folder: Path, sweep: Sweep, expert: int, number: int) -> int:
    """Optuna's id of the expert's trial `number` (what reporting to it from another process needs)."""
    study = open_study(folder, sweep, expert)
    return next(t._trial_id for t in study.get_trials(deepcopy=False) if t.number == number)


def tell(folder: Path, sweep: Sweep, expert: int, number: int, state: str, value: float | None = None) -> None:
    """Finish a trial in its study: "finished" with its objective, "pruned", or "failed"."""
    import optuna

    study = open_study(folder, sweep, expert)
    states = {"finished": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED,
              "failed": optuna.trial.TrialState.FAIL}
    study.tell(number, value if state == "finished" else None, state=states[state], skip_if_finished=True)


def unfinished(folder: Path, sweep: Sweep, expert: int) -> list[Asked]:
    """The expert's trials that were handed out and never finished (a stopped sweep's): a resume trains them."""
    import optuna

    study = open_study(folder, sweep, expert)
    return [Asked(expert, t.number, dict(t.params)) for t in study.get_trials(deepcopy=False)
            if t.state == optuna.trial.TrialState.RUNNING]


def all_trials(folder: Path, sweep: Sweep) -> dict[int, list]:
    """Every expert's trials (Optuna's FrozenTrial), handed out ones only."""
    import optuna

    return {expert: [t for t in open_study(folder, sweep, expert).get_trials(deepcopy=False)
                     if t.state != optuna.trial.TrialState.WAITING] for expert in sweep.experts}
