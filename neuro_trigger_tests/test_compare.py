"""Comparing runs: `neuro_trigger.judge.comparison.compare` and the CLI `neuro_trigger/compare.py`.

Two tiny real runs (experts 2 and 4, one epoch) with different configs and different train/test files: run A
(custom, tanh/2) and run B (baseline_v2, softsign, expert 4 with its own learning rate, trained on other
files). Compared on A's test split, B is flagged as trained on other data and judged on A's rows.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger import REPO_ROOT
from neuro_trigger.compare import main
from neuro_trigger.data.dataset import load_split
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.judge.comparison import OTHER_DATA, compare, config_diff, flatten


def _config(train: Path, val: Path, test: Path, **keys) -> dict:
    return {"extends": "baseline_v2", "data": {"train": [str(train)], "val": [str(val)], "test": [str(test)]},
            "experts": [2, 4], "epochs": 1, "plot_every": 1000, **keys}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Run A (a config dict, tanh/2) trained here while run B (baseline_v2 with -m overrides: softsign, expert 4
    with learning rate 0.01, other train and test files) trains at the same time through the training CLI."""
    from neuro_trigger.runner.api import train

    root = tmp_path_factory.mktemp("compare")
    files = {}
    for name, n, seed in (("train_a", 1500, 1), ("val", 800, 2), ("test_a", 900, 3), ("train_b", 1500, 4),
                          ("test_b", 700, 5)):
        files[name] = root / f"{name}.gz"
        write_table(generate(n, seed), files[name])
    log = root / "log"
    data_b = {"train": [str(files["train_b"])], "val": [str(files["val"])], "test": [str(files["test_b"])]}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    b = subprocess.Popen([sys.executable, "neuro_trigger/main.py", "baseline_v2", "-p", "-d", "run B", "--log-root",
                          str(log), "-m", "act=softsign", "experts=[2, 4]", "epochs=1", "plot_every=1000",
                          f"data={data_b!r}", "expert_4.learning_rate=0.01"],
                         cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        a = train({"extends": "baseline_v2", "act": "tanh/2", "experts": [2, 4], "epochs": 1, "plot_every": 1000,
                   "data": {"train": [str(files["train_a"])], "val": [str(files["val"])],
                            "test": [str(files["test_a"])]}},
                  production=True, log_root=log, show_progress=False)
        out, err = b.communicate(timeout=300)
    finally:
        if b.poll() is None:
            b.kill()
            b.wait()
    assert a.ok and b.returncode == 0, err
    return {"a": a.folder, "b": Path(out.strip().splitlines()[-1]), "log": log, "root": root, **files}


@pytest.fixture(scope="module")
def compared(runs):
    """A vs B on A's test split, written under the runs' log root."""
    return compare([runs["a"], runs["b"]], out_root=runs["log"])


def _label(folder: Path) -> str:
    return f"{folder.parent.name}/{folder.name}"


def test_table_has_a_row_per_run_and_expert(runs, compared):
    a, b = _label(runs["a"]), _label(runs["b"])
    assert list(zip(compared.table["run"], compared.table["expert"], strict=True)) == [
        (a, "2"), (a, "4"), (a, "all"), (b, "2"), (b, "4"), (b, "all")]
    store = load_split([runs["test_a"]])
    rows = {"2": int((store.expert == 2).sum()), "4": int((store.expert == 4).sum()), "all": len(store)}
    assert list(compared.table["rows"]) == [rows["2"], rows["4"], rows["all"]] * 2
    # both runs predict exactly the rows of their experts on the common data (A's test split)
    assert list(compared.table["predicted_rows"]) == [rows["2"], rows["4"], rows["2"] + rows["4"]] * 2
    # this project's runs: best epoch from best-epoch=0.ckpt, training time from status.json / summary.json
    experts = compared.table[compared.table["expert"] != "all"]
    assert list(experts["best_epoch"]) == [0, 0, 0, 0]
    assert compared.table[compared.table["expert"] == "all"]["best_epoch"].isna().all()
    assert (compared.table["training_time_s"] >= 0).all()


def test_numbers_are_judge_on_the_common_data(runs, compared):
    """B's expert-4 row equals judge() recomputed here on A's test rows, not on B's own test split."""
    from neuro_trigger.judge.networks import load_networks, predict
    from neuro_trigger.judge.trigger import judge

    store = load_split([runs["test_a"]])
    nets = load_networks(runs["b"])
    pred = predict(nets, store)
    idx = np.flatnonzero(store.expert == 4)
    expected = judge(store.y[idx], pred[idx], store.y_old[idx], "MSELoss", store.expert[idx], store.ntracks[idx],
                     cut_cm=15.0)
    row = compared.table[(compared.table["run"] == _label(runs["b"])) & (compared.table["expert"] == "4")].iloc[0]
    assert row["rows"] == expected["rows"] == len(idx)
    for column, value in (("z_std_cm", expected["new"]["z"]["std"]),
                          ("z_trimmed_std_cm", expected["new"]["z"]["trimmed_std"]),
                          ("z_half_width_68_cm", expected["new"]["z"]["half_width_68"]),
                          ("z_mean_cm", expected["new"]["z"]["mean"]),
                          ("z_median_cm", expected["new"]["z"]["median"]),
                          ("old_z_std_cm", expected["old"]["z"]["std"]),
                          ("theta_std_deg", expected["new"]["theta"]["std"]),
                          ("loss_vs_old", expected["vs_old"]["loss"]),
                          ("efficiency", expected["new"]["trigger"]["efficiency"]),
                          ("old_efficiency", expected["old"]["trigger"]["efficiency"]),
                          ("rejection", expected["new"]["trigger"]["rejection"]),
                          ("old_rejection", expected["old"]["trigger"]["rejection"])):
        assert row[column] == pytest.approx(value, nan_ok=True), column
    # an independent look at one number: the std of reco z - predicted z in cm on those rows
    residual = (store.y[idx, 0].astype(np.float64) - pred[idx, 0].astype(np.float64)) * 100
    assert row["z_std_cm"] == pytest.approx(residual.std(), rel=1e-6)


def test_run_on_other_data_is_flagged(runs, compared):
    data = dict(zip(compared.table["run"], compared.table["data"], strict=False))
    assert data[_label(runs["a"])] == "own test split"
    assert data[_label(runs["b"])] == f"{OTHER_DATA}; new data"  # other train files, and A's test rows are new to it
    ids = dict(zip(compared.table["run"], compared.table["training_data"], strict=False))
    assert len(ids[_label(runs["a"])]) == 8 and ids[_label(runs["a"])] != ids[_label(runs["b"])]
    assert any(_label(runs["b"]) in note and "other data" in note for note in compared.notes)
    assert [s["path"] for s in compared.data] == [str(runs["test_a"])]


def test_config_diff_lists_exactly_the_keys_that_differ(runs, compared):
    diff = compared.config_diff
    assert set(diff["global"]) == {"name", "act", "data.train", "data.test"}
    assert diff["global"]["name"] == ["custom", "baseline_v2"]
    assert diff["global"]["act"] == ["tanh/2", "softsign"]
    # act differs in every expert too, but that is the global difference; only B's expert_4 override is listed
    assert diff["experts"] == {"expert_4": {"learning_rate": [0.001, 0.01]}}
    assert diff["experts_only_in"] == {}
    for run in ("a", "b"):
        assert diff["git_ids"][_label(runs[run])] == (runs[run] / "git_id.txt").read_text().splitlines()[0]
    written = json.loads((compared.folder / "config_diff.json").read_text())
    assert written["global"]["act"] == ["tanh/2", "softsign"]


def test_config_diff_of_experts_some_runs_lack():
    one = {"name": "x", "global": {"dist": {"norm": {"std": 0.4}}, "experts": [0, 1]},
           "experts": {"expert_0": {"lr": 1}, "expert_1": {"lr": 1}}}
    two = {"name": "x", "global": {"dist": {"norm": {"std": 0.3}}, "experts": [0]},
           "experts": {"expert_0": {"lr": 2}}}
    diff = config_diff([one, two], ["one", "two"])
    assert diff["global"] == {"dist.norm.std": [0.4, 0.3], "experts": [[0, 1], [0]]}
    assert diff["experts"] == {"expert_0": {"lr": [1, 2]}}
    assert diff["experts_only_in"] == {"expert_1": ["one"]}
    assert flatten({"a": {"b": {"c": 1}, "d": [1]}}) == {"a.b.c": 1, "a.d": [1]}


def test_files_are_written(runs, compared):
    folder = compared.folder
    assert folder.parent == runs["log"] / "comparisons"
    assert folder.name == "custom-vs-baseline_v2_0"
    table = pd.read_csv(folder / "comparison.csv")
    assert list(table["run"]) == list(compared.table["run"])
    assert np.allclose(table["z_std_cm"], compared.table["z_std_cm"])
    html = (folder / "report.html").read_text()
    assert _label(runs["a"]) in html and "softsign" in html
    assert "expert_4.learning_rate" in html and "Overlaid figures: expert 4" in html
    assert "<script" not in html.lower()
    assert list((folder / "figures").glob("*.png"))
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["runs"]) == {_label(runs["a"]), _label(runs["b"])}


