"""Faults lose nothing that was done, and runs reproduce: killed experts, Ctrl-C, --resume, NaN loss,
runs started together, byte-identical weights for the same seed."""
from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.runner.api import train
from neuro_trigger_tests.run_helpers import start, status, wait_for


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    folder = tmp_path_factory.mktemp("reliability_data")
    paths = {}
    for i, (split, n) in enumerate({"train": 6000, "val": 1500, "test": 1500}.items()):
        path = folder / f"{split}.gz"
        write_table(generate(n, seed=200 + i), path)
        paths[split] = [str(path)]
    return paths


def summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def data_arg(data: dict) -> str:
    return "data=" + repr(data)


@pytest.mark.slow
def test_killed_expert_fails_alone(data, tmp_path):
    """SIGKILL on one expert's process: the other finishes and its results are complete; exit code 1."""
    proc = start("baseline_v2", "-p", "-d", "kill test", "--log-root", str(tmp_path), "-m", data_arg(data),
                     "experts=[0, 3]", "batch_size=64", "plot_every=1000", "expert_0.epochs=4",
                     "expert_3.epochs=100000", "early_stopping_patience=100000")
    folder = tmp_path / "baseline_v2" / "version_0"
    wait_for(lambda: (folder / "expert_3" / "ckpts" / "last.ckpt").exists() and status(folder, "expert_3").get("pid"),
             "expert_3 to train an epoch")
    os.kill(status(folder, "expert_3")["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    result = summary(folder)
    assert result["status"] == "failed"
    assert result["experts"]["expert_3"]["status"] == "failed"
    assert "SIGKILL" in result["experts"]["expert_3"]["error"]
    assert result["experts"]["expert_0"]["status"] == "finished"
    assert set(json.loads((folder / "weights.json").read_text())) == {"expert_0"}
    table = pd.read_csv(folder / "pred_data_val.csv", sep="\t")
    assert table.loc[table["Expert"] == 0, "NewZ"].notna().all()
    assert table.loc[table["Expert"] == 3, "NewZ"].isna().all()
    assert (folder / "expert_0" / "plots" / "test" / "z_residual.png").exists()


@pytest.mark.slow
def test_ctrl_c_stops_every_expert_and_resume_finishes_the_run(data, tmp_path):
    """Ctrl-C: every expert stops within seconds, checkpoints stay, summary says interrupted with the
    epochs done; --resume continues the unfinished expert and leaves the finished one alone."""
    proc = start("baseline_v2", "-p", "-d", "ctrl-c test", "--log-root", str(tmp_path), "-m", data_arg(data),
                     "experts=[0, 3]", "batch_size=16", "plot_every=1000", "early_stopping_patience=1000",
                     "expert_3.epochs=1", "expert_0.epochs=40")
    folder = tmp_path / "baseline_v2" / "version_0"
    wait_for(lambda: status(folder, "expert_3").get("status") == "finished"
             and len(list((folder / "expert_0" / "ckpts").glob("best-*.ckpt"))) > 0
             and (folder / "expert_0" / "ckpts" / "last.ckpt").exists(), "expert_0 to train and expert_3 to finish")
    time.sleep(1.0)
    sent = time.time()
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal does on Ctrl-C: the whole process group
    _, err = proc.communicate(timeout=120)
    stopped_after = time.time() - sent
    assert proc.returncode == 130, err
    assert stopped_after < 30
    result = summary(folder)
    assert result["status"] == "interrupted"
    expert_0 = result["experts"]["expert_0"]
    assert expert_0["status"] == "interrupted" and 1 <= expert_0["epochs_done"] < 40
    assert result["experts"]["expert_3"]["status"] == "finished"
    assert (folder / "expert_0" / "ckpts" / "last.ckpt").exists()
    assert "interrupted" in (tmp_path / "log.txt").read_text()
    finished_before = status(folder, "expert_3")
    ckpt_times = {p.name: p.stat().st_mtime_ns for p in (folder / "expert_3" / "ckpts").iterdir()}
    shutil.rmtree(folder / "expert_3" / "plots", ignore_errors=True)  # as if Ctrl-C came while they were drawn

    resumed = start("--resume", str(folder))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    result = summary(folder)
    assert result["status"] == "finished"
    assert result["experts"]["expert_0"]["epochs_done"] == 40
    assert status(folder, "expert_3") == finished_before
    assert {p.name: p.stat().st_mtime_ns for p in (folder / "expert_3" / "ckpts").iterdir()} == ckpt_times
    epochs = pd.read_csv(folder / "expert_0" / "csv" / "metrics.csv").dropna(subset=["val_loss"])["epoch"]
    assert sorted(epochs) == list(range(40))  # no epoch lost or repeated across the resume
    assert set(json.loads((folder / "weights.json").read_text())) == {"expert_0", "expert_3"}
    for key in ("expert_0", "expert_3"):
        for split in ("val", "test"):
            assert (folder / key / "plots" / split / "z_residual.png").is_file(), (key, split)


def test_nan_loss_fails_that_expert_only(data, tmp_path):
    """A learning rate so large that expert 2's loss overflows: it stops with a clear message, expert 0 goes on.
    (Inputs that large are a data error now, caught before any training.)"""
    config = {"extends": "baseline_v1", "data": data, "experts": [0, 2], "epochs": 2, "plot_every": 1000,
              "batch_size": 256, "expert_2": {"learning_rate": 1e30}}
    result = train(config, production=True, log_root=tmp_path / "log", show_progress=False)
    assert not result.ok
    experts = result.summary["experts"]
    assert experts["expert_0"]["status"] == "finished"
    assert experts["expert_2"]["status"] == "failed"
    assert "loss became" in experts["expert_2"]["error"]
    assert "lower learning_rate" in (result.folder / "expert_2.log").read_text()


@pytest.mark.slow
def test_runs_started_together_get_their_own_folders(data, tmp_path):
    args = ["baseline_v2", "-d", "together", "--log-root", str(tmp_path), "-m", data_arg(data), "epochs=1",
            "plot_every=1000"]
    procs = [start(*args) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    folders = sorted(Path(out.strip().splitlines()[-1]).name for out, _ in outputs)
    assert folders == ["version_0", "version_1"]
    lines = (tmp_path / "log.txt").read_text().splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 4 and "together" in line for line in lines)


def weights_bytes(folder: Path) -> bytes:
    return (folder / "weights.json").read_bytes()


@pytest.mark.parametrize("production", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["debug", "parallel"])
def test_same_seed_same_weights_other_seed_other_weights(data, tmp_path, production):
    """In production at the default batch size 2048, with experts of different sizes, so that one finishes
    while the other still trains (cores are freed then; thread counts stay fixed all the same)."""
    def run(seed: int) -> Path:
        config = {"extends": "reweight_normal", "data": data, "experts": [0, 4] if production else [1, 4],
                  "epochs": 12 if production else 2, "seed": seed, "batch_size": 2048 if production else 128,
                  "plot_every": 1000}
        return train(config, production=production, log_root=tmp_path, show_progress=False).folder

    first, second = run(7), run(7)
    assert weights_bytes(first) == weights_bytes(second)
    assert (first / "pred_data_val.csv").read_bytes() == (second / "pred_data_val.csv").read_bytes()
    other = json.loads(weights_bytes(run(8)))
    mine = json.loads(weights_bytes(first))
    assert set(other) == set(mine)
    for key in mine:
        assert not np.array_equal(np.array(mine[key]["weights"]["model.net.0.weight"]),
                                  np.array(other[key]["weights"]["model.net.0.weight"]))
