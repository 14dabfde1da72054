"""Callbacks of an expert's Trainer: progress reports for the console view, and plots to TensorBoard."""
from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from neuro_trigger.run.plots import figure_to_array, prediction_figures


class ProgressReport(L.Callback):
    """Sends (expert, epoch, val_loss, ...) after every epoch to whoever shows progress."""

    def __init__(self, expert: int, report: Callable[[dict], None]) -> None:
        self.expert = expert
        self.report = report

    def _send(self, trainer: L.Trainer, status: str) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.report({"expert": self.expert, "status": status, "epoch": trainer.current_epoch,
                     "max_epochs": trainer.max_epochs, "val_loss": metrics.get("val_loss", math.nan),
                     "val_loss_vs_old_loss": metrics.get("val_loss_vs_old_loss", math.nan)})

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._send(trainer, "training")


class ThreadShare(L.Callback):
    """Follows the CPU thread count the runner grants (a shared integer): when other experts finish,
    the ones still training may take over the freed cores.

    More threads pay only on free cores: on this project's 2-core machine two threads trained 1.5x
    faster than one when it was quiet, and 4x slower with other work on the cores. So a larger grant
    is tried on one window of chunks and kept only if its chunks train faster than those just before;
    a declined grant is tried again `retry_after` windows later. A smaller grant applies at once.
    """

    def __init__(self, threads, window: int = 8, retry_after: int = 64, clock=time.perf_counter) -> None:
        self.threads = threads
        self.window = window
        self.retry_after = retry_after
        self.clock = clock
        self._start = 0.0
        self._times: list[float] = []
        self._windows = 0
        self._baseline = math.inf  # median seconds per chunk in the window before a trial
        self._trial_from: int | None = None  # the thread count to go back to if the trial loses
        self._declined_at: int | None = None

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        self._start = self.clock()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        import torch

        self._times.append(self.clock() - self._start)
        if len(self._times) < self.window:
            return
        seconds = statistics.median(self._times)
        self._times.clear()
        self._windows += 1
        current = torch.get_num_threads()
        if self._trial_from is not None:
            if seconds >= self._baseline:
                torch.set_num_threads(self._trial_from)
                self._declined_at = self._windows
            self._trial_from = None
            return
        wanted = self.threads.value
        if wanted < current:
            torch.set_num_threads(wanted)
        elif wanted > current and (self._declined_at is None
                                   or self._windows - self._declined_at >= self.retry_after):
            self._baseline = seconds
            self._trial_from = current
            torch.set_num_threads(wanted)


class TensorBoardPlots(L.Callback):
    """Every `every` epochs, the validation plots of the expert go to TensorBoard as images."""

    def __init__(self, every: int, out_size: int) -> None:
        self.every = every
        self.out_size = out_size

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        validation = getattr(pl_module, "last_validation", None)
        if validation is None or (epoch + 1) % self.every:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        pred, y, y_old = (t.detach().cpu().numpy() for t in validation)
        for name, fig in prediction_figures(y, pred, y_old, self.out_size).items():
            loggers[0].experiment.add_image(f"val/{name}", figure_to_array(fig), epoch, dataformats="HWC")
