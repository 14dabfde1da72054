"""The benchmark of issue 4: every figure of this project beside a reference measured in the same run.

    python benchmarks/run.py [--tracks N] [--quick] [--with-main] [--with-sweeps] [--with-large] [--json PATH]

It generates its data with the toy Monte Carlo into a temporary folder (removed at the end), then
measures parsing, the parse cache, the filters, the reweighted sampler, training throughput through
the real Lightning path and the fixed cost of an epoch, experts in parallel, memory, evaluating a run's
networks, (with --with-main) a whole `main.py baseline_v2 -p` against the floor of its arithmetic, its
start-up and its tail, (with --with-sweeps) a grid sweep against the same trials as separate runs and against its
floor, and pruning against none, and (with --with-large) how parsing, reloading, an epoch and a run's memory grow
from a fifth of --tracks to all of them. It prints a table (figure, reference, ratio, target, met) and
writes the same as JSON (default benchmarks/results/latest.json). Nothing is asserted: a missed target
is a row with met = false. `--quick` runs every row on tiny sizes so that the code stays exercised.

Timings on a busy machine are noisy: where a figure is taken over repeats, it is the best one
(the least disturbed), and the load average is recorded beside the results.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent.parent) not in sys.path:  # run as a script, without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

# Only the standard library at module level, here and in every benchmarks/ module: the expert processes
# of the training rows are spawned from a child running this file, and spawn re-imports it in every one
# of them.
from benchmarks.common import REPO_ROOT, CpuShare, Row, Sizes, background_cores, loadavg, log, make_data, table
from benchmarks.evaluate import bench_evaluate, bench_fixed_point
from benchmarks.filters import bench_filters
from benchmarks.large import bench_large, skipped_large
from benchmarks.main import bench_main, skipped_main
from benchmarks.parse import bench_cache, bench_parse
from benchmarks.runs import bench_runs, train_job
from benchmarks.sampler import bench_sampler
from benchmarks.sweeps import bench_sweeps, skipped_sweeps
from benchmarks.training import (
    TRAIN_TARGETS,
    Trainbench,
    bench_chunks,
    bench_fixed_cost,
    bench_per_sample,
    bench_threads,
    bench_training,
)

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "latest.json"
ROW_IDS = (  # every row, in the order of the table
    "parse_gz_vs_loadtxt", "parse_gz_vs_decompress", "parse_plain_vs_loadtxt", "cache_reload",
    "filter_duplicate_events", "filter_max2_events", "bucket_sampler",
    "train_bs2048_vs_raw", "train_bs128_vs_raw", "train_bs16_vs_raw", "train_bs2048_vs_per_sample",
    "per_epoch_fixed_cost",
    "experts_parallel_vs_sequential", "memory_5_vs_1_expert", "evaluate_vs_reload", "fixed_point_vs_float",
    "main_baseline_v2",
    "main_vs_floor", "startup_to_first_batch", "tail_after_last_epoch",
    "sweep_vs_sequential", "sweep_vs_floor", "pruning_saves",
    "large_parse", "large_cache_reload", "large_epoch_expert0", "large_run_memory",
    "info_threads_1_vs_2", "info_chunks_vs_single_batches",
)


def _quiet_lightning() -> None:
    """Lightning's INFO lines and warnings would drown the progress lines (it sets its level on import)."""
    import logging
    import warnings

    import lightning  # noqa: F401

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def stage(fn: Callable[[], list[Row]]) -> list[Row]:
    """Run one stage of the benchmark and note on its rows how many cores other work used meanwhile."""
    with CpuShare() as cpu:
        rows = fn()
    for row in rows:
        row.extra.setdefault("others_cores", round(cpu.others_cores, 2))
    return rows


def machine() -> dict[str, Any]:
    import lightning
    import numpy
    import pandas
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        memory = Path("/proc/meminfo").read_text().splitlines()[0].split(":", 1)[1].strip()
    except (OSError, IndexError):
        pass
    from neuro_trigger import cpu_cores

    return {"cpu": model, "cores": cpu_cores(), "memory": memory, "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "lightning": lightning.__version__,
            "numpy": numpy.__version__, "pandas": pandas.__version__}


