"""Sweeps through the command line, as real processes: a debug sweep, mistakes as one line and exit 2, and a
production sweep killed with SIGKILL and resumed without training any trial twice."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from neuro_trigger_tests.run_helpers import communicate_or_kill, start, toy_splits, wait_for


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    return toy_splits(tmp_path_factory.mktemp("sweep_cli_data"), {"train": 2500, "val": 900, "test": 600}, 70)


@pytest.mark.parametrize("args, words", [
    (["--sweep", "lr_batch_gird"], "no sweep named 'lr_batch_gird'"),
    (["--sweep", "lr_batch_grid", "-m", "learning_rat=1"], "unknown key 'learning_rat'"),
    (["--sweep", "lr_batch_grid", "--trials", "0"], "--trials 0: give at least 1"),
    (["--trials", "3", "baseline_v2"], "--trials goes with --sweep"),
    (["baseline_v2", "--sweep", "lr_batch_grid"], "give it no config"),
])
def test_sweep_mistakes_are_one_line_and_exit_2(tmp_path, args, words):
    proc = start(*args, "--log-root", str(tmp_path))
    out, err = communicate_or_kill(proc, 60)
    assert proc.returncode == 2, err
    assert words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "sweeps").exists()


def test_a_debug_sweep_trains_the_first_expert_in_process(data, tmp_path):
    proc = start("--sweep", "lr_batch_grid", "--log-root", str(tmp_path), "-m", f"data={data!r}", "epochs=3")
    out, err = communicate_or_kill(proc, 180)
    assert proc.returncode == 0, err
    folder = Path(out.strip().splitlines()[-1])
    assert folder == tmp_path / "sweeps" / "lr_batch_grid" / "version_0"
    table = pd.read_csv(folder / "trials.csv")
    assert list(table["expert"]) == ["expert_0"] * 3 and set(table["state"]) == {"finished"}
    assert list(zip(table["learning_rate"], table["batch_size"], strict=True)) == [(1e-3, 256), (1e-3, 512),
                                                                                  (1e-3, 1024)]
    best = table.loc[table["objective"].idxmin()]
    assert f"expert_0: best z_resolution {best.objective:.4g} (trial {best.trial}: " in err
    assert (folder / "best" / "weights.json").is_file() and (folder / "best" / "report.html").is_file()
    assert (folder / "report.html").is_file()


def _started(folder: Path, row) -> str:
    return json.loads((folder / row.folder / row.expert / "status.json").read_text())["started"]


def test_a_sweep_killed_with_sigkill_resumes_without_training_a_trial_twice(data, tmp_path):
    proc = start("--sweep", "lr_batch_grid", "-p", "-d", "killed", "--trials", "3", "--log-root", str(tmp_path),
                 "-m", f"data={data!r}", "experts=[0, 4]", "epochs=150", "early_stopping_patience=100000",
                 "plot_every=100000")
    folder = tmp_path / "sweeps" / "lr_batch_grid" / "version_0"
    trials = folder / "trials"

    def one_ended_one_training() -> bool:
        ended = list(trials.glob("expert_*/trial_*/trial.json"))
        going = [f for f in trials.glob("expert_*/trial_*") if not (f / "trial.json").exists()
                 and list(f.glob("expert_*/ckpts/last.ckpt"))]
        return bool(ended) and bool(going)

    try:
        wait_for(one_ended_one_training, "a trial to end while another trains", timeout=240)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
    communicate_or_kill(proc, 60)
    wait_for(lambda: not any(json.loads(s.read_text())["status"] == "running"
                             for s in trials.glob("expert_*/trial_*/expert_*/status.json")),
             "the trials to stop by themselves")
    ended_before = {f.parent.name + f.parent.parent.name: f.read_text() for f in trials.glob("*/*/trial.json")}
    started_before = {s.parent.parent.name + s.parent.parent.parent.name: json.loads(s.read_text())["started"]
                      for s in trials.glob("*/*/expert_*/status.json")}
    resumed = start("--resume", str(folder))
    out, err = communicate_or_kill(resumed, 400)
    assert resumed.returncode == 0, err
    table = pd.read_csv(folder / "trials.csv")
    assert len(table) == 6 and set(table["state"]) == {"finished"} and set(table["epochs"]) == {150}
    for key, text in ended_before.items():  # a trial that ended is kept as it was
        assert (trials / key[len("trial_000"):] / key[:len("trial_000")] / "trial.json").read_text() == text
    for row in table.itertuples():
        key = Path(row.folder).name + Path(row.folder).parent.name
        if key in ended_before:  # not trained again: its start is the one it had
            assert _started(folder, row) == started_before[key]
        metrics = pd.read_csv(folder / row.folder / row.expert / "csv" / "metrics.csv")
        epochs = metrics.dropna(subset=["val_loss"])["epoch"].astype(int)
        assert list(epochs) == list(range(150)), row.folder  # each epoch trained and logged once
    assert "from its last checkpoint" in err
    assert (folder / "best" / "weights.json").is_file()
