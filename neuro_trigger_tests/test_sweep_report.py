"""A sweep's report.html (sweep/report.py): made by a real small debug sweep on toy data, its content checked
against the sweep's own trials.csv, the page's tags nested properly and its text escaped; pruned, failed and
one-parameter sweeps; the figures' axes and running best; a broken folder gives a warning, never an exception;
the page in a real headless Chromium (test_report's)."""
from __future__ import annotations

import base64
import json
import logging
import math
import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.sweep.report import write_sweep_report
from neuro_trigger.sweep.report_figures import choice_index, history_figure, parameter_figure, running_best
from neuro_trigger.sweep.space import Param
from neuro_trigger_tests import test_report
from neuro_trigger_tests.run_helpers import toy_splits

chromium = test_report.chromium  # the fixture: a headless Chromium (installed where missing, else a skip)

DESCRIPTION = "lr & batch <script>alert('x')</script>"
VOID = {"meta", "img", "br", "hr", "link", "input"}


class Page(HTMLParser):
    """The page by section (id): its text, its images' src, its links, its tables' rows (cell texts) under the
    last h3 heading; every end tag checked against the open one (a page whose tags do not nest fails)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.open: list[str] = []
        self.section, self.heading = "", ""
        self.text: dict[str, str] = {}
        self.images: dict[str, list[str]] = {}
        self.links: dict[str, list[str]] = {}
        self.tables: dict[tuple[str, str], list[list[str]]] = {}
        self.feed(page)
        self.close()
        assert self.open == [], f"tags left open: {self.open}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag not in VOID:
            self.open.append(tag)
        if tag == "section":
            self.section, self.heading = found["id"], ""
        elif tag == "h3":
            self.heading = ""
        elif tag == "img":
            self.images.setdefault(self.section, []).append(found["src"])
        elif tag == "a":
            self.links.setdefault(self.section, []).append(found["href"])
        elif tag == "tr":
            self.tables.setdefault((self.section, self.heading), []).append([])
        elif tag in ("td", "th"):
            self.tables[(self.section, self.heading)][-1].append("")

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1] if self.open else None}>"
        self.open.pop()

    def handle_data(self, data: str) -> None:
        self.text[self.section] = self.text.get(self.section, "") + data
        if self.open and self.open[-1] == "h3":
            self.heading += data
        if "td" in self.open or "th" in self.open:
            self.tables[(self.section, self.heading)][-1][-1] += data


@pytest.fixture(scope="module")
def sweep_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A debug sweep (the first expert, 3 TPE trials of 3 epochs, in this process) on small toy data: a log range
    and a choice (seed 1: its trials take both batch sizes)."""
    import configs as module
    from neuro_trigger.sweep.api import sweep

    root = tmp_path_factory.mktemp("sweep")
    data = toy_splits(root, {"train": 2000, "val": 600, "test": 400}, 11)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(module.configs, "tiny_sweep", {"extends": "baseline_v2", "data": data, "epochs": 3,
                                                     "batch_size": 256, "experts": [0]})
        patch.setattr(module, "sweeps", {**getattr(module, "sweeps", {}), "tiny_report": {
            "config": "tiny_sweep", "description": DESCRIPTION, "sampler": "tpe", "trials": 3, "seed": 1,
            "space": {"learning_rate": ("log", 1e-3, 3e-2), "batch_size": [128, 256]}}})
        result = sweep("tiny_report", production=False, log_root=root / "log")
    assert result.ok and len(result.records) == 3
    return result.folder


def copy_of(folder: Path, tmp_path: Path) -> Path:
    copy = tmp_path / folder.name
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("ckpts", "tb", "*.pt", "*.csv.gz"))
    return copy


