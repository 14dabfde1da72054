"""Group large (only with --with-large): does the work grow linearly with the data? The same work at `--tracks`
per split and at a fifth of it: parsing a split, reloading it from the parse cache, one epoch of expert 0, and the
peak memory of a 5-expert production run of a few epochs; each row is the ratio of the two (for 5x the data,
linear is 5x; the target allows 5.5x)."""
from __future__ import annotations

import gc
import os
import shutil
import time
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Sizes, best_time, log, make_data

LARGE_ROWS = ("large_parse", "large_cache_reload", "large_epoch_expert0", "large_run_memory")
SCALE = 5  # the reference has 1/SCALE of the tracks
TARGET = 5.5


def _measure(data: dict[str, list[str]], tmp: Path, sizes: Sizes) -> dict[str, Any]:
    """At one size: parse (no cache), cached reload (file hashed again), an epoch of expert 0, a whole run."""
    from benchmarks.runs import run_job
    from benchmarks.training import Trainbench
    from neuro_trigger.data.dataset import load_split
    from neuro_trigger.data.neuroresults.reader import read_neuroresults

    train = Path(data["train"][0])
    repeats = max(1, sizes.parse_repeats - 1)
    parse_s, table = best_time(lambda: read_neuroresults(train, cache_dir=None), repeats)
    rows = len(table["Expert"])
    del table
    cache = tmp / "cache"
    read_neuroresults(train, cache_dir=cache)  # parse and store

    def reload() -> None:
        os.utime(train)  # a new mtime: hashed again, as in a new process
        read_neuroresults(train, cache_dir=cache)

    reload_s, _ = best_time(reload, repeats + 1)
    stores = {split: load_split(data[split], cache_dir=cache) for split in ("train", "val")}
    bench = Trainbench(data, stores, tmp)
    epoch = bench.lightning(2048, 1)  # two epochs through the real path; the second is timed
    epoch_s = epoch.whole[0]
    del bench, stores
    gc.collect()
    config = {"extends": "baseline_v2", "data": data, "epochs": sizes.large_epochs,
              "experts": list(sizes.large_experts)}
    job = run_job(config, [], tmp, f"large_{rows}", shared_dir=tmp / "columns")
    return {"rows": rows, "parse_s": parse_s, "reload_s": reload_s, "epoch_s": epoch_s,
            "expert0_train_rows": epoch.samples, "run_peak_rss_mb": job.peak_rss_mb,
            "run_peak_pss_mb": job.peak_pss_mb, "run_wall_s": job.wall, "run_processes": job.processes}


def bench_large(tmp: Path, sizes: Sizes, seed: int) -> list[Row]:
    """Every row of the group, the reference size first."""
    from neuro_trigger.data.neuroresults.cache import CACHE_DIR, file_hash

    big = sizes.tracks
    small = max(1000, big // SCALE)
    measured: dict[int, dict[str, Any]] = {}
    generated: list[Path] = []
    try:
        for tracks in (small, big):
            folder = tmp / f"large_{tracks}"
            log(f"large: generating {tracks:,} tracks per split (train, val, test)")
            start = time.perf_counter()
            data = make_data(folder / "data", tracks, ("train", "val", "test"), seed + 2)
            log(f"large: {tracks:,} tracks generated in {time.perf_counter() - start:.0f} s; measuring")
            generated += [Path(paths[0]) for paths in data.values()]
            measured[tracks] = _measure(data, folder, sizes)
            log(f"large: {tracks:,} tracks: {measured[tracks]}")
            for path in folder.glob("data/*.gz"):
                path.unlink()  # the next size needs the disk more
    finally:
        for path in generated:  # the production runs parsed into the repository's cache: not worth keeping
            if path.exists():
                (CACHE_DIR / f"{file_hash(path)}.npz").unlink(missing_ok=True)
        for tracks in measured:
            shutil.rmtree(tmp / f"large_{tracks}", ignore_errors=True)
    s, b = measured[small], measured[big]
    factor = b["rows"] / s["rows"]
    target = f"<= {TARGET * factor / SCALE:.1f}x ({factor:.2f}x the rows)"
    limit = TARGET * factor / SCALE

    def row(row_id: str, what: str, key: str, unit: str, scale: float, note: str = "") -> Row:
        ratio = b[key] / s[key]
        return Row(row_id, f"{what}, {b['rows']:,} rows per split", b[key] * scale, unit,
                   f"the same at {s['rows']:,} rows", s[key] * scale, ratio, "big / small", target, ratio <= limit,
                   note, extra={"big": b, "small": s})

    return [
        row("large_parse", "parse the training split (.gz, no cache)", "parse_s", "s", 1.0,
            "read_neuroresults(cache_dir=None), best of its repeats"),
        row("large_cache_reload", "reload the parsed training split from the cache (file hashed again)", "reload_s",
            "s", 1.0),
        row("large_epoch_expert0", "one epoch of expert 0 (training and validation, the real path)", "epoch_s", "s",
            1.0, f"{b['expert0_train_rows']:,} vs {s['expert0_train_rows']:,} training samples per epoch"),
        row("large_run_memory", f"peak RSS of a {len(sizes.large_experts)}-expert production run of "
            f"{sizes.large_epochs} epoch(s) (the process tree)",
            "run_peak_rss_mb", "MB", 1.0,
            f"VmRSS counts shared pages once per process; Pss {b['run_peak_pss_mb']:.0f} vs {s['run_peak_pss_mb']:.0f} "
            f"MB; wall {b['run_wall_s']:.0f} vs {s['run_wall_s']:.0f} s; up to {b['run_processes']} processes"),
    ]


def skipped_large() -> list[Row]:
    whats = {"large_parse": "parse the training split, --tracks vs a fifth of them",
             "large_cache_reload": "reload it from the parse cache, the same sizes",
             "large_epoch_expert0": "one epoch of expert 0, the same sizes",
             "large_run_memory": "peak RSS of a 5-expert production run, the same sizes"}
    return [Row(row_id, whats[row_id], None, "s", "-", None, None, "", f"<= {TARGET}x for 5x the rows", None,
                "skipped: pass --with-large", skipped=True) for row_id in LARGE_ROWS]