def test_report_shows_the_runs_as_the_verdict_table_does(runs, compared):
    """report.html's runs side by side: the verdict table's titles, units and digits rather than comparison.csv's
    column names and raw floats; per expert a row per run (A's followed by its network on the hardware: A is
    tanh/2, B softsign, which has no hardware equivalent) and one of the old network; the best run marked."""
    from neuro_trigger.judge.comparison_report import OLD_NETWORK, ON_HARDWARE, runs_table
    from neuro_trigger.judge.report import MEASURES

    a, b = _label(runs["a"]), _label(runs["b"])
    table = runs_table(compared)
    col = {name: i for i, name in enumerate(table.columns)}
    assert not [c for c in table.columns if "_" in c]
    for key in ("z_std", "z_trimmed_std", "z_half_width_68", "z_mean", "theta_std", "efficiency", "rejection"):
        assert MEASURES[key].title in col
    assert [(r[0], r[1]) for r in table.rows] == [(e, run) for e in ("2", "4", "all")
                                                  for run in (a, f"{a} {ON_HARDWARE}", b, OLD_NETWORK)]
    on_hardware = table.rows[5]  # A's expert 4 on the hardware: judge_hardware's numbers
    assert on_hardware[col["z \u03c3 [cm]"]] == f"{compared.metrics[a]['4']['hardware']['z']['std']:.2f}"
    assert on_hardware[col["loss new / old"]] is None
    row = table.rows[6]  # B's expert 4: the numbers of comparison.csv, written as the verdict table writes them
    csv = compared.table[(compared.table["run"] == b) & (compared.table["expert"] == "4")].iloc[0]
    judged = compared.metrics[b]["4"]
    assert row[col["z \u03c3 [cm]"]] == f"{csv['z_std_cm']:.2f}"
    assert row[col["z trimmed \u03c3 [cm]"]] == f"{csv['z_trimmed_std_cm']:.2f}"
    assert row[col["loss new / old"]] == f"{csv['loss_vs_old']:.3f}"
    assert row[col["efficiency [%]"]] == (f"{100 * csv['efficiency']:.1f} \u00b1 "
                                          f"{100 * judged['new']['trigger']['efficiency_err']:.1f}")
    old = table.rows[7]
    assert old[col["z \u03c3 [cm]"]] == f"{csv['old_z_std_cm']:.2f}" and old[col["loss new / old"]] is None
    # per expert and measure the better of A and B is marked, never the hardware or the old network
    z = col["z \u03c3 [cm]"]
    for first in (0, 4, 8):
        assert len({(first, z), (first + 2, z)} & table.better) >= 1
        assert not {(first + 1, z), (first + 3, z)} & table.better
    html = (compared.folder / "report.html").read_text()
    assert "z_trimmed_std_cm" not in html and "z trimmed \u03c3 [cm]" in html


