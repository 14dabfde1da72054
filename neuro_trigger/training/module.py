"""The LightningModule of one expert: its network, its loss, its optimiser, and the validation metrics."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch

from neuro_trigger import registry
from neuro_trigger.data.dataset import Z_RANGE_CM
from neuro_trigger.training.batches import EVAL_SLICE_ROWS

Z_CM_PER_UNIT = (Z_RANGE_CM[1] - Z_RANGE_CM[0]) / 2  # a scaled z difference of 1 is this many cm


class ExpertModule(L.LightningModule):
    """Trains one expert network.

    A training batch is a chunk of K mini-batches (K x B x in), or the epoch's last, partial mini-batch
    (1 x R x in, TrainBatches); one optimiser step is taken per mini-batch (manual optimisation), its loss
    the loss function's mean over the mini-batch's rows, so K only changes how often Lightning's loop runs.
    Validation sees the whole validation split and logs, besides val_loss, how it compares
    with the old network on the same rows, and with reweighted sampling (`dist`) the validation loss
    weighted by the same z distribution (val_reweighted_loss). Given its batches by `set_validation`
    (as a run does, `training.expert.fit_expert`), the module validates itself right after the last
    chunk of each training epoch, where Lightning's validation loop would run, without that loop (its
    per-epoch overhead: docs/performance.md). Lightning's loop (``val_dataloaders``) still works the same way.

    The loggers get one record per epoch, written at the end of the training epoch (after its
    validation): the training loss and the validation metrics together, with the epoch as the
    step, so that metrics.csv has one row per epoch and TensorBoard's x axis is the epoch. The
    loggers are flushed by the checkpoint callback at its save points, not every epoch.
    ``trainer.callback_metrics`` (checkpoints, early stopping, progress) gets the same values directly,
    without ``self.log``'s bookkeeping.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        self.model = registry.build_model(config["model"], config["in_size"], config["out_size"], config["act"])
        self.loss_fn = registry.build_loss(config["loss"])
        self.weight_max = (config.get("fixed_point") or {}).get("weight_max")  # the hardware's bound, if any
        self.automatic_optimization = False
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last_validation: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self._epoch_loss_sum = torch.zeros(())  # sum of the mini-batch losses of the current epoch
        self._epoch_steps = 0
        self._epoch_val_metrics: dict[str, float] = {}
        self.val_weights: torch.Tensor | None = None  # per validation row: `set_val_weights`
        self._val_batches: Iterable | None = None  # `set_validation`
        self._validated = False  # in the current training epoch
        self._old_reference: tuple | None = None  # `_old_network_reference` of set_validation's batches

    def set_val_weights(self, weights: torch.Tensor) -> None:
        """Weights of the validation rows (in the order validation sees them, summing to 1) for
        `val_reweighted_loss`: the validation loss under the training sampler's z distribution."""
        self.val_weights = weights
        self._row_loss = registry.build_loss(self.config["loss"], reduction="none")

    def set_validation(self, batches: Iterable | None) -> None:
        """Validate on `batches` (``(x, y, y_old)`` slices, e.g. EvalBatches) after the last chunk of every
        training epoch, before any ``on_train_epoch_end`` hook; None: leave validation to Lightning's loop."""
        self._val_batches = batches
        self._old_reference = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        c = self.config
        return registry.build_optimizer(c["optim"], self.model.parameters(), c["learning_rate"], c["weight_decay"])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # The torch optimizer itself, not Lightning's wrapper: manual_backward and the wrapper's step
        # dispatch three callback hooks per mini-batch (0.1-0.3 ms, as much as a step at batch 16).
        # Nothing here needs them: one device per expert, no callback uses them. Autocast (the mixed
        # precisions) is Lightning's around this step; float16's gradient scaling is done here.
        optimizer = self.optimizers().optimizer
        clip = self.config["gradient_clip_val"]
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)  # a GradScaler with 16-mixed only
        xs, ys = batch
        total = torch.zeros((), device=xs.device)
        for x, y in zip(xs, ys, strict=True):
            loss = self.loss_fn(self.model(x), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                if clip is not None:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
                scaler.step(optimizer)
                scaler.update()
            if self.weight_max is not None:
                self._clip_weights()
            total += loss.detach()
        self._count_optimizer_steps(len(xs))
        self._epoch_loss_sum = self._epoch_loss_sum.to(total.device) + total  # no sync per step
        self._epoch_steps += len(xs)
        mean = total / len(xs)
        if not torch.isfinite(mean):
            raise FloatingPointError(
                f"expert {self.config['expert']}: training loss became {mean.item()} in epoch {self.current_epoch}; "
                "lower learning_rate or set gradient_clip_val"
            )
        return mean

    @torch.no_grad()
    def _clip_weights(self) -> None:
        """Every weight and bias into [-weight_max, weight_max] (config `fixed_point.weight_max`), so the network
        fits the hardware's weight width."""
        for parameter in self.model.parameters():
            parameter.clamp_(-self.weight_max, self.weight_max)

    def on_train_epoch_start(self) -> None:
        self._epoch_loss_sum = torch.zeros((), device=self.device)
        self._epoch_steps = 0
        self._epoch_val_metrics = {}
        self._validated = False

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._val_batches is not None and batch_idx + 1 >= self.trainer.num_training_batches:
            self._validate()

    def _validate(self) -> None:
        """One pass over the validation batches as Lightning's loop makes it (eval mode, inference mode, the
        precision plugin's input conversion and autocast context), then `on_validation_epoch_end`."""
        self._validated = True
        precision = self.trainer.precision_plugin
        was_training = self.training
        self.train(False)
        try:
            with torch.inference_mode():
                for i, batch in enumerate(self._val_batches):
                    with precision.val_step_context():
                        self.validation_step(precision.convert_input(batch), i)
                self.on_validation_epoch_end()
        finally:
            self.train(was_training)

    def on_train_epoch_end(self) -> None:
        """The epoch's one record for the loggers: mean training loss (over its mini-batches, as the
        epoch value of ``loss`` is) and the metrics of the validation that ran in this epoch."""
        if self._val_batches is not None and not self._validated:  # the epoch had no chunk, or no length
            self._validate()
        row: dict[str, float] = {}
        if self._epoch_steps:
            row["loss"] = float(self._epoch_loss_sum) / self._epoch_steps
            self._publish({"loss": torch.tensor(row["loss"])})
        row.update(self._epoch_val_metrics)
        if not row:
            return
        row["epoch"] = self.current_epoch
        for logger in self.loggers:
            logger.log_metrics(row, step=self.current_epoch)

    def _publish(self, metrics: dict[str, torch.Tensor]) -> None:
        """Epoch-level values (0-dim CPU tensors, what ``self.log`` leaves there) into ``trainer.callback_metrics``:
        checkpoints, early stopping and the progress reports read them from there."""
        trainer = self._trainer
        if trainer is not None:
            trainer.callback_metrics.update(metrics)

    def _count_optimizer_steps(self, steps: int) -> None:
        """Advance trainer.global_step as Lightning's optimizer wrapper would have, one per step taken
        (checkpoints and loggers key on it)."""
        progress = self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress
        for _ in range(steps):
            progress.increment_ready()
            progress.increment_completed()

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        x, y, y_old = batch
        self._val_outputs.append((self.model(x), y, y_old))

    def on_validation_epoch_end(self) -> None:
        if not self._val_outputs:
            return
        outputs = self._val_outputs
        pred, y, y_old = outputs[0] if len(outputs) == 1 else (torch.cat(t) for t in zip(*outputs, strict=True))
        self._val_outputs = []
        self.last_validation = (pred, y, y_old)
        loss = self.loss_fn(pred, y)
        z_std = _z_std(y, pred)
        both, old_loss, old_z_std = self._old_network_reference(y, y_old)
        if both is None:
            loss_b, z_std_b = loss, z_std
        else:
            pb, yb = pred[both], y[both]
            loss_b, z_std_b = self.loss_fn(pb, yb), _z_std(yb, pb)
        metrics = {
            "val_loss": loss,
            "val_loss_vs_old_loss": loss_b / old_loss,
            "val_z_diff_std": z_std,
            "val_z_diff_std_vs_old": z_std_b / old_z_std,
        }
        if self.val_weights is not None:
            per_row = self._row_loss(pred, y).mean(dim=1)
            metrics["val_reweighted_loss"] = (per_row * self.val_weights.to(per_row.device, per_row.dtype)).sum()
        stacked = torch.stack([m.float() for m in metrics.values()]).cpu()
        values = dict(zip(metrics, stacked.tolist(), strict=True))  # one transfer, one sync
        if not math.isfinite(values["val_loss"]) and not self.trainer.sanity_checking:
            raise FloatingPointError(
                f"expert {self.config['expert']}: validation loss became {values['val_loss']} in epoch "
                f"{self.current_epoch}; lower learning_rate or set gradient_clip_val"
            )
        self._publish(dict(zip(metrics, stacked.unbind(), strict=True)))
        if not self.trainer.sanity_checking:
            self._epoch_val_metrics = values

    def _old_network_reference(self, y: torch.Tensor, y_old: torch.Tensor):
        """(the rows where the old network has an output, None for all; its loss and z residual std there).

        The old network is compared on the rows where it has an output (compare_to of a run that lacked
        experts, or a NaN in the data's old columns, leaves some without); usually that is every row. With
        the batches of `set_validation` this is the same every epoch: computed once."""
        if self._old_reference is not None:
            return self._old_reference
        both = torch.isfinite(y_old).all(dim=1)
        mask = None if bool(both.all()) else both
        yb, ob = (y, y_old) if mask is None else (y[mask], y_old[mask])
        reference = (mask, self.loss_fn(ob, yb), _z_std(yb, ob))
        if self._val_batches is not None:
            self._old_reference = reference
        return reference

    @torch.no_grad()
    def predict(self, x: torch.Tensor, slice_rows: int = EVAL_SLICE_ROWS) -> torch.Tensor:
        """Predictions for many rows, in slices (eval mode)."""
        was_training = self.training
        self.eval()
        out = torch.cat([self.model(x[i:i + slice_rows]) for i in range(0, len(x), slice_rows)]) if len(x) else \
            torch.empty(0, self.config["out_size"])
        self.train(was_training)
        return out


def _z_std(y: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the z residual in cm; NaN for fewer than two rows."""
    return ((y[:, 0] - pred[:, 0]) * Z_CM_PER_UNIT).std() if len(y) > 1 else torch.tensor(float("nan"))
