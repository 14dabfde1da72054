"""`neuro_trigger/export.py --format onnx`: each expert's float network as expert_N.onnx, giving PyTorch's outputs
in onnxruntime, with its facts in the metadata; and the mistakes a user can make, each one line and nothing
written."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from neuro_trigger import models, registry
from neuro_trigger.data.dataset import load_split
from neuro_trigger.data.neuroresults.format import INPUT_COLUMNS
from neuro_trigger.export import main
from neuro_trigger.fpga import onnx_export
from neuro_trigger.fpga.onnx_export import TOLERANCE, CheckRows, export_expert
from neuro_trigger.judge.networks import load_networks
from neuro_trigger.runner.api import train
from neuro_trigger_tests.run_helpers import toy_splits


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    return toy_splits(tmp_path_factory.mktemp("onnx_data"), {"train": 2000, "val": 800, "test": 200}, seed=57)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A small trained run of two experts (exports go into copies of it where a test needs it untouched)."""
    return train("baseline_v2", [f"data={data!r}", "experts=[1, 3]", "epochs=1", "plot_every=1000"], production=True,
                 log_root=tmp_path_factory.mktemp("onnx_log"), show_progress=False).folder


def copy_of(run: Path, to: Path) -> Path:
    """The parts of a run an export reads (config.json, weights.json), in a folder of its own."""
    to.mkdir()
    for name in ("config.json", "weights.json"):
        shutil.copy(run / name, to / name)
    return to


def run_main(capfd, *args: str | Path) -> tuple[int, list[str], list[str]]:
    """Exit code, stdout and stderr lines; captured at the file descriptors, where torch's log lines would go."""
    capfd.readouterr()
    code = main([str(a) for a in args])
    out, err = capfd.readouterr()
    return code, out.strip().splitlines(), err.strip().splitlines()


def test_an_exported_run_gives_pytorchs_outputs_and_carries_its_facts(data, run, tmp_path, capfd):
    folder = copy_of(run, tmp_path / "run")
    code, out, err = run_main(capfd, folder, "--format", "onnx")
    assert code == 0 and err == [], err  # quiet: no exporter warnings on the console
    written = Path(out[-1])
    assert written == folder / "exports" / "onnx_0"
    assert sorted(p.name for p in written.iterdir()) == ["expert_1.onnx", "expert_3.onnx"]
    val = load_split(data["val"])
    nets = load_networks(folder)
    for expert in (1, 3):
        path = written / f"expert_{expert}.onnx"
        onnx.checker.check_model(onnx.load(path))
        rows = val.x[val.expert == expert]
        x = np.concatenate([rows, np.random.default_rng(expert).uniform(-1, 1, (500, 27)).astype(np.float32)])
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        theirs = session.run(None, {"x": x})[0]
        with torch.no_grad():
            ours = nets.networks[expert](torch.from_numpy(x)).numpy()
        assert theirs.shape == (len(x), 2) and np.abs(theirs - ours).max() <= TOLERANCE
        for n in (1, 7):  # the batch dimension is dynamic
            assert session.run(None, {"x": x[:n]})[0].shape == (n, 2)
        meta = {p.key: p.value for p in onnx.load(path).metadata_props}
        assert meta["expert"] == str(expert) and meta["activation"] == "tanh/2"
        assert meta["config_name"] == "baseline_v2" and meta["model"] == "BaselineModel"
        assert meta["stereo_hit_pattern"] == {1: "SL7 missing", 3: "SL3 missing"}[expert]
        assert json.loads(meta["input_names"]) == INPUT_COLUMNS and len(INPUT_COLUMNS) == 27
        assert json.loads(meta["output_scaling"]) == {"z_cm": [-100, 100], "theta_deg": [10, 170]}
        assert "[-1, 1]" in meta["input_scaling"]
        check = json.loads(meta["check"])
        assert check["rows"] == len(rows) > 0 and check["of"] == "validation rows"
        assert check["max_abs_diff"] <= TOLERANCE
    assert f"on {len(val.x[val.expert == 1]):,} validation rows" in out[0]
    assert run_main(capfd, folder, "--format", "onnx")[1][-1].endswith("onnx_1")  # a second export: a new folder


@pytest.mark.parametrize("model, act", [("BaselineModelBN", "softsign"), ("SimpleModel", "relu"),
                                        ("BaselineModel", "selu")])
