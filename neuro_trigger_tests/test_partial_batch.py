"""Issue 23: every training row in every epoch. The last partial mini-batch is trained on by default (one more
optimiser step, its loss a mean over its rows, as the original trainer's DataLoaders with drop_last=False); the
config key `drop_last` restores equal-sized steps. With `dist` an epoch draws as many rows either way."""
from __future__ import annotations

import copy
import logging
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch

from neuro_trigger.config.errors import ConfigError
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.runner.api import train, warn_few_steps
from neuro_trigger.training import batches as batches_module
from neuro_trigger.training.batches import EvalBatches, TrainBatches
from neuro_trigger.training.expert import build_trainer, fit_expert
from neuro_trigger.training.module import ExpertModule

BATCH = 64
DIST = {"n_buckets": 5, "norm": {"mean": 0.0, "std": 0.5}}


def id_columns(n: int = 3000) -> tuple[torch.Tensor, torch.Tensor]:
    """x whose first column is the row's index (exact in float32), so a batch says which rows it holds; y in
    [-1, 1] from the other columns (the sampler buckets y[:, 0])."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(n, 27, generator=g) * 2 - 1
    y = torch.tanh(x[:, 1:3] * 3 + x[:, 5:7])
    x[:, 0] = torch.arange(n, dtype=torch.float32)
    return x, y


def epoch(batches: TrainBatches) -> list[np.ndarray]:
    """One epoch's mini-batches as arrays of the row indices they hold, in training order."""
    out = []
    for xs, ys in batches:
        assert xs.dim() == 3 and xs.shape[:2] == ys.shape[:2]
        out += [xb[:, 0].to(torch.int64).numpy() for xb in xs]
    return out


def some_rows(n: int) -> np.ndarray:
    """n distinct rows of id_columns, not in order and not a range (an expert's rows)."""
    return np.sort(np.random.default_rng(n).choice(3000, size=n, replace=False))


