"""Callbacks of an expert's Trainer: progress reports for the console view, plots to TensorBoard, and the expert's
hyperparameters with its final metrics for TensorBoard's HParams view (the checkpoints and early stopping:
training/checkpoints.py).

Everything here runs once per epoch of every expert, and a small expert's epoch takes milliseconds: each
callback does the least it can per epoch (docs/performance.md).
"""
from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger

from neuro_trigger.judge.figure_files import figure_to_array
from neuro_trigger.judge.plots import prediction_figures, residual_histograms

log = logging.getLogger("neuro_trigger")


class ProgressReport(L.Callback):
    """Sends (expert, epoch, val_loss, ...) to whoever shows progress: after the first and the last epoch,
    and in between at most every `every` seconds (a console line cannot be read faster; an epoch of a small
    expert takes milliseconds); within a long epoch at least every `heartbeat` seconds (the runner's sign of
    life). Notes in the expert's log when training starts (its first mini-batch) and when its last epoch has
    ended."""

    def __init__(self, expert: int, report: Callable[[dict], None], every: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, heartbeat: float = 10.0) -> None:
        self.expert = expert
        self.report = report
        self.every = every
        self.heartbeat = heartbeat
        self.clock = clock
        self._sent = -math.inf
        self._beat = -math.inf
        self._started = False

    def _send(self, trainer: L.Trainer, status: str) -> None:
        self._beat = self.clock()
        metrics = trainer.callback_metrics
        self.report({"expert": self.expert, "status": status, "epoch": trainer.current_epoch,
                     "max_epochs": trainer.max_epochs,
                     "val_loss": float(metrics.get("val_loss", math.nan)),
                     "val_loss_vs_old_loss": float(metrics.get("val_loss_vs_old_loss", math.nan))})

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._started:  # the first mini-batch follows at once (the benchmark's start-up row reads this)
            self._started = True
            log.info("expert %s: training starts at epoch %d", self.expert, trainer.current_epoch)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._beat = self.clock()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        # a sign of life within a long epoch, for the runner's watch on stalled experts
        if self.clock() - self._beat >= self.heartbeat:
            self._send(trainer, "training")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        now = self.clock()
        last = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        if last or now - self._sent >= self.every:
            self._sent = now
            self._send(trainer, "training")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        log.info("expert %s: training ended after epoch %d", self.expert, trainer.current_epoch - 1)


class TensorBoardPlots(L.Callback):
    """Every `every` epochs (a plot event) the expert's validation goes to TensorBoard: histograms of the z (and
    theta) residual of the new network (and the old network's once, at the first event), cheap enough for every
    event; and the key figures (`KEY_FIGURES`, the new and the old network in each, titled with the expert and
    the split) when drawing them keeps the time spent on figures within `share` of the training time so far (a
    figure takes far longer than a small expert's epoch). Every figure of the best network is drawn once the
    expert has trained (its plot jobs: expert_N/plots/ and TensorBoard)."""

    KEY_FIGURES = ("z_residual", "z_vs_reco")
    FIRST_ESTIMATE_S = 0.08  # per key figure, until one has been drawn

    def __init__(self, every: int, out_size: int, share: float = 0.05,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.every = every
        self.out_size = out_size
        self.share = share
        self.clock = clock
        self._start: float | None = None
        self._drawing = 0.0  # seconds spent on key figures in this fit
        self._estimate = self.FIRST_ESTIMATE_S * len(self.KEY_FIGURES)
        self._old_logged = False
        self.events = 0  # plot events of this fit
        self.figures = 0  # key figures drawn in this fit

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = self.clock()
        self._drawing, self.events, self.figures = 0.0, 0, 0

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        validation = getattr(pl_module, "last_validation", None)
        if validation is None or (epoch + 1) % self.every:
            return
        loggers = [lg for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
        if not loggers:
            return
        writer = loggers[0].experiment
        self.events += 1
        pred, y, y_old = (t.detach().float().cpu().numpy() for t in validation)
        for tag, hist in residual_histograms(y, pred, self.out_size).items():
            writer.add_histogram_raw(f"val/{tag}", global_step=epoch, **hist)
        if not self._old_logged:
            self._old_logged = True
            for tag, hist in residual_histograms(y, y_old, self.out_size).items():
                writer.add_histogram_raw(f"val/{tag}_old", global_step=epoch, **hist)
        if self._start is None:
            self._start = self.clock()
        if self._drawing + self._estimate > self.share * (self.clock() - self._start):
            return
        started = self.clock()
        expert = pl_module.config.get("expert") if isinstance(getattr(pl_module, "config", None), dict) else None
        figures = prediction_figures(y, pred, y_old, self.out_size, expert=expert, split="val",
                                     only=self.KEY_FIGURES)
        for name, fig in figures.items():
            writer.add_image(f"val/{name}", figure_to_array(fig), epoch, dataformats="HWC")
        self.figures += len(figures)
        self._estimate = self.clock() - started
        self._drawing += self._estimate


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
        # the epoch's validation has run (before any on_train_epoch_end hook); the checkpoint is written after
        # this callback (Lightning runs checkpoint callbacks last), so last.ckpt holds this epoch's record
        if trainer.sanity_checking:
            return
        self.epochs = trainer.current_epoch + 1
        metrics = trainer.callback_metrics
        loss = float(metrics.get(self.monitor, math.nan))
        if math.isfinite(loss) and loss < self.best.get("best_val_loss", math.inf):
            self.best = {"best_val_loss": loss, "best_epoch": trainer.current_epoch,
                         **{k: float(metrics.get(k, math.nan)) for k in self.FROM_BEST_EPOCH}}

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