def test_other_networks_and_activations_export(model, act, tmp_path):
    torch.manual_seed(5)
    net = registry.build_model(model, 27, 2, act)
    for layer in net.modules():  # batch norm with statistics of its own, not the identity
        if isinstance(layer, torch.nn.BatchNorm1d):
            layer.running_mean.uniform_(-0.5, 0.5)
            layer.running_var.uniform_(0.5, 2.0)
    net.eval()
    rows = CheckRows(np.random.default_rng(1).uniform(-1, 1, (3000, 27)).astype(np.float32), "random inputs")
    config = {"model": model, "act": act, "in_size": 27, "out_size": 2, "expert": 0}
    done = export_expert("expert_0", net, config, "a_config", tmp_path, rows)
    session = ort.InferenceSession(done.data, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        ours = net(torch.from_numpy(rows.x)).numpy()
    assert np.abs(session.run(None, {"x": rows.x})[0] - ours).max() <= TOLERANCE
    assert done.max_diff <= TOLERANCE and done.rows == 3000


def test_a_network_torch_cannot_export_is_one_line_and_nothing_written(run, tmp_path, capfd, monkeypatch):
    folder = copy_of(run, tmp_path / "run")

    def data_dependent(self, x):  # control flow on a value: torch.export refuses it
        return self.fn(x) if float(x.sum()) > 0 else -self.fn(x)

    monkeypatch.setattr(models.Activation, "forward", data_dependent)
    code, out, err = run_main(capfd, folder, "--format", "onnx")
    assert code == 2 and out == [] and len(err) == 1, err
    assert err[0].startswith("error: expert_1: the BaselineModel with activation 'tanh/2' cannot be exported to ONNX")
    assert not (folder / "exports").exists()


def test_a_failed_check_of_any_expert_writes_nothing(run, tmp_path, capfd, monkeypatch):
    folder = copy_of(run, tmp_path / "run")
    real = onnx_export.max_difference
    calls = []

    def second_differs(data, model, x):
        calls.append(len(x))
        return real(data, model, x) if len(calls) == 1 else 3e-4

    monkeypatch.setattr(onnx_export, "max_difference", second_differs)
    code, out, err = run_main(capfd, folder, "--format", "onnx", "--out", tmp_path / "new")
    assert code == 2 and len(calls) == 2 and len(err) == 1, err
    assert err[0].startswith("error: expert_3: the ONNX model's outputs differ from PyTorch's by up to 0.0003")
    assert not (folder / "exports").exists() and not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no staging folder either


def test_out_is_a_new_folder_or_an_error(run, tmp_path, capfd):
    folder = copy_of(run, tmp_path / "run")
    taken = tmp_path / "taken"
    taken.mkdir()
    code, out, err = run_main(capfd, folder, "--format", "onnx", "--out", taken)
    assert code == 2 and len(err) == 1 and "exists already" in err[0] and not any(taken.iterdir())
    new = tmp_path / "deeper" / "new"
    code, out, err = run_main(capfd, folder, "--format", "onnx", "--out", new)
    assert code == 0 and out[-1] == str(new) and sorted(p.name for p in new.iterdir()) == ["expert_1.onnx",
                                                                                           "expert_3.onnx"]
    assert not (folder / "exports").exists()


def test_bad_runs_and_formats_are_one_line(run, tmp_path, capfd):
    no_weights = copy_of(run, tmp_path / "no_weights")
    (no_weights / "weights.json").unlink()
    code, _, err = run_main(capfd, no_weights, "--format", "onnx")
    assert code == 2 and len(err) == 1 and "weights.json is missing" in err[0], err
    partial = copy_of(run, tmp_path / "partial")
    weights = json.loads((partial / "weights.json").read_text())
    del weights["expert_1"]
    (partial / "weights.json").write_text(json.dumps(weights))
    code, _, err = run_main(capfd, partial, "--format", "onnx")
    assert code == 2 and len(err) == 1 and "no network for expert_1 (no weights)" in err[0], err
    assert not (no_weights / "exports").exists() and not (partial / "exports").exists()
    with pytest.raises(SystemExit) as unknown:
        main([str(run), "--format", "tflite"])
    assert unknown.value.code == 2


def test_without_the_runs_data_the_check_uses_random_inputs(run, tmp_path, capfd):
    moved = copy_of(run, tmp_path / "moved")
    config = json.loads((moved / "config.json").read_text())
    config["global"]["data"]["val"] = [str(tmp_path / "gone.gz")]
    (moved / "config.json").write_text(json.dumps(config))
    code, out, err = run_main(capfd, moved, "--format", "onnx")
    assert code == 0 and len(err) == 1 and err[0].startswith("warning: the run's validation data cannot be loaded")
    assert "gone.gz" in err[0] and "random inputs in [-1, 1]" in out[0]
    meta = {p.key: p.value for p in onnx.load(Path(out[-1]) / "expert_3.onnx").metadata_props}
    assert json.loads(meta["check"])["of"] == "random inputs in [-1, 1]"
