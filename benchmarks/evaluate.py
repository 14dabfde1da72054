"""Group evaluate: evaluating a run's five networks from the parse cache vs the cached reload alone."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Sizes, best_time


def evaluation_run(data_file: Path, folder: Path, seed: int) -> Path:
    """A run folder holding only config.json and weights.json: baseline_v2's five experts with freshly
    initialised networks (how fast a run is evaluated does not depend on what its networks learnt)."""
    import torch

    from neuro_trigger import registry
    from neuro_trigger.config.resolution import resolve_config
    from neuro_trigger.run.weights import weights_to_json

    files = [str(data_file)]
    resolved = resolve_config({"extends": "baseline_v2", "experts": [0, 1, 2, 3, 4],
                               "data": {split: files for split in ("train", "val", "test")}})
    torch.manual_seed(seed)
    weights = {key: weights_to_json(registry.build_model(c["model"], c["in_size"], c["out_size"], c["act"])
                                    .state_dict()) for key, c in resolved["experts"].items()}
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(resolved))
    (folder / "weights.json").write_text(json.dumps(weights))
    return folder


def bench_evaluate(data_file: Path, tmp: Path, sizes: Sizes, seed: int) -> list[Row]:
    """Evaluating 5 experts from the parse cache, before the figures (load_networks, load_split, predict,
    and judge per expert and over all, as evaluate.py does), vs the cached reload of the same file alone."""
    from neuro_trigger.data.dataset import load_split
    from neuro_trigger.judge.evaluation import judge_predictions
    from neuro_trigger.judge.networks import load_networks, predict

    cache = tmp / "evaluate_cache"
    run_folder = evaluation_run(data_file, tmp / "evaluate_run", seed)
    n = len(load_split([data_file], cache_dir=cache))  # parse and store once: every call below reloads
    parts: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        result = fn()
        parts[name] = time.perf_counter() - start
        return result

    def reload() -> None:
        os.utime(data_file)  # a new mtime defeats the in-process hash memo: hashed again, as in a new process
        load_split([data_file], cache_dir=cache)

    def evaluate_before_figures() -> None:
        os.utime(data_file)
        nets = timed("load_networks", lambda: load_networks(run_folder))
        store = timed("load_split", lambda: load_split([data_file], cache_dir=cache))
        pred = timed("predict", lambda: predict(nets, store))
        timed("judge", lambda: judge_predictions(nets, store, pred))

    reloads, evaluations, split_up = [], [], []
    for _ in range(sizes.parse_repeats):  # interleaved, the best of each: the machine's noise hits both alike
        reloads.append(best_time(reload, 1)[0])
        evaluations.append(best_time(evaluate_before_figures, 1)[0])
        split_up.append(dict(parts))
    t_reload, t_eval = min(reloads), min(evaluations)
    best = split_up[evaluations.index(t_eval)]
    ratio = t_eval / t_reload
    return [Row("evaluate_vs_reload", f"evaluate 5 experts on {n:,} tracks from the parse cache, before the figures "
                "(load_networks + load_split + predict + judge per expert and over all)", t_eval, "s",
                "load_split of the same file from the parse cache (file hashed again)", t_reload, ratio,
                "time / reload time", "<= 10x", ratio <= 10,
                "; ".join(f"{name} {seconds:.3f} s" for name, seconds in best.items()),
                extra={"rows": n, "parts_seconds": best, "evaluate_seconds": evaluations,
                       "reload_seconds": reloads})]


def bench_fixed_point(sizes: Sizes, seed: int) -> list[Row]:
    """The FPGA's fixed-point forward pass (fpga/fixed_point.forward) of baseline_v2's network on random inputs
    vs the float network's forward in torch, on the same rows: the price of judging the hardware's outputs."""
    import numpy as np
    import torch

    from neuro_trigger.fpga.fixed_point import forward, hardware_layers
    from neuro_trigger.registry import build_model

    torch.manual_seed(seed)
    model = build_model("BaselineModel", 27, 2, "tanh/2").eval()
    layers = hardware_layers(model, "tanh/2")
    x = np.random.default_rng(seed).uniform(-1, 1, (sizes.tracks, 27)).astype(np.float32)
    x_t = torch.from_numpy(x)

    def float_pass() -> None:
        with torch.no_grad():
            model(x_t)

    fixed, floats = [], []
    for _ in range(sizes.parse_repeats):  # interleaved, the best of each
        fixed.append(best_time(lambda: forward(layers, x), 1)[0])
        floats.append(best_time(float_pass, 1)[0])
    t_fixed, t_float = min(fixed), min(floats)
    ratio = t_fixed / t_float
    per_million = t_fixed * 1e6 / len(x)
    return [Row("fixed_point_vs_float", f"bit-exact fixed-point forward pass of a 27-81-2 tanh/2 network on "
                f"{len(x):,} rows ({per_million:.2f} s per million)", t_fixed, "s",
                "the float network's forward in torch on the same rows", t_float, ratio, "time / float time",
                "<= 20x, and a million rows in seconds", ratio <= 20 and per_million <= 10,
                extra={"rows": len(x), "seconds_per_million": per_million, "fixed_seconds": fixed,
                       "float_seconds": floats})]