@pytest.mark.parametrize("n", [20 * BATCH + 17, 20 * BATCH, 9 * BATCH + 63, 2 * BATCH + 2, BATCH - 5])
def test_every_row_once_per_epoch_in_ceil_steps(monkeypatch, n: int) -> None:
    monkeypatch.setattr(batches_module, "SAMPLES_PER_CHUNK", 4 * BATCH)  # several chunks of 4 mini-batches
    rows = some_rows(n)
    batches = TrainBatches(*id_columns(), rows, BATCH, seed=7)
    orders = []
    for _ in range(3):
        minibatches = epoch(batches)
        assert len(minibatches) == -(-n // BATCH)  # one optimiser step per mini-batch
        sizes = [len(b) for b in minibatches]
        b = min(BATCH, n)
        assert sizes[:-1] == [b] * (len(sizes) - 1) and sizes[-1] == (n % b or b)  # the partial one comes last
        seen = np.concatenate(minibatches)
        assert np.array_equal(np.sort(seen), rows)  # every row exactly once
        orders.append(seen)
    assert len(batches) == sum(1 for _ in batches)  # what Lightning counts on for the epoch's last batch
    assert not np.array_equal(orders[0], orders[1])  # shuffled anew each epoch


@pytest.mark.parametrize("n", [20 * BATCH + 17, 20 * BATCH, 9 * BATCH + 1])
def test_drop_last_gives_floor_steps_of_whole_batches(monkeypatch, n: int) -> None:
    monkeypatch.setattr(batches_module, "SAMPLES_PER_CHUNK", 4 * BATCH)
    rows = some_rows(n)
    batches = TrainBatches(*id_columns(), rows, BATCH, seed=7, drop_last=True)
    for _ in range(2):
        minibatches = epoch(batches)
        assert len(minibatches) == n // BATCH and {len(b) for b in minibatches} == {BATCH}
        seen = np.concatenate(minibatches)
        assert len(np.unique(seen)) == len(seen) == n // BATCH * BATCH and np.isin(seen, rows).all()
    assert len(batches) == sum(1 for _ in batches)


def test_a_single_row_left_over_joins_the_last_batch() -> None:
    """One row left over would be a one-row step, which BatchNorm cannot train on: it joins the batch before."""
    n = 9 * BATCH + 1
    rows = some_rows(n)
    minibatches = epoch(TrainBatches(*id_columns(), rows, BATCH, seed=7))
    assert [len(b) for b in minibatches] == [BATCH] * 8 + [BATCH + 1]
    assert np.array_equal(np.sort(np.concatenate(minibatches)), rows)


def test_reweighted_sampling_draws_as_many_rows_either_way() -> None:
    """With `dist` an epoch draws one row per training row; drop_last only leaves the last draws untrained, and
    the draws themselves (so the next epochs too) are the same with and without it."""
    n = 20 * BATCH + 17
    rows = some_rows(n)
    x, y = id_columns()
    kept = TrainBatches(x, y, rows, BATCH, seed=7, dist=DIST)
    dropped = TrainBatches(x, y, rows, BATCH, seed=7, dist=DIST, drop_last=True)
    for _ in range(2):
        all_draws = epoch(kept)
        whole = epoch(dropped)
        assert len(all_draws) == len(whole) + 1 and len(all_draws[-1]) == 17
        assert sum(len(b) for b in all_draws) == n
        same = zip(all_draws[:-1], whole, strict=True)
        assert all(np.array_equal(a, b) for a, b in same)  # the same draws, in the same order
        assert np.isin(np.concatenate(all_draws), rows).all()


def expert_config(*overrides: str) -> dict:
    return resolve_config({"extends": "baseline_v2"}, [f"batch_size={BATCH}", "plot_every=1000",
                                                       "learning_rate=0.01", *overrides])["experts"]["expert_0"]


def fit_rows(tmp_path: Path, config: dict, rows: np.ndarray, drop_last: bool) -> tuple[L.Trainer, ExpertModule]:
    x, y = id_columns()
    x[:, 0] = 0.0  # the index column is no input
    val = np.arange(2500, 3000)
    L.seed_everything(config["seed"], verbose=False)
    module = ExpertModule(config)
    trainer, _ = build_trainer(config, tmp_path)
    fit_expert(trainer, module, TrainBatches(x, y, rows, config["batch_size"], seed=5, drop_last=drop_last),
               EvalBatches(x, y, y.flip(0), val))
    return trainer, module


@pytest.mark.parametrize("drop_last", [False, True])
def test_optimiser_steps_per_epoch(tmp_path: Path, drop_last: bool) -> None:
    """Through the real Trainer: ceil(rows / batch_size) steps per epoch by default, floor with drop_last; each
    step is a plain optimiser step on the mean loss of its mini-batch, the last partial one included."""
    epochs, n = 2, 20 * BATCH + 17
    config = expert_config(f"epochs={epochs}")
    rows = np.arange(n)
    L.seed_everything(config["seed"], verbose=False)
    reference = copy.deepcopy(ExpertModule(config).model)
    trainer, module = fit_rows(tmp_path, config, rows, drop_last)
    steps = -(-n // BATCH) if not drop_last else n // BATCH
    assert trainer.global_step == epochs * steps

    x, y = id_columns()
    x[:, 0] = 0.0
    optimizer = torch.optim.Adam(reference.parameters(), lr=config["learning_rate"],
                                 weight_decay=config["weight_decay"])
    same_order = TrainBatches(*id_columns(), rows, BATCH, seed=5, drop_last=drop_last)
    for _ in range(epochs):
        for ids in epoch(same_order):
            optimizer.zero_grad()
            ((reference(x[ids]) - y[ids]) ** 2).mean().backward()  # MSELoss: a mean over the batch's rows
            optimizer.step()
    for ours, theirs in zip(module.model.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_batchnorm_trains_when_one_row_is_left_over(tmp_path: Path) -> None:
    config = expert_config("epochs=1", "model=BaselineModelBN")
    trainer, _ = fit_rows(tmp_path, config, np.arange(9 * BATCH + 1), drop_last=False)
    assert trainer.global_step == 9


def test_seeded_fits_are_identical(tmp_path: Path) -> None:
    config = expert_config("epochs=2")
    rows = np.arange(20 * BATCH + 17)
    _, a = fit_rows(tmp_path / "a", config, rows, drop_last=False)
    _, b = fit_rows(tmp_path / "b", config, rows, drop_last=False)
    for ours, theirs in zip(a.model.state_dict().values(), b.model.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)


def test_the_key_is_validated_and_per_expert() -> None:
    base = resolve_config("baseline_v2")
    assert {c["drop_last"] for c in base["experts"].values()} == {False}
    mixed = resolve_config("baseline_v2", ["drop_last=True", "expert_2.drop_last=False"])
    assert {k: c["drop_last"] for k, c in mixed["experts"].items()} == {
        "expert_0": True, "expert_1": True, "expert_2": False, "expert_3": True, "expert_4": True}
    for bad in ("drop_last=1", "drop_last=yes", "expert_3.drop_last=None"):
        with pytest.raises(ConfigError, match="drop_last"):
            resolve_config("baseline_v2", [bad])
    with pytest.raises(ConfigError, match="drop_lst|drop_last"):
        resolve_config("baseline_v2", ["drop_lst=True"])


def test_few_steps_warning_counts_the_partial_batch(caplog) -> None:
    resolved = resolve_config("baseline_v2", ["expert_4.drop_last=True"])
    with caplog.at_level(logging.WARNING, logger="neuro_trigger"):
        warn_few_steps(resolved, {"expert_2": 7765, "expert_4": 7765, "expert_0": 7 * 2048 + 1})
    messages = {r.getMessage().split(":")[0]: r.getMessage() for r in caplog.records}
    assert "give 4 optimiser step(s)" in messages["expert_2"]  # 3 whole batches and the partial one
    assert "give 3 optimiser step(s)" in messages["expert_4"]  # drop_last
    assert "give 7 optimiser step(s)" in messages["expert_0"]  # the one row left over joins the last batch


@pytest.fixture(scope="module")
def solo_data(tmp_path_factory) -> dict[str, list[str]]:
    from neuro_trigger_tests.run_helpers import toy_splits

    return toy_splits(tmp_path_factory.mktemp("toy"), {"train": 1000, "val": 300, "test": 300}, seed=23)


@pytest.mark.parametrize(("keys", "steps"), [({}, 16), ({"drop_last": True}, 15)], ids=["default", "drop_last"])
def test_a_run_takes_its_steps_from_the_config(solo_data, tmp_path: Path, keys: dict, steps: int) -> None:
    """A debug run of one network on all 1000 training rows at batch size 64: 15 whole batches and one of 40."""
    config = {"extends": "baseline_v2", "data": solo_data, "epochs": 2, "batch_size": BATCH, "plot_every": 1000,
              **keys}
    result = train(config, solo=True, log_root=tmp_path, show_progress=False)
    last = torch.load(result.folder / "expert_-1" / "ckpts" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == 2 * steps