def test_reversed_order_takes_the_other_common_data(runs, compared):
    """B first: B's test split is the common data, A is the one trained on other data."""
    result = compare([runs["b"], runs["a"]], out_root=runs["log"], cut_cm=10.0)
    assert result.folder.name == "baseline_v2-vs-custom_0"
    store = load_split([runs["test_b"]])
    assert list(result.table["rows"])[:3] == [int((store.expert == 2).sum()), int((store.expert == 4).sum()),
                                              len(store)]
    data = dict(zip(result.table["run"], result.table["data"], strict=False))
    assert data == {_label(runs["b"]): "own test split", _label(runs["a"]): f"{OTHER_DATA}; new data"}
    assert json.loads((result.folder / "metrics.json").read_text())["cut_cm"] == 10.0


def test_cli_as_a_process(runs, compared):
    """python neuro_trigger/compare.py with run names under the log root and --data: the table, then the folder,
    a new one (_1) beside the comparison of the same runs made before, which is left as it was."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "neuro_trigger/compare.py", _label(runs["a"]), _label(runs["b"]),
         "--data", str(runs["test_b"]), "--cut", "12", "--log-root", str(runs["log"])],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    folder = Path(lines[-1])
    assert folder.parent == runs["log"] / "comparisons" and (folder / "report.html").is_file()
    assert folder.name == "custom-vs-baseline_v2_1"
    assert (compared.folder / "report.html").is_file() and compared.folder.name.endswith("_0")
    assert lines[0].split()[:3] == ["run", "expert", "rows"]
    assert sum(line.startswith(_label(runs["a"]) + " ") for line in lines) == 3
    table = pd.read_csv(folder / "comparison.csv")
    assert list(table["data"]) == ["new data"] * 3 + [f"{OTHER_DATA}; own test split"] * 3


# ---------------------------------------------------------------------------------------------- bad input
def _bad(capsys, argv: list[str], log_root: Path, words: str) -> None:
    assert main([*argv, "--log-root", str(log_root)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], captured.err
    assert not (log_root / "comparisons").exists()


def test_fewer_than_two_runs(runs, tmp_path, capsys):
    _bad(capsys, [str(runs["a"])], tmp_path, "at least two runs")
    _bad(capsys, [], tmp_path, "at least two runs")


def test_not_a_run(runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    _bad(capsys, [str(runs["a"]), str(tmp_path / "empty")], tmp_path, "empty")
    _bad(capsys, [str(runs["a"]), str(tmp_path / "nowhere")], tmp_path, "nowhere")


def _copy_networks(src: Path, dst: Path) -> dict:
    """A run folder of just config.json and weights.json (what evaluating needs); returns the config."""
    dst.mkdir()
    shutil.copy(src / "weights.json", dst / "weights.json")
    return json.loads((src / "config.json").read_text())


def test_different_out_size(runs, tmp_path, capsys):
    import torch

    from neuro_trigger.registry import build_model
    from neuro_trigger.run.weights import weights_to_json

    config = _copy_networks(runs["a"], tmp_path / "z_only")
    torch.manual_seed(0)
    weights = {}
    for key, expert in [("global", config["global"]), *config["experts"].items()]:
        expert["out_size"] = 1
        if key != "global":
            weights[key] = weights_to_json(build_model(expert["model"], 27, 1, expert["act"]).state_dict())
    (tmp_path / "z_only" / "config.json").write_text(json.dumps(config))
    (tmp_path / "z_only" / "weights.json").write_text(json.dumps(weights))
    _bad(capsys, [str(runs["a"]), str(tmp_path / "z_only")], tmp_path, "out_size")


def test_no_common_data(runs, tmp_path, capsys):
    config = _copy_networks(runs["a"], tmp_path / "moved")
    config["global"]["data"]["test"] = [str(tmp_path / "gone.gz")]
    (tmp_path / "moved" / "config.json").write_text(json.dumps(config))
    _bad(capsys, [str(tmp_path / "moved"), str(runs["b"])], tmp_path, "gone.gz")
    (tmp_path / "moved" / "config.json").unlink()  # no config.json at all (as in the original's folders)
    shutil.copy(runs["a"] / "summary.json", tmp_path / "moved" / "summary.json")
    assert main([str(tmp_path / "moved"), str(runs["b"]), "--log-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not (tmp_path / "comparisons").exists()


@pytest.mark.parametrize("cut", ["0", "-3", "nan"])
def test_cut_of_zero_or_below(runs, tmp_path, capsys, cut):
    _bad(capsys, [str(runs["a"]), str(runs["b"]), "--cut", cut], tmp_path, "cut")
