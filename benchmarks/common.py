"""What every group of rows of the benchmark uses: the rows and the sizes, timing, the measuring of
CPU, memory and other work on the machine, the generated data, and the table.

Only the standard library at module level (see run.py).
"""
from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent


# ============================================================================================ results
@dataclass
class Row:
    """One line of the table: this project's figure beside a reference, and whether the target is met."""

    id: str
    what: str
    figure: float | None
    unit: str
    reference: str
    reference_figure: float | None
    ratio: float | None
    ratio_means: str
    target: str
    met: bool | None
    note: str = ""
    skipped: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sizes:
    """How much work each row does; --quick shrinks everything."""

    tracks: int
    loadtxt_rows: int = 200_000
    loop_rows: int = 250_000
    sampler_reference_indices: int = 100_000
    sampler_repeats: int = 5
    parse_repeats: int = 3
    measured_epochs: dict[int, int] = field(default_factory=lambda: {2048: 4, 128: 2, 16: 2})
    per_sample_epochs: int = 1
    run_tracks: int = 100_000
    run_epochs: int = 10
    run_experts: tuple[int, ...] = (0, 1, 2, 3, 4)
    run_repeats: int = 2
    fixed_cost_epochs: int = 200  # baseline_v2's epochs
    fixed_cost_repeats: int = 3
    large_experts: tuple[int, ...] = (0, 1, 2, 3, 4)
    large_epochs: int = 2

    @classmethod
    def quick(cls) -> Sizes:
        return cls(tracks=5000, loadtxt_rows=5000, loop_rows=5000, sampler_reference_indices=10_000,
                   sampler_repeats=2, parse_repeats=1, measured_epochs={2048: 1, 128: 1, 16: 1},
                   run_tracks=3000, run_epochs=1, run_experts=(0,), run_repeats=1, fixed_cost_epochs=3,
                   fixed_cost_repeats=1, large_experts=(0,), large_epochs=1)


def log(message: str) -> None:
    """Progress on stderr; the table goes to stdout."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def best_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """The shortest of `repeats` timed calls, and the last call's result."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


# ============================================================================================ other work, memory
def system_busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores), from /proc/stat; 0 if unavailable."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def background_cores(seconds: float = 2.0) -> float:
    """Cores kept busy by other work while this process sleeps (a measure of how noisy the machine is)."""
    busy, start = system_busy_seconds(), time.perf_counter()
    time.sleep(seconds)
    return round((system_busy_seconds() - busy) / (time.perf_counter() - start), 2)


class CpuShare:
    """How much CPU other work took meanwhile: machine-wide busy CPU time (/proc/stat) minus the CPU
    time of this process and of its reaped children (getrusage), as cores on average."""

    @staticmethod
    def _own() -> float:
        import resource

        total = 0.0
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
            usage = resource.getrusage(who)
            total += usage.ru_utime + usage.ru_stime
        return total

    def __enter__(self) -> CpuShare:
        self._own_start = self._own()
        self._busy = system_busy_seconds()
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._start
        self.ours = self._own() - self._own_start
        self.busy = system_busy_seconds() - self._busy
        self.others_cores = max(0.0, system_busy_seconds() - self._busy - self.ours) / max(self.wall, 1e-9)


