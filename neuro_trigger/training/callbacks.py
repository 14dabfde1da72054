"""Callbacks of an expert's Trainer: progress reports for the console view, plots to TensorBoard, and the
expert's hyperparameters with its final metrics for TensorBoard's HParams view."""
from __future__ import annotations

import json
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
    """Every `every` epochs, the validation plots of the expert go to TensorBoard as images (the new and the
    old network in one figure, titled with the expert and the split)."""

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
        expert = pl_module.config.get("expert") if isinstance(getattr(pl_module, "config", None), dict) else None
        for name, fig in prediction_figures(y, pred, y_old, self.out_size, expert=expert, split="val").items():
            loggers[0].experiment.add_image(f"val/{name}", figure_to_array(fig), epoch, dataformats="HWC")


def flatten_config(config: dict[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """A nested config as flat "a.b" keys with values TensorBoard's HParams view takes: str, int, float and
    bool stay as they are; None becomes "None", lists and anything else their JSON (or str) text."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, str | bool | int | float):
            flat[name] = value
        elif value is None:
            flat[name] = "None"
        else:
            try:
                flat[name] = json.dumps(value, sort_keys=True, default=str)
            except ValueError:  # a circular structure: never in a resolved config, but say something
                flat[name] = str(value)
    return flat


class HParamsSummary(L.Callback):
    """At the end of training, the expert's TensorBoard run gets its hyperparameters (the resolved config of the
    expert, flattened by `flatten_config`) with its final metrics, so that TensorBoard's HParams view compares
    runs across versions and configs.

    The metrics (tags "hparams/..."): best_val_loss (of the monitored loss), best_epoch and, from the same
    epoch, val_z_diff_std,
    val_z_diff_std_vs_old and val_loss_vs_old_loss, as the best checkpoint (the network the run keeps) scored
    them; and epochs, the number of epochs trained. They are logged as scalars at the last epoch's step, like
    every epoch-level scalar of the run. The callback's record goes into checkpoints, so a resumed training
    still reports the best of all its epochs.
    """

    FROM_BEST_EPOCH = ("val_z_diff_std", "val_z_diff_std_vs_old", "val_loss_vs_old_loss")

    def __init__(self, config: dict[str, Any] | None = None, monitor: str = "val_loss") -> None:
        self.config = config  # None: the module's config
        self.monitor = monitor  # the loss that picks the best epoch, as the best checkpoint is picked
        self.best: dict[str, float] = {}  # best_val_loss, best_epoch and FROM_BEST_EPOCH of that epoch
        self.epochs = 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.epochs = trainer.current_epoch + 1

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # here, not at the epoch's end: the checkpoints are saved at the validation's end too (after this
        # callback: Lightning runs ModelCheckpoint last), so last.ckpt holds this epoch's record
        if trainer.sanity_checking:
            return
        self.epochs = trainer.current_epoch + 1
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")}
        loss = metrics.get(self.monitor, math.nan)
        if math.isfinite(loss) and loss < self.best.get("best_val_loss", math.inf):
            self.best = {"best_val_loss": loss, "best_epoch": trainer.current_epoch,
                         **{k: metrics.get(k, math.nan) for k in self.FROM_BEST_EPOCH}}

    def final_metrics(self) -> dict[str, float]:
        """The metrics logged beside the hyperparameters, by their TensorBoard tag."""
        values = {"best_val_loss": math.nan, "best_epoch": math.nan,
                  **{k: math.nan for k in self.FROM_BEST_EPOCH}, **self.best, "epochs": self.epochs}
        return {f"hparams/{k}": float(v) for k, v in values.items()}

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        config = self.config if self.config is not None else getattr(pl_module, "config", None)
        if not loggers or not isinstance(config, dict):
            return
        loggers[0].log_hyperparams(flatten_config(config), self.final_metrics(), step=max(self.epochs - 1, 0))
        loggers[0].experiment.flush()

    def state_dict(self) -> dict[str, Any]:
        return {"best": dict(self.best), "epochs": self.epochs}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = dict(state_dict.get("best", {}))
        self.epochs = int(state_dict.get("epochs", 0))
