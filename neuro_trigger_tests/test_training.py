"""End to end: real training runs on small generated data, and every artifact of the run folder."""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.errors import UserError
from neuro_trigger.runner.api import train

ROWS = {"train": 3000, "val": 1200, "test": 1000}


@pytest.fixture(scope="session")
def small_data(tmp_path_factory) -> dict[str, list[str]]:
    folder = tmp_path_factory.mktemp("toy")
    paths = {}
    for i, (split, n) in enumerate(ROWS.items()):
        path = folder / f"neuroresults_random{i + 1}.gz"
        write_table(generate(n, seed=100 + i), path)
        paths[split] = [str(path)]
    return paths


def small_config(data: dict[str, list[str]], **keys) -> dict:
    return {"extends": "baseline_v2", "data": data, "epochs": 3, "batch_size": 256, "plot_every": 3, **keys}


def read_summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def check_run_folder(folder: Path, experts: list[str], out_size: int = 2) -> dict:
    """Every artifact is present, parseable and consistent with the data and the experts."""
    for name in ("app.log", "git_id.txt", "git_diff.txt", "config.json", "summary.json", "weights.json"):
        assert (folder / name).is_file(), name
    summary = read_summary(folder)
    assert set(summary["experts"]) == set(experts)
    assert all(e["status"] == "finished" for e in summary["experts"].values())
    assert summary["status"] == "finished" and summary["end_time"]
    for split, n in ROWS.items():
        sources = summary["data"][split]
        assert sum(s["rows"] for s in sources) == n and len(sources[0]["sha256"]) == 64
        table = pd.read_csv(folder / f"pred_data_{split}.csv", sep="\t", skip_blank_lines=True)
        # NewZ NewTheta after the data's columns, then the hardware's (baseline_v2 has a hardware equivalent)
        assert len(table) == n and list(table.columns[42:44]) == ["NewZ", "NewTheta"]
        assert list(table.columns[44:]) in ([], ["HwRawZ", "HwRawTheta", "HwZ", "HwTheta"])
        pred = torch.load(folder / f"prediction_{split}.pt", weights_only=True)
        assert pred.shape == (n, 2)
        np.testing.assert_allclose(table["NewZ"].to_numpy(), pred[:, 0].numpy(), rtol=1e-5, atol=1e-6,
                                   equal_nan=True)
        trained = table["Expert"].isin([int(k.split("_")[1]) for k in experts]) if "expert_-1" not in experts \
            else pd.Series(True, index=table.index)
        assert table.loc[trained, "NewZ"].notna().all() and table.loc[~trained, "NewZ"].isna().all()
        if out_size == 1:
            assert table["NewTheta"].isna().all()
        metrics = summary["metrics"][split]
        assert metrics["all_unfiltered"]["rows"] == int(trained.sum())
        assert set(metrics["experts"]) == set(experts)
    weights = json.loads((folder / "weights.json").read_text())
    assert set(weights) == set(experts)
    for key in experts:
        first = weights[key]["weights"]["model.net.0.weight"]
        assert weights[key]["shapes"]["model.net.0.weight"] == [81, 27] and np.array(first).shape == (81, 27)
        assert (folder / f"{key}.log").is_file()
        expert_dir = folder / key
        ckpts = sorted(p.name for p in (expert_dir / "ckpts").iterdir())
        assert "last.ckpt" in ckpts and any(p.startswith("best") for p in ckpts)
        assert list((expert_dir / "tb").glob("events.out.tfevents.*"))
        metrics_csv = pd.read_csv(expert_dir / "csv" / "metrics.csv")
        for column in ("loss", "val_loss", "val_loss_vs_old_loss", "val_z_diff_std", "val_z_diff_std_vs_old"):
            assert column in metrics_csv and metrics_csv[column].notna().any(), column
        for split in ROWS:
            assert "unfiltered" in json.loads((expert_dir / f"result_{split}.json").read_text())
        for split in ("val", "test"):
            pngs = {p.name for p in (expert_dir / "plots" / split).glob("*.png")}
            assert {"z_vs_reco.png", "z_residual.png", "z_residual_ip.png", "z-gt.png"} <= pngs
            assert ("theta_residual.png" in pngs) == (out_size == 2)
    assert list((folder / "mean_expert").glob("events.out.tfevents.*"))
    return summary