class TreeMemory:
    """Peak of the summed VmRSS (and Pss) of a process and all its descendants, sampled in a thread;
    also their CPU time (the expert processes are forked by a server that the job never waits for,
    so getrusage does not see them)."""

    def __init__(self, pid: int, interval: float = 0.1, pss: bool = True) -> None:
        # Pss walks every mapping of every process in the kernel: about 80 ms of CPU per sample of a
        # 5-expert run, most of a core at 0.1 s. A row that times the run itself reads VmRSS only.
        self.pid, self.interval, self.pss = pid, interval, pss
        self.peak_rss_kb = 0
        self.peak_pss_kb = 0
        self.peak_processes = 0
        self.samples = 0
        self._cpu_ticks: dict[tuple[int, str], int] = {}  # (pid, start time) -> utime + stime, last seen
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._sample()  # one sample at once, while the process surely runs: a peak is never 0, however loaded
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _tree(self) -> list[int]:
        pids, i = [self.pid], 0
        while i < len(pids):
            try:
                for tid in os.listdir(f"/proc/{pids[i]}/task"):
                    with open(f"/proc/{pids[i]}/task/{tid}/children") as handle:
                        pids.extend(int(p) for p in handle.read().split())
            except OSError:
                pass
            i += 1
        return pids

    @staticmethod
    def _field_kb(path: str, name: str) -> int:
        try:
            with open(path) as handle:
                for line in handle:
                    if line.startswith(name):
                        return int(line.split()[1])
        except OSError:
            pass
        return 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        """One reading of the tree: its summed RSS and Pss, the number of processes, their CPU time."""
        pids = self._tree()
        rss = sum(self._field_kb(f"/proc/{p}/status", "VmRSS:") for p in pids)
        pss = sum(self._field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids) if self.pss else 0
        self.peak_rss_kb = max(self.peak_rss_kb, rss)
        self.peak_pss_kb = max(self.peak_pss_kb, pss)
        self.peak_processes = max(self.peak_processes, len(pids))
        for p in pids:
            try:
                with open(f"/proc/{p}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                self._cpu_ticks[(p, fields[19])] = int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass
        self.samples += 1

    @property
    def cpu_seconds(self) -> float:
        """CPU time of every process seen in the tree, up to its last sample."""
        return sum(self._cpu_ticks.values()) / os.sysconf("SC_CLK_TCK")


def tree_cpu(cpu: CpuShare, memory: TreeMemory) -> tuple[float, float]:
    """CPU seconds of a job's process tree (getrusage or /proc samples, whichever saw more) and the
    cores other work kept busy meanwhile."""
    ours = max(cpu.ours, memory.cpu_seconds)
    return ours, max(0.0, cpu.busy - ours) / max(cpu.wall, 1e-9)


# ============================================================================================ data
def _write_split(args: tuple[int, int, str]) -> str:
    from neuro_trigger.data.neuroresults.writer import write_table
    from neuro_trigger.data.toy.generator import generate

    tracks, seed, path = args
    write_table(generate(tracks, seed), path)
    return path


def make_data(folder: Path, tracks: int, splits: tuple[str, ...], seed: int) -> dict[str, list[str]]:
    """Toy files neuroresults_<split>.gz (write_table's gzip); several splits are written in parallel."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from neuro_trigger.data.toy.default_set import split_seed

    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(tracks, split_seed(seed, s), str(folder / f"neuroresults_{s}.gz")) for s in splits]
    if tracks >= 50_000 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1),
                                 mp_context=get_context("spawn")) as pool:
            list(pool.map(_write_split, jobs))
    else:
        for job in jobs:
            _write_split(job)
    paths = {s: [job[2]] for s, job in zip(splits, jobs, strict=True)}
    for split in ("train", "val", "test"):  # a config needs all three; rows that skip one never read it
        paths.setdefault(split, paths["val"])
    return paths


# ============================================================================================ report
def fmt(value: float | None, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    per_s = unit.endswith("/s")
    if per_s and value >= 1e6:
        return f"{value / 1e6:.2f} M {unit}"
    if per_s and value >= 1e4:
        return f"{value / 1e3:.0f} k {unit}"
    if unit.startswith("s") and value < 10:
        return f"{value:.3f} {unit}"
    return f"{value:,.1f} {unit}"


def table(rows: list[Row]) -> str:
    """The results as a Markdown table (what, figure, reference, ratio, target, met, and the cores other
    work on the machine kept busy while the row was measured)."""
    lines = ["| what | this project | reference | ratio | target | met | other work |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        met = "skipped" if r.skipped else "-" if r.met is None else "yes" if r.met else "**no**"
        ref = r.reference if r.reference_figure is None else f"{fmt(r.reference_figure, r.unit)}: {r.reference}"
        ratio = "-" if r.ratio is None else f"{r.ratio:.2f}x {r.ratio_means}"
        what = r.what + (f" ({r.note})" if r.note else "")
        others = r.extra.get("others_cores")
        busy = "-" if others is None else f"{others:.2f} cores"
        lines.append(f"| {what} | {fmt(r.figure, r.unit)} | {ref} | {ratio} | {r.target} | {met} | {busy} |")
    return "\n".join(lines)
