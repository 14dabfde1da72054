"""The thread plan: in which order a run's jobs start and on how many CPU threads each trains, decided before
any of them starts.

A pure function of what is known then: each job's work (training rows x epochs, and its batch size), the
cores and `workers`; nothing measured while the run goes on. So the same config, data and seed on the same
number of cores train every expert on the same threads, and give byte-identical weights however busy the
machine is (torch's CPU arithmetic is deterministic for a given thread count, but its sums are cut
differently for another count: the weights depend on the thread count). Standard library only: the local
launcher plans a run's experts with it, and a sweep can plan its trials the same way.

The rule (`make_plan`):
- the jobs start largest first; a job starts once fewer than `at_once` jobs (min(`workers`, cores)) run and
  the cores its threads need are free (a job never waits for a later one, and nothing runs beside a job that
  needs every core);
- every job starts from one thread; then, largest job first, a job gets one thread more where that ends the
  run (as `simulate` estimates it with `speed`) at least `MIN_GAIN` sooner, up to what its batch can use
  (`useful_threads`), until no job's thread more does.
Examples, baseline_v2 on the default data (expert 0 has two thirds of the rows; every expert is followed by its
three figure jobs): on 2 cores every expert trains on one thread, expert 0 first and beside it the small ones
one after the other, largest first (two threads would make expert 0 only about 1.3x as fast and push the figures
of the others behind it); on 16 cores expert 0 trains on two threads and the four others on one each, all at once.
A job with nine tenths of the work on 2 cores trains on both, alone, and the rest after it.
"""
from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

ROWS_PER_THREAD = 1024  # rows of a mini-batch per useful thread: at batch 2048 two threads, at 512 or less one
MAX_THREADS = 4  # the networks are tiny: more threads spend more on waiting for each other than they compute
# Each thread after the first adds 0.3 of a thread's speed: two threads trained expert 0 of baseline_v2 1.22-1.36x
# as fast as one on this project's 2-core machine (raw loop, quiet moments), 0.93-1.66x in earlier sessions; and
# many times slower while other work took a core (docs/performance.md, "Issue 24").
THREAD_EFFICIENCY = 0.3
STEP_ROWS = 350  # the fixed cost of one optimiser step, in rows' worth of arithmetic (docs/performance.md)
MIN_GAIN = 0.05  # a thread more only where it ends the run this much sooner (estimated)


