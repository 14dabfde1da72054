"""The end of a run, whatever happens there: an ASCII locale with a non-ASCII description, a stop arriving while an
expert writes its results, a resume of a finished run that lacks files, and judging a run that was not assembled
(issue 21, items 7 and 9)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from neuro_trigger.runner.api import resume, train
from neuro_trigger_tests.run_helpers import start, toy_splits

ASCII_LOCALE = {"PYTHONUTF8": "0", "LANG": "C", "LC_ALL": "C", "LC_CTYPE": "C"}
DESCRIPTION = "Δz Studie für θ"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    return toy_splits(tmp_path_factory.mktemp("run_end_data"), {"train": 3000, "val": 800, "test": 800}, seed=2100)


def journal(log_root: Path) -> list[str]:
    return (log_root / "log.txt").read_text(encoding="utf-8").splitlines()


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
