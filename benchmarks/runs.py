"""Group runs: whole runs of train() in a child process, experts in parallel vs one at a time, and their
memory."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, CpuShare, Row, Sizes, TreeMemory, loadavg, log, tree_cpu

RUN_PY = REPO_ROOT / "benchmarks" / "run.py"  # the entry point: it runs train_job with --train-job


@dataclass
class JobResult:
    """A training job run in a child process: wall time of train() there, the tree's memory peak, and the
    CPU time of the job and of other work on the machine meanwhile."""

    wall: float
    ok: bool
    peak_rss_mb: float
    peak_pss_mb: float
    processes: int
    folder: str
    cpu_seconds: float
    others_cores: float


def run_job(config: dict[str, Any], overrides: list[str], tmp: Path, name: str,
            shared_dir: Path | None = None) -> JobResult:
    """train(config, overrides, production=True) in a fresh child process, its memory sampled from here;
    `shared_dir`: where the run shares its columns (default the repository's data_cache/columns)."""
    spec = tmp / f"{name}.json"
    result = tmp / f"{name}.result.json"
    spec.write_text(json.dumps({"config": config, "overrides": overrides, "log_root": str(tmp / "runs"),
                                "result": str(result), "shared_dir": str(shared_dir) if shared_dir else None}))
    with open(tmp / f"{name}.log", "wb") as out:
        with CpuShare() as cpu:
            proc = subprocess.Popen([sys.executable, str(RUN_PY), "--train-job", str(spec)],
                                    cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
            with TreeMemory(proc.pid) as memory:
                code = proc.wait()
    if code != 0 or not result.exists():
        tail = (tmp / f"{name}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"training job {name} failed with exit code {code}:\n{tail}")
    done = json.loads(result.read_text())
    ours, others = tree_cpu(cpu, memory)
    return JobResult(done["wall"], done["ok"], memory.peak_rss_kb / 1024, memory.peak_pss_kb / 1024,
                     memory.peak_processes, done["folder"], round(ours, 1), round(others, 2))


def train_job(spec_path: Path) -> int:
    """Child side of run_job."""
    from neuro_trigger.training.experts import train

    spec = json.loads(spec_path.read_text())
    if spec.get("shared_dir"):
        from neuro_trigger.data import dataset

        dataset.SHARED_DIR = Path(spec["shared_dir"])  # read when the columns are shared, not at import
    start = time.perf_counter()
    result = train(spec["config"], spec["overrides"], production=True, log_root=Path(spec["log_root"]),
                   show_progress=False)
    wall = time.perf_counter() - start
    Path(spec["result"]).write_text(json.dumps({"wall": wall, "ok": result.ok, "folder": str(result.folder)}))
    return 0


def bench_runs(data: dict[str, list[str]], tmp: Path, sizes: Sizes) -> list[Row]:
    """Experts in parallel vs one at a time (workers=1), and memory of that run vs a 1-expert run.

    workers=1 rather than 5 separate runs: the same train() call, data loaded and the run folder
    assembled once in both, so the ratio shows only what running expert processes side by side buys. The
    reference also sets threads=1: one process on one core at a time, as before the thread plan, which may
    give a lone expert more threads (the parallel run follows the plan).
    """
    from neuro_trigger import cpu_cores

    experts = list(sizes.run_experts)
    config = {"extends": "baseline_v2", "data": data, "epochs": sizes.run_epochs, "experts": experts}
    k = len(experts)
    slots = min(5, k, cpu_cores())
    parallels, sequentials = [], []
    for r in range(sizes.run_repeats):  # interleaved, the best of each: the machine's noise hits both alike
        log(f"whole runs: {k} expert(s), workers=5 ({r + 1}/{sizes.run_repeats})")
        load_parallel = loadavg()
        parallels.append(run_job(config, [], tmp, f"parallel{r}"))
        log(f"whole runs: {k} expert(s), workers=1 ({r + 1}/{sizes.run_repeats})")
        load_sequential = loadavg()
        sequentials.append(run_job(config, ["workers=1", "threads=1"], tmp, f"sequential{r}"))
    parallel = min(parallels, key=lambda job: job.wall)
    sequential = min(sequentials, key=lambda job: job.wall)
    walls = (f"walls of the {sizes.run_repeats} runs each: " + ", ".join(f"{j.wall:.1f}" for j in parallels)
             + " / " + ", ".join(f"{j.wall:.1f}" for j in sequentials) + " s; ")
    peak_rss_mb = max(job.peak_rss_mb for job in parallels)
    peak_pss_mb = max(job.peak_pss_mb for job in parallels)
    if k > 1:
        log("whole runs: expert 0 alone")
        single = run_job({**config, "experts": [0]}, [], tmp, "single")
        single_note = "a run with experts=[0] on the same data"
        quick_note = ""
    else:  # --quick: one expert only, so that the row stays cheap; its ratios mean nothing
        single = sequential
        single_note = "the workers=1 run of the row above"
        quick_note = "--quick: a single expert, the ratio means nothing; "
    ratio = parallel.wall / sequential.wall
    mem_ratio = peak_rss_mb / single.peak_rss_mb
    setting = f"{sizes.run_tracks:,} tracks per split, {sizes.run_epochs} epoch(s), baseline_v2"
    return [
        Row("experts_parallel_vs_sequential", f"{k} experts, workers=5 ({slots} processes at a time on "
            f"{cpu_cores()} cores), {setting}", parallel.wall, "s", "the same run with workers=1 threads=1 (one "
            "expert process on one thread at a time)", sequential.wall, ratio, "wall / sequential wall", "<= 0.6x",
            ratio <= 0.6,
            f"{quick_note}wall of train() in a fresh process, best of {sizes.run_repeats}; {walls}"
            f"CPU {parallel.cpu_seconds:.0f} / "
            f"{sequential.cpu_seconds:.0f} s; other work meanwhile {parallel.others_cores:.2f} / "
            f"{sequential.others_cores:.2f} cores; load average before: {load_parallel} / {load_sequential}",
            extra={"parallel": asdict(parallel), "sequential": asdict(sequential),
                   "parallel_runs": [asdict(j) for j in parallels], "sequential_runs": [asdict(j) for j in sequentials],
                   "others_cores": round((parallel.others_cores * parallel.wall + sequential.others_cores
                                          * sequential.wall) / (parallel.wall + sequential.wall), 2)}),
        Row("memory_5_vs_1_expert", f"peak RSS summed over the process tree, the {k}-expert runs above (the "
            "highest)", peak_rss_mb, "MB", single_note, single.peak_rss_mb, mem_ratio, "peak / 1-expert peak",
            "<= 1.5x", mem_ratio <= 1.5,
            f"{quick_note}VmRSS counts shared pages once per process; Pss: {peak_pss_mb:.0f} vs "
            f"{single.peak_pss_mb:.0f} MB = "
            + (f"{peak_pss_mb / single.peak_pss_mb:.2f}x; " if single.peak_pss_mb > 0 else "-, no smaps_rollup; ")
            + f"up to {parallel.processes} vs {single.processes} processes",
            extra={"single": asdict(single), "others_cores": parallel.others_cores}),
    ]