@dataclass(frozen=True)
class Job:
    """One job to plan: `rows` trained per epoch, `epochs`, `batch_size`; `threads` fixed beforehand (by the
    config, or by the plan of the run an expert is resumed from), or None for the plan to decide."""

    key: str
    rows: int
    epochs: int
    batch_size: int
    threads: int | None = None
    set_by: str = "plan"  # who fixed `threads`: "config", "earlier plan"
    then: tuple[float, ...] = ()  # rows' worth of each one-thread job that follows it (an expert's figures)

    @property
    def work(self) -> float:
        """Rows' worth of arithmetic: every row of every epoch, and each optimiser step's fixed cost."""
        steps = -(-self.rows // max(1, min(self.batch_size, self.rows))) if self.rows else 0
        return float(self.epochs * (self.rows + steps * STEP_ROWS))


@dataclass(frozen=True)
class Placed:
    """A job in the plan: its place in the order (0 first), its threads and who set them, and when it is estimated
    to train, as shares of the estimated time of all the jobs and of those that follow them (start, end; 0..1)."""

    key: str
    order: int
    threads: int
    set_by: str
    work: float
    batch_size: int
    start: float
    end: float


@dataclass(frozen=True)
class Plan:
    cores: int
    workers: int
    at_once: int
    jobs: tuple[Placed, ...]  # in their order

    def threads(self) -> dict[str, int]:
        return {job.key: job.threads for job in self.jobs}

    def as_dict(self) -> dict[str, Any]:
        """What summary.json records as "plan"."""
        return {"cores": self.cores, "workers": self.workers, "at_once": self.at_once,
                "experts": {job.key: {"order": job.order, "threads": job.threads, "set_by": job.set_by,
                                      "work_rows": round(job.work), "batch_size": job.batch_size,
                                      "estimated_share": [round(job.start, 3), round(job.end, 3)]}
                            for job in self.jobs}}

    def describe(self) -> str:
        """One line for the run's log."""
        jobs = ", ".join(f"{job.key} {job.threads} thread{'s' if job.threads > 1 else ''}"
                         f"{'' if job.set_by == 'plan' else f' (by the {job.set_by})'} "
                         f"[{job.start:.0%}-{job.end:.0%}]" for job in self.jobs)
        return (f"thread plan for {self.cores} core(s), at most {self.at_once} job(s) at once, in this order "
                f"(each starts once the cores it needs are free; [when, as estimated shares of the run]): {jobs}")


def useful_threads(batch_size: int, cores: int) -> int:
    """The most threads a job's mini-batches can use on `cores` cores."""
    return max(1, min(MAX_THREADS, cores, batch_size // ROWS_PER_THREAD))


def speed(threads: int) -> float:
    """The estimated speed of a job on `threads` threads, relative to one."""
    return 1.0 + THREAD_EFFICIENCY * (threads - 1)


def simulate(jobs: Sequence[Job], threads: Mapping[str, int], cores: int,
             at_once: int) -> tuple[dict[str, tuple[float, float]], float]:
    """Estimated (start, end) of each job, and the end of all of them and of the jobs that follow them, in rows'
    worth of single-thread arithmetic, when `jobs` start in their order as the local launcher starts them: once
    fewer than `at_once` run and their threads fit on the free cores (a job needing more threads than there are
    cores starts once nothing runs). The jobs that follow a job (`Job.then`, one thread each) join the end of the
    queue when it ends."""
    times: dict[str, tuple[float, float]] = {}
    running: list[tuple[float, int, int, tuple[float, ...]]] = []  # (end, tie-break, threads, what follows)
    queue = deque((job.key, job.work, threads[job.key], job.then) for job in jobs)
    now, free, started = 0.0, cores, 0
    while queue or running:
        while queue and len(running) < at_once and (queue[0][2] <= free or not running):
            key, work, need, then = queue.popleft()
            end = now + work / speed(need)
            if key is not None:
                times[key] = (now, end)
            heapq.heappush(running, (end, started, need, then))
            started += 1
            free -= need
        now, _, done, then = heapq.heappop(running)
        free += done
        queue.extend((None, rows, 1, ()) for rows in then)
    return times, now


def make_plan(jobs: Sequence[Job], cores: int, workers: int) -> Plan:
    """The plan of `jobs` on `cores` cores with at most `workers` at once (see the module's docstring)."""
    cores, workers = max(1, cores), max(1, workers)
    keys = [job.key for job in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"job keys must be distinct: {keys}")
    order = sorted(jobs, key=lambda job: (-job.work, job.key))
    at_once = max(1, min(workers, cores))  # jobs of any kind, as the launcher counts them
    threads = {job.key: job.threads or 1 for job in order}
    times, length = simulate(order, threads, cores, at_once)
    improved = True
    while improved:
        improved = False
        for job in order:  # the largest first: the first thread more that ends the run MIN_GAIN sooner is kept
            if job.threads is not None or threads[job.key] >= useful_threads(job.batch_size, cores):
                continue
            trial = {**threads, job.key: threads[job.key] + 1}
            trial_times, trial_length = simulate(order, trial, cores, at_once)
            if trial_length <= (1 - MIN_GAIN) * length:
                threads, times, length, improved = trial, trial_times, trial_length, True
                break
    length = length or 1.0
    placed = tuple(Placed(job.key, place, threads[job.key], job.set_by if job.threads else "plan", job.work,
                          job.batch_size, times[job.key][0] / length, times[job.key][1] / length)
                   for place, job in enumerate(order))
    return Plan(cores, workers, at_once, placed)

