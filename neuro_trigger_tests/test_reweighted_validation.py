"""Early stopping and the best checkpoint follow what reweighted training aims at: the validation loss weighted
by the sampler's z distribution (val_reweighted_loss), chosen by the config key `monitor`; and a warning for
experts that would train only a few optimiser steps per epoch."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.config.errors import ConfigError
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.sampling import BucketSampler, bucket_weights
from neuro_trigger.runner.api import train
from neuro_trigger_tests.run_helpers import toy_splits


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    return toy_splits(tmp_path_factory.mktemp("reweighted_data"), {"train": 4000, "val": 1500, "test": 500}, 500)


def test_bucket_weights_give_each_bucket_its_probability():
    dist = {"n_buckets": 2, "inf_bounds": False, "uniform": {"lower": -1.0, "upper": 1.0}}
    z = np.array([-0.5, -0.2, -0.9, 0.4])
    w = bucket_weights(z, dist)
    np.testing.assert_allclose(w, [1 / 6, 1 / 6, 1 / 6, 1 / 2])
    # against the sampler itself: the weighted share of each bucket is what it draws
    rng = np.random.default_rng(1)
    z = np.clip(rng.normal(0, 0.2, 20000), -1, 1)
    dist = {"n_buckets": 10, "inf_bounds": True, "uniform": {"lower": -1.0, "upper": 1.0}}
    drawn = z[BucketSampler(z, dist, seed=3).sample(200000)]
    edges = np.linspace(-1, 1, 11)
    weighted, _ = np.histogram(z, edges, weights=bucket_weights(z, dist))
    sampled, _ = np.histogram(drawn, edges)
    np.testing.assert_allclose(weighted, sampled / sampled.sum(), atol=0.01)
    assert bucket_weights(z, dist).sum() == pytest.approx(1.0)


def test_monitor_needs_reweighting_and_defaults_to_it():
    assert resolve_config("baseline_v2")["global"]["monitor"] == "auto"
    with pytest.raises(ConfigError, match=r"-m monitor=val_reweighted_loss: key 'monitor': .*needs reweighted"):
        resolve_config("baseline_v2", ["monitor=val_reweighted_loss"])
    with pytest.raises(ConfigError, match=r"key 'monitor': unknown name 'loss'"):
        resolve_config("baseline_v2", ["monitor=loss"])


@pytest.mark.parametrize(("config", "monitor"), [
    ({"extends": "reweight_uniform"}, "val_reweighted_loss"),
    ({"extends": "reweight_uniform", "monitor": "val_loss"}, "val_loss"),
    ({"extends": "baseline_v2"}, "val_loss"),
])
def test_best_checkpoint_follows_the_monitored_loss(data, tmp_path, config, monitor):
    config = {**config, "data": data, "experts": [0], "epochs": 6, "batch_size": 128, "plot_every": 1000,
              "early_stopping_patience": 100}
    result = train(config, log_root=tmp_path, show_progress=False)
    assert result.ok
    state = json.loads((result.folder / "expert_0" / "status.json").read_text())
    assert state["monitor"] == monitor
    metrics = pd.read_csv(result.folder / "expert_0" / "csv" / "metrics.csv")
    assert ("val_reweighted_loss" in metrics) == (config["extends"] == "reweight_uniform")
    best = metrics.loc[metrics[monitor].idxmin()]
    assert state["best_checkpoint"] == f"best-epoch={int(best['epoch'])}.ckpt"
    assert state["best_val_loss"] == pytest.approx(best[monitor], rel=1e-5)


def test_few_steps_per_epoch_warn_once_per_expert(data, tmp_path, caplog):
    config = {"extends": "baseline_v2", "data": data, "experts": [0, 1], "epochs": 1, "plot_every": 1000,
              "expert_1": {"batch_size": 16}}
    with caplog.at_level(logging.WARNING, logger="neuro_trigger"):
        train(config, production=True, log_root=tmp_path, show_progress=False)
    warnings = [r.getMessage() for r in caplog.records if "optimiser step" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("expert_0: ") and "at batch_size 2048 give" in warnings[0]
    assert "fewer than 8" in warnings[0] and "-m expert_0.batch_size=" in warnings[0]
