"""The end of a run, whatever happens there: an ASCII locale with a non-ASCII description, a stop arriving while an
expert writes its results, a resume of a finished run that lacks files, and judging a run that was not assembled
(issue 21, items 7 and 9)."""
from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from neuro_trigger.compare import main as compare_main
from neuro_trigger.evaluate import main as evaluate_main
from neuro_trigger.runner.api import resume, train
from neuro_trigger.training.stopping import Stopped
from neuro_trigger_tests.run_helpers import start, status, toy_splits

ASCII_LOCALE = {"PYTHONUTF8": "0", "LANG": "C", "LC_ALL": "C", "LC_CTYPE": "C"}
DESCRIPTION = "Δz Studie für θ"
# an expert that stops early after its second epoch: with a learning rate of 1e-30 its weights, and so its val
# loss, never change, and a patience of 1 ends it at the first epoch without improvement
STOPS_EARLY = {"extends": "baseline_v2", "experts": [2], "epochs": 10, "early_stopping_patience": 1,
               "learning_rate": 1e-30, "plot_every": 1000}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    return toy_splits(tmp_path_factory.mktemp("run_end_data"), {"train": 3000, "val": 800, "test": 800}, seed=2100)


def journal(log_root: Path) -> list[str]:
    return (log_root / "log.txt").read_text(encoding="utf-8").splitlines()


def epochs_in_metrics(expert_dir: Path) -> list[int]:
    """The epochs metrics.csv holds a row of validation results for (each once for a run that never repeats one)."""
    with open(expert_dir / "csv" / "metrics.csv", newline="", encoding="utf-8") as f:
        return sorted({int(float(row["epoch"])) for row in csv.DictReader(f) if row.get("val_loss")})


# ------------------------------------------------------------------------------------------------ item 7
def test_an_ascii_locale_ends_the_run_and_resume_rebuilds_what_a_finished_run_lacks(data, tmp_path):
    """PYTHONUTF8=0 LANG=C: the description typed in UTF-8 reaches summary.json, report.html and the journal as
    typed; the command ends 0 without a traceback. A finished run that lacks report.html and weights.json (as a
    crash at its end left it) is completed by --resume in the same locale, as after any run."""
    proc = start("baseline_v2", "-p", "-d", DESCRIPTION, "--log-root", str(tmp_path), "-m", f"data={data!r}",
                 "experts=[3]", "epochs=1", "plot_every=1000", env=ASCII_LOCALE)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "Logging error" not in err, err
    folder = tmp_path / "baseline_v2" / "version_0"
    assert Path(out.strip().splitlines()[-1]) == folder
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["status"] == "finished" and summary["description"] == DESCRIPTION
    assert DESCRIPTION in (folder / "report.html").read_text(encoding="utf-8")
    assert [line.split("\t")[2:] for line in journal(tmp_path)] == [[str(folder), DESCRIPTION]]

    weights = (folder / "weights.json").read_bytes()
    (folder / "report.html").unlink()
    (folder / "weights.json").unlink()
    proc = start("--resume", str(folder), env=ASCII_LOCALE)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "lacks weights.json, report.html" in err and "Traceback" not in err, err
    assert (folder / "weights.json").read_bytes() == weights
    assert DESCRIPTION in (folder / "report.html").read_text(encoding="utf-8")
    assert [line.split("\t")[2:] for line in journal(tmp_path)] == [[str(folder), DESCRIPTION]] * 2


def test_resume_rebuilds_every_run_file_a_finished_run_lacks(data, tmp_path):
    """The prediction tables of any split and the journal line (a run that crashed before writing it) are run files
    too: a resume writes them again, the same bytes, instead of calling the run complete."""
    folder = train({"extends": "baseline_v2", "data": data, "experts": [2], "epochs": 1, "plot_every": 1000},
                   description="rebuilt", log_root=tmp_path, show_progress=False).folder
    lost = ["pred_data_val.csv", "prediction_test.pt", "pred_data_train.csv"]
    before = {name: (folder / name).read_bytes() for name in lost}
    for name in lost:
        (folder / name).unlink()
    (tmp_path / "log.txt").write_text("", encoding="utf-8")
    assert resume(folder, show_progress=False).ok
    assert {name: (folder / name).read_bytes() for name in lost} == before
    assert [line.split("\t")[2:] for line in journal(tmp_path)] == [[str(folder), "rebuilt"]]


