"""The new network on the trigger hardware in every verdict (issue 20): the prediction tables' HwRawZ HwRawTheta
HwZ HwTheta against the emulation recomputed here from the saved networks, the hardware's measures against a
count made here from the written tables, a network without a hardware equivalent (no columns, no measures, one
line), and evaluate.py and compare.py carrying the same numbers.

Two tiny real runs on the same generated data: H (baseline_v2, tanh/2, experts 0 and 3; expert 3 at a coarse
precision of 6 node bits, so that its hardware z is visibly coarser and, at a tight cut, some trigger decisions
flip) and S (softsign, expert 0: no hardware equivalent)."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.compare import main as compare_main
from neuro_trigger.data.dataset import load_split
from neuro_trigger.data.neuroresults.format import COLUMNS, HARDWARE_COLUMNS, PREDICTION_COLUMNS
from neuro_trigger.data.neuroresults.writer import write_predictions, write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.evaluate import main as evaluate_main
from neuro_trigger.fpga.fixed_point import Precision, forward, hardware_layers
from neuro_trigger.judge.evaluation import evaluate
from neuro_trigger.judge.hardware import hardware_vs_float, judge_hardware
from neuro_trigger.judge.networks import load_networks
from neuro_trigger.judge.report import hardware_table, verdict_table
from neuro_trigger.judge.trigger import judge

COARSE = [12, 8, 8, 6, 6, 5]  # expert 3's widths: 6 node bits, z in steps of 100 / 64 cm
NODE_BITS = {0: 12, 3: 6}
NO_HARDWARE = "no hardware columns or measures"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    from neuro_trigger.runner.api import train

    root = tmp_path_factory.mktemp("hardware")
    data = {}
    for i, (split, n) in enumerate((("train", 1500), ("val", 800), ("test", 800))):
        write_table(generate(n, seed=700 + i), root / f"{split}.gz")
        data[split] = [str(root / f"{split}.gz")]
    base = {"extends": "baseline_v2", "data": data, "epochs": 1, "plot_every": 1000}
    h = train({**base, "experts": [0, 3], "expert_3": {"fixed_point": {"precision": COARSE}}}, production=True,
              log_root=root / "log", show_progress=False)
    console = io.StringIO()
    with contextlib.redirect_stderr(console):  # the run's console lines go to whatever sys.stderr is
        s = train({**base, "experts": [0], "act": "softsign"}, production=False, log_root=root / "log",
                  show_progress=False)
    assert h.ok and s.ok
    return {"h": h.folder, "s": s.folder, "root": root, "data": data, "s_console": console.getvalue()}


def read_table(path: Path) -> pd.DataFrame:
    floats = {c: np.float32 for c in ("RecoZ", "NewZ", "NewTheta")}
    return pd.read_csv(path, sep="\t", skip_blank_lines=True, dtype=floats)


# ---------------------------------------------------------------------------------------------- the tables
@pytest.mark.parametrize("split", ["val", "test"])
def test_table_columns_are_the_saved_networks_on_the_hardware(runs, split):
    folder = runs["h"]
    table = read_table(folder / f"pred_data_{split}.csv")
    assert list(table.columns) == COLUMNS + PREDICTION_COLUMNS + HARDWARE_COLUMNS
    store = load_split([Path(p) for p in runs["data"][split]])
    nets = load_networks(folder)  # the networks as the run saved them (weights.json)
    predicted = np.zeros(len(table), bool)
    for expert, bits in NODE_BITS.items():
        rows = store.expert_rows(expert)
        predicted[rows] = True
        precision = Precision.from_basf2(COARSE if expert == 3 else [12, 8, 8, 12, 10, 10])
        raw = forward(hardware_layers(nets.networks[expert], "tanh/2"), store.x[rows], precision)
        np.testing.assert_array_equal(table["HwRawZ"].to_numpy()[rows], raw[:, 0])
        np.testing.assert_array_equal(table["HwRawTheta"].to_numpy()[rows], raw[:, 1])
        # in the scale of NewZ: divided by 2^(node bits), exactly (4096 at the default widths)
        np.testing.assert_array_equal(table["HwZ"].to_numpy()[rows], raw[:, 0] / 2.0**bits)
        np.testing.assert_array_equal(table["HwTheta"].to_numpy()[rows], raw[:, 1] / 2.0**bits)
    default = store.expert_rows(0)
    np.testing.assert_array_equal(table["HwZ"].to_numpy()[default], table["HwRawZ"].to_numpy()[default] / 4096)
    # rows no expert predicted stay empty, as NewZ does; the integers are written as integers
    for column in HARDWARE_COLUMNS + ["NewZ"]:
        assert table[column].isna().to_numpy().tolist() == (~predicted).tolist(), column
    text = pd.read_csv(folder / f"pred_data_{split}.csv", sep="\t", skip_blank_lines=True, dtype=str,
                       keep_default_na=False)
    assert text["HwRawZ"].str.fullmatch(r"-?\d+|nan").all() and (text["HwRawZ"] != "nan").sum() == predicted.sum()


def test_hardware_measures_equal_a_count_from_the_tables(runs):
    summary = json.loads((runs["h"] / "summary.json").read_text())
    assert summary["hardware"] == {"experts": ["expert_0", "expert_3"], "without": {}}
    for split in ("val", "test"):
        table = read_table(runs["h"] / f"pred_data_{split}.csv")
        metrics = summary["metrics"][split]
        for key, mask in (("expert_0", table["Expert"] == 0), ("expert_3", table["Expert"] == 3),
                          ("all", table["Expert"].isin([0, 3]))):
            part = table[mask]
            reco, new, hw = (part[c].to_numpy(np.float64) * 100 for c in ("RecoZ", "NewZ", "HwZ"))
            judged = metrics["trigger_all"] if key == "all" else metrics["experts"][key]["trigger"]
            hardware, differ = judged["hardware"], judged["hardware_vs_float"]
            assert hardware["z"]["count"] == len(part) == differ["rows"]
            assert hardware["z"]["std"] == pytest.approx((reco - hw).std(), rel=1e-9)
            assert judged["new"]["z"]["std"] == pytest.approx((reco - new).std(), rel=1e-9)
            ip, far = np.abs(reco) < 1, np.abs(reco) > 20
            kept_new, kept_hw = np.abs(new) < 15, np.abs(hw) < 15
            if ip.any():
                assert hardware["trigger"]["efficiency"] == pytest.approx((kept_hw & ip).sum() / ip.sum())
            if far.any():
                assert hardware["trigger"]["rejection"] == pytest.approx((~kept_hw & far).sum() / far.sum())
            assert differ["z_abs_diff_max_cm"] == pytest.approx(np.abs(hw - new).max(), rel=1e-9)
            assert differ["z_abs_diff_mean_cm"] == pytest.approx(np.abs(hw - new).mean(), rel=1e-9)
            count = sum(int(a != b) for a, b in zip(kept_new, kept_hw, strict=True))
            assert differ["flipped"] == count, (split, key)
            assert differ["kept_by_float_only"] == int(np.sum(kept_new & ~kept_hw))
        # the default widths follow the float network closely (units of 2^-12 of 100 cm); 6 node bits do not
        assert metrics["experts"]["expert_0"]["trigger"]["hardware_vs_float"]["z_abs_diff_max_cm"] < 0.1
        assert metrics["experts"]["expert_3"]["trigger"]["hardware_vs_float"]["z_abs_diff_max_cm"] > 0.2


def test_report_shows_the_hardware_beside_the_float_network(runs):
    page = (runs["h"] / "report.html").read_text(encoding="utf-8")
    assert "On the hardware: new network in fixed point vs float, test split" in page
    assert '<th class="sub">hardware</th>' in page and "flipped decisions" in page
    assert "max |\u0394z| hardware \u2212 float [cm]" in page


def test_a_network_without_a_hardware_equivalent_has_no_columns_no_measures_and_one_line(runs):
    folder = runs["s"]
    table = read_table(folder / "pred_data_test.csv")
    assert list(table.columns) == COLUMNS + PREDICTION_COLUMNS  # absent, not empty
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["hardware"]["experts"] == [] and "softsign" in summary["hardware"]["without"]["expert_0"]
    for split in ("val", "test"):
        assert "hardware" not in summary["metrics"][split]["trigger_all"]
        assert "hardware" not in summary["metrics"][split]["experts"]["expert_0"]["trigger"]
    with np.load(folder / "expert_0" / "prediction_test.npz") as part:
        assert "hw_raw" not in part
    lines = [line for line in runs["s_console"].splitlines() if NO_HARDWARE in line]
    assert len(lines) == 1 and "expert_0" in lines[0] and "softsign" in lines[0]
    assert (folder / "app.log").read_text().count(NO_HARDWARE) == 1
    assert "flipped decisions" not in (folder / "report.html").read_text(encoding="utf-8")


# ---------------------------------------------------------------------------------------------- evaluate, compare
def test_evaluate_carries_the_hardware_measures_and_columns(runs, capsys):
    """At a cut of 2 cm (a one-epoch network predicts within a few cm of 0) the coarse expert flips decisions."""
    result = evaluate(runs["h"], split="val", cut_cm=2.0)
    summary = json.loads((runs["h"] / "summary.json").read_text())
    assert result.metrics["hardware"] == {"experts": ["expert_0", "expert_3"], "without": {}}
    table = read_table(result.folder / "pred_data_val.csv")
    for key in ("expert_0", "expert_3"):
        own = summary["metrics"]["val"]["experts"][key]["trigger"]
        judged = result.metrics["experts"][key]
        assert judged["hardware"]["z"]["std"] == pytest.approx(own["hardware"]["z"]["std"], rel=1e-9)
        part = table[table["Expert"] == int(key[-1])]
        kept_new, kept_hw = (np.abs(part[c].to_numpy(np.float64) * 100) < 2.0 for c in ("NewZ", "HwZ"))
        assert judged["hardware_vs_float"]["flipped"] == int(np.sum(kept_new != kept_hw))
    assert result.metrics["experts"]["expert_3"]["hardware_vs_float"]["flipped"] > 0
    every = result.metrics["all"]["hardware_vs_float"]
    assert every["flipped"] == sum(result.metrics["experts"][k]["hardware_vs_float"]["flipped"]
                                   for k in ("expert_0", "expert_3"))
    written = json.loads((result.folder / "metrics.json").read_text())
    assert written["all"]["hardware"]["trigger"]["efficiency"] == result.metrics["all"]["hardware"]["trigger"][
        "efficiency"]
    own_table = read_table(runs["h"] / "pred_data_val.csv")
    pd.testing.assert_frame_equal(table[HARDWARE_COLUMNS], own_table[HARDWARE_COLUMNS])

    assert evaluate_main([str(runs["s"]), "--split", "val"]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_HARDWARE) == 1 and "softsign" in out
    folder = Path(out.strip().splitlines()[-1])
    assert list(read_table(folder / "pred_data_val.csv").columns) == COLUMNS + PREDICTION_COLUMNS
    assert "hardware" not in json.loads((folder / "metrics.json").read_text())["all"]
    assert evaluate_main([str(runs["h"]), "--split", "val", "--cut", "2"]) == 0
    out = capsys.readouterr().out
    assert NO_HARDWARE not in out
    hardware_part = out[out.index("\nhardware "):]  # the hardware's lines follow the verdict's
    line = next(line for line in hardware_part.splitlines() if line.startswith("expert_3"))
    assert line.split()[-1] == str(result.metrics["experts"]["expert_3"]["hardware_vs_float"]["flipped"])


def test_compare_carries_the_hardware_measures(runs, capsys):
    assert compare_main([str(runs["h"]), str(runs["s"]), "--log-root", str(runs["root"] / "log")]) == 0
    out = capsys.readouterr().out
    assert out.count(NO_HARDWARE) == 1  # said once, for the run without a hardware equivalent
    folder = Path(out.strip().splitlines()[-1])
    table = pd.read_csv(folder / "comparison.csv")
    metrics = json.loads((folder / "metrics.json").read_text())["runs"]
    h_label, s_label = (f"{f.parent.name}/{f.name}" for f in (runs["h"], runs["s"]))
    for _, row in table.iterrows():
        judged = metrics[row["run"]][str(row["expert"])]
        if row["run"] == s_label:
            assert "hardware" not in judged and pd.isna(row["hw_z_std_cm"]) and pd.isna(row["hw_flipped"])
            continue
        assert row["hw_z_std_cm"] == pytest.approx(judged["hardware"]["z"]["std"], rel=1e-12)
        assert row["hw_flipped"] == judged["hardware_vs_float"]["flipped"]
        assert row["hw_z_abs_diff_max_cm"] == pytest.approx(judged["hardware_vs_float"]["z_abs_diff_max_cm"])
    assert set(table.loc[table["run"] == h_label, "expert"].astype(str)) == {"0", "3", "all"}
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert f"{h_label} on the hardware" in page and f"{s_label} on the hardware" not in page


# ---------------------------------------------------------------------------------------------- the parts
def test_flips_and_differences_on_made_up_tracks():
    float_z = np.array([14.9, -14.9, 3.0, 20.0, np.nan, -16.0])
    hardware_z = np.array([15.1, -14.8, 3.5, 16.0, 1.0, -14.0])
    got = hardware_vs_float(float_z, hardware_z, cut_cm=15.0)
    assert got["rows"] == 5 and got["flipped"] == 2  # 14.9 -> 15.1 dropped; -16 -> -14 kept; NaN left out
    assert got["kept_by_float_only"] == 1 and got["kept_by_hardware_only"] == 1
    assert got["z_abs_diff_max_cm"] == pytest.approx(4.0)
    assert got["z_abs_diff_mean_cm"] == pytest.approx((0.2 + 0.1 + 0.5 + 4.0 + 2.0) / 5)


def test_the_hardware_table_beside_the_verdict():
    rng = np.random.default_rng(3)
    n = 3000
    target = np.stack([rng.uniform(-0.5, 0.5, n), rng.uniform(-1, 1, n)], axis=1)
    pred = target + rng.normal(0, 0.02, target.shape)
    old = target + rng.normal(0, 0.06, target.shape)
    hw = np.round(pred * 64) / 64  # a coarse hardware
    plain = judge(target, pred, old, "MSELoss", np.zeros(n), np.ones(n))
    with_hw = {**plain, **judge_hardware(target, pred, hw, "MSELoss")}
    table = hardware_table({"expert_0": with_hw, "expert_1": plain})
    col = {name: i for i, name in enumerate(table.columns)}
    assert [c for c in table.columns if c.startswith("z \u03c3")] == ["z \u03c3 [cm] float", "z \u03c3 [cm] hardware"]
    assert table.rows[0][col["z \u03c3 [cm] float"]] == f"{plain['new']['z']['std']:.2f}"
    assert table.rows[0][col["z \u03c3 [cm] hardware"]] == f"{with_hw['hardware']['z']['std']:.2f}"
    eff = with_hw["hardware"]["trigger"]
    assert table.rows[0][col["efficiency [%] hardware"]] == (f"{100 * eff['efficiency']:.1f} \u00b1 "
                                                             f"{100 * eff['efficiency_err']:.1f}")
    differ = with_hw["hardware_vs_float"]
    assert differ["flipped"] > 0 and table.rows[0][col["flipped decisions"]] == str(differ["flipped"])
    assert table.rows[0][col["max |\u0394z| hardware \u2212 float [cm]"]] == f"{differ['z_abs_diff_max_cm']:.3f}"
    assert table.rows[1][col["flipped decisions"]] == "\u2013"  # no hardware outputs: nothing to show
    assert hardware_table({"expert_1": plain}) is None  # no network on the hardware: no table
    assert verdict_table({"expert_0": with_hw}).columns == verdict_table({"expert_0": plain}).columns


def test_integer_columns_are_written_as_integers_and_masked_rows_as_nan(tmp_path):
    src = tmp_path / "in.tsv"
    write_table(generate(4, seed=1), src)
    raw = np.ma.masked_array(np.array([5, -4096, 0, 7]), mask=[False, False, True, False])
    write_predictions(src, tmp_path / "out.tsv", np.zeros((4, 2), np.float32),
                      extra={"HwRawZ": raw, "HwZ": np.array([5 / 4096, -1.0, np.nan, 7 / 4096])})
    lines = (tmp_path / "out.tsv").read_text().splitlines()
    assert lines[0].endswith("\tNewZ\tNewTheta\tHwRawZ\tHwZ")
    assert [line.split("\t")[-2:] for line in lines[2:]] == [["5", "0.001220703125"], ["-4096", "-1.0"],
                                                             ["nan", "nan"], ["7", "0.001708984375"]]
    with pytest.raises(ValueError, match="one value for each"):
        write_predictions(src, tmp_path / "bad.tsv", np.zeros((4, 2)), extra={"HwZ": np.zeros(3)})
