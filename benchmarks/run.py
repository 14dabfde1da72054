"""The benchmark of issue 4: every figure of this project beside a reference measured in the same run.

    python benchmarks/run.py [--tracks N] [--quick] [--with-main] [--json PATH]

It generates its data with the toy Monte Carlo into a temporary folder (removed at the end), then
measures parsing, the parse cache, the filters, the reweighted sampler, training throughput through
the real Lightning path, experts in parallel, memory, evaluating a run's networks, and (with --with-main) a whole
`main.py baseline_v2 -p`. It prints a table (figure, reference, ratio, target, met) and writes the
same as JSON (default benchmarks/results/latest.json). Nothing is asserted: a missed target is a
row with met = false. `--quick` runs every row on tiny sizes so that the code stays exercised.

Timings on a busy machine are noisy: where a figure is taken over repeats, it is the best one
(the least disturbed), and the load average is recorded beside the results.
"""
from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # run as a script from the repository root, without PYTHONPATH
    sys.path.insert(0, str(REPO_ROOT))

# Only the standard library at module level: the expert processes of the training rows are spawned
# from a child running this file, and spawn re-imports it in every one of them.

DEFAULT_JSON = REPO_ROOT / "benchmarks" / "results" / "latest.json"
DIST = {"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 0.0, "std": 0.4}}
ROW_IDS = (  # every row, in the order of the table
    "parse_gz_vs_loadtxt", "parse_gz_vs_decompress", "parse_plain_vs_loadtxt", "cache_reload",
    "filter_duplicate_events", "filter_max2_events", "bucket_sampler",
    "train_bs2048_vs_raw", "train_bs128_vs_raw", "train_bs16_vs_raw", "train_bs2048_vs_per_sample",
    "experts_parallel_vs_sequential", "memory_5_vs_1_expert", "evaluate_vs_reload", "main_baseline_v2",
    "info_threads_1_vs_2", "info_chunks_vs_single_batches",
)


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

    @classmethod
    def quick(cls) -> Sizes:
        return cls(tracks=5000, loadtxt_rows=5000, loop_rows=5000, sampler_reference_indices=10_000,
                   sampler_repeats=2, parse_repeats=1, measured_epochs={2048: 1, 128: 1, 16: 1},
                   run_tracks=3000, run_epochs=1, run_experts=(0,), run_repeats=1)


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


# ============================================================================================ data
def _write_split(args: tuple[int, int, str]) -> str:
    from neuro_trigger.data.neuroresults import write_table
    from neuro_trigger.data.toy_mc import generate

    tracks, seed, path = args
    write_table(generate(tracks, seed), path)
    return path


def make_data(folder: Path, tracks: int, splits: tuple[str, ...], seed: int) -> dict[str, list[str]]:
    """Toy files neuroresults_<split>.gz (write_table's gzip); several splits are written in parallel."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from neuro_trigger.data.toy_mc import split_seed

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


def truncated_copies(gz_path: Path, rows: int, folder: Path) -> tuple[Path, Path, Path, int]:
    """The plain form of a .gz, and the header plus its first `rows` rows, as .gz and as plain text."""
    raw = gzip.decompress(gz_path.read_bytes())
    plain = folder / "train_plain.txt"
    plain.write_bytes(raw)
    cut = 0
    for _ in range(rows + 2):
        nxt = raw.find(b"\n", cut)
        if nxt < 0:
            cut = len(raw)
            break
        cut = nxt + 1
    head = raw[:cut]
    head_gz, head_plain = folder / "train_head.gz", folder / "train_head.txt"
    head_gz.write_bytes(gzip.compress(head, compresslevel=1))
    head_plain.write_bytes(head)
    return plain, head_gz, head_plain, head.count(b"\n") - 2


# ============================================================================================ parsing
def inflate(path: Path) -> int:
    """gzip.open(path).read(): only decompressing the file, the floor of any parser reading it."""
    with gzip.open(path) as handle:
        return len(handle.read())


def inflate_isal(path: Path) -> int:
    """The inflating the reader itself does (python-isal), for comparison."""
    from isal import isal_zlib

    return len(isal_zlib.decompressobj(wbits=31).decompress(path.read_bytes()))


def bench_parse(train_gz: Path, tmp: Path, sizes: Sizes) -> list[Row]:
    """read_neuroresults (no cache) on .gz and plain text vs numpy.loadtxt and plain decompression."""
    import numpy as np

    from neuro_trigger.data.neuroresults import parse_threads, read_neuroresults

    plain, head_gz, head_plain, head_rows = truncated_copies(train_gz, sizes.loadtxt_rows, tmp)
    reps = sizes.parse_repeats
    read_neuroresults(head_gz, cache_dir=None)  # warm-up: imports, first allocations
    n = 0
    times: dict[str, list[float]] = {"gz": [], "inflate": [], "plain": [], "isal": []}
    for _ in range(reps):  # interleaved, so that a noisy moment hits the parse and its reference alike
        t, table = best_time(lambda: read_neuroresults(train_gz, cache_dir=None), 1)
        times["gz"].append(t)
        n = len(table["Expert"])
        del table
        times["inflate"].append(best_time(lambda: inflate(train_gz), 1)[0])
        times["isal"].append(best_time(lambda: inflate_isal(train_gz), 1)[0])
        times["plain"].append(best_time(lambda: read_neuroresults(plain, cache_dir=None), 1)[0])
    t_gz, t_inflate, t_plain, t_isal = (min(times[k]) for k in ("gz", "inflate", "plain", "isal"))
    t_lt_gz, _ = best_time(lambda: np.loadtxt(head_gz, skiprows=2), 1)
    t_lt_plain, _ = best_time(lambda: np.loadtxt(head_plain, skiprows=2), 1)
    ours_gz, ours_plain = n / t_gz, n / t_plain
    lt_gz, lt_plain = head_rows / t_lt_gz, head_rows / t_lt_plain
    scaled = f"timed on the first {head_rows:,} rows (a truncated copy), scaled to rows/s"
    mb = train_gz.stat().st_size / 1e6
    rows = [
        Row("parse_gz_vs_loadtxt", f"parse .gz, {n:,} rows ({mb:.0f} MB), read_neuroresults(cache_dir=None)",
            ours_gz, "rows/s", "numpy.loadtxt(path, skiprows=2) on the same .gz", lt_gz, ours_gz / lt_gz,
            "speed-up", ">= 1.5x", ours_gz / lt_gz >= 1.5, f"loadtxt {scaled}; ours {t_gz:.2f} s",
            extra={"seconds": t_gz, "loadtxt_seconds": t_lt_gz, "loadtxt_rows": head_rows}),
        Row("parse_gz_vs_decompress", "parse .gz (same call) vs only inflating it", t_gz, "s",
            "gzip.open(path).read(): the floor of a gzip stream", t_inflate, t_gz / t_inflate,
            "time / inflate time", "<= 1.3x", t_gz / t_inflate <= 1.3,
            f"{n / 1e6:.2f} M rows; the reader inflates with isal, which alone takes {t_isal:.2f} s "
            f"({t_gz / t_isal:.2f}x); parsing runs on {parse_threads()} threads",
            extra={"isal_inflate_seconds": t_isal, "times": times}),
        Row("parse_plain_vs_loadtxt", f"parse the same file uncompressed ({plain.stat().st_size / 1e6:.0f} MB)",
            ours_plain, "rows/s", "numpy.loadtxt(path, skiprows=2), plain", lt_plain, ours_plain / lt_plain,
            "speed-up", ">= 3x", ours_plain / lt_plain >= 3, f"loadtxt {scaled}; ours {t_plain:.2f} s",
            extra={"seconds": t_plain, "loadtxt_seconds": t_lt_plain}),
    ]
    for path in (plain, head_gz, head_plain):
        path.unlink()
    return rows


def bench_cache(train_gz: Path, cache: Path, sizes: Sizes) -> list[Row]:
    """Second read_neuroresults with a cache_dir: sha256 of the file plus loading the npz."""
    from neuro_trigger.data.neuroresults import read_neuroresults

    start = time.perf_counter()
    n = len(read_neuroresults(train_gz, cache_dir=cache)["Expert"])  # parse and store
    t_first = time.perf_counter() - start

    def cold() -> None:
        # a new mtime (same bytes) defeats the in-process hash memo: the file is hashed again, as
        # in a new process, and the cache entry (keyed by content) still hits
        os.utime(train_gz)
        read_neuroresults(train_gz, cache_dir=cache)

    t_cold, _ = best_time(cold, sizes.parse_repeats + 1)
    t_warm, _ = best_time(lambda: read_neuroresults(train_gz, cache_dir=cache), sizes.parse_repeats + 1)
    per_m = t_cold / (n / 1e6)
    return [Row("cache_reload", "reload a parsed split from the cache (second call, file hashed again)",
                per_m, "s per 1M rows", "the first call (parse + store), per 1M rows", t_first / (n / 1e6),
                t_first / t_cold, "speed-up over parsing", "<= 1 s per 1M rows", per_m <= 1.0,
                f"with the in-process hash memo (same process, file unchanged): {t_warm / (n / 1e6):.3f} s "
                "per 1M rows", extra={"seconds_cold": t_cold, "seconds_memo": t_warm, "rows": n})]


# ============================================================================================ filters
def _loop_events(event: Any, y: Any) -> Iterator[tuple[int, tuple, tuple]]:
    ev = event.tolist()
    zt = y[:, :2].tolist()
    for i in range(len(ev)):
        yield i, tuple(ev[i]), tuple(zt[i])


def loop_duplicate(event: Any, y: Any) -> list[bool]:
    """Reference: per-row Python loop, a dict of events -> set of reco tracks seen so far."""
    seen: dict[tuple, set] = {}
    keep = [False] * len(event)
    for i, key, pair in _loop_events(event, y):
        tracks = seen.setdefault(key, set())
        if pair not in tracks:
            tracks.add(pair)
            keep[i] = True
    return keep


def loop_max2(event: Any, y: Any) -> list[bool]:
    """Reference: per-row Python loop, a dict of events -> set of reco tracks, then a pass over the rows."""
    tracks: dict[tuple, set] = {}
    keys = []
    for _, key, pair in _loop_events(event, y):
        tracks.setdefault(key, set()).add(pair)
        keys.append(key)
    return [len(tracks[key]) <= 2 for key in keys]


def bench_filters(store: Any, sizes: Sizes) -> list[Row]:
    """DuplicateEventsFilter and Max2EventsFilter on a whole split vs a per-row loop (on a slice, scaled)."""
    import numpy as np

    from neuro_trigger.data.dataset import ColumnStore
    from neuro_trigger.data.filters import DuplicateEventsFilter, Max2EventsFilter

    n = len(store)
    m = min(n, sizes.loop_rows)
    part = ColumnStore(**{k: getattr(store, k)[:m] for k in ("x", "y", "y_old", "expert", "event", "track",
                                                              "ntracks", "row")})
    rows = []
    for row_id, name, flt, loop in (("filter_duplicate_events", "DuplicateEventsFilter", DuplicateEventsFilter(),
                                     loop_duplicate),
                                    ("filter_max2_events", "Max2EventsFilter", Max2EventsFilter(), loop_max2)):
        t_ours, mask = best_time(lambda f=flt: f.mask(store), 3)
        t_loop, ref = best_time(lambda fn=loop: fn(part.event, part.y), 1)
        agree = bool(np.array_equal(flt.mask(part), np.asarray(ref, dtype=bool)))
        t_loop_scaled = t_loop * n / m
        speedup = t_loop_scaled / t_ours
        rows.append(Row(
            row_id, f"{name}.mask on {n:,} rows ({int(mask.sum()):,} kept)", t_ours, "s",
            "per-row Python loop building a dict of events", t_loop_scaled, speedup, "speed-up",
            "< 1 s and >= 20x", t_ours < 1.0 and speedup >= 20,
            (f"loop timed on the first {m:,} rows, scaled; " if m < n else "")
            + f"loop and filter agree on those rows: {agree}",
            extra={"loop_rows": m, "loop_seconds": t_loop, "agree": agree}))
    return rows


# ============================================================================================ sampler
def bench_sampler(z: Any, sizes: Sizes, seed: int) -> list[Row]:
    """BucketSampler.sample(len(z)) (what TrainBatches draws per epoch) vs a per-index Dataset + DataLoader."""
    import numpy as np
    import torch
    from torch.utils.data import DataLoader, Dataset

    from neuro_trigger.data.sampling import BucketSampler, bucket_probabilities

    start = time.perf_counter()
    sampler = BucketSampler(z, DIST, seed)
    t_build = time.perf_counter() - start
    n = len(z)
    t_ours, _ = best_time(lambda: sampler.sample(n), sizes.sampler_repeats)

    class PerIndexSampling(Dataset):
        """Reference: each __getitem__ draws a bucket by its probability, then a row inside it."""

        def __init__(self) -> None:
            edges, p = bucket_probabilities(DIST)
            bucket = np.searchsorted(edges[1:-1], z, side="right")
            self.rows = [np.flatnonzero(bucket == b) for b in range(len(p))]
            used = [b for b in range(len(p)) if len(self.rows[b])]
            self.rows = [self.rows[b] for b in used]
            self.p = p[used] / p[used].sum()
            self.rng = np.random.default_rng(seed)

        def __len__(self) -> int:
            return n

        def __getitem__(self, i: int) -> int:
            rows = self.rows[self.rng.choice(len(self.p), p=self.p)]
            return int(rows[self.rng.integers(len(rows))])

    count = min(n, sizes.sampler_reference_indices)
    loader = DataLoader(PerIndexSampling(), batch_size=2048)
    start = time.perf_counter()
    drawn = 0
    for batch in loader:
        drawn += len(batch)
        if drawn >= count:
            break
    t_ref = time.perf_counter() - start
    assert isinstance(batch, torch.Tensor)
    ours, ref = n / t_ours, drawn / t_ref
    return [Row("bucket_sampler", f"reweighted sampling, 11 buckets, normal std 0.4: {n:,} indices",
                ours, "indices/s", "map-style Dataset drawing per __getitem__, DataLoader batch 2048", ref,
                ours / ref, "speed-up", ">= 5M indices/s and >= 50x", ours >= 5e6 and ours / ref >= 50,
                f"reference timed on {drawn:,} indices; sampler built once in {t_build:.3f} s",
                extra={"seconds": t_ours, "build_seconds": t_build})]


# ============================================================================================ training
def _quiet_lightning() -> None:
    """Lightning's INFO lines and warnings would drown the progress lines (it sets its level on import)."""
    import logging
    import warnings

    import lightning  # noqa: F401

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "lightning_fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def _epoch_timer() -> Any:
    """A callback recording when each training epoch starts, its last batch ends, and training ends."""
    import lightning as L

    class EpochTimer(L.Callback):
        def __init__(self) -> None:
            self.starts: list[float] = []
            self.last_batch: list[float] = []
            self.end = math.nan

        def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.starts.append(time.perf_counter())
            self.last_batch.append(math.nan)

        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
            self.last_batch[-1] = time.perf_counter()

        def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            self.end = time.perf_counter()

        def whole(self) -> list[float]:
            """Whole epochs: start to next start (training, validation, checkpoints, logging, callbacks)."""
            bounds = [*self.starts, self.end]
            return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

        def training(self) -> list[float]:
            """The training part only: epoch start to the end of its last batch."""
            return [b - a for a, b in zip(self.starts, self.last_batch, strict=True)]

    return EpochTimer()


@dataclass
class Epochs:
    """Per-epoch seconds after the warm-up epoch: whole epochs and their training part."""

    whole: list[float]
    training: list[float]
    samples: int  # trained samples per epoch

    def rate(self, part: str = "whole") -> float:
        return self.samples / min(getattr(self, part))

    def summary(self) -> dict[str, Any]:
        return {"whole_s": self.whole, "training_s": self.training, "samples_per_epoch": self.samples,
                "median_whole_rate": self.samples / statistics.median(self.whole)}


class Trainbench:
    """The real training path of one expert (ExpertModule, TrainBatches/EvalBatches, build_trainer's
    Trainer) beside a raw PyTorch loop, on the same rows, in this process."""

    def __init__(self, data: dict[str, list[str]], stores: dict[str, Any], tmp: Path) -> None:
        import torch

        from neuro_trigger.training.experts import expert_rows, threads_per_expert

        self.data, self.stores, self.tmp = data, stores, tmp
        self.threads = threads_per_expert(1)  # what a run on this machine gives each expert
        torch.set_num_threads(self.threads)
        config = self.config(2048, 1)
        self.train_rows = expert_rows(stores["train"], config)
        self.val_rows = expert_rows(stores["val"], config)
        out = config["out_size"]
        self.x = torch.from_numpy(stores["train"].x)
        self.y = torch.from_numpy(stores["train"].y[:, :out])
        self.val = (torch.from_numpy(stores["val"].x), torch.from_numpy(stores["val"].y[:, :out]),
                    torch.from_numpy(stores["val"].y_old[:, :out]))

    def config(self, batch_size: int, epochs: int) -> dict[str, Any]:
        """expert_0 of baseline_v2 with this batch size and number of epochs, on the generated data."""
        from neuro_trigger.config import resolve_config

        custom = {"extends": "baseline_v2", "data": self.data}
        resolved = resolve_config(custom, [f"batch_size={batch_size}", f"epochs={epochs}"])
        return resolved["experts"]["expert_0"]

    def lightning(self, batch_size: int, measured: int, per_sample: bool = False,
                  per_sample_val: bool = False) -> Epochs:
        """Fit for 1 + `measured` epochs through the real path and time the epochs after the first;
        `per_sample` feeds training batches, `per_sample_val` validation batches too, through a
        per-sample Dataset + DataLoader instead."""
        import lightning as L
        import torch

        from neuro_trigger.training.batches import EvalBatches, TrainBatches
        from neuro_trigger.training.experts import build_trainer
        from neuro_trigger.training.module import ExpertModule

        config = self.config(batch_size, 1 + measured)
        L.seed_everything(config["seed"], workers=True, verbose=False)
        device = torch.device("cpu")
        if per_sample:
            train_batches = self._per_sample_loader(batch_size, config["seed"])
        else:
            train_batches = TrainBatches(self.x, self.y, self.train_rows, config["batch_size"], config["seed"],
                                         config["dist"], device)
        if per_sample_val:
            val_batches = self._per_sample_val_loader(batch_size)
        else:
            val_batches = EvalBatches(*self.val, self.val_rows, device)
        module = ExpertModule(config)
        expert_dir = Path(tempfile.mkdtemp(prefix="expert_", dir=self.tmp))
        trainer, _ = build_trainer(config, expert_dir, None)
        timer = _epoch_timer()
        trainer.callbacks.append(timer)
        trainer.fit(module, train_dataloaders=train_batches, val_dataloaders=val_batches)
        shutil.rmtree(expert_dir, ignore_errors=True)
        b = min(batch_size, len(self.train_rows))
        return Epochs(timer.whole()[1:], timer.training()[1:], len(self.train_rows) // b * b)

    def _per_sample_loader(self, batch_size: int, seed: int) -> Any:
        """Reference batch source: a map-style Dataset of single rows, a DataLoader collating batches."""
        import torch
        from torch.utils.data import DataLoader, Dataset
        from torch.utils.data.dataloader import default_collate

        x, y, rows = self.x, self.y, self.train_rows

        class Rows(Dataset):
            def __len__(self) -> int:
                return len(rows)

            def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
                r = int(rows[i])
                return x[r], y[r]

        def collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
            xs, ys = default_collate(items)
            return xs.unsqueeze(0), ys.unsqueeze(0)  # a chunk of one mini-batch, the module's input form

        return DataLoader(Rows(), batch_size=min(batch_size, len(rows)), shuffle=True, drop_last=True,
                          collate_fn=collate, generator=torch.Generator().manual_seed(seed))

    def _per_sample_val_loader(self, batch_size: int) -> Any:
        """Validation the same way: single rows (x, y, y_old) collated into batches, in row order."""
        import torch
        from torch.utils.data import DataLoader, Dataset

        (x, y, y_old), rows = self.val, self.val_rows

        class Rows(Dataset):
            def __len__(self) -> int:
                return len(rows)

            def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                r = int(rows[i])
                return x[r], y[r], y_old[r]

        return DataLoader(Rows(), batch_size=batch_size, shuffle=False)

    def raw(self, batch_size: int, warmup: int, measured: int) -> Epochs:
        """Plain PyTorch: same network, loss, optimiser, rows and steps; pre-gathered tensors; a no-grad
        pass over the validation rows per epoch (the same arithmetic as the real run's validation)."""
        import torch

        from neuro_trigger import registry
        from neuro_trigger.training.batches import EVAL_SLICE_ROWS

        c = self.config(batch_size, 1)
        torch.manual_seed(c["seed"])
        model = registry.build_model(c["model"], c["in_size"], c["out_size"], c["act"])
        optimizer = registry.build_optimizer(c["optim"], model.parameters(), c["learning_rate"], c["weight_decay"])
        loss_fn = registry.build_loss(c["loss"])
        index = torch.from_numpy(self.train_rows)
        xe, ye = self.x.index_select(0, index), self.y.index_select(0, index)
        v_index = torch.from_numpy(self.val_rows)
        xv, yv = self.val[0].index_select(0, v_index), self.val[1].index_select(0, v_index)
        generator = torch.Generator().manual_seed(c["seed"])
        n = len(index)
        b = min(batch_size, n)
        usable = n // b * b
        whole, training = [], []
        for epoch in range(warmup + measured):
            start = time.perf_counter()
            perm = torch.randperm(n, generator=generator)
            for s in range(0, usable, b):
                batch = perm[s:s + b]
                loss = loss_fn(model(xe[batch]), ye[batch])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            trained = time.perf_counter()
            with torch.no_grad():
                pred = torch.cat([model(xv[i:i + EVAL_SLICE_ROWS]) for i in range(0, len(xv), EVAL_SLICE_ROWS)])
                float(loss_fn(pred, yv))
            if epoch >= warmup:
                training.append(trained - start)
                whole.append(time.perf_counter() - start)
        return Epochs(whole, training, usable)


TRAIN_TARGETS = {2048: 0.85, 128: 0.75, 16: 0.7}


def bench_training(bench: Trainbench, bs: int, sizes: Sizes) -> Row:
    """Row train_bs{bs}_vs_raw: the real path vs the raw loop, whole epochs, the best epoch of each."""
    target = TRAIN_TARGETS[bs]
    k = sizes.measured_epochs[bs]
    log(f"training, batch size {bs}: raw loop, Lightning, raw loop again ({k} measured epochs each)")
    raw_before = bench.raw(bs, 1, k)
    ours = bench.lightning(bs, k)
    raw_after = bench.raw(bs, 0, k)
    raw = Epochs(raw_before.whole + raw_after.whole, raw_before.training + raw_after.training, raw_before.samples)
    ratio = ours.rate() / raw.rate()
    ratio_train = ours.rate("training") / raw.rate("training")
    return Row(
        f"train_bs{bs}_vs_raw", f"training throughput, BaselineModel, batch {bs}, expert_0 "
        f"({ours.samples:,} samples/epoch), {bench.threads} thread(s)", ours.rate(), "samples/s",
        "raw PyTorch loop, same process, rows, steps, threads", raw.rate(), ratio, "of the raw loop",
        f">= {target}x", ratio >= target,
        f"whole epochs (incl. validation, checkpoints, logging), best of {k}; training part alone: "
        f"{ours.rate('training'):,.0f} vs {raw.rate('training'):,.0f} samples/s = {ratio_train:.2f}x",
        extra={"ours": ours.summary(), "raw": raw.summary(), "ratio_training_part": ratio_train,
               "ours_training_rate": ours.rate("training"), "raw_training_rate": raw.rate("training")})


def bench_per_sample(bench: Trainbench, ours_2048: float, ours_training: float, sizes: Sizes) -> Row:
    """The real module and Trainer fed by per-sample Datasets + DataLoaders (training and validation)
    instead of TrainBatches and EvalBatches; also with EvalBatches kept for validation."""
    log("training, batch size 2048: per-sample Dataset + DataLoader for training and validation")
    ref = bench.lightning(2048, sizes.per_sample_epochs, per_sample=True, per_sample_val=True)
    log("training, batch size 2048: per-sample Dataset + DataLoader for training, EvalBatches for validation")
    mixed = bench.lightning(2048, sizes.per_sample_epochs, per_sample=True)
    ratio = ours_2048 / ref.rate()
    ratio_mixed = ours_2048 / mixed.rate()
    ratio_train = ours_training / ref.rate("training")
    return Row("train_bs2048_vs_per_sample", "training throughput, batch 2048 (the figure of train_bs2048_vs_raw)",
               ours_2048, "samples/s", "same module and Trainer fed by per-sample Datasets + DataLoaders "
               "(training and validation)", ref.rate(), ratio, "speed-up", ">= 5x", ratio >= 5,
               "whole epochs; with this project's EvalBatches for validation on both sides (the same "
               f"validation): {mixed.rate():,.0f} samples/s, {ratio_mixed:.2f}x; training part alone: "
               f"{ours_training:,.0f} vs {ref.rate('training'):,.0f} samples/s = {ratio_train:.2f}x; DataLoaders "
               "with num_workers=0, training shuffled with drop_last; collate adds the chunk dimension",
               extra={"reference": ref.summary(), "with_eval_batches": mixed.summary(),
                      "ratio_with_eval_batches": ratio_mixed, "ratio_training_part": ratio_train})


def bench_threads(bench: Trainbench, ours_2048: float, sizes: Sizes) -> Row:
    """Informational: the real path at batch 2048 with the other thread count (1 <-> 2) than
    threads_per_expert(1) gives a lone expert here."""
    import torch

    other = 1 if bench.threads > 1 else 2
    log(f"training, batch size 2048, {other} thread(s)")
    torch.set_num_threads(other)
    try:
        alt = bench.lightning(2048, sizes.measured_epochs[2048])
    finally:
        torch.set_num_threads(bench.threads)
    return Row("info_threads_1_vs_2", f"one expert alone, batch 2048, {bench.threads} thread(s) "
               "(threads_per_expert(1))", ours_2048, "samples/s", f"the same with {other} torch thread(s)",
               alt.rate(), ours_2048 / alt.rate(), f"{bench.threads} vs {other} threads", "informational", None,
               "sensitive to other work on the machine: see the column 'other work'",
               extra={"other_threads": other, "alternative": alt.summary()})


def bench_chunks(bench: Trainbench, ours_128: float, sizes: Sizes) -> Row:
    """Informational: chunks of K mini-batches per Lightning step vs one mini-batch per step (K=1)."""
    from neuro_trigger.training import batches

    log("training, batch size 128, one mini-batch per Lightning step")
    saved = batches.SAMPLES_PER_CHUNK
    batches.SAMPLES_PER_CHUNK = 1  # chunk_size() -> 1
    try:
        single = bench.lightning(128, sizes.measured_epochs[128])
    finally:
        batches.SAMPLES_PER_CHUNK = saved
    return Row("info_chunks_vs_single_batches", f"batch 128, chunks of {batches.chunk_size(128)} mini-batches "
               "per Lightning step", ours_128, "samples/s", "the same with one mini-batch per Lightning step",
               single.rate(), ours_128 / single.rate(), "speed-up", "informational", None,
               extra={"single": single.summary()})


# ============================================================================================ whole runs
class TreeMemory:
    """Peak of the summed VmRSS (and Pss) of a process and all its descendants, sampled in a thread;
    also their CPU time (the expert processes are forked by a server that the job never waits for,
    so getrusage does not see them)."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        self.pid, self.interval = pid, interval
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
        pss = sum(self._field_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
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


def tree_cpu(cpu: CpuShare, memory: TreeMemory) -> tuple[float, float]:
    """CPU seconds of a job's process tree (getrusage or /proc samples, whichever saw more) and the
    cores other work kept busy meanwhile."""
    ours = max(cpu.ours, memory.cpu_seconds)
    return ours, max(0.0, cpu.busy - ours) / max(cpu.wall, 1e-9)


def stage(fn: Callable[[], list[Row]]) -> list[Row]:
    """Run one stage of the benchmark and note on its rows how many cores other work used meanwhile."""
    with CpuShare() as cpu:
        rows = fn()
    for row in rows:
        row.extra.setdefault("others_cores", round(cpu.others_cores, 2))
    return rows


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


def run_job(config: dict[str, Any], overrides: list[str], tmp: Path, name: str) -> JobResult:
    """train(config, overrides, production=True) in a fresh child process, its memory sampled from here."""
    spec = tmp / f"{name}.json"
    result = tmp / f"{name}.result.json"
    spec.write_text(json.dumps({"config": config, "overrides": overrides, "log_root": str(tmp / "runs"),
                                "result": str(result)}))
    with open(tmp / f"{name}.log", "wb") as out:
        with CpuShare() as cpu:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--train-job", str(spec)],
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
    start = time.perf_counter()
    result = train(spec["config"], spec["overrides"], production=True, log_root=Path(spec["log_root"]),
                   show_progress=False)
    wall = time.perf_counter() - start
    Path(spec["result"]).write_text(json.dumps({"wall": wall, "ok": result.ok, "folder": str(result.folder)}))
    return 0


def bench_runs(data: dict[str, list[str]], tmp: Path, sizes: Sizes) -> list[Row]:
    """Experts in parallel vs one at a time (workers=1), and memory of that run vs a 1-expert run.

    workers=1 rather than 5 separate runs: the same train() call, data loaded and the run folder
    assembled once in both, so the ratio shows only what running expert processes side by side buys.
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
        sequentials.append(run_job(config, ["workers=1"], tmp, f"sequential{r}"))
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
            f"{cpu_cores()} cores), {setting}", parallel.wall, "s", "the same run with workers=1 (one expert "
            "process at a time)", sequential.wall, ratio, "wall / sequential wall", "<= 0.6x", ratio <= 0.6,
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


def bench_main(tmp: Path, quick: bool) -> Row:
    """`python neuro_trigger/main.py baseline_v2 -p` on the embedded default data set, timed."""
    from neuro_trigger.data import toy_mc

    had_toy = all((REPO_ROOT / p).is_file() for p in toy_mc.DEFAULT_FILES.values())
    command = [sys.executable, "neuro_trigger/main.py", "baseline_v2", "-p", "-d", "benchmark",
               "--log-root", str(tmp / "main_log")]
    if quick:
        command += ["-m", "epochs=2"]
    log("main.py " + " ".join(command[2:]))
    with open(tmp / "main.log", "wb") as out, CpuShare() as cpu:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        with TreeMemory(proc.pid) as memory:
            code = proc.wait()
    wall = cpu.wall
    cpu_seconds, others = tree_cpu(cpu, memory)
    epochs = {}
    for summary in (tmp / "main_log").glob("baseline_v2/version_*/summary.json"):
        for key, status in json.loads(summary.read_text()).get("experts", {}).items():
            epochs[key] = status.get("epochs_done", status.get("epochs"))
    if code != 0:
        log("main.py failed:\n" + (tmp / "main.log").read_text(errors="replace")[-3000:])
    return Row("main_baseline_v2", "main.py baseline_v2 -p -d benchmark" + (" -m epochs=2" if quick else ""),
               wall, "s", "-", None, None, "", "<= 600 s", wall <= 600 and code == 0,
               f"exit code {code}; epochs per expert {dict(sorted(epochs.items()))}; toy data "
               + ("already generated" if had_toy else "generated in this run")
               + f"; peak RSS of the tree {memory.peak_rss_kb / 1024:.0f} MB; CPU {cpu_seconds:.0f} s; other work "
               f"meanwhile {others:.2f} cores",
               extra={"exit_code": code, "epochs": epochs, "peak_rss_mb": memory.peak_rss_kb / 1024,
                      "cpu_seconds": cpu_seconds, "others_cores": round(others, 2)})


def skipped_main() -> Row:
    return Row("main_baseline_v2", "main.py baseline_v2 -p -d benchmark", None, "s", "-", None, None, "",
               "<= 600 s", None, "skipped: pass --with-main", skipped=True)


# ============================================================================================ evaluate
def evaluation_run(data_file: Path, folder: Path, seed: int) -> Path:
    """A run folder holding only config.json and weights.json: baseline_v2's five experts with freshly
    initialised networks (how fast a run is evaluated does not depend on what its networks learnt)."""
    import torch

    from neuro_trigger import registry
    from neuro_trigger.config import resolve_config
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
    from neuro_trigger.run.evaluation import judge_predictions, load_networks, predict

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


# ============================================================================================ main
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
        if "runs" in only:
            log(f"generating {sizes.run_tracks:,} tracks per split for the whole runs")
            run_data = make_data(tmp / "run_data", sizes.run_tracks, ("train", "val", "test"), args.seed + 1)
            rows += bench_runs(run_data, tmp, sizes)
        if "main" in only:
            rows.append(bench_main(tmp, args.quick) if args.with_main else skipped_main())
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


GROUPS = ("parse", "filters", "sampler", "training", "evaluate", "runs", "main")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.split("\n")[0])
    parser.add_argument("--tracks", type=int, default=None, help="tracks per split (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="every row on tiny sizes (for CI)")
    parser.add_argument("--with-main", action="store_true", help="also time main.py baseline_v2 -p (minutes)")
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
