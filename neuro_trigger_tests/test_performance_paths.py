"""The per-epoch fast paths of issue 13 keep what they replaced: the module's own validation, checkpoints at save
points (and on an interruption, resumable), early stopping in floats, TensorBoard scalars written in batches."""
from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.training.batches import EvalBatches, TrainBatches
from neuro_trigger.training.expert import build_trainer, fit_expert
from neuro_trigger.training.module import ExpertModule

N_TRAIN, N_VAL, BATCH = 1200, 300, 64


def expert_config(epochs: int, *overrides: str) -> dict:
    return resolve_config({"extends": "baseline_v2"}, [f"epochs={epochs}", f"batch_size={BATCH}", "plot_every=1000",
                                                       *overrides])["experts"]["expert_0"]


def columns(n: int = N_TRAIN + N_VAL) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(11)
    x = torch.rand(n, 27, generator=g) * 2 - 1
    y = torch.tanh(x[:, :2] * 3 + x[:, 5:7])
    y_old = y + 0.2 * torch.randn(n, 2, generator=g)
    y_old[:7, 1] = float("nan")  # a few rows without an old network's output
    return x, y, y_old


def batches(x, y, y_old) -> tuple[TrainBatches, EvalBatches]:
    return (TrainBatches(x, y, np.arange(N_TRAIN), BATCH, seed=5),
            EvalBatches(x, y, y_old, np.arange(N_TRAIN, N_TRAIN + N_VAL)))


class Interrupt(L.Callback):
    """Ctrl-C (a KeyboardInterrupt) in the middle of the training batch `at` (counted over the whole fit)."""

    def __init__(self, at: int) -> None:
        self.at, self.seen = at, 0

    def on_train_batch_start(self, *args) -> None:
        self.seen += 1
        if self.seen == self.at:
            raise KeyboardInterrupt


def fit(expert_dir: Path, config: dict, *, lightning_validation: bool = False, resume: Path | None = None,
        callbacks: tuple = (), snapshot_every: float | None = None) -> tuple[L.Trainer, ExpertModule]:
    L.seed_everything(config["seed"], verbose=False)
    train, val = batches(*columns())
    trainer, checkpoint = build_trainer(config, expert_dir)
    if snapshot_every is not None:
        checkpoint.snapshot_every = snapshot_every
    trainer.callbacks.extend(callbacks)
    module = ExpertModule(config)
    if lightning_validation:
        trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=resume)
    else:
        try:
            fit_expert(trainer, module, train, val, ckpt_path=str(resume) if resume else None)
        except SystemExit:  # Lightning's answer to a KeyboardInterrupt
            pass
    return trainer, module


