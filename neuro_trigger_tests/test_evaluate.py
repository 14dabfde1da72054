"""Evaluating a run on any data (run/evaluation.py, neuro_trigger/evaluate.py): the networks of a real tiny run,
their predictions, the metrics against a hand computation from the written prediction table, folders that are
never overwritten, bare and original-layout run folders, the CLI as a process, and every bad input."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.dataset import load_split
from neuro_trigger.data.neuroresults.cache import file_hash
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.errors import UserError
from neuro_trigger.evaluate import main
from neuro_trigger.judge.evaluation import evaluate
from neuro_trigger.judge.networks import load_networks, predict
from neuro_trigger.runner.api import train

EXPERTS = [2, 4]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """One tiny production run (experts 2 and 4, one epoch) and a data file of another 'run period'."""
    tmp = tmp_path_factory.mktemp("evaluate")
    files = {}
    for i, (name, n) in enumerate((("train", 1500), ("val", 800), ("test", 800), ("other_period", 700))):
        files[name] = tmp / f"{name}.gz"
        write_table(generate(n, seed=900 + i), files[name])
    config = {"extends": "baseline_v2", "data": {s: [str(files[s])] for s in ("train", "val", "test")},
              "experts": EXPERTS, "epochs": 1, "plot_every": 1000}
    result = train(config, production=True, log_root=tmp / "log", show_progress=False)
    assert result.ok
    return {"folder": result.folder, "tmp": tmp, **files}


def read_prediction_table(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", skip_blank_lines=True, dtype={"NewZ": np.float32, "NewTheta": np.float32,
                                                                      "RecoZ": np.float32, "ScaleZ": np.float32})


def bare_copy(run: dict[str, Path], name: str) -> Path:
    """A folder holding only the run's config.json and weights.json."""
    folder = run["tmp"] / name
    folder.mkdir()
    for file in ("config.json", "weights.json"):
        shutil.copy(run["folder"] / file, folder / file)
    return folder


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*")
            if p.is_file()}


# ============================================================================================ the run's own split
def test_own_test_split_metrics_equal_a_hand_computation(run) -> None:
    result = evaluate(run["folder"])
    folder = result.folder
    assert folder.parent == run["folder"] / "evaluations" and re.fullmatch(r"test_\d+", folder.name)
    written = json.loads((folder / "metrics.json").read_text())
    assert written["split"] == "test" and written["cut_cm"] == 15.0
    assert written["data"][0]["sha256"] == file_hash(run["test"])
    assert (folder / "report.html").stat().st_size > 10_000
    for group in ("expert_2", "expert_4", "all"):
        pngs = list((folder / "plots" / group).glob("*.png"))
        assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs), group

    table = read_prediction_table(folder / "pred_data_test.csv")
    # the same networks as in training: the run's own predictions of that split, value for value
    own = torch.load(run["folder"] / "prediction_test.pt", weights_only=True).numpy()
    np.testing.assert_array_equal(table[["NewZ", "NewTheta"]].to_numpy(np.float32), own)

    trained = table["Expert"].isin(EXPERTS).to_numpy()
    assert np.isnan(table.loc[~trained, "NewZ"]).all() and np.isfinite(table.loc[trained, "NewZ"]).all()
    rows = written["rows"]
    assert rows["total"] == len(table) and rows["without_network"] == int((~trained).sum()) > 0
    expected_by = table.loc[~trained, "Expert"].value_counts().sort_index()
    assert rows["without_network_by_expert"] == {f"expert_{e}": int(n) for e, n in expected_by.items()}
    assert written["all"]["rows"] == len(table)

    for key, mask in [(f"expert_{e}", (table["Expert"] == e).to_numpy()) for e in EXPERTS] + [("all", trained)]:
        part = table[mask]
        reco = part["RecoZ"].to_numpy(np.float64) * 100
        new = part["NewZ"].to_numpy(np.float64) * 100
        old = part["ScaleZ"].to_numpy(np.float64) * 100
        judged = written["all"] if key == "all" else written["experts"][key]
        for net, z in (("new", new), ("old", old)):
            residual = reco - z
            assert judged[net]["z"]["std"] == pytest.approx(residual.std(), rel=1e-9), (key, net)
            assert judged[net]["z"]["mean"] == pytest.approx(residual.mean(), rel=1e-9, abs=1e-9), (key, net)
            ip, background, kept = np.abs(reco) < 1, np.abs(reco) > 20, np.abs(z) < 15
            assert judged[net]["trigger"]["ip_tracks"] == int(ip.sum())
            if ip.any():
                assert judged[net]["trigger"]["efficiency"] == pytest.approx((kept & ip).sum() / ip.sum())
            assert judged[net]["trigger"]["rejection"] == pytest.approx((~kept & background).sum()
                                                                        / background.sum())
        assert judged["new"]["z"]["count"] == len(part)
    assert result.metrics["experts"]["expert_2"]["new"]["z"]["std"] == written["experts"]["expert_2"]["new"]["z"]["std"]


