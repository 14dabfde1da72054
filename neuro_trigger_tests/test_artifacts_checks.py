"""Run-folder artifacts: comparisons with the old network, "filtered", weights.json layouts, file modes,
a full disk, and the estimate of what a run writes."""
from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_trigger import registry
from neuro_trigger.data import earlier_runs as compat
from neuro_trigger.data.dataset import load_split
from neuro_trigger.data.filter_parser import parse_filter
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.selection import apply_compare_to
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.errors import UserError
from neuro_trigger.judge.assemble import assemble
from neuro_trigger.judge.expert_results import _is_filtered
from neuro_trigger.judge.filtered import is_identity_filter
from neuro_trigger.judge.metrics import split_metrics
from neuro_trigger.judge.run_size import estimated_run_bytes
from neuro_trigger.run import prediction_tables
from neuro_trigger.run.files import DiskFullError, save_npz, save_tensor, write_atomic, write_json
from neuro_trigger.run.weights import check_weights_file, load_weights_into, weights_to_json

# ---------------------------------------------------------------------------------------------- vs old


def test_vs_old_ratios_use_only_rows_both_networks_cover():
    """Rows 0-3 have both predictions, rows 4-5 (experts the earlier run did not train) only the new one."""
    target = np.zeros((6, 2))
    pred = np.array([[0.01, 0], [-0.01, 0], [0.01, 0], [-0.01, 0], [0.5, 0], [-0.5, 0]])
    old = np.array([[0.02, 0], [-0.02, 0], [0.02, 0], [-0.02, 0], [np.nan, np.nan], [np.nan, np.nan]])
    m = split_metrics(target, pred, old, "MSELoss")
    assert m["rows"] == 6 and m["rows_without_old"] == 2
    # the new network on all its rows: z residuals -1, 1, -1, 1, -50, 50 cm
    assert m["loss"] == pytest.approx((4 * 1e-4 + 2 * 0.25) / 12)
    assert m["z_diff_std_cm"] == pytest.approx(math.sqrt((4 * 1 + 2 * 2500) / 6))
    # the old network and the ratios on rows 0-3 only
    assert m["old_loss"] == pytest.approx(4 * 4e-4 / 8)
    assert m["loss_vs_old"] == pytest.approx((4 * 1e-4 / 8) / (4 * 4e-4 / 8))  # 0.25
    assert m["old_z_diff_std_cm"] == pytest.approx(2.0)
    assert m["z_diff_std_vs_old"] == pytest.approx(0.5)
    assert m["old_theta_diff_std_deg"] == 0.0


def test_one_nan_in_the_old_outputs_leaves_one_row_out():
    rng = np.random.default_rng(5)
    target = rng.uniform(-0.5, 0.5, (1000, 2))
    pred = target + rng.normal(0, 0.02, (1000, 2))
    old = target + rng.normal(0, 0.05, (1000, 2))
    old[17, 0] = np.nan  # ScaleZ NaN in the data file
    m = split_metrics(target, pred, old, "MSELoss")
    rest = np.arange(1000) != 17
    ref = split_metrics(target[rest], pred[rest], old[rest], "MSELoss")
    assert m["rows_without_old"] == 1 and ref["rows_without_old"] == 0
    for key in ("loss_vs_old", "z_diff_std_vs_old", "old_loss", "old_z_diff_std_cm", "old_theta_diff_std_deg"):
        assert math.isfinite(m[key]) and m[key] == pytest.approx(ref[key], rel=1e-12), key
    assert m["loss"] == pytest.approx(split_metrics(target, pred, target, "MSELoss")["loss"])


def test_no_old_prediction_at_all():
    target = np.zeros((3, 2))
    m = split_metrics(target, target + 0.1, np.full((3, 2), np.nan), "L1Loss")
    assert m["rows_without_old"] == 3 and m["loss"] == pytest.approx(0.1)
    assert math.isnan(m["loss_vs_old"]) and math.isnan(m["old_loss"]) and math.isnan(m["z_diff_std_vs_old"])


