"""Callbacks of an expert's Trainer: progress reports for the console view, and plots to TensorBoard."""
from __future__ import annotations

import math
from collections.abc import Callable

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
    """Follows the CPU thread count the runner grants (a shared integer), at each epoch start:
    when other experts finish, the ones still training take over the freed cores."""

    def __init__(self, threads) -> None:
        self.threads = threads

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        import torch

        wanted = self.threads.value
        if wanted != torch.get_num_threads():
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
