"""ExpertModule through the real Trainer equals a plain PyTorch loop over the same mini-batches."""
from __future__ import annotations

import copy
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.training.batches import EvalBatches, TrainBatches
from neuro_trigger.training.expert import build_trainer
from neuro_trigger.training.module import ExpertModule

N_TRAIN, N_VAL, BATCH = 2000, 500, 64


def expert_config(epochs: int, clip: float | None) -> dict:
    resolved = resolve_config({"extends": "baseline_v2"}, [f"epochs={epochs}", f"batch_size={BATCH}",
                                                           f"gradient_clip_val={clip}", "learning_rate=0.01"])
    return resolved["experts"]["expert_0"]


def columns(seed: int, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 27, generator=g) * 2 - 1
    y = torch.tanh(x[:, :2] * 3 + x[:, 5:7])
    return x, y, y.flip(0)


@pytest.mark.parametrize("clip", [None, 0.05])
def test_trainer_steps_equal_a_plain_loop(tmp_path: Path, clip: float | None) -> None:
    epochs = 2
    config = expert_config(epochs, clip)
    x, y, _ = columns(1, N_TRAIN)
    xv, yv, yv_old = columns(2, N_VAL)
    rows = np.arange(10, N_TRAIN - 7)  # not all rows, not a multiple of the batch size
    L.seed_everything(config["seed"], verbose=False)
    module = ExpertModule(config)
    model = copy.deepcopy(module.model)
    reference_batches = TrainBatches(x, y, rows, BATCH, seed=5)

    trainer, _ = build_trainer(config, tmp_path)
    trainer.fit(module, train_dataloaders=TrainBatches(x, y, rows, BATCH, seed=5),
                val_dataloaders=EvalBatches(xv, yv, yv_old, np.arange(N_VAL)))

    optimizer = torch.optim.Adam(model.parameters(), lr=config["learning_rate"],
                                 weight_decay=config["weight_decay"])
    loss_fn = torch.nn.MSELoss()
    steps = 0
    for _ in range(epochs):
        for xs, ys in reference_batches:
            for xb, yb in zip(xs, ys, strict=True):
                optimizer.zero_grad()
                loss_fn(model(xb), yb).backward()
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                steps += 1

    assert steps == epochs * -(-len(rows) // BATCH)  # the last, partial mini-batch too
    assert trainer.global_step == steps  # one per optimizer step, as Lightning's wrapper would count
    for ours, theirs in zip(module.model.state_dict().values(), model.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert (tmp_path / "ckpts" / "last.ckpt").is_file()
    saved = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=False)
    assert saved["global_step"] == steps and saved["epoch"] == epochs - 1
