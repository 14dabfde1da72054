"""The LightningModule of one expert: its network, its loss, its optimiser, and the validation metrics."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch

from neuro_trigger import registry
from neuro_trigger.data.dataset import Z_RANGE_CM
from neuro_trigger.training.batches import EVAL_SLICE_ROWS

Z_CM_PER_UNIT = (Z_RANGE_CM[1] - Z_RANGE_CM[0]) / 2  # a scaled z difference of 1 is this many cm


class ExpertModule(L.LightningModule):
    """Trains one expert network.

    A training batch is a chunk of K mini-batches (K x B x in); one optimiser step is taken per
    mini-batch (manual optimisation), so K only changes how often Lightning's loop runs.
    Validation sees the whole validation split and logs, besides val_loss, how it compares
    with the old network on the same rows.
    """

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        self.model = registry.build_model(config["model"], config["in_size"], config["out_size"], config["act"])
        self.loss_fn = registry.build_loss(config["loss"])
        self.automatic_optimization = False
        self._val_outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.last_validation: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        c = self.config
        return registry.build_optimizer(c["optim"], self.model.parameters(), c["learning_rate"], c["weight_decay"])

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # The torch optimizer itself, not Lightning's wrapper: manual_backward and the wrapper's step
        # dispatch three callback hooks per mini-batch (0.1-0.3 ms, as much as a step at batch 16).
        # Nothing here needs them: 32-bit precision, one device per expert, no callback uses them.
        optimizer = self.optimizers().optimizer
        clip = self.config["gradient_clip_val"]
        xs, ys = batch
        total = torch.zeros((), device=xs.device)
        for x, y in zip(xs, ys, strict=True):
            loss = self.loss_fn(self.model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
            optimizer.step()
            total += loss.detach()
        self._count_optimizer_steps(len(xs))
        mean = total / len(xs)
        if not torch.isfinite(mean):
            raise FloatingPointError(
                f"expert {self.config['expert']}: training loss became {mean.item()} in epoch {self.current_epoch}; "
                "lower learning_rate or set gradient_clip_val"
            )
        self.log("loss", mean, on_step=False, on_epoch=True, batch_size=xs.shape[0] * xs.shape[1])
        return mean

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
        pred, y, y_old = (torch.cat(t) for t in zip(*self._val_outputs, strict=True))
        self._val_outputs.clear()
        self.last_validation = (pred, y, y_old)
        loss = self.loss_fn(pred, y)
        old_loss = self.loss_fn(y_old, y)
        z_std = ((y[:, 0] - pred[:, 0]) * Z_CM_PER_UNIT).std() if len(y) > 1 else torch.tensor(float("nan"))
        old_std = ((y[:, 0] - y_old[:, 0]) * Z_CM_PER_UNIT).std() if len(y) > 1 else torch.tensor(float("nan"))
        self.log_dict(
            {
                "val_loss": loss,
                "val_loss_vs_old_loss": loss / old_loss,
                "val_z_diff_std": z_std,
                "val_z_diff_std_vs_old": z_std / old_std,
            },
            batch_size=len(y),
        )

    @torch.no_grad()
    def predict(self, x: torch.Tensor, slice_rows: int = EVAL_SLICE_ROWS) -> torch.Tensor:
        """Predictions for many rows, in slices (eval mode)."""
        was_training = self.training
        self.eval()
        out = torch.cat([self.model(x[i:i + slice_rows]) for i in range(0, len(x), slice_rows)]) if len(x) else \
            torch.empty(0, self.config["out_size"])
        self.train(was_training)
        return out
