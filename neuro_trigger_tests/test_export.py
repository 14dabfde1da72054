"""`neuro_trigger/export.py`: a run's networks in the hardware simulation's format, read back and emulated to the
same integers; and the mistakes a user can make, each one line and nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neuro_trigger.export import main
from neuro_trigger.fpga.export import FILE_NAME, flat_weights, layers_of
from neuro_trigger.fpga.fixed_point import Precision, forward, hardware_layers
from neuro_trigger.judge.networks import load_networks
from neuro_trigger.runner.api import train
from neuro_trigger_tests.run_helpers import toy_splits


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    return toy_splits(tmp_path_factory.mktemp("export_data"), {"train": 3000, "val": 800, "test": 800}, seed=91)


def run_of(data: dict, root: Path, *overrides: str) -> Path:
    return train("baseline_v2", [f"data={data!r}", "experts=[3]", "epochs=2", *overrides], log_root=root,
                 show_progress=False).folder


def run_main(capsys, *args: str | Path) -> tuple[int, list[str], list[str]]:
    capsys.readouterr()
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_the_flat_order_is_node_by_node_inputs_then_bias():
    layers = [(np.array([[1, 2], [3, 4]], np.float32), np.array([5, 6], np.float32)),
              (np.array([[7, 8]], np.float32), np.array([9], np.float32))]
    assert flat_weights(layers) == [1, 2, 5, 3, 4, 6, 7, 8, 9]
    back = layers_of([2, 2, 1], flat_weights(layers))
    assert all(np.array_equal(a, b) for (wa, ba), (wb, bb) in zip(back, layers, strict=True) for a, b in
               ((wa, wb), (ba, bb)))
    with pytest.raises(ValueError, match="need 9"):
        layers_of([2, 2, 1], [1.0] * 8)


def test_an_exported_run_emulates_to_the_same_integers(data, tmp_path, capsys):
    folder = run_of(data, tmp_path / "log", "fixed_point.weight_max=63")
    code, out, err = run_main(capsys, folder)
    assert code == 0, err
    written = Path(out[-1])
    assert written == folder / "exports" / "basf2_0" / FILE_NAME
    export = json.loads(written.read_text(encoding="utf-8"))
    entry = export["experts"]["expert_3"]
    assert entry["layers"] == [27, 81, 2] and len(entry["weights"]) == 28 * 81 + 82 * 2 == 2432
    assert entry["activation"] == "tanh/2" and entry["precision"] == [12, 8, 8, 12, 10, 10]
    assert entry["stereo_hit_pattern"] == "SL3 missing" and entry["output_scaling"]["z_cm"] == [-100.0, 100.0]
    model = load_networks(folder).networks[3]
    x = np.random.default_rng(3).uniform(-1, 1, (5000, 27)).astype(np.float32)
    precision = Precision.from_basf2(entry["precision"])
    assert np.array_equal(forward(layers_of(entry["layers"], entry["weights"]), x, precision),
                          forward(hardware_layers(model, "tanh/2"), x, precision))
    assert run_main(capsys, folder)[1][-1].endswith(f"basf2_1/{FILE_NAME}")  # a second export: a new folder


def test_mistakes_are_one_line_and_write_nothing(data, tmp_path, capsys):
    relu = run_of(data, tmp_path / "relu", "act=relu")
    code, out, err = run_main(capsys, relu)
    assert code == 2 and len(err) == 1 and "has no hardware equivalent" in err[0] and "expert_3" in err[0], err
    assert not (relu / "exports").exists()
    code, _, err = run_main(capsys, tmp_path / "nowhere")
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    taken = tmp_path / "taken"
    taken.mkdir()
    good = run_of(data, tmp_path / "good")
    code, _, err = run_main(capsys, good, "--out", taken)
    assert code == 2 and "exists already" in err[0] and not any(taken.iterdir())
    with pytest.raises(SystemExit) as unknown:
        main([str(good), "--format", "vhdl"])
    assert unknown.value.code == 2