def in_process_rows(data: dict[str, list[str]], tmp: Path, sizes: Sizes, seed: int, only: set[str]) -> list[Row]:
    """The rows measured in this process: parsing, cache, filters, sampler, training throughput."""
    from neuro_trigger.data.dataset import load_split

    train_gz = Path(data["train"][0])
    rows: list[Row] = []
    cache = tmp / "cache"
    if "parse" in only:
        log("parsing")
        rows += stage(lambda: bench_parse(train_gz, tmp, sizes))
        rows += stage(lambda: bench_cache(train_gz, cache, sizes))
    if not only & {"filters", "sampler", "training"}:
        return rows
    stores = {split: load_split(data[split], cache_dir=cache) for split in ("train", "val")}
    if "filters" in only:
        log("filters")
        rows += stage(lambda: bench_filters(stores["train"], sizes))
    if "sampler" in only:
        log("sampler")
        rows += stage(lambda: bench_sampler(stores["train"].y[:, 0].copy(), sizes, seed))
    if "training" in only:
        bench = Trainbench(data, stores, tmp)
        training = {bs: stage(lambda bs=bs: [bench_training(bench, bs, sizes)])[0] for bs in TRAIN_TARGETS}
        rows += training.values()
        ours_2048, ours_128 = training[2048].figure, training[128].figure
        ours_2048_training = training[2048].extra["ours_training_rate"]
        rows += stage(lambda: [bench_per_sample(bench, ours_2048, ours_2048_training, sizes)])
        rows += stage(lambda: [bench_threads(bench, ours_2048, sizes)])
        rows += stage(lambda: [bench_chunks(bench, ours_128, sizes)])
        rows += stage(lambda: [bench_fixed_cost(bench, sizes)])
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every row, in order; returns what goes into the JSON."""
    sizes = Sizes.quick() if args.quick else Sizes(tracks=args.tracks)
    if args.tracks is not None:
        sizes.tracks = args.tracks
    started = time.strftime("%Y-%m-%d %H:%M:%S %z")
    t0 = time.perf_counter()
    load_start = loadavg()
    background = background_cores(0.5 if args.quick else 2.0)
    log(f"other work keeps {background} cores busy")
    tmp = Path(tempfile.mkdtemp(prefix="nt_bench_"))
    rows: list[Row] = []
    try:
        _quiet_lightning()
        log(f"generating {sizes.tracks:,} tracks for train and val (toy MC + write_table) into {tmp}")
        only = set(args.only)
        data = None
        if only & {"parse", "filters", "sampler", "training"}:
            data = make_data(tmp / "data", sizes.tracks, ("train", "val"), args.seed)
            rows += in_process_rows(data, tmp, sizes, args.seed, only)
        if "evaluate" in only:
            if data is None:
                data = make_data(tmp / "data", sizes.tracks, ("val",), args.seed)
            log("evaluate")
            rows += stage(lambda: bench_evaluate(Path(data["val"][0]), tmp, sizes, args.seed))
            rows += stage(lambda: bench_fixed_point(sizes, args.seed))
        if "runs" in only:
            log(f"generating {sizes.run_tracks:,} tracks per split for the whole runs")
            run_data = make_data(tmp / "run_data", sizes.run_tracks, ("train", "val", "test"), args.seed + 1)
            rows += bench_runs(run_data, tmp, sizes)
        if "main" in only:
            rows += stage(lambda: bench_main(tmp, args.quick)) if args.with_main else skipped_main()
        if "sweeps" in only:
            rows += stage(lambda: bench_sweeps(tmp, args.quick)) if args.with_sweeps else skipped_sweeps()
        if "large" in only:
            rows += stage(lambda: bench_large(tmp, sizes, args.seed)) if args.with_large else skipped_large()
        rows.sort(key=lambda r: ROW_IDS.index(r.id))  # the table's fixed order
    finally:
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "command": " ".join(["python", "benchmarks/run.py", *sys.argv[1:]]),
        "started": started,
        "seconds": round(time.perf_counter() - t0, 1),
        "machine": machine(),
        "loadavg": {"start": load_start, "end": loadavg()},
        "background_cores_at_start": background,
        "sizes": asdict(sizes),
        "rows": [asdict(r) for r in rows],
        "table": table(rows),
    }


GROUPS = ("parse", "filters", "sampler", "training", "evaluate", "runs", "main", "sweeps", "large")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=None, help="tracks per split (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="every row on tiny sizes (for CI)")
    parser.add_argument("--with-main", action="store_true", help="also time main.py baseline_v2 -p (minutes)")
    parser.add_argument("--with-sweeps", action="store_true",
                        help="also the sweep rows: a 12-point grid sweep against 12 runs, its floor, pruning (tens of "
                        "minutes)")
    parser.add_argument("--with-large", action="store_true",
                        help="also the large rows: --tracks against a fifth of them (generates 3 splits of each; "
                        "tens of minutes at 5,000,000)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help=f"results file (default {DEFAULT_JSON})")
    parser.add_argument("--seed", type=int, default=1, help="toy MC base seed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS), metavar="GROUP",
                        help=f"measure only these groups of rows, out of {', '.join(GROUPS)} (default all)")
    parser.add_argument("--train-job", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tracks is None and not args.quick:
        args.tracks = 1_000_000
    if args.tracks is not None and args.tracks < 1000:
        parser.error("--tracks must be at least 1000")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.train_job is not None:
        return train_job(args.train_job)
    results = run(args)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(results["table"])
    print(f"\n{results['seconds']:.0f} s; load average {results['loadavg']}; other work at the start: "
          f"{results['background_cores_at_start']} cores; written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