# ------------------------------------------------------------------------------------------------ item 9
def test_a_stop_while_an_expert_writes_its_results_waits_for_them(data, tmp_path, monkeypatch):
    """SIGTERM at the moment an expert has stopped early and writes its results: they are written whole and its
    status says finished with its epochs, then the stop is honoured (Stopped); a resume trains no epoch."""
    import neuro_trigger.training.expert as expert

    real = expert.write_expert_results

    def stopped_while_writing(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        real(*args, **kwargs)

    monkeypatch.setattr(expert, "write_expert_results", stopped_while_writing)
    with pytest.raises(Stopped):
        train({**STOPS_EARLY, "data": data}, log_root=tmp_path, show_progress=False)
    monkeypatch.undo()
    folder = tmp_path / "custom" / "version_0"
    state = status(folder, "expert_2")
    assert state["status"] == "finished" and state["epochs_done"] == 2, state
    assert (folder / "expert_2" / "weights.json").is_file() and (folder / "expert_2" / "result_test.json").is_file()
    assert epochs_in_metrics(folder / "expert_2") == [0, 1]

    assert resume(folder, show_progress=False).ok  # draws the figures the stop left out, trains nothing
    assert status(folder, "expert_2")["epochs_done"] == 2
    assert epochs_in_metrics(folder / "expert_2") == [0, 1]
    assert list((folder / "expert_2" / "plots" / "test").glob("*.png"))


def test_resume_of_an_expert_stopped_early_and_marked_interrupted_trains_no_more_epochs(data, tmp_path):
    """An expert that stopped early but is marked interrupted (stopped in Lightning's own end of the fit, or by an
    earlier version) goes on from last.ckpt, which holds the epoch that stopped it: no epoch is trained again."""
    folder = train({**STOPS_EARLY, "data": data}, log_root=tmp_path, show_progress=False).folder
    state = status(folder, "expert_2")
    assert state["epochs_done"] == 2
    state.update(status="interrupted", epochs_done=None)
    (folder / "expert_2" / "status.json").write_text(json.dumps(state), encoding="utf-8")
    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    (folder / "summary.json").write_text(json.dumps({**summary, "status": "interrupted"}), encoding="utf-8")

    assert resume(folder, show_progress=False).ok
    assert status(folder, "expert_2")["status"] == "finished"
    assert status(folder, "expert_2")["epochs_done"] == 2
    assert epochs_in_metrics(folder / "expert_2") == [0, 1]


@pytest.fixture(scope="module")
def partial_run(data, tmp_path_factory) -> dict[str, Path]:
    """A production run of experts 2 and 3, and a copy of it as before its files were assembled: expert_3 failed,
    no weights.json (no run-level files at all)."""
    root = tmp_path_factory.mktemp("partial_run")
    result = train({"extends": "baseline_v2", "data": data, "experts": [2, 3], "epochs": 1, "plot_every": 1000},
                   production=True, log_root=root / "log", show_progress=False)
    assert result.ok
    partial = root / "partial" / "version_0"
    shutil.copytree(result.folder, partial)
    for name in ("weights.json", "report.html", *(p.name for p in partial.glob("pred*_*"))):
        (partial / name).unlink()
    state = status(partial, "expert_3")
    state.update(status="failed", error="RuntimeError: as if it had failed")
    (partial / "expert_3" / "status.json").write_text(json.dumps(state), encoding="utf-8")
    return {"full": result.folder, "partial": partial, "root": root}


def test_evaluate_judges_the_finished_experts_of_a_run_not_assembled(partial_run, capsys):
    assert evaluate_main([str(partial_run["partial"])]) == 0
    out, err = capsys.readouterr()
    assert "experts left out, no finished network: expert_3 (failed)" in out, out + err
    folder = Path(out.strip().splitlines()[-1])
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["networks"] == ["expert_2"] and metrics["left_out"] == {"expert_3": "failed"}
    assert list(metrics["experts"]) == ["expert_2"] and metrics["rows"]["without_network_by_expert"]["expert_3"] > 0
    assert "expert_3 (failed)" in (folder / "report.html").read_text(encoding="utf-8")
    # the same network as the assembled run's: the same predictions
    assert evaluate_main([str(partial_run["full"])]) == 0
    full = Path(capsys.readouterr().out.strip().splitlines()[-1])
    assert json.loads((full / "metrics.json").read_text(encoding="utf-8"))["experts"]["expert_2"] == \
        metrics["experts"]["expert_2"]


def test_compare_takes_a_run_not_assembled_and_says_what_it_lacks(partial_run, capsys):
    argv = [str(partial_run["partial"]), str(partial_run["full"]), "--log-root", str(partial_run["root"] / "log")]
    assert compare_main(argv) == 0
    out, err = capsys.readouterr()
    assert "note: " in out and "without expert_3 (failed)" in out, out + err