def test_own_validation_equals_lightnings_loop(tmp_path: Path) -> None:
    """The same weights, metrics.csv and callback metrics whichever runs the validation."""
    config = expert_config(3)
    ours, ours_module = fit(tmp_path / "ours", config)
    theirs, theirs_module = fit(tmp_path / "theirs", config, lightning_validation=True)
    a = pd.read_csv(tmp_path / "ours" / "csv" / "metrics.csv")
    b = pd.read_csv(tmp_path / "theirs" / "csv" / "metrics.csv")
    pd.testing.assert_frame_equal(a, b)
    assert a["val_loss_vs_old_loss"].notna().all() and len(a) == 3
    for name in ("loss", "val_loss", "val_loss_vs_old_loss", "val_z_diff_std", "val_z_diff_std_vs_old"):
        assert float(ours.callback_metrics[name]) == float(theirs.callback_metrics[name]), name
    assert float(ours.callback_metrics["val_loss"]) == pytest.approx(a["val_loss"].iloc[-1], rel=1e-6)
    for p, q in zip(ours_module.state_dict().values(), theirs_module.state_dict().values(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert ours.checkpoint_callback.best_model_path == theirs.checkpoint_callback.best_model_path.replace(
        "theirs", "ours")


def test_old_network_reference_is_the_rows_where_it_has_an_output() -> None:
    config = expert_config(1)
    module = ExpertModule(config)
    _, y, y_old = columns(50)
    both, old_loss, old_z_std = module._old_network_reference(y, y_old)
    assert both.sum() == 43
    assert float(old_loss) == pytest.approx(float(torch.nn.functional.mse_loss(y_old[7:], y[7:])), rel=1e-6)
    assert module._old_reference is None  # Lightning's loop (no set_validation): computed every epoch
    module.set_validation([])
    module._old_network_reference(y, y_old)
    assert module._old_reference is not None


def test_checkpoints_are_written_at_save_points_not_every_epoch(tmp_path: Path, monkeypatch) -> None:
    """First epoch, every `every` seconds, the last epoch; the best file follows the best epoch (weights only)
    and the older best files go; the loggers are flushed with last.ckpt."""
    from neuro_trigger.training import checkpoints

    saved: list[int] = []
    original = checkpoints.TimedCheckpoint._save_point

    def spy(self, trainer, module) -> None:
        saved.append(trainer.current_epoch)
        original(self, trainer, module)

    monkeypatch.setattr(checkpoints.TimedCheckpoint, "_save_point", spy)
    now = [0.0]
    config = expert_config(7)
    L.seed_everything(config["seed"], verbose=False)
    train, val = batches(*columns())
    trainer, checkpoint = build_trainer(config, tmp_path)
    checkpoint.clock = lambda: now[0]

    class Clock(L.Callback):
        def on_train_epoch_start(self, trainer, pl_module) -> None:
            now[0] += 4.0  # every epoch takes 4 s: a save point every third epoch at every=10 s
            if trainer.current_epoch == 2:  # metrics.csv is written at save points only: after epoch 0
                assert pd.read_csv(tmp_path / "csv" / "metrics.csv")["epoch"].tolist() == [0]

    trainer.callbacks.append(Clock())
    module = ExpertModule(config)
    fit_expert(trainer, module, train, val)
    assert saved == [0, 3, 6]
    table = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    best_epoch = int(table["val_loss"].idxmin())
    files = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert files == sorted(["last.ckpt", f"best-epoch={best_epoch}.ckpt"])
    best = torch.load(tmp_path / "ckpts" / f"best-epoch={best_epoch}.ckpt", weights_only=False)
    assert best["epoch"] == best_epoch and "optimizer_states" not in best
    assert float(checkpoint.best_model_score) == pytest.approx(table["val_loss"].min(), rel=1e-6)
    restored = ExpertModule.load_from_checkpoint(tmp_path / "ckpts" / f"best-epoch={best_epoch}.ckpt")
    assert restored.config == config
    last = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 6 and last["global_step"] == 7 * -(-N_TRAIN // BATCH)
    state = next(v for k, v in last["callbacks"].items() if k.startswith("ModelCheckpoint{"))  # the old key
    assert Path(state["best_model_path"]).name == f"best-epoch={best_epoch}.ckpt"


@pytest.mark.parametrize("at", [8, 21], ids=["chunk 2 of epoch 1", "chunk 3 of epoch 3"])
@pytest.mark.parametrize("snapshot_every", [0.0, 1e9], ids=["snapshot every epoch", "one snapshot"])
def test_an_interruption_leaves_an_end_of_epoch_state_and_resume_loses_nothing(tmp_path: Path, at: int,
                                                                               snapshot_every: float,
                                                                               monkeypatch) -> None:
    """Ctrl-C mid-epoch: last.ckpt is the state of an epoch's end (the latest snapshot, else the last save point),
    the best file it names exists, and a resumed fit ends with the same number of steps and one metrics row per
    epoch."""
    from neuro_trigger.training import batches as batches_module

    # chunks of 4 mini-batches: 5 per epoch, and the last mini-batch of 48 rows: 6 Lightning batches
    monkeypatch.setattr(batches_module, "SAMPLES_PER_CHUNK", 4 * BATCH)
    steps_per_epoch = -(-N_TRAIN // BATCH)  # 19
    config = expert_config(5)
    trainer, _ = fit(tmp_path, config, callbacks=(Interrupt(at),), snapshot_every=snapshot_every)
    interrupted_after = trainer.current_epoch
    assert trainer.interrupted and interrupted_after == (at - 1) // 6
    # the save point of epoch 0, then a snapshot at every epoch's end, or only at epoch 1's
    saved = interrupted_after if snapshot_every == 0.0 else min(interrupted_after, 2)
    assert trainer.checkpoint_callback.saved_epochs == saved
    last = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=False)
    assert last["epoch"] == saved - 1 and last["global_step"] == saved * steps_per_epoch
    best = next(v for k, v in last["callbacks"].items() if "Checkpoint" in k)["best_model_path"]
    assert Path(best).is_file()
    assert int(Path(best).stem.split("=")[1]) < saved
    assert sorted(p.name for p in (tmp_path / "ckpts").glob("best-*.ckpt")) == [Path(best).name]  # one best file
    first_rows = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert first_rows["epoch"].tolist() == list(range(interrupted_after))  # every epoch trained, flushed
    resumed, _ = fit(tmp_path, config, resume=tmp_path / "ckpts" / "last.ckpt")
    assert resumed.current_epoch == 5 and resumed.global_step == 5 * steps_per_epoch
    rows = pd.read_csv(tmp_path / "csv" / "metrics.csv")
    assert rows["epoch"].tolist() == list(range(saved, 5))  # run_expert puts the earlier rows before these
    files = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert files == sorted(["last.ckpt", Path(resumed.checkpoint_callback.best_model_path).name])



def test_patience_stopping_decides_as_lightnings_early_stopping() -> None:
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import EarlyStopping

    from neuro_trigger.training.checkpoints import PatienceStopping

    losses = [1.0, 0.8, 0.9, 0.8, 0.85, 0.7, 0.75, 0.71, 0.72, 0.9]
    for sequence in (losses, [*losses[:4], math.nan, 0.1]):
        decisions = []
        for callback in (EarlyStopping(monitor="val_loss", mode="min", patience=3), PatienceStopping("val_loss", 3)):
            trainer = SimpleNamespace(callback_metrics={}, should_stop=False, current_epoch=0, fast_dev_run=False,
                                      strategy=SimpleNamespace(reduce_boolean_decision=lambda d, all=True: d))
            states = []
            for epoch, loss in enumerate(sequence):
                trainer.current_epoch = epoch
                trainer.callback_metrics = {"val_loss": torch.tensor(loss)}
                callback._run_early_stopping_check(trainer)
                states.append((trainer.should_stop, callback.wait_count, float(callback.best_score)))
                if trainer.should_stop:
                    break
            decisions.append((states, callback.stopped_epoch, callback.stopping_reason))
        assert decisions[0] == decisions[1], sequence
    assert PatienceStopping("val_loss", 3).state_key == EarlyStopping(monitor="val_loss", mode="min").state_key


def test_checkpoint_callback_keeps_model_checkpoints_key(tmp_path: Path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    from neuro_trigger.training.checkpoints import TimedCheckpoint

    assert TimedCheckpoint(tmp_path, "val_loss").state_key == ModelCheckpoint(
        dirpath=tmp_path, filename="best-{epoch}", monitor="val_loss", mode="min", save_top_k=1,
        save_last=True).state_key


def test_buffered_tensorboard_scalars_carry_their_epochs_wall_time(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from neuro_trigger.training.checkpoints import BufferedTensorBoardLogger

    logger = BufferedTensorBoardLogger(str(tmp_path), name="tb", version="", default_hp_metric=False)
    logger.log_metrics({"loss": 1.5, "val_loss": torch.tensor(2.5), "epoch": 0}, step=0)
    logged_at = logger._pending[0][2]
    logger.log_metrics({"loss": 1.0, "val_loss": 2.0, "epoch": 1}, step=1)
    assert not list(tmp_path.glob("tb/events.*"))  # nothing written before a save point
    logger.save()
    logger.log_metrics({"loss": 0.5}, step=2)
    logger.finalize("success")
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss")] == [(0, 1.5), (1, 1.0), (2, 0.5)]
    assert [e.value for e in events.Scalars("val_loss")] == [2.5, 2.0]
    assert events.Scalars("loss")[0].wall_time == pytest.approx(logged_at)
