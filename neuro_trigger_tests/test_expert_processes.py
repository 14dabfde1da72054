"""Expert processes that hang or die: one that shows no sign of progress (here: stopped with SIGSTOP, as a hung
loader or GPU would look) is named on the console and in app.log with its pid, shown in the live view, and
stopped as failed after the longer limit, while the others finish; one killed outright is recorded with the
epochs its last checkpoint holds and a line in its log."""
from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from neuro_trigger.runner.stalls import StallWatch
from neuro_trigger_tests.run_helpers import communicate_or_kill, start, status, toy_splits, wait_for


def test_a_stopped_expert_is_warned_about_then_stopped_as_failed(tmp_path: Path) -> None:
    data = toy_splits(tmp_path, {"train": 4000, "val": 1000, "test": 1000}, seed=71)
    proc = start("baseline_v2", "-p", "-d", "stall", "--log-root", str(tmp_path / "log"), "-m", f"data={data!r}",
                 "experts=[0, 3]", "batch_size=64", "plot_every=100000", "early_stopping_patience=100000",
                 "expert_3.epochs=100000", "expert_0.epochs=3", "stall_warn_s=4", "stall_stop_s=12")
    folder = tmp_path / "log" / "baseline_v2" / "version_0"
    wait_for(lambda: (folder / "expert_3" / "ckpts" / "last.ckpt").exists(), "expert_3 to train an epoch")
    pid = status(folder, "expert_3")["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        _, err = communicate_or_kill(proc, 240)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert proc.returncode == 1, err
    warning = f"expert_3 (pid {pid}) has shown no progress for"
    assert warning in err and warning in (folder / "app.log").read_text()
    assert "expert_3: stalled: no progress for" in err  # the live view's row (no terminal: one line per change)
    state = status(folder, "expert_3")
    assert state["status"] == "failed" and "without progress" in state["error"] and f"pid {pid}" in state["error"]
    assert "without progress" in (folder / "expert_3.log").read_text()
    assert status(folder, "expert_0")["status"] == "finished"
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["experts"]["expert_3"]["status"] == "failed"
    with pytest.raises(ProcessLookupError):  # killed, not left behind
        os.kill(pid, 0)


def test_an_expert_killed_outright_keeps_the_epochs_of_its_last_checkpoint(tmp_path: Path) -> None:
    import torch

    data = toy_splits(tmp_path, {"train": 4000, "val": 1000, "test": 1000}, seed=73)
    proc = start("baseline_v2", "-p", "-d", "kill", "--log-root", str(tmp_path / "log"), "-m", f"data={data!r}",
                 "experts=[0, 3]", "batch_size=64", "plot_every=100000", "early_stopping_patience=100000",
                 "expert_3.epochs=100000", "expert_0.epochs=3")
    folder = tmp_path / "log" / "baseline_v2" / "version_0"
    wait_for(lambda: (folder / "expert_3" / "ckpts" / "last.ckpt").exists(), "expert_3 to train an epoch")
    os.kill(status(folder, "expert_3")["pid"], signal.SIGKILL)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1, err
    state = status(folder, "expert_3")
    held = torch.load(folder / "expert_3" / "ckpts" / "last.ckpt", map_location="cpu", weights_only=True)["epoch"]
    assert state["status"] == "failed" and state["error"] == "killed by signal SIGKILL", state
    assert state["epochs_done"] == held + 1 >= 1
    assert f"killed by signal SIGKILL before it could say so; marked failed, its last checkpoint holds {held + 1}" \
        in (folder / "expert_3.log").read_text()


def test_stall_watch_warns_once_says_when_it_goes_on_and_stops_after_the_longer_limit(caplog) -> None:
    caplog.set_level(logging.INFO, logger="neuro_trigger")
    clock = [0.0]
    shown: list[dict] = []
    watch = StallWatch(10, 30, shown.append, clock=lambda: clock[0])
    watch.heard("expert_1")
    clock[0] = 9.9
    assert watch.overdue("expert_1", "pid 7") is None and not shown
    clock[0] = 10.0
    assert watch.overdue("expert_1", "pid 7") is None
    assert watch.overdue("expert_1", "pid 7") is None and len(shown) == 1  # warned once
    assert shown[0]["status"] == "stalled" and "pid 7" in shown[0]["error"]
    watch.heard("expert_1")
    assert "expert_1 makes progress again" in caplog.text
    clock[0] = 40.0
    assert watch.overdue("expert_1", "pid 7") == 30.0
    assert watch.overdue("expert_2", "pid 8") is None  # never heard of: not started yet
    never = StallWatch(10, None, shown.append, clock=lambda: clock[0])
    never.heard("expert_1", 0.0)
    assert never.overdue("expert_1", "pid 7") is None


def _val_loss_steps(tb: Path) -> list[int]:
    """The epochs of every val_loss scalar in every event file, duplicates kept (TensorBoard's own reader would
    silently drop the older of two)."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    steps = []
    for events in sorted(tb.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(events)).Load():
            steps += [event.step for value in event.summary.value if value.tag == "val_loss"]
    return sorted(steps)


def test_an_expert_stopped_and_killed_then_resumed_logs_every_epoch_once(tmp_path: Path) -> None:
    """SIGTERM, resume, SIGKILL after the resumed fit's first save point, resume: metrics.csv holds every epoch
    once and TensorBoard has each epoch's scalars once across its event files (what a SLURM job requeued at
    its time limit lives through)."""
    import pandas as pd
    import torch

    epochs = 40
    data = toy_splits(tmp_path, {"train": 20000, "val": 1000, "test": 1000}, seed=75)
    proc = start("baseline_v2", "-p", "-d", "requeue", "--log-root", str(tmp_path / "log"), "-m", f"data={data!r}",
                 "experts=[3]", "batch_size=8", "plot_every=100000", "early_stopping_patience=100000",
                 f"epochs={epochs}")
    folder = tmp_path / "log" / "baseline_v2" / "version_0"
    last = folder / "expert_3" / "ckpts" / "last.ckpt"

    def held() -> int:
        try:
            return torch.load(last, map_location="cpu", weights_only=True)["epoch"] + 1
        except (FileNotFoundError, RuntimeError, EOFError):
            return 0

    wait_for(lambda: held() >= 1, "the first save point")
    time.sleep(1.5)  # a few epochs more: the stop writes the latest snapshot, newer than the save point
    os.kill(status(folder, "expert_3")["pid"], signal.SIGTERM)  # stops at an epoch's end, loggers flushed
    proc.communicate(timeout=120)
    assert status(folder, "expert_3")["status"] == "interrupted"
    before = held()
    proc = start("--resume", str(folder))
    wait_for(lambda: held() > before, "the resumed fit's first save point")
    os.kill(status(folder, "expert_3")["pid"], signal.SIGKILL)  # no clean-up of any kind
    proc.communicate(timeout=120)
    assert held() < epochs, "the expert trained through before it could be killed"
    proc = start("--resume", str(folder))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert pd.read_csv(folder / "expert_3" / "csv" / "metrics.csv")["epoch"].tolist() == list(range(epochs))
    assert _val_loss_steps(folder / "expert_3" / "tb") == list(range(epochs))