def test_other_data_gets_a_new_folder_each_time_and_the_first_is_untouched(run) -> None:
    first = evaluate(run["folder"], data=[run["other_period"]], cut_cm=20)
    assert first.folder.name == "other_period_0"
    before = snapshot(first.folder)
    assert first.metrics["data"][0]["sha256"] == file_hash(run["other_period"])
    assert first.metrics["split"] is None and first.metrics["cut_cm"] == 20.0
    assert first.metrics["experts"]["expert_2"]["new"]["trigger"]["cut_cm"] == 20.0
    # named by the first file again: the next number; two files are one data set, in order
    second = evaluate(run["folder"], data=[str(run["other_period"]), run["test"]])
    assert second.folder.name == "other_period_1"
    assert snapshot(first.folder) == before
    assert second.metrics["rows"]["total"] == 1500 and [s["rows"] for s in second.metrics["data"]] == [700, 800]
    table = read_prediction_table(second.folder / "pred_data_other_period.csv")
    assert len(table) == 1500 and list(table.columns[42:]) == ["NewZ", "NewTheta", "HwRawZ", "HwRawTheta", "HwZ",
                                                               "HwTheta"]
    own = torch.load(run["folder"] / "prediction_test.pt", weights_only=True).numpy()
    # the same network on the same rows, within float32 rounding: in one table with other rows the matrix
    # products are blocked differently (observed: 1e-8 apart on a loaded machine)
    np.testing.assert_allclose(table[["NewZ", "NewTheta"]].to_numpy(np.float32)[700:], own, rtol=1e-5, atol=1e-7)


def test_a_folder_with_only_config_and_weights_works(run) -> None:
    bare = bare_copy(run, "bare")
    result = evaluate(bare, split="test")
    assert result.folder == bare / "evaluations" / "test_0"
    table = read_prediction_table(result.folder / "pred_data_test.csv")
    own = torch.load(run["folder"] / "prediction_test.pt", weights_only=True).numpy()
    np.testing.assert_array_equal(table[["NewZ", "NewTheta"]].to_numpy(np.float32), own)
    summary = json.loads((run["folder"] / "summary.json").read_text())  # the run's own metrics of that split
    assert result.metrics["experts"]["expert_4"]["new"]["z"]["std"] == pytest.approx(
        summary["metrics"]["test"]["experts"]["expert_4"]["unfiltered"]["z_diff_std_cm"], rel=1e-9)
    assert sorted(p.name for p in bare.iterdir()) == ["config.json", "evaluations", "weights.json"]


def test_solo_network_predicts_every_row_some_expert_takes(run) -> None:
    folder = bare_copy(run, "solo")
    config = json.loads((folder / "config.json").read_text())
    weights = json.loads((folder / "weights.json").read_text())
    config["experts"] = {"expert_-1": {**config["experts"]["expert_2"], "expert": -1}}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "weights.json").write_text(json.dumps({"expert_-1": weights["expert_2"]}))
    table = generate(300, seed=5)
    table.loc[:9, "Expert"] = -1  # tracks no expert takes: never predicted, counted
    data = folder / "with_no_expert.txt"
    write_table(table, data)

    nets = load_networks(folder)
    store = load_split([data])
    pred = predict(nets, store, slice_rows=64)  # several slices
    assert np.isnan(pred[:10]).all() and np.isfinite(pred[10:]).all()
    expert_2 = load_networks(run["folder"]).networks[2]
    with torch.no_grad():
        np.testing.assert_allclose(pred[10:], expert_2(torch.from_numpy(store.x[10:])).numpy(), rtol=0, atol=1e-6)
    result = evaluate(folder, data=[data])
    assert result.metrics["rows"]["no_expert"] == 10 and result.metrics["rows"]["without_network"] == 0
    assert result.metrics["experts"]["expert_-1"]["new"]["z"]["count"] == 290