# ---------------------------------------------------------------------------------------------- filtered
@pytest.mark.parametrize("text, filtered", [
    ("dataset_filters.IdentityFilter()", False),
    ("IdentityFilter() & IdentityFilter()", False),
    ("ConCatFilter([])", False),
    ("ConCatFilter([IdentityFilter(), IdentityFilter()])", False),
    ("ExpertFilter(-1)", False),
    ("~~IdentityFilter()", False),
    ("IdentityFilter() | Max2EventsFilter()", False),
    ("Max2EventsFilter() & IdentityFilter()", True),
    ("dataset_filters.ConCatFilter([dataset_filters.IdentityFilter(), dataset_filters.DuplicateEventsFilter()])",
     True),
    ("~IdentityFilter()", True),
    ("RangeFilter(range(0, 1000000000))", True),
    ("ExpertFilter(2)", True),
])
def test_filtered_is_decided_from_the_parsed_filter(text, filtered):
    assert _is_filtered({"filter": text}) is filtered
    assert is_identity_filter(parse_filter(text)) is not filtered


# ---------------------------------------------------------------------------------------------- weights.json
def baseline(out_size: int = 2, model: str = "BaselineModel", seed: int = 0):
    torch.manual_seed(seed)
    return registry.build_model(model, 27, out_size, "tanh/2")


def write_weights(path: Path, entries: dict) -> str:
    path.write_text(json.dumps(entries))
    return str(path)


def earlier_layout(state: dict) -> dict:
    return {name: {"shape": list(t.shape), "values": t.tolist()} for name, t in state.items()}


def test_weights_json_in_the_original_layout():
    entry = weights_to_json(baseline().state_dict())
    assert set(entry) == {"shapes", "weights"}
    assert entry["shapes"] == {"model.net.0.weight": [81, 27], "model.net.0.bias": [81],
                               "model.net.2.weight": [2, 81], "model.net.2.bias": [2]}
    assert set(entry["weights"]) == set(entry["shapes"])
    assert np.array(entry["weights"]["model.net.0.weight"]).shape == (81, 27)


@pytest.mark.parametrize("layout", ["original", "earlier"])
@pytest.mark.parametrize("model", ["BaselineModel", "BaselineModelBN"])
def test_pre_trained_weights_of_either_layout_load(layout, model, tmp_path):
    source = baseline(model=model, seed=1)
    if model == "BaselineModelBN":
        source.net[1].running_mean.fill_(0.25)
        source.net[1].num_batches_tracked.fill_(7)
    entry = weights_to_json(source.state_dict()) if layout == "original" else \
        earlier_layout(source.state_dict())
    path = write_weights(tmp_path / "weights.json", {"expert_3": entry})
    configs = {"expert_3": {"model": model, "in_size": 27, "out_size": 2, "act": "tanh/2"}}
    check_weights_file(path, ["expert_3"], configs)
    target = baseline(model=model, seed=2)
    load_weights_into(target, path, "expert_3")
    for name, tensor in source.state_dict().items():
        assert torch.equal(target.state_dict()[name], tensor), name


def test_weights_json_written_by_the_original(tmp_path):
    """As utils.expert_weights_json wrote it: json.dump of torch.Size shapes and tolist() values."""
    state = {"model." + k: v for k, v in baseline(seed=3).state_dict().items()}
    original = {"expert_0": {"shapes": {k: v.shape for k, v in state.items()},
                             "weights": {k: v.tolist() for k, v in state.items()}}}
    path = write_weights(tmp_path / "weights.json", original)
    target = baseline(seed=4)
    load_weights_into(target, path, "expert_0")
    assert torch.equal(target.net[0].weight, state["model.net.0.weight"])


def _entry(mutate) -> dict:
    entry = weights_to_json(baseline().state_dict())
    mutate(entry)
    return entry