def test_the_sweep_writes_a_report_of_its_trials(sweep_folder: Path) -> None:
    page_text = (sweep_folder / "report.html").read_text(encoding="utf-8")
    page = Page(page_text)
    trials = pd.read_csv(sweep_folder / "trials.csv", encoding="utf-8")
    best = trials.sort_values(["objective", "trial"]).iloc[0]
    # the expert's best trials: best first, with its objective and parameters as trials.csv has them
    rows = page.tables[("expert_0", "Best trials")]
    assert rows[0] == ["trial", "z_resolution", "epochs", "learning_rate", "batch_size", "folder"]
    assert len(rows) == 1 + len(trials)
    assert rows[1] == [str(best["trial"]), f"{best['objective']:.4g}", str(best["epochs"]),
                       f"{best['learning_rate']:.4g}", str(best["batch_size"]), best["folder"]]
    assert [float(r[1]) for r in rows[1:]] == sorted(float(f"{v:.4g}") for v in trials["objective"])
    summary = json.loads((sweep_folder / "summary.json").read_text(encoding="utf-8"))
    assert summary["best"]["expert_0"]["trial"] == best["trial"]
    # one figure of the history and one per parameter, each a PNG inline
    images = page.images["expert_0"]
    assert len(images) == 1 + 2
    for src in images:
        assert base64.b64decode(src.removeprefix("data:image/png;base64,"))[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(src.startswith("data:") for srcs in page.images.values() for src in srcs)
    # Optuna's importances of both parameters, summing to 1
    found = {r[0]: float(r[1]) for r in page.tables[("expert_0", "Parameter importances")][1:]}
    assert set(found) == {"learning_rate", "batch_size"} and math.isclose(sum(found.values()), 1, abs_tol=0.01)
    # the header: trials per state as trials.csv counts them, the sampler, the objective
    header = page.text["sweep"]
    assert f"{len(trials)} finished, 0 pruned, 0 failed, 0 interrupted" in header
    assert "tpe, seed 1" in header and "z_resolution, minimized" in header
    assert page.tables[("sweep", "Space")][1] == ["learning_rate", "log", "0.001 to 0.03"]
    # the winners: the keys that differ, and links that lead to the winner's trial folder and to best/report.html
    winners = json.loads((sweep_folder / "best" / "winners_config.json").read_text(encoding="utf-8"))
    row = page.tables[("winners", "")][1]
    assert row[:2] == ["expert_0", str(best["trial"])] and json.loads(row[3]) == winners["expert_0"]
    assert "best/report.html" in page.links["winners"]
    for href in page.links["winners"] + page.links["expert_0"]:
        assert (sweep_folder / href).exists(), href
    # the description: shown as text, never as markup
    assert DESCRIPTION in header
    assert "<script" not in page_text and "&lt;script&gt;" in page_text


def test_the_report_in_a_real_browser(chromium: str, sweep_folder: Path, tmp_path: Path) -> None:
    """Chromium loads the page and nothing else, every figure decodes, every table fits its section."""
    page = sweep_folder / "report.html"
    seen = test_report.load_in_browser(chromium, page, tmp_path / "profile")
    assert [u for u in seen["requests"] if not u.startswith("data:")] == [page.resolve().as_uri()]
    assert seen["failed"] == [] and seen["errors"] == []
    assert len(seen["images"]) == 3 and all(done and w > 100 and h > 100 for done, w, h in seen["images"])
    test_report.assert_tables_fit(seen["layout"])


def test_pruned_and_failed_trials(sweep_folder: Path, tmp_path: Path) -> None:
    """The worst trial marked pruned and the second worst failed: only the best is ranked, the failed one is
    listed with its error, and one finished trial is too few for importances."""
    folder = copy_of(sweep_folder, tmp_path)
    trials = pd.read_csv(folder / "trials.csv", encoding="utf-8")
    order = trials.sort_values("objective")["trial"].tolist()
    trials.loc[trials["trial"] == order[2], "state"] = "pruned"
    failed = trials["trial"] == order[1]
    trials.loc[failed, ["state", "objective"]] = ["failed", np.nan]
    trials.to_csv(folder / "trials.csv", index=False, encoding="utf-8")
    record_path = folder / trials.loc[failed, "folder"].iloc[0] / "trial.json"
    record = json.loads(record_path.read_text(encoding="utf-8"))
    record.update(state="failed", objective=None, error="RuntimeError: a made-up failure")
    record_path.write_text(json.dumps(record), encoding="utf-8")

    assert write_sweep_report(folder) == folder / "report.html"
    page = Page((folder / "report.html").read_text(encoding="utf-8"))
    ranked = page.tables[("expert_0", "Best trials")][1:]
    assert [r[0] for r in ranked] == [str(order[0])]
    assert page.tables[("expert_0", "Trials without an objective")][1:] == [
        [str(order[1]), "failed", str(record["epochs"]), "RuntimeError: a made-up failure"]]
    assert "not computed: 1 finished trial(s); Optuna needs at least 2" in page.text["expert_0"]
    assert ("expert_0", "Parameter importances") not in page.tables
    assert "1 finished, 1 pruned, 1 failed, 0 interrupted" in page.text["sweep"]


def test_one_parameter_has_no_importances(sweep_folder: Path, tmp_path: Path) -> None:
    folder = copy_of(sweep_folder, tmp_path)
    saved = json.loads((folder / "sweep.json").read_text(encoding="utf-8"))
    saved["sweep"]["params"] = [p for p in saved["sweep"]["params"] if p["key"] == "learning_rate"]
    (folder / "sweep.json").write_text(json.dumps(saved), encoding="utf-8")
    assert write_sweep_report(folder) is not None
    page = Page((folder / "report.html").read_text(encoding="utf-8"))
    assert "the expert's study has one parameter (learning_rate)" in page.text["expert_0"]
    assert len(page.images["expert_0"]) == 2


def test_figures_axes_and_running_best() -> None:
    trials = pd.DataFrame({"trial": [0, 1, 2, 3, 4],
                           "state": ["finished", "pruned", "finished", "failed", "finished"],
                           "objective": [5.0, 9.0, 3.0, np.nan, 4.0],
                           "lr": ["0.001", "0.02", "0.005", "0.01", "0.0005"],
                           "act": ["relu", "", "relu", "", "128.0"]})
    lr = Param("lr", "log", (1e-4, 1e-1))
    ax = parameter_figure(trials, lr, "objective", best=2).axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < 1e-4 and ax.get_xlim()[1] > 1e-1
    finished, pruned, best = (c.get_offsets() for c in ax.collections)
    assert len(finished) == 3 and len(pruned) == 1 and np.allclose(best, [[0.005, 3.0]])  # the failed one left out
    assert parameter_figure(trials, Param("lr", "float", (0.0, 0.1)), "o", None).axes[0].get_xscale() == "linear"
    choice = Param("act", "choice", ("relu", None, 128))
    ax = parameter_figure(trials, choice, "objective", best=2).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["relu", "None", "128"]
    assert np.allclose(ax.collections[0].get_offsets()[:, 0], [0, 0, 2])
    assert [choice_index(c, choice.values) for c in ("relu", "", "128", "128.0", "tanh")] == [0, 1, 2, 2, None]
    numbers, values = running_best(trials, "minimize")
    assert numbers.tolist() == [0, 2, 4] and values.tolist() == [5, 3, 3]
    assert running_best(trials, "maximize")[1].tolist() == [5, 5, 5]
    history = history_figure(trials, "objective", "minimize", best=2).axes[0]
    assert history.lines[0].get_ydata().tolist() == [5, 3, 3, 3] and history.get_xlim() == (-0.5, 4.5)


def test_broken_sweep_folder_gives_a_warning_and_none(sweep_folder: Path, tmp_path: Path,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    folder = copy_of(sweep_folder, tmp_path)
    (folder / "report.html").unlink()
    (folder / "trials.csv").unlink()
    with caplog.at_level(logging.WARNING, logger="neuro_trigger.sweep.report"):
        assert write_sweep_report(folder) is None
        assert write_sweep_report(tmp_path / "missing") is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all("sweep report.html not written" in w for w in warnings)
    assert "trials.csv" in warnings[0]
    assert not (folder / "report.html").exists()
