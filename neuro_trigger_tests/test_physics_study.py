"""Issue 12, networks unbiased across z: the config the study found keeps the FPGA network, and
scripts/physics_study.py turns run folders into the figures and the table of docs/physics.md with the
numbers it read (two tiny run folders made here: toy rows, a known bias, the judge's own output)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.judge.trigger import judge
from neuro_trigger.registry import build_model
from neuro_trigger.run.files import write_json
from neuro_trigger_tests.run_helpers import load_script

FPGA_ACTIVATIONS = {"tanh", "tanh/2", "softsign"}
STUDY_CONFIGS = ["unbiased_v1"]


def _script():
    return load_script("physics_study")


@pytest.mark.parametrize("name", STUDY_CONFIGS)
def test_study_config_resolves_and_keeps_the_fpga_network(name: str) -> None:
    resolved = resolve_config(name)
    assert resolved["global"]["description"]
    for cfg in resolved["experts"].values():
        assert cfg["model"] == "BaselineModel"
        assert (cfg["in_size"], cfg["out_size"]) == (27, 2)
        assert cfg["act"] in FPGA_ACTIVATIONS
        model = build_model(cfg["model"], cfg["in_size"], cfg["out_size"], cfg["act"])
        shapes = [tuple(p.shape) for p in model.parameters()]
        assert shapes == [(81, 27), (81,), (2, 81), (2,)]  # 27 -> 81 -> 2, nothing else


def _fake_run(folder: Path, table: pd.DataFrame, val_path: Path, label: str, shift_cm: float, scale: float,
              seed: int) -> dict:
    """A run folder with what the study reads: summary.json, config.json and expert_0/result_val.json holding
    the judge output for predictions reco z * scale - shift_cm + noise on the toy rows of expert 0."""
    rng = np.random.default_rng(seed)
    rows = table[table["Expert"] == 0]
    target = rows[["RecoZ", "RecoTheta"]].to_numpy(np.float64)
    old = rows[["ScaleZ", "ScaleTheta"]].to_numpy(np.float64)
    pred = target.copy()
    pred[:, 0] = np.clip(target[:, 0] * scale - shift_cm / 100 + rng.normal(0, 0.05, len(rows)), -1, 1)
    result = judge(target, pred, old, "MSELoss", rows["Expert"].to_numpy(), rows["nTracks"].to_numpy())
    (folder / "expert_0").mkdir(parents=True)
    write_json(folder / "expert_0" / "result_val.json", {"unfiltered": {}, "trigger": result})
    write_json(folder / "summary.json", {
        "config_name": "custom", "description": label,
        "experts": {"expert_0": {"status": "finished", "epochs_done": 12, "best_checkpoint": "best-epoch=9.ckpt"}}})
    write_json(folder / "config.json", {"global": {"data": {"val": [str(val_path)]}}})
    residual = (target[:, 0] - pred[:, 0]) * 100
    return {"reco_cm": target[:, 0] * 100, "residual": residual, "judge": result}


def test_study_writes_figures_and_a_table_with_the_numbers_it_read(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    table = generate(3000, seed=12)
    val_path = tmp_path / "val.gz"
    write_table(table, val_path)
    runs = {"plain": (0.0, 1.0), "shrunk": (2.0, 0.8)}  # the second: predictions pulled towards 0 (bias grows with z)
    made = {}
    for i, (label, (shift, scale)) in enumerate(runs.items()):
        made[label] = _fake_run(tmp_path / label / "version_0", table, val_path, label, shift, scale, seed=i)
    out = tmp_path / "study"
    study = _script()
    assert study.main([str(tmp_path / label / "version_0") for label in runs]
                      + ["--out", str(out), "--min-count", "20", "--reference", "--old"]) == 0

    names = {p.name for p in out.iterdir()}
    for kind in ("bias_vs_z", "resolution_vs_z", "tradeoff"):
        assert f"{kind}_expert_0.png" in names and (out / f"{kind}_expert_0.png").stat().st_size > 5000
    frame = pd.read_csv(out / "table.csv")
    assert list(frame["label"]) == list(runs)
    md = (out / "table.md").read_text()
    assert md in capsys.readouterr().out

    for _, row in frame.iterrows():
        run = made[row["label"]]
        bins = run["judge"]["new"]["z_vs_reco_z"]
        count, mean = np.array(bins["count"]), np.array([np.nan if m is None else m for m in bins["mean"]])
        qualifying = count >= 20
        assert row["qualifying_bins"] == qualifying.sum()
        assert row["max_bias_cm"] == pytest.approx(np.nanmax(np.abs(mean[qualifying])))
        # the core resolution pooled from two bins is the plain std of the core rows' residuals
        core = (run["reco_cm"] >= -10) & (run["reco_cm"] < 10)
        assert row["core_std_cm"] == pytest.approx(np.std(run["residual"][core], ddof=1), rel=1e-6)
        assert row["core_rows"] == core.sum()
        assert row["z_std_cm"] == pytest.approx(run["judge"]["new"]["z"]["std"])
        assert row["old_z_std_cm"] == pytest.approx(run["judge"]["old"]["z"]["std"])
        assert (row["epochs"], row["best_epoch"]) == (12, 9)
        assert row["ref_z_std_cm"] > 0 and math.isfinite(row["z_std_vs_ref"])
        # the numbers in the markdown table are the ones read
        assert f"{row['max_bias_signed_cm']:.1f} [{row['max_bias_bin']}]" in md
        assert f"| {row['core_std_cm']:.1f} | {row['core_vs_baseline']:.2f} |" in md
    plain, shrunk = frame.iloc[0], frame.iloc[1]
    assert plain["core_vs_baseline"] == pytest.approx(1.0)
    assert shrunk["max_bias_cm"] > plain["max_bias_cm"] + 5  # scale 0.8 leaves 20% of z as bias at large z
    assert plain["max_bias_cm"] < 3.0 and bool(plain["bias_ok"])


def test_study_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    study = _script()
    with pytest.raises(SystemExit) as exc:
        study.main([str(tmp_path), "--out", str(tmp_path / "out")])
    assert exc.value.code == 2


def test_pooled_std_matches_numpy() -> None:
    study = _script()
    rng = np.random.default_rng(3)
    parts = [rng.normal(m, s, n) for m, s, n in ((0.0, 1.0, 50), (3.0, 2.0, 80), (-1.0, 0.5, 1))]
    count = np.array([len(p) for p in parts])
    mean = np.array([p.mean() for p in parts])
    std = np.array([p.std(ddof=1) if len(p) > 1 else np.nan for p in parts])
    value, n = study.pooled_std(count, mean, std)
    assert n == 131 and value == pytest.approx(np.concatenate(parts).std(ddof=1))
    assert json.dumps(n)  # plain ints for the CSV and JSON