@pytest.mark.parametrize("case, mutate, expected", [
    ("wrong shape", lambda e: (e["shapes"].update({"model.net.2.weight": [1, 81]}),
                               e["weights"].update({"model.net.2.weight": [[0.0] * 81]})),
     "expert_0.model.net.2.weight has shape [1, 81], the network needs [2, 81]"),
    ("values of another shape", lambda e: e["weights"].update({"model.net.0.bias": [0.0] * 80}),
     "expert_0.model.net.0.bias has shape [80], the network needs [81]"),
    ("missing tensor", lambda e: (e["weights"].pop("model.net.2.bias"), e["shapes"].pop("model.net.2.bias")),
     "expert_0 lacks tensor 'model.net.2.bias'"),
    ("extra tensor", lambda e: e["weights"].update({"model.net.1.running_mean": [0.0] * 81}),
     "has tensor 'model.net.1.running_mean' the network lacks"),
    ("not numbers", lambda e: e["weights"].update({"model.net.2.bias": ["a", "b"]}),
     "expert_0.model.net.2.bias: values are not a numeric array"),
    ("ragged", lambda e: e["weights"].update({"model.net.2.weight": [[0.0] * 81, [0.0] * 80]}),
     "expert_0.model.net.2.weight"),
])
def test_bad_weights_are_one_line_user_errors(case, mutate, expected, tmp_path):
    path = write_weights(tmp_path / "w.json", {"expert_0": _entry(mutate)})
    configs = {"expert_0": {"model": "BaselineModel", "in_size": 27, "out_size": 2, "act": "tanh/2"}}
    with pytest.raises(UserError) as info:
        check_weights_file(path, ["expert_0"], configs)
    message = str(info.value)
    assert expected in message and path in message and "\n" not in message
    with pytest.raises(UserError, match="load_pre_trained_weights"):
        load_weights_into(baseline(), path, "expert_0")


def test_weights_file_of_neither_layout(tmp_path):
    for content in ({"expert_0": {"net.0.weight": [1, 2]}}, {"expert_0": [1, 2]}, [1, 2]):
        path = write_weights(tmp_path / "w.json", content)
        with pytest.raises(UserError) as info:
            load_weights_into(baseline(), path, "expert_0")
        assert "\n" not in str(info.value) and path in str(info.value)


# ---------------------------------------------------------------------------------------------- file modes
@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_json_files_are_readable_by_the_group(tmp_path, umask_022):
    write_json(tmp_path / "a" / "summary.json", {"x": math.nan})
    assert mode(tmp_path / "a" / "summary.json") == 0o644
    assert json.loads((tmp_path / "a" / "summary.json").read_text()) == {"x": None}
    os.umask(0o027)  # a site's umask still applies
    write_json(tmp_path / "b.json", {})
    assert mode(tmp_path / "b.json") == 0o640


# ---------------------------------------------------------------------------------------------- full disk
def disk_full_writer(code: int):
    def write(f) -> None:
        f.write(b"x" * 1000)
        raise OSError(code, os.strerror(code))
    return write


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_is_one_line_and_leaves_nothing(code, tmp_path):
    target = tmp_path / "prediction_val.pt"
    with pytest.raises(DiskFullError) as info:
        write_atomic(target, disk_full_writer(code))
    assert isinstance(info.value, UserError)
    assert str(info.value).startswith(f"disk full while writing {target}: ") and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_other_os_errors_are_not_disk_full(tmp_path):
    with pytest.raises(PermissionError):
        write_atomic(tmp_path / "x.json", disk_full_writer(errno.EACCES))
    assert list(tmp_path.iterdir()) == []


def test_disk_full_on_a_real_small_filesystem(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip() or done.returncode}")
    try:
        write_json(mount / "summary.json", {"status": "running"})
        with pytest.raises(DiskFullError, match="disk full while writing .*prediction_train.pt"):
            save_tensor(mount / "prediction_train.pt", np.zeros((600_000, 2), np.float32))
        with pytest.raises(DiskFullError, match="prediction_val.npz"):
            save_npz(mount / "prediction_val.npz", rows=np.arange(300_000), pred=np.zeros((300_000, 2)))
        with pytest.raises(DiskFullError, match="weights.json"):
            write_json(mount / "weights.json", {"expert_0": list(range(400_000))})
        assert sorted(p.name for p in mount.iterdir()) == ["summary.json"]  # no half-written file
        assert json.loads((mount / "summary.json").read_text()) == {"status": "running"}
    finally:
        subprocess.run(["umount", str(mount)], check=False)


