"""The precision scan (`evaluate.py RUN --precision-scan`) of a small trained run: the table's rows, the 12/10/10
point against the emulation recomputed here, the smallest widths against the criterion and their next narrower
against it, new folders, the console, and the mistakes a user can make (one line, exit 2, nothing written).
The search itself, on made-up networks: test_width_search.py."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.data.dataset import load_split
from neuro_trigger.evaluate import main
from neuro_trigger.fpga import width_search
from neuro_trigger.fpga.fixed_point import Precision, forward, hardware_layers
from neuro_trigger.judge.networks import load_networks, predict
from neuro_trigger.judge.precision_scan import TABLE, precision_scan
from neuro_trigger.runner.api import train
from neuro_trigger_tests.run_helpers import toy_splits

SCANNED, RELU = [0, 3], 1


# ============================================================================================== on a trained run
@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """Experts 0 and 3 (tanh/2) and 1 (relu: no hardware equivalent), trained well enough that too few bits
    hurt them."""
    tmp = tmp_path_factory.mktemp("precision_scan")
    data = toy_splits(tmp, {"train": 8000, "val": 4000, "test": 500}, seed=77)
    result = train("baseline_v2", [f"data={data!r}", f"experts={[*SCANNED, RELU]!r}", "epochs=6", "batch_size=128",
                                   "learning_rate=0.01", f"expert_{RELU}.act=relu"],
                   production=True, log_root=tmp / "log", show_progress=False)
    assert result.ok
    return result.folder


@pytest.fixture(scope="module")
def scanned(run):
    return precision_scan(run)


def test_the_table_has_a_float_row_and_every_point_of_each_scan(run, scanned) -> None:
    assert scanned.folder == run / "precision_scans" / "val_0"
    written = pd.read_csv(scanned.folder / TABLE)
    table = scanned.table
    assert len(written) == len(table) and list(written.columns) == list(table.columns)
    np.testing.assert_allclose(written["z_std_cm"], table["z_std_cm"].astype(float), rtol=1e-5)
    assert sorted(table["expert"].unique()) == [f"expert_{e}" for e in SCANNED]  # the relu network: skipped
    assert scanned.skipped == {f"expert_{RELU}": scanned.skipped[f"expert_{RELU}"]}
    assert "no hardware equivalent" in scanned.skipped[f"expert_{RELU}"]
    for e in SCANNED:
        part = table[table["expert"] == f"expert_{e}"]
        assert (part["scan"] == "float").sum() == 1
        for axis, others in (("node", (10, 10)), ("weight", (12, 10)), ("lut", (12, 10))):
            rows = part[part["scan"] == axis]
            assert rows[axis].tolist() == list(range(1, 17)), axis
            rest = [a for a in width_search.AXES if a != axis]
            assert {tuple(r) for r in rows[rest].to_numpy().tolist()} == {others}, axis
        assert (part["scan"] == "joint").sum() >= 1
        assert part["rows"].nunique() == 1
    info = json.loads((scanned.folder / "precision_scan.json").read_text(encoding="utf-8"))
    assert info["split"] == "val" and set(info["experts"]) == {f"expert_{e}" for e in SCANNED}
    assert (scanned.folder / "precision_scan.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_at_12_10_10_the_scan_gives_what_the_emulation_gives(run, scanned) -> None:
    nets = load_networks(run)
    store = load_split(json.loads((run / "config.json").read_text(encoding="utf-8"))["global"]["data"]["val"])
    pred = predict(nets, store)
    table = scanned.table
    for e in SCANNED:
        rows = store.expert_rows(e)
        reco = store.y[rows, 0].astype(np.float64) * 100
        raw = forward(hardware_layers(nets.networks[e], "tanh/2"), store.x[rows], Precision(12, 10, 10))
        hardware = raw[:, 0] / 4096 * 100
        part = table[table["expert"] == f"expert_{e}"]
        basf2 = part[(part["scan"] == "node") & (part["node"] == 12)].iloc[0]
        assert (basf2["weight"], basf2["lut"]) == (10, 10)
        assert basf2["rows"] == len(rows)
        assert basf2["z_std_cm"] == pytest.approx((reco - hardware).std(), rel=1e-12)
        ip = np.abs(reco) < 1
        assert basf2["efficiency"] == pytest.approx((np.abs(hardware[ip]) < 15).mean(), rel=1e-12)
        floating = part[part["scan"] == "float"].iloc[0]
        assert floating["z_std_cm"] == pytest.approx((reco - pred[rows, 0].astype(np.float64) * 100).std(), rel=1e-9)
        assert basf2["z_std_cm"] != floating["z_std_cm"]  # the emulation, not the float network again


def passes(row: pd.Series) -> bool:
    """The criterion, from the table's own numbers."""
    return row["z_std_vs_float"] <= 1.01 and row["efficiency_vs_float"] >= -0.01