@pytest.mark.slow
def test_production_run_all_experts(small_data, tmp_path):
    log_root = tmp_path / "log"
    result = train(small_config(small_data), production=True, description="e2e test", log_root=log_root,
                   show_progress=False)
    assert result.ok and result.folder == log_root / "custom" / "version_0"
    summary = check_run_folder(result.folder, [f"expert_{e}" for e in range(5)])
    assert summary["description"] == "e2e test"
    journal = (log_root / "log.txt").read_text().splitlines()
    assert len(journal) == 1 and "e2e test" in journal[0] and str(result.folder) in journal[0]
    # a second run never overwrites the first
    again = train(small_config(small_data, experts=[3]), production=True, log_root=log_root, show_progress=False)
    assert again.folder.name == "version_1" and (result.folder / "weights.json").exists()


def test_debug_run_trains_only_the_first_expert_with_capped_epochs(small_data, tmp_path):
    result = train(small_config(small_data, epochs=50, experts=[2, 0], early_stopping_patience=100),
                   log_root=tmp_path, show_progress=False)
    summary = check_run_folder(result.folder, ["expert_2"])
    assert summary["config"]["experts"]["expert_2"]["epochs"] == 10
    metrics = pd.read_csv(result.folder / "expert_2" / "csv" / "metrics.csv")
    assert metrics["epoch"].max() == 9


def test_solo_run_trains_one_network_on_all_rows(small_data, tmp_path):
    result = train(small_config(small_data, out_size=1), solo=True, log_root=tmp_path, show_progress=False)
    check_run_folder(result.folder, ["expert_-1"], out_size=1)


def test_reweighted_filtered_and_overridden_run(small_data, tmp_path):
    config = small_config(small_data, experts=[0, 3],
                          dist={"n_buckets": 11, "inf_bounds": False, "norm": {"mean": 0.0, "std": 0.4}},
                          filter="ConCatFilter([Max2EventsFilter(), DuplicateEventsFilter()])",
                          expert_3={"batch_size": 64})
    result = train(config, ["expert_0.epochs=2", "act=softsign"], production=True, log_root=tmp_path,
                   show_progress=False)
    summary = check_run_folder(result.folder, ["expert_0", "expert_3"])
    experts = summary["config"]["experts"]
    assert experts["expert_3"]["batch_size"] == 64 and experts["expert_0"]["batch_size"] == 256
    assert experts["expert_0"]["epochs"] == 2 and experts["expert_3"]["epochs"] == 3
    assert all(e["act"] == "softsign" for e in experts.values())
    assert pd.read_csv(result.folder / "expert_0" / "csv" / "metrics.csv")["epoch"].max() == 1
    val = summary["metrics"]["val"]
    assert val["all_filtered"]["rows"] < val["all_unfiltered"]["rows"]
    assert "filtered" in val["experts"]["expert_3"]


def test_compare_to_and_pre_trained_weights(small_data, tmp_path):
    first = train(small_config(small_data, experts=[0, 1], epochs=2), production=True, log_root=tmp_path,
                  show_progress=False)
    earlier = first.folder.relative_to(tmp_path).as_posix()
    second = train(small_config(small_data, experts=[0], epochs=1, compare_to=earlier,
                                load_pre_trained_weights=str(first.folder / "weights.json")),
                   log_root=tmp_path, show_progress=False)
    summary = read_summary(second.folder)
    # the old network is now the first run: its loss on val equals the first run's own loss there
    old = summary["metrics"]["val"]["experts"]["expert_0"]["unfiltered"]["old_loss"]
    theirs = read_summary(first.folder)["metrics"]["val"]["experts"]["expert_0"]["unfiltered"]["loss"]
    assert old == pytest.approx(theirs, rel=1e-5)
    # starting from the trained weights, the first epoch is already about as good as the first run
    start = pd.read_csv(second.folder / "expert_0" / "csv" / "metrics.csv")["val_loss"].dropna().iloc[0]
    assert start < 1.5 * theirs