# ---------------------------------------------------------------------------------------------- one real run
ROWS = {"train": 500, "val": 300, "test": 300}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from neuro_trigger.runner.api import train

    folder = tmp_path_factory.mktemp("tiny_data")
    data = {}
    for i, (split, n) in enumerate(ROWS.items()):
        data[split] = [str(folder / f"neuroresults_random{i + 1}.gz")]
        write_table(generate(n, seed=40 + i), data[split][0])
    config = {"extends": "baseline_v2", "data": data, "epochs": 2, "plot_every": 1, "batch_size": 128,
              "experts": [0], "early_stopping_patience": 100}
    old = os.umask(0o022)
    try:
        result = train(config, production=False, log_root=tmp_path_factory.mktemp("tiny_log"), show_progress=False)
    finally:
        os.umask(old)
    assert result.ok
    return result.folder, data


def stores_for(data: dict[str, list[str]], cache: Path) -> dict:
    return {split: load_split(paths, cache_dir=cache) for split, paths in data.items()}


def test_run_files_mode_and_weights_layout(tiny_run):
    folder, _ = tiny_run
    for path in (folder / "summary.json", folder / "weights.json", folder / "expert_0" / "result_val.json",
                 folder / "expert_0" / "weights.json", folder / "prediction_val.pt",
                 folder / "expert_0" / "prediction_val.npz"):
        assert mode(path) == 0o644, path
    weights = json.loads((folder / "weights.json").read_text())
    assert set(weights) == {"expert_0"}
    assert weights["expert_0"]["shapes"]["model.net.0.weight"] == [81, 27]
    assert np.array(weights["expert_0"]["weights"]["model.net.2.weight"]).shape == (2, 81)
    assert weights == {"expert_0": json.loads((folder / "expert_0" / "weights.json").read_text())}
    model = baseline(seed=9)
    load_weights_into(model, str(folder / "weights.json"), "expert_0")
    assert model.net[0].weight.tolist() == weights["expert_0"]["weights"]["model.net.0.weight"]
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["metrics"]["val"]["all_unfiltered"]["rows_without_old"] == 0


def test_estimated_bytes_close_to_what_a_run_wrote(tiny_run, tmp_path):
    folder, data = tiny_run
    written = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    resolved = json.loads((folder / "config.json").read_text())
    estimate = estimated_run_bytes(stores_for(data, tmp_path), resolved)
    assert written / 2 <= estimate <= written * 2, (estimate, written)


def test_compare_to_a_run_that_lacks_experts(tiny_run, tmp_path):
    """The earlier run trained expert 0 only: rows of expert 1 have no old prediction and are counted."""
    folder, data = tiny_run
    stores = stores_for(data, tmp_path)
    log_root = folder.parent.parent
    apply_compare_to(stores, f"{folder.parent.name}/{folder.name}", log_root)
    val = stores["val"]
    rows = np.flatnonzero(np.isin(val.expert, [0, 1]))
    pred = val.y[rows] + 0.01
    m = split_metrics(val.y[rows], pred, val.y_old[rows], "MSELoss")
    assert m["rows_without_old"] == int(np.count_nonzero(val.expert == 1)) > 0
    zero = val.expert[rows] == 0
    ref = split_metrics(val.y[rows][zero], pred[zero], val.y_old[rows][zero], "MSELoss")
    assert m["loss_vs_old"] == pytest.approx(ref["loss_vs_old"]) and math.isfinite(m["loss_vs_old"])
    assert compat.run_kind(folder) == "own"


def test_full_disk_while_assembling_leaves_an_honest_summary(tiny_run, tmp_path, monkeypatch):
    folder, data = tiny_run
    copy = tmp_path / "log" / "custom" / "version_0"
    shutil.copytree(folder, copy)
    for name in ("pred_data_val.csv", "pred_data_test.csv", "pred_data_train.csv"):
        (copy / name).unlink()

    def half_then_full(store, pred, dst, *hardware):
        dst.write_bytes(b"Experiment\tRun")  # half a table, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(prediction_tables, "_write_prediction_table", half_then_full)
    with pytest.raises(DiskFullError) as info:
        assemble(copy, stores_for(data, tmp_path / "cache"))
    message = str(info.value)
    assert message.startswith("disk full while writing") and "pred_data_" in message and "\n" not in message
    summary = json.loads((copy / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["error"] == message
    assert summary["metrics"]["val"]["all_unfiltered"]["rows"] > 0
    assert not list(copy.glob("pred_data_*.csv")) and not list(copy.glob(".*tmp"))