def test_the_smallest_widths_pass_and_one_bit_less_does_not(scanned) -> None:
    table = scanned.table
    for key, found in scanned.scans.items():
        part = table[table["expert"] == key]
        for axis in width_search.AXES:
            rows = part[part["scan"] == axis].set_index(axis)
            smallest = rows.index[rows["smallest"]].tolist()
            assert smallest == [found.smallest[axis]], (key, axis)
            width = smallest[0]
            assert width > 1, (key, axis)  # too few bits must hurt a trained network, or nothing is tested
            assert all(passes(rows.loc[w]) for w in range(width, 17)), (key, axis)
            assert not passes(rows.loc[width - 1]), (key, axis)
            assert rows["within"].tolist() == [passes(r) for _, r in rows.iterrows()]
        joint = part[part["scan"] == "joint"]
        pick = joint[joint["smallest"]]
        assert len(pick) == 1, key
        pick = pick.iloc[0]
        assert passes(pick)
        assert all(pick[a] >= found.smallest[a] for a in width_search.AXES)
        total = pick["node"] + pick["weight"] + pick["lut"]
        narrower = joint[joint["node"] + joint["weight"] + joint["lut"] < total]
        assert not any(passes(r) for _, r in narrower.iterrows()), key
        for axis in width_search.AXES:  # one bit less: measured and failing, or below the axis's minimum
            less = {a: pick[a] - (a == axis) for a in width_search.AXES}
            if less[axis] >= found.smallest[axis]:
                match = joint[(joint["node"] == less["node"]) & (joint["weight"] == less["weight"])
                              & (joint["lut"] == less["lut"])]
                assert len(match) == 1 and not passes(match.iloc[0]), (key, axis)


def test_cli_prints_one_line_per_network_last_and_never_overwrites(run, scanned, capsys) -> None:
    capsys.readouterr()
    assert main([str(run), "--precision-scan"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith(f"expert_{RELU}: ") and out[0].endswith("; skipped")
    assert out[1] == str(run / "precision_scans" / "val_1")
    for line, (key, found) in zip(out[2:], scanned.scans.items(), strict=True):
        assert line.startswith(f"{key}: smallest widths within 1% of float: node {found.smallest['node']}, "
                               f"weight {found.smallest['weight']}, table {found.smallest['lut']} ")
        joint = found.joint
        assert f"together node/weight/table {joint.node}/{joint.weight}/{joint.lut}:" in line
    assert pd.read_csv(scanned.folder / TABLE).shape == scanned.table.shape  # the first folder untouched


def _only_relu(run: Path, tmp: Path) -> Path:
    folder = tmp / "relu_only"
    folder.mkdir()
    shutil.copy(run / "config.json", folder / "config.json")
    weights = json.loads((run / "weights.json").read_text(encoding="utf-8"))
    (folder / "weights.json").write_text(json.dumps({f"expert_{RELU}": weights[f"expert_{RELU}"]}),
                                         encoding="utf-8")
    return folder


def _no_weights(run: Path, tmp: Path) -> Path:
    folder = tmp / "no_weights"
    folder.mkdir()
    shutil.copy(run / "config.json", folder / "config.json")
    return folder


def _not_a_run(run: Path, tmp: Path) -> Path:
    (tmp / "empty").mkdir()
    return tmp / "empty"


@pytest.mark.parametrize("case, says", [(_only_relu, "none of its networks has a hardware equivalent"),
                                        (_no_weights, "weights.json is missing"),
                                        (_not_a_run, "is not a run folder"),
                                        (lambda run, tmp: tmp / "nowhere", "not found")])
def test_mistakes_are_one_line_exit_2_and_nothing_written(run, tmp_path, capsys, case, says) -> None:
    folder = case(run, tmp_path)
    capsys.readouterr()
    assert main([str(folder), "--precision-scan"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and says in err, err
    assert not (folder / "precision_scans").exists()
