"""The sweep rows (issue 19): the 12-point grid `lr_batch_grid` of configs/__init__.py on the embedded default data,
as one sweep against the same 12 trials as 12 separate runs of main.py, against the floor of its arithmetic, and
pruning against none on a grid where half of the learning rates are hopeless."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, Row, log

SWEEP_ROWS = ("sweep_vs_sequential", "sweep_vs_floor", "pruning_saves")
SEQUENTIAL_TARGET = 2.0  # the sweep at least this much faster than the trials as separate runs
FLOOR_TARGET = 1.25
PRUNING_TARGET = 0.6
HOPELESS = [1e-3, 3e-3, 1.0, 10.0]  # Adam's learning rates: two that train, two that cannot


def _command(*args: str) -> float:
    """Wall seconds of `python neuro_trigger/main.py ARGS`, which must succeed."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "neuro_trigger/main.py", *args], cwd=REPO_ROOT, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise RuntimeError(f"main.py {' '.join(args)} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - start


def _raw_epoch_s(records: list[dict[str, Any]], overrides: list[str], quick: bool) -> dict[tuple[int, int], float]:
    """A raw-loop epoch (one thread) per expert and batch size the trials trained with, seconds."""
    import torch

    from benchmarks.training import raw_loop
    from neuro_trigger.config.resolution import resolve_config
    from neuro_trigger.data.selection import expert_rows, load_data

    resolved = resolve_config("baseline_v2", overrides)
    stores = load_data(resolved["global"], REPO_ROOT / "log")
    train = (torch.from_numpy(stores["train"].x), torch.from_numpy(stores["train"].y))
    val = (torch.from_numpy(stores["val"].x), torch.from_numpy(stores["val"].y))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    seconds = {}
    try:
        for expert, batch in sorted({(r["expert"], r["params"]["batch_size"]) for r in records}):
            config = {**resolved["experts"][f"expert_{expert}"], "batch_size": batch}
            timing = raw_loop(config, train, expert_rows(stores["train"], config), val,
                              expert_rows(stores["val"], config), 1, 1 if quick else 2)
            seconds[(expert, batch)] = min(timing.whole)
    finally:
        torch.set_num_threads(threads)
    return seconds


def _records(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(folder.glob("trials/*/*/trial.json"))]


def bench_sweeps(tmp: Path, quick: bool) -> list[Row]:
    """The three rows; the default data's parse cache warm before any of them."""
    from benchmarks.main import _default_data
    from neuro_trigger import cpu_cores
    from neuro_trigger.config.resolution import resolve_config

    _, parse_s = _default_data()
    trials = 2 if quick else 12
    epochs = [] if not quick else ["epochs=2"]
    overrides = [*epochs, "early_stopping_patience=100000"]  # every trial all its epochs: the same work both ways
    log(f"sweeps: lr_batch_grid, {trials} grid points x 5 experts, as one sweep")
    sweep_wall = _command("--sweep", "lr_batch_grid", "-p", "-d", "benchmark", "--trials", str(trials),
                          "--log-root", str(tmp / "sweep"), "-m", *overrides)
    folder = tmp / "sweep" / "sweeps" / "lr_batch_grid" / "version_0"
    records = _records(folder)
    sweep = json.loads((folder / "sweep.json").read_text())["sweep"]
    log(f"sweeps: the same {trials} points as separate runs of main.py baseline_v2 -p")
    sequential = 0.0
    from neuro_trigger.sweep.space import Sweep

    for point in Sweep.from_dict(sweep).grid(0):
        sequential += _command("baseline_v2", "-p", "-d", "benchmark", "--log-root", str(tmp / "runs"), "-m",
                               *overrides, *(f"{k}={v!r}" for k, v in point.items()))
    log("sweeps: the floor (a raw loop per expert and batch size)")
    raw = _raw_epoch_s(records, overrides, quick)
    cores = min(resolve_config("baseline_v2")["global"]["workers"], cpu_cores())
    arithmetic = sum(r["epochs"] * raw[(r["expert"], r["params"]["batch_size"])] for r in records)
    floor = arithmetic / cores + parse_s
    rows = [
        Row("sweep_vs_sequential", f"main.py --sweep lr_batch_grid -p ({trials} points x 5 experts), wall",
            sweep_wall, "s", f"the same {trials} points as {trials} runs of main.py baseline_v2 -p, wall summed",
            sequential, sequential / sweep_wall, "sequential / sweep", f">= {SEQUENTIAL_TARGET}x",
            sequential / sweep_wall >= SEQUENTIAL_TARGET, f"{len(records)} trials"),
        Row("sweep_vs_floor", "the same sweep, wall from the command to its exit", sweep_wall, "s",
            f"the floor: raw-loop epochs x epochs per trial, summed, over {cores} cores, plus parsing the splits",
            floor, sweep_wall / floor, "wall / floor", f"<= {FLOOR_TARGET}x", sweep_wall / floor <= FLOOR_TARGET,
            f"arithmetic {arithmetic:.1f} s / {cores} + parse {parse_s:.2f} s",
            extra={"raw_epoch_s": {f"expert_{e} batch {b}": s for (e, b), s in sorted(raw.items())}}),
    ]
    return rows + _pruning(tmp, quick)


def _pruning(tmp: Path, quick: bool) -> list[Row]:
    """pruning_saves: the epochs trained by a grid over HOPELESS learning rates with the default pruner against
    none, and whether each expert's best trial is the same."""
    import configs as module
    from neuro_trigger.sweep.api import sweep

    epochs = 4 if quick else 20
    totals, best = {}, {}
    for pruner in ("percentile", "none"):
        module.sweeps[f"bench_{pruner}"] = {"config": "baseline_v2", "space": {"learning_rate": HOPELESS},
                                            "pruner": pruner, "pruner_startup_trials": 2}
        log(f"sweeps: learning rates {HOPELESS}, pruner {pruner}")
        result = sweep(f"bench_{pruner}", [f"epochs={epochs}", "early_stopping_patience=100000"], production=True,
                       log_root=tmp / f"pruning_{pruner}")
        totals[pruner] = sum(r["epochs"] for r in result.records)
        best[pruner] = {e: r["trial"] for e, r in result.best.items()}
    ratio = totals["percentile"] / totals["none"] if totals["none"] else math.nan
    same = best["percentile"] == best["none"]
    return [Row("pruning_saves", f"epochs trained, learning rates {HOPELESS} x 5 experts, {epochs} epochs, "
                "pruner percentile", totals["percentile"], "epochs", "the same sweep without pruning",
                totals["none"], ratio, "pruned / unpruned", f"<= {PRUNING_TARGET}x, same best trials",
                ratio <= PRUNING_TARGET and same, f"best trial per expert {best['percentile']} "
                f"({'the same' if same else 'differs: ' + str(best['none'])} without pruning)")]


def skipped_sweeps() -> list[Row]:
    what = {"sweep_vs_sequential": "main.py --sweep lr_batch_grid -p against 12 runs",
            "sweep_vs_floor": "main.py --sweep lr_batch_grid -p against the floor of its arithmetic",
            "pruning_saves": "epochs trained with pruning against without"}
    target = {"sweep_vs_sequential": f">= {SEQUENTIAL_TARGET}x", "sweep_vs_floor": f"<= {FLOOR_TARGET}x",
              "pruning_saves": f"<= {PRUNING_TARGET}x"}
    return [Row(row, what[row], None, "", "", None, None, "", target[row], None, "skipped: pass --with-sweeps",
                skipped=True) for row in SWEEP_ROWS]