def test_an_original_layout_run_folder_works(run) -> None:
    """The original trainer's run folder: summary.json with its hyperparameters (flat, the loss name
    overwritten by its loss values, data_path), weights.json in its layout; no config.json."""
    folder = run["tmp"] / "original" / "version_0"
    folder.mkdir(parents=True)
    weights = json.loads((run["folder"] / "weights.json").read_text())
    assert set(weights["expert_2"]) == {"shapes", "weights"}
    (folder / "weights.json").write_text(json.dumps(weights))
    summary = {"act": "tanh/2", "model": "BaselineModel", "in_size": 27, "out_size": 2, "experts": EXPERTS,
               "batch_size": 2048, "epochs": 1, "git_id": "0123abc\n", "run_description": "original",
               "loss": {"test": {"unfiltered": {"loss_overall": 0.1}}},
               "data_path": [[str(run["train"])], [str(run["val"])], [str(run["test"])]],
               "expert_9": {"act": "relu"}}  # a block of an expert it did not train: unused
    (folder / "summary.json").write_text(json.dumps(summary))
    nets = load_networks(folder)
    assert nets.kind == "original" and sorted(nets.networks) == EXPERTS and nets.out_size == 2
    assert nets.config["experts"]["expert_2"]["act"] == "tanh/2"
    result = evaluate(folder)  # its recorded test data
    table = read_prediction_table(result.folder / "pred_data_test.csv")
    own = torch.load(run["folder"] / "prediction_test.pt", weights_only=True).numpy()
    np.testing.assert_array_equal(table[["NewZ", "NewTheta"]].to_numpy(np.float32), own)
    assert result.metrics["run_kind"] == "original"
    # a per-expert block changes that expert's network
    summary["expert_4"] = {"act": "relu"}
    (folder / "summary.json").write_text(json.dumps(summary))
    assert load_networks(folder).config["experts"]["expert_4"]["act"] == "relu"


def test_data_without_rows_of_the_trained_experts_is_an_error(run) -> None:
    table = generate(400, seed=7)
    data = run["tmp"] / "expert_0_only.gz"
    write_table(table[table["Expert"] == 0], data)
    bare = bare_copy(run, "no_rows")
    with pytest.raises(UserError, match="none of its .* rows belongs to an expert the run has a network for"):
        evaluate(bare, data=[data])
    assert not (bare / "evaluations").exists()


def test_a_failure_while_writing_leaves_no_folder(run, monkeypatch, capsys) -> None:
    """A full disk half-way through the evaluation folder: one line, exit 2, the folder removed again."""
    from neuro_trigger.judge import evaluation
    from neuro_trigger.run.files import DiskFullError

    def full(folder: Path, *args) -> None:
        assert (folder / "metrics.json").is_file()  # written already: it goes with the folder
        raise DiskFullError(f"disk full while writing {folder / 'plots'}: No space left on device")

    monkeypatch.setattr(evaluation, "_figures", full)
    bare = bare_copy(run, "disk_full")
    code, out, err = run_cli(capsys, bare, "--split", "val")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: disk full while writing"), err
    assert sorted(p.name for p in bare.iterdir()) == ["config.json", "weights.json"]


