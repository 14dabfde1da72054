"""Group training: throughput of one expert through the real Lightning path vs a raw PyTorch loop and
per-sample DataLoaders, and two informational rows (thread count, chunks per step)."""
from __future__ import annotations

import math
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Sizes, log


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

        from neuro_trigger.data.selection import expert_rows

        self.last_trainer: Any = None
        self.data, self.stores, self.tmp = data, stores, tmp
        self.threads = 1  # the unit of the floor and of the thread plan (runner/plan.py); ours and raw alike
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
        from neuro_trigger.config.resolution import resolve_config

        custom = {"extends": "baseline_v2", "data": self.data}
        resolved = resolve_config(custom, [f"batch_size={batch_size}", f"epochs={epochs}"])
        return resolved["experts"]["expert_0"]

    def lightning(self, batch_size: int, measured: int, per_sample: bool = False,
                  per_sample_val: bool = False, rows: tuple[Any, Any] | None = None) -> Epochs:
        """Fit for 1 + `measured` epochs through the real path (build_trainer's Trainer, fit as run_expert
        does it: fit_expert) and time the epochs after the first; `per_sample` feeds training batches,
        `per_sample_val` validation batches too, through a per-sample Dataset + DataLoader instead (validated
        by Lightning's loop, as a DataLoader-based trainer would); `rows`: (training rows, validation rows)
        instead of all of expert 0's. The Trainer of the fit stays in `self.last_trainer`."""
        import lightning as L
        import torch

        from neuro_trigger.training.batches import EvalBatches, TrainBatches
        from neuro_trigger.training.expert import build_trainer, fit_expert
        from neuro_trigger.training.module import ExpertModule

        train_rows, val_rows = rows if rows is not None else (self.train_rows, self.val_rows)
        config = self.config(batch_size, 1 + measured)
        L.seed_everything(config["seed"], workers=True, verbose=False)
        device = torch.device("cpu")
        if per_sample:
            train_batches = self._per_sample_loader(batch_size, config["seed"], config["drop_last"])
        else:
            train_batches = TrainBatches(self.x, self.y, train_rows, config["batch_size"], config["seed"],
                                         config["dist"], device, drop_last=config["drop_last"])
        module = ExpertModule(config)
        expert_dir = Path(tempfile.mkdtemp(prefix="expert_", dir=self.tmp))
        trainer, _ = build_trainer(config, expert_dir, None)
        timer = _epoch_timer()
        trainer.callbacks.append(timer)
        if per_sample_val:
            trainer.fit(module, train_dataloaders=train_batches,
                        val_dataloaders=self._per_sample_val_loader(batch_size))
        else:
            fit_expert(trainer, module, train_batches, EvalBatches(*self.val, val_rows, device))
        shutil.rmtree(expert_dir, ignore_errors=True)
        self.last_trainer = trainer
        return Epochs(timer.whole()[1:], timer.training()[1:], trained_rows(len(train_rows), batch_size, config))

    def _per_sample_loader(self, batch_size: int, seed: int, drop_last: bool) -> Any:
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

        return DataLoader(Rows(), batch_size=min(batch_size, len(rows)), shuffle=True, drop_last=drop_last,
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

    def raw(self, batch_size: int, warmup: int, measured: int, rows: tuple[Any, Any] | None = None) -> Epochs:
        """The raw loop (`raw_loop`) on expert 0's rows, or on `rows` (training rows, validation rows)."""
        train_rows, val_rows = rows if rows is not None else (self.train_rows, self.val_rows)
        return raw_loop(self.config(batch_size, 1), (self.x, self.y), train_rows, self.val[:2], val_rows, warmup,
                        measured)


def trained_rows(rows: int, batch_size: int, c: dict[str, Any]) -> int:
    """Rows an epoch trains on: all of them, or with the config's `drop_last` only whole mini-batches."""
    b = min(batch_size, rows)
    return rows // b * b if c["drop_last"] else rows


def raw_loop(c: dict[str, Any], train: tuple[Any, Any], train_rows: Any, val: tuple[Any, Any], val_rows: Any,
             warmup: int, measured: int) -> Epochs:
    """Plain PyTorch: the expert config `c`'s network, loss, optimiser and batch size on the given rows of the
    (x, y) tensors `train` and `val`, as many steps as the real path; pre-gathered tensors; a no-grad pass over the
    validation rows per epoch (the same arithmetic as the real run's validation). Times the epochs after `warmup`."""
    import torch

    from neuro_trigger import registry
    from neuro_trigger.training.batches import EVAL_SLICE_ROWS

    torch.manual_seed(c["seed"])
    model = registry.build_model(c["model"], c["in_size"], c["out_size"], c["act"])
    optimizer = registry.build_optimizer(c["optim"], model.parameters(), c["learning_rate"], c["weight_decay"])
    loss_fn = registry.build_loss(c["loss"])
    out = c["out_size"]
    index = torch.from_numpy(train_rows)
    xe, ye = train[0].index_select(0, index), train[1][:, :out].index_select(0, index)
    v_index = torch.from_numpy(val_rows)
    xv, yv = val[0].index_select(0, v_index), val[1][:, :out].index_select(0, v_index)
    generator = torch.Generator().manual_seed(c["seed"])
    n = len(index)
    b = min(c["batch_size"], n)
    usable = trained_rows(n, b, c)
    stops = list(range(b, usable + 1, b))  # the mini-batches' ends, as TrainBatches cuts them
    if usable % b:  # the last partial mini-batch; a single row left over joins the one before
        stops[-1:] = [usable] if usable % b == 1 else [stops[-1], usable]
    whole, training = [], []
    for epoch in range(warmup + measured):
        start = time.perf_counter()
        perm = torch.randperm(n, generator=generator)
        for s, e in zip([0, *stops[:-1]], stops, strict=True):
            batch = perm[s:e]
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
FIXED_COST_ROWS = (4 * 2048, 2048)  # a small expert: 4 mini-batches of 2048 per epoch, 2k validation rows
FIXED_COST_TARGET = 1.3


def bench_fixed_cost(bench: Trainbench, sizes: Sizes) -> Row:
    """Row per_epoch_fixed_cost: what an epoch of a small expert costs beyond its arithmetic. The real path
    (build_trainer's Trainer as a production run configures it: checkpoints, early stopping, loggers, progress,
    a plot event every plot_every epochs; fit as run_expert makes it) against the raw loop on the same rows,
    for as many epochs as baseline_v2 trains (or early stopping lets it): the mean epoch after the first of
    each, plot events and save points included. Each epoch's time is the least of the interleaved repeats (the
    same epoch does the same work in every repeat, plot events and save points included), so that a burst of
    other work on the machine does not decide the row."""
    from neuro_trigger.training.callbacks import TensorBoardPlots

    n_train, n_val = FIXED_COST_ROWS
    rows = (bench.train_rows[:n_train], bench.val_rows[:n_val])
    epochs = sizes.fixed_cost_epochs
    log(f"per-epoch fixed cost: expert 0's first {len(rows[0]):,} training and {len(rows[1]):,} validation rows, "
        f"{epochs} epochs, real path and raw loop ({sizes.fixed_cost_repeats} interleaved repeats)")
    ours_runs: list[list[float]] = []
    raw_runs: list[list[float]] = []
    counted = 0
    info: dict[str, Any] = {}
    for repeat in range(sizes.fixed_cost_repeats):
        if repeat % 2:  # the raw loop first every other repeat: a drift of the machine hits both sides alike
            raw_runs.append(bench.raw(2048, 1, counted, rows=rows).whole)
        ours_runs.append(bench.lightning(2048, epochs - 1, rows=rows).whole)
        counted = len(ours_runs[-1])  # early stopping may end it before `epochs`: the same epoch each repeat
        if not repeat % 2:
            raw_runs.append(bench.raw(2048, 1, counted, rows=rows).whole)
        trainer = bench.last_trainer
        plots = next(c for c in trainer.callbacks if isinstance(c, TensorBoardPlots))
        info = {"epochs_run": trainer.current_epoch, "plot_every": plots.every, "plot_events": plots.events,
                "key_figures_drawn": plots.figures, "save_points": trainer.checkpoint_callback.save_points}
    n = min(len(run) for run in ours_runs + raw_runs)
    ours_s = statistics.mean(min(run[i] for run in ours_runs) for i in range(n))
    raw_s = statistics.mean(min(run[i] for run in raw_runs) for i in range(n))
    ratio = ours_s / raw_s
    ours_means = [statistics.mean(run[:n]) for run in ours_runs]
    raw_means = [statistics.mean(run[:n]) for run in raw_runs]
    return Row(
        "per_epoch_fixed_cost", f"per-epoch cost of a small expert ({len(rows[0]):,} training rows: "
        f"{len(rows[0]) // 2048} mini-batches of 2048; {len(rows[1]):,} validation rows), the Trainer as "
        f"production configures it, {info['epochs_run']} epochs", ours_s * 1e3, "ms per epoch",
        "raw PyTorch loop, same rows, steps and validation, same process", raw_s * 1e3, ratio, "of the raw loop",
        f"<= {FIXED_COST_TARGET}x", ratio <= FIXED_COST_TARGET,
        f"mean of {n} epochs after the first, each the least of {len(ours_runs)} interleaved repeats (the "
        "repeats' own mean ratios "
        + ", ".join(f"{o / r:.2f}" for o, r in zip(ours_means, raw_means, strict=True))
        + f"); {info['plot_events']} plot events (every {info['plot_every']} epochs: residual histograms; "
        f"{info['key_figures_drawn']} key figures within their 5% time share), {info['save_points']} checkpoint "
        "save points, all included",
        extra={"ours_mean_s": ours_means, "raw_mean_s": raw_means, **info})


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
    """Informational: the real path at batch 2048 on two threads against one (what the thread plan's
    THREAD_EFFICIENCY stands for)."""
    import torch

    other = 1 if bench.threads > 1 else 2
    log(f"training, batch size 2048, {other} thread(s)")
    torch.set_num_threads(other)
    try:
        alt = bench.lightning(2048, sizes.measured_epochs[2048])
    finally:
        torch.set_num_threads(bench.threads)
    return Row("info_threads_1_vs_2", f"one expert alone, batch 2048, {bench.threads} thread(s) "
               "(the rows above)", ours_2048, "samples/s", f"the same with {other} torch thread(s)",
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
