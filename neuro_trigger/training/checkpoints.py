"""What an expert's training keeps on disk, and when: the best and the last checkpoint (`TimedCheckpoint`),
early stopping that reads its metric as a float (`PatienceStopping`), and TensorBoard scalars written at the
checkpoint's save points (`BufferedTensorBoardLogger`). Writing both checkpoints and flushing the loggers
after every epoch cost as much as a small expert's training (docs/performance.md)."""
from __future__ import annotations

import copy
import csv
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.utilities import rank_zero_only

SAVE_EVERY_S = 10.0  # last.ckpt and the loggers at least this often (and after the first and the last epoch)
SNAPSHOT_EVERY_S = 0.5  # the state an interruption writes is at most this old (plus the epoch under way)


class TimedCheckpoint(ModelCheckpoint):
    """The expert's two checkpoints, written at save points rather than after every epoch:

    - ``best-epoch=N.ckpt``: the weights of the epoch with the lowest monitored loss so far (weights only: what
      the run keeps and predicts with). An epoch that improves on the best has its weights copied in memory;
      the file is written at the next save point or snapshot.
    - ``last.ckpt``: the whole training state at the end of an epoch (Lightning's checkpoint), to resume from.

    Save points: the end of the first epoch of a fit, of the first epoch ending `every` seconds or more after
    the last save point, and of the last epoch (max_epochs or early stopping). At each, the pending best file,
    then last.ckpt (which names it), then the loggers, then best files no checkpoint names any more are removed.
    In between, at most every `snapshot_every` seconds, an epoch's end is kept in memory as a whole checkpoint
    (its best file written first, as it names it). An interruption (Ctrl-C, SIGTERM, SIGHUP: a
    KeyboardInterrupt) writes that snapshot as last.ckpt, so a resume starts after the last completed epoch at
    most `snapshot_every` seconds before the stop; the epochs after it are trained again, and their metrics rows
    are replaced (run_expert). An expert killed outright (SIGKILL) resumes from the last save point. Every file
    is written under a temporary name and renamed, so it is whole or absent whenever a stop comes.

    A subclass of ModelCheckpoint, with its state (best_model_path, best_model_score, last_model_path) under
    ModelCheckpoint's key in a checkpoint, so that runs of earlier versions resume as before.
    """

    def __init__(self, dirpath: Path | str, monitor: str, every: float = SAVE_EVERY_S,
                 snapshot_every: float = SNAPSHOT_EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(dirpath=dirpath, filename="best-{epoch}", monitor=monitor, mode="min", save_top_k=1,
                         save_last=True)
        self.every = every
        self.snapshot_every = snapshot_every
        self.clock = clock
        self.save_points = 0  # of this fit
        self.saved_epochs = 0  # epochs trained in the state last.ckpt holds
        self._saved_at: float | None = None  # clock() of the last save point of this fit
        self._snapshot_at = -math.inf
        self._snapshot: dict[str, Any] | None = None  # a whole checkpoint of an epoch's end, not on disk
        self._state_refs: dict[str, torch.Tensor] = {}  # the module's state_dict: its tensors change in place
        self._pending_best: tuple[int, int, float, dict[str, torch.Tensor]] | None = None  # epoch, step, loss, weights
        self._spare: dict[str, torch.Tensor] | None = None  # a weights buffer for the next best
        self._best_value = math.inf

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's key: a checkpoint of an earlier version resumes with its best and last paths."""
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    # ModelCheckpoint's hooks that would save (or check whether to) at other moments: not here
    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        pass

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pass

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self.save_points = 0
        self.saved_epochs = trainer.current_epoch  # a resumed fit: the epochs of the checkpoint it started from
        self._saved_at, self._snapshot, self._snapshot_at = None, None, -math.inf
        self._state_refs = pl_module.state_dict()
        self._pending_best, self._spare = None, None
        self._best_value = math.inf if self.best_model_score is None else float(self.best_model_score)  # resumed

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.state.fn != "fit":
            return
        current = trainer.callback_metrics.get(self.monitor)
        if current is None:
            raise RuntimeError(f"the checkpoint follows {self.monitor!r}, which validation did not give "
                               f"(it gave {sorted(trainer.callback_metrics)})")
        value = float(current)
        if math.isnan(value):
            value = math.inf  # as ModelCheckpoint: a NaN epoch is never better than a finite one
        no_best_yet = self._pending_best is None and self.best_model_score is None  # the first epoch is the best
        if no_best_yet or value < self._best_value:
            self._new_best(trainer.current_epoch, trainer.global_step, value)
        last_epoch = trainer.current_epoch + 1 >= (trainer.max_epochs or 0) or trainer.should_stop
        now = self.clock()
        if last_epoch or self._saved_at is None or now - self._saved_at >= self.every:
            self._save_point(trainer, pl_module)
        elif now - self._snapshot_at >= self.snapshot_every:
            self._snapshot_at = now
            self._write_best(pl_module)  # the snapshot names it; older best files stay until a last.ckpt does
            self._snapshot = copy.deepcopy(trainer._checkpoint_connector.dump_checkpoint(weights_only=False))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # the last epoch saved itself; this covers a fit ended by other means (a limit of Lightning's)
        if self._snapshot is not None or self._pending_best is not None:
            self._save_point(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """Interrupted (a KeyboardInterrupt): the snapshot, if newer than the last save point, becomes last.ckpt.
        Bests found after it belong to epochs a resume trains again; the other best files go, as at a save point,
        so an interrupted expert keeps one best file. Other exceptions (a diverging loss) leave
        the files of the last save point. Lightning flushes the loggers next (finalize)."""
        snapshot, self._snapshot = self._snapshot, None
        if isinstance(exception, KeyboardInterrupt) and snapshot is not None:
            _atomic_torch_save(snapshot, self._last_path())
            self.saved_epochs = int(snapshot["epoch"]) + 1
            self._remove_stale_best()  # last.ckpt on disk now names the snapshot's best, the latest written
        for logger in trainer.loggers:
            if isinstance(logger, BufferedTensorBoardLogger):
                logger.discard_from(self.saved_epochs)

    # ------------------------------------------------------------------------------------------ internals
    def _new_best(self, epoch: int, global_step: int, value: float) -> None:
        """This epoch's weights into a buffer (reused: a fresh allocation each time cost up to ten times the copy);
        the pending best is replaced by one assignment, so a stop during the copy leaves the previous one whole."""
        buffer, self._spare = self._spare, None
        if buffer is None:
            buffer = {k: torch.empty_like(v) for k, v in self._state_refs.items()}
        with torch.no_grad():
            for k, v in self._state_refs.items():
                buffer[k].copy_(v)
        previous, self._pending_best = self._pending_best, (epoch, global_step, value, buffer)
        self._best_value = value
        if previous is not None:
            self._spare = previous[3]

    def _save_point(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write_best(pl_module)
        trainer.save_checkpoint(self._last_path(), weights_only=False)  # atomic: Lightning writes it in a transaction
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = self.last_model_path
        self._snapshot = None
        self.saved_epochs = trainer.current_epoch + 1
        for logger in trainer.loggers:
            logger.save()
        self._remove_stale_best()
        self._saved_at = self.clock()
        self.save_points += 1

    def _write_best(self, pl_module: L.LightningModule) -> None:
        """The pending best as a weights-only checkpoint, then ModelCheckpoint's record of it (part of the state
        written next): the record never names a file that is not whole on disk."""
        pending = self._pending_best
        if pending is None:
            return
        epoch, global_step, value, weights = pending
        path = self.format_checkpoint_name({"epoch": epoch})
        _atomic_torch_save({"epoch": epoch, "global_step": global_step, "pytorch-lightning_version": L.__version__,
                            "state_dict": weights, "hparams_name": "kwargs",
                            "hyper_parameters": dict(pl_module.hparams)}, path)
        score = torch.tensor(value)
        self.best_model_path = self.kth_best_model_path = path
        self.best_model_score = self.current_score = self.kth_value = score
        self.best_k_models = {path: score}
        self._pending_best, self._spare = None, weights

    def _last_path(self) -> str:
        self.last_model_path = self.format_checkpoint_name({}, self.CHECKPOINT_NAME_LAST)
        return self.last_model_path

    def _remove_stale_best(self) -> None:
        """Best files other than the one last.ckpt names (an earlier best, a snapshot's, a resumed fit's)."""
        if not self.dirpath or not self.best_model_path:
            return
        keep = os.path.abspath(self.best_model_path)
        for path in Path(self.dirpath).glob("best-*.ckpt"):
            if os.path.abspath(path) != keep:
                path.unlink(missing_ok=True)


class PatienceStopping(EarlyStopping):
    """Lightning's EarlyStopping (the same settings, state, and key among a checkpoint's callback states), its
    check done in Python floats rather than 0-dim tensors and a message formatted every epoch. Mode "min" only,
    no thresholds (what build_trainer configures): stop once the monitored loss is not finite, or has not
    improved (by more than min_delta) for `patience` epochs."""

    def __init__(self, monitor: str, patience: int, min_delta: float = 0.0) -> None:
        super().__init__(monitor=monitor, mode="min", patience=patience, min_delta=min_delta)

    @property
    def state_key(self) -> str:
        """EarlyStopping's key: a checkpoint of an earlier version resumes with its patience count."""
        return super().state_key.replace(type(self).__qualname__, "EarlyStopping", 1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """A fit resumed from a checkpoint of the epoch that stopped it early trains no further epoch: Lightning
        restores this callback's state, not the trainer's should_stop, and would train one more (its result
        then stops it again)."""
        super().on_train_start(trainer, pl_module)
        if self.wait_count >= self.patience or self.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
            trainer.should_stop = True

    def _run_early_stopping_check(self, trainer: L.Trainer) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None or trainer.fast_dev_run:
            super()._run_early_stopping_check(trainer)  # Lightning's error, or its warning, for a missing metric
            return
        current = float(value)
        reason = None
        if self.check_finite and not math.isfinite(current):
            self.stopping_reason = EarlyStoppingReason.NON_FINITE_METRIC
            reason = (f"Monitored metric {self.monitor} = {current} is not finite. Previous best value was "
                      f"{float(self.best_score):.3f}. Signaling Trainer to stop.")
        elif current - self.min_delta < float(self.best_score):  # min_delta is negative in mode "min"
            self.best_score = torch.tensor(current)
            self.wait_count = 0
        else:
            self.wait_count += 1
            if self.wait_count >= self.patience:
                self.stopping_reason = EarlyStoppingReason.PATIENCE_EXHAUSTED
                reason = (f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records. "
                          f"Best score: {float(self.best_score):.3f}. Signaling Trainer to stop.")
        if reason is not None:
            trainer.should_stop = True
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason


class BufferedTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoardLogger, its scalars kept in memory until the next save point (``save``, called by
    TimedCheckpoint; ``finalize``, at the end or on an exception) and written then, each with the wall time of
    the epoch that logged it, all values of a record in one event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending: list[tuple[dict[str, Any], int | None, float]] = []

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self._pending.append((dict(metrics), step, time.time()))

    def _write_pending(self) -> None:
        """One event per logged record, its values as scalars (``simple_value``, what ``add_scalar`` writes)."""
        from tensorboard.compat.proto.summary_pb2 import Summary

        pending, self._pending = self._pending, []
        writer = self.experiment
        for metrics, step, walltime in pending:
            values = []
            for name, value in metrics.items():
                if isinstance(value, dict):
                    writer.add_scalars(name, value, step, walltime=walltime)
                else:
                    values.append(Summary.Value(tag=name, simple_value=float(value)))
            if values:
                writer.file_writer.add_summary(Summary(value=values), step, walltime)

    def discard_from(self, epoch: int) -> None:
        """Forget the records of epochs from `epoch` on: the last checkpoint does not hold them, so a resume
        trains and logs them again (written now, they would stand twice in TensorBoard)."""
        self._pending = [record for record in self._pending if record[1] is None or record[1] < epoch]

    @rank_zero_only
    def save(self) -> None:
        self._write_pending()
        super().save()

    @rank_zero_only
    def finalize(self, status: str) -> None:
        if self._pending:
            self._write_pending()
        super().finalize(status)


def _atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save under a temporary name, then renamed: a file is whole or absent, whenever a stop comes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.part")
    torch.save(obj, partial)
    os.replace(partial, path)


class KeptCSVLogger(CSVLogger):
    """Lightning's CSVLogger, except that a resumed fit keeps the rows of the epochs before `first_epoch` in
    metrics.csv (Lightning deletes the file when its writer starts, and a job killed before the end of its fit
    could not put them back): rows from `first_epoch` on go, as a resume trains those epochs again, and the
    new rows are appended. The file is rewritten whole under a temporary name, so no stop loses a row."""

    def __init__(self, *args: Any, first_epoch: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_epoch = first_epoch

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            path = Path(self.log_dir) / ExperimentWriter.NAME_METRICS_FILE
            header = _keep_rows_before(path, self.first_epoch)
            self._experiment = _KeepingWriter(log_dir=self.log_dir)
            self._experiment.metrics_keys = header  # the columns already in the file, in its order
        return self._experiment


class _KeepingWriter(ExperimentWriter):
    def _check_log_dir_exists(self) -> None:
        """Lightning's writer deletes an existing metrics.csv here; this one keeps it (KeptCSVLogger)."""


def _keep_rows_before(path: Path, epoch: int) -> list[str]:
    """metrics.csv without its rows of epochs from `epoch` on; returns its header ([] when there is no file)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [row for row in reader if row.get("epoch") and float(row["epoch"]) < epoch]
            header = list(reader.fieldnames or [])
    except FileNotFoundError:
        return []
    if not rows:
        path.unlink()
        return []
    partial = path.with_name(f".{path.name}.part")
    with open(partial, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(partial, path)
    return header