# ============================================================================================ the CLI
def test_cli_as_a_process(run) -> None:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script must find the package itself
    done = subprocess.run([sys.executable, "neuro_trigger/evaluate.py", str(run["folder"]), "--data",
                           str(run["other_period"]), "--cut", "12.5"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    folder = Path(lines[-1])
    assert folder.parent == run["folder"] / "evaluations" and folder.name.startswith("other_period_")
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["cut_cm"] == 12.5
    table = "\n".join(lines[:-1])
    for name in ("expert_2", "expert_4", "all", "z std cm", "efficiency", "rejection"):
        assert name in table
    std = metrics["experts"]["expert_2"]["new"]["z"]["std"]
    assert f"{std:.2f}" in table


def run_cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str, list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def _not_a_run(run, tmp: Path) -> list[str]:
    (tmp / "notes.txt").write_text("hello\n")
    return [tmp]


def _missing_folder(run, tmp: Path) -> list[str]:
    return [tmp / "nowhere"]


def _no_finished_expert(run, tmp: Path) -> list[str]:
    shutil.copy(run["folder"] / "config.json", tmp / "config.json")
    (tmp / "weights.json").write_text("{}")
    return [tmp]


def _missing_weights(run, tmp: Path) -> list[str]:
    shutil.copy(run["folder"] / "config.json", tmp / "config.json")
    return [tmp]


def _corrupt_weights(run, tmp: Path) -> list[str]:
    shutil.copy(run["folder"] / "config.json", tmp / "config.json")
    (tmp / "weights.json").write_text('{"expert_2": {"shapes": ')
    return [tmp]


def _wrong_shape(run, tmp: Path) -> list[str]:
    shutil.copy(run["folder"] / "config.json", tmp / "config.json")
    weights = json.loads((run["folder"] / "weights.json").read_text())
    entry = weights["expert_4"]
    entry["shapes"]["model.net.0.weight"] = [81, 26]
    entry["weights"]["model.net.0.weight"] = [row[:26] for row in entry["weights"]["model.net.0.weight"]]
    (tmp / "weights.json").write_text(json.dumps(weights))
    return [tmp]


def _wrong_shape_undeclared(run, tmp: Path) -> list[str]:
    shutil.copy(run["folder"] / "config.json", tmp / "config.json")
    weights = json.loads((run["folder"] / "weights.json").read_text())
    weights["expert_2"]["weights"]["model.net.2.bias"] = [0.0, 0.0, 0.0]  # declared [2], values of 3
    (tmp / "weights.json").write_text(json.dumps(weights))
    return [tmp]


def _bad_data(run, tmp: Path) -> list[str]:
    for file in ("config.json", "weights.json"):
        shutil.copy(run["folder"] / file, tmp / file)
    (tmp / "data.txt").write_text("Experiment\tRun\n\n1\t2\n")
    return [tmp, "--data", tmp / "data.txt"]


def _bare(run, tmp: Path, *more: str) -> list[str]:
    for file in ("config.json", "weights.json"):
        shutil.copy(run["folder"] / file, tmp / file)
    return [tmp, *more]


BAD = {
    "not a run": (_not_a_run, "is not a run folder"),
    "missing folder": (_missing_folder, "not found"),
    "no finished expert": (_no_finished_expert, "no expert has finished"),
    "missing weights.json": (_missing_weights, "weights.json is missing"),
    "corrupt weights.json": (_corrupt_weights, "is not valid JSON"),
    "wrong shape": (_wrong_shape,
                    r"expert_4\.model\.net\.0\.weight has shape \[81, 26\], the network needs \[81, 27\]"),
    "wrong values shape": (_wrong_shape_undeclared, r"model\.net\.2\.bias has values of shape \[3\]"),
    "data of the wrong format": (_bad_data, r"data\.txt"),
    "cut 0": (lambda run, tmp: _bare(run, tmp, "--cut", "0"), "must be a finite number above 0"),
    "cut below 0": (lambda run, tmp: _bare(run, tmp, "--cut", "-5"), "must be a finite number above 0"),
    "data and split": (lambda run, tmp: _bare(run, tmp, "--split", "val", "--data", str(run["test"])),
                       "not both"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_exit_2_nothing_written(run, tmp_path, capsys, case) -> None:
    make, message = BAD[case]
    args = make(run, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out, err = run_cli(capsys, *args)
    assert code == 2 and out == ""
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert re.search(message, err[0]), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no evaluations folder, nothing else