def test_compare_to_other_data_and_bad_weights_are_user_errors(small_data, tmp_path):
    first = train(small_config(small_data, experts=[4], epochs=1), log_root=tmp_path, show_progress=False)
    other = dict(small_data, val=small_data["test"])
    with pytest.raises(UserError, match="other val data"):
        train(small_config(other, compare_to=first.folder.relative_to(tmp_path).as_posix()),
              log_root=tmp_path, show_progress=False)
    with pytest.raises(UserError, match="no weights for expert_0"):
        train(small_config(small_data, load_pre_trained_weights=str(first.folder / "weights.json")),
              log_root=tmp_path, show_progress=False)
    with pytest.raises(UserError, match="shape"):
        train(small_config(small_data, experts=[4], model="SimpleModel",
                           load_pre_trained_weights=str(first.folder / "weights.json")),
              log_root=tmp_path, show_progress=False)


def run_cli(*args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in __import__("os").environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "neuro_trigger/main.py", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, stdin=subprocess.DEVNULL, timeout=600)


def data_override(data: dict[str, list[str]]) -> str:
    return "data=" + repr(data)


def test_cli_production_run(small_data, tmp_path):
    done = run_cli("baseline_v2", "-p", "-d", "cli test", "--log-root", str(tmp_path), "-m",
                   data_override(small_data), "epochs=2", "experts=[1, 4]")
    assert done.returncode == 0, done.stderr
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder == tmp_path / "baseline_v2" / "version_0"
    check_run_folder(folder, ["expert_1", "expert_4"])
    assert read_summary(folder)["description"] == "cli test"
    app_log = (folder / "app.log").read_text()
    assert "the run's files assembled" in app_log and "failed" not in app_log  # by its job, not again here


@pytest.mark.slow
def test_cli_production_without_terminal_or_description(small_data, tmp_path):
    done = run_cli("baseline_v2", "-p", "-s", "--log-root", str(tmp_path), "-m", data_override(small_data),
                   "epochs=1")
    assert done.returncode == 0, done.stderr
    assert "empty run description" in done.stderr
    check_run_folder(Path(done.stdout.strip().splitlines()[-1]), ["expert_-1"])


def test_cli_debug_run(small_data, tmp_path):
    done = run_cli("reweight_uniform", "--log-root", str(tmp_path), "-m", data_override(small_data), "epochs=2")
    assert done.returncode == 0, done.stderr
    check_run_folder(Path(done.stdout.strip().splitlines()[-1]), ["expert_0"])


def test_cli_help_list_and_user_errors(tmp_path):
    assert "--production" in run_cli("-h").stdout
    listing = run_cli("--list").stdout
    assert "baseline_v2 " in listing and "baseline_v1" in listing
    for args, expected in [(["baseline_v22"], "did you mean 'baseline_v2'"),
                           (["baseline_v2", "-m", "act=tanh2"], "tanh/2"),
                           (["baseline_v2", "-m", "batch_size"], "KEY=VALUE")]:
        done = run_cli(*args, "--log-root", str(tmp_path))
        assert done.returncode == 2 and expected in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_missing_data_file_is_one_line_error(tmp_path):
    data = {"train": [str(tmp_path / "nope.gz")], "val": [str(tmp_path / "nope.gz")],
            "test": [str(tmp_path / "nope.gz")]}
    done = run_cli("baseline_v2", "--log-root", str(tmp_path / "log"), "-m", data_override(data))
    assert done.returncode == 2 and "nope.gz" in done.stderr and "Traceback" not in done.stderr


def test_gzip_prediction_source_lines_are_kept(small_data, tmp_path):
    result = train(small_config(small_data, experts=[0], epochs=1), log_root=tmp_path, show_progress=False)
    source = gzip.open(small_data["test"][0], "rt").read().splitlines()
    written = (result.folder / "pred_data_test.csv").read_text().splitlines()
    assert len(written) == len(source)
    # six fields appended: NewZ NewTheta and the hardware's HwRawZ HwRawTheta HwZ HwTheta (tanh/2 runs on it)
    assert written[0] == source[0] + "\tNewZ\tNewTheta\tHwRawZ\tHwRawTheta\tHwZ\tHwTheta"
    assert all(w.rsplit("\t", 6)[0] == s for w, s in zip(written[2:50], source[2:50], strict=True))
