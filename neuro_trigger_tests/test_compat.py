"""Earlier runs for compare_to: this project's run folders and the original trainer's (compat.py)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro_trigger import REPO_ROOT
from neuro_trigger.data import earlier_runs as compat
from neuro_trigger.data.dataset import ColumnStore, load_split
from neuro_trigger.data.neuroresults.format import COLUMNS, PREDICTION_COLUMNS
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.selection import apply_compare_to
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.errors import UserError

SIZES = {"train": 300, "val": 200, "test": 150}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("compat_data")
    paths = {}
    for i, (split, n) in enumerate(SIZES.items()):
        paths[split] = folder / f"neuroresults_random{i + 1}.gz"
        write_table(generate(n, seed=300 + i), paths[split])
    return paths


def stores_of(data: dict[str, Path], cache: Path, order: tuple[str, str, str] = ("train", "val", "test")
              ) -> dict[str, ColumnStore]:
    """Fresh stores; `order` names which data file each of train, val, test reads."""
    return {split: load_split([data[source]], cache_dir=cache) for split, source in zip(SIZES, order, strict=True)}


def predictions(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.9, 0.9, (n, 2)).astype(np.float32)


def write_original_run(folder: Path, data: dict[str, Path], experts: list[int], *, csv: bool = True,
                       pt: str | None = "latest", summary: bool = True, out_size: int = 2) -> dict[str, np.ndarray]:
    """A run folder as the original trainer leaves it (utils.save_csv_dataset_with_predictions,
    save_predictions_pickle, main's summary.json); returns the full (N, 2) predictions per split, NaN where
    the experts trained made none."""
    folder.mkdir(parents=True)
    full = {}
    for k, split in enumerate(SIZES, start=1):
        table = np.loadtxt(data[split], skiprows=2)  # as the original read its data
        n = len(table)
        pred = predictions(n, seed=k)
        rows = np.flatnonzero(np.isin(table[:, 6], experts)) if experts != [-1] else np.arange(n)
        expected = np.full((n, 2), np.nan, dtype=np.float32)
        expected[rows, :out_size] = pred[rows, :out_size]
        full[split] = expected
        if csv:
            new = np.zeros((n, 44))
            new[:, :42] = table
            new[rows, 42:] = pred[rows]
            fmt = "\t".join(["%i"] * 9 + ["%f"] * 33 + ["%.16f", "%.16f"])
            np.savetxt(folder / f"pred_data_random{k}.csv", new, delimiter="", fmt=fmt)
            text = (folder / f"pred_data_random{k}.csv").read_text()
            (folder / f"pred_data_random{k}.csv").write_text("\t".join(COLUMNS + PREDICTION_COLUMNS) + "\n\n" + text)
        if pt == "latest":  # utils.save_predictions_pickle: data[:, 1:3] of the rows predicted
            saved = torch.from_numpy(pred[rows]) if out_size == 2 else \
                torch.from_numpy(np.stack([pred[rows, 0], table[rows, 36]], axis=1).astype(np.float32))
            torch.save(saved, folder / f"prediction_random{k}.pt")
        elif pt == "indexed":  # an earlier version: idx (as float), y_hat, y
            block = np.concatenate([rows[:, None], pred[rows], table[rows, 36:38]], axis=1).astype(np.float32)
            torch.save(torch.from_numpy(block), folder / f"prediction_random{k}.pt")
    if summary:
        (folder / "summary.json").write_text(json.dumps({
            "experts": experts, "out_size": out_size, "compare_to": None, "git_id": "abc",
            "data_path": [[str(data[s])] for s in SIZES], "loss": {}}))
    return full


def assert_same(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == np.float32
    np.testing.assert_array_equal(np.isnan(actual), np.isnan(expected))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-7, equal_nan=True)


# ---------------------------------------------------------------------------------------------- where runs live
def test_compare_to_root_is_the_production_log_root(tmp_path):
    assert compat.compare_to_root(None) == REPO_ROOT / "log"
    assert compat.compare_to_root(Path("/tmp/nt_pytorch_debug_log")) == REPO_ROOT / "log"  # a debug run
    assert compat.compare_to_root(str(compat.DEBUG_LOG_ROOT) + "/") == REPO_ROOT / "log"
    assert compat.compare_to_root(tmp_path) == tmp_path  # an explicit log root (tests, --log-root)


def test_debug_root_compare_to_reads_under_repo_log(data, tmp_path, monkeypatch):
    """apply_compare_to with the debug root looks for the earlier run under <repo>/log."""
    stores = stores_of(data, tmp_path / "cache")
    monkeypatch.setattr(compat, "PRODUCTION_LOG_ROOT", tmp_path / "repo_log")
    expected = write_original_run(tmp_path / "repo_log" / "baseline_v2" / "version_3", data, [0, 1, 2, 3, 4])
    apply_compare_to(stores, "baseline_v2/version_3", compat.DEBUG_LOG_ROOT)
    assert_same(stores["val"].y_old, expected["val"])


# ---------------------------------------------------------------------------------------------- this project
def write_own_run(folder: Path, stores: dict[str, ColumnStore], experts: list[int]) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"data": {s: st.sources for s, st in stores.items()}}))
    full = {}
    for i, (split, store) in enumerate(stores.items()):
        pred = predictions(len(store), seed=10 + i)
        pred[~np.isin(store.expert, experts)] = np.nan
        torch.save(torch.from_numpy(pred), folder / f"prediction_{split}.pt")
        full[split] = pred
    return full


def test_own_run_folder_with_missing_experts(data, tmp_path):
    stores = stores_of(data, tmp_path / "cache")
    expected = write_own_run(tmp_path / "log" / "custom" / "version_0", stores, [0, 3])
    apply_compare_to(stores, "custom/version_0", tmp_path / "log")
    for split, store in stores.items():
        assert_same(store.y_old, expected[split])
        assert np.isnan(store.y_old[~np.isin(store.expert, [0, 3])]).all()


def test_own_run_folder_of_other_data(data, tmp_path):
    write_own_run(tmp_path / "run", stores_of(data, tmp_path / "cache"), [0])
    swapped = stores_of(data, tmp_path / "cache", order=("val", "train", "test"))
    with pytest.raises(UserError, match="other train data") as info:
        compat.read_run_predictions(tmp_path / "run", swapped, "custom/version_0")
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------------- the original
def test_original_run_folder_old_predictions_land_on_their_rows(data, tmp_path):
    stores = stores_of(data, tmp_path / "cache")
    expected = write_original_run(tmp_path / "log" / "baseline_v2" / "version_4", data, [0, 3])
    apply_compare_to(stores, "baseline_v2/version_4", tmp_path / "log")
    for split, store in stores.items():
        assert_same(store.y_old, expected[split])
        trained = np.isin(store.expert, [0, 3])
        assert np.isfinite(store.y_old[trained]).all() and np.isnan(store.y_old[~trained]).all()


def test_original_run_matched_by_data_not_by_position(data, tmp_path):
    """Our train split reads the file the original used for validation: its pred_data_random2 is chosen."""
    expected = write_original_run(tmp_path / "orig", data, [0, 1, 2, 3, 4])
    swapped = stores_of(data, tmp_path / "cache", order=("val", "train", "test"))
    old = compat.read_run_predictions(tmp_path / "orig", swapped, "orig")
    assert_same(old["train"], expected["val"])
    assert_same(old["val"], expected["train"])
    assert_same(old["test"], expected["test"])


@pytest.mark.parametrize("variant", ["indexed", "csv only", "no summary", "all experts", "z only"])
def test_original_run_layout_variants(variant, data, tmp_path):
    experts = [0, 1, 2, 3, 4] if variant == "all experts" else [1, 4]
    expected = write_original_run(tmp_path / "orig", data, experts,
                                  pt={"indexed": "indexed", "csv only": None}.get(variant, "latest"),
                                  summary=variant != "no summary", out_size=1 if variant == "z only" else 2)
    old = compat.read_run_predictions(tmp_path / "orig", stores_of(data, tmp_path / "cache"), "orig")
    for split in SIZES:
        assert_same(old[split], expected[split])


def test_original_run_without_csv_matched_by_recorded_paths(data, tmp_path):
    expected = write_original_run(tmp_path / "orig", data, [0, 2], csv=False)
    old = compat.read_run_predictions(tmp_path / "orig", stores_of(data, tmp_path / "cache"), "orig")
    assert_same(old["test"], expected["test"])
    # the same files named by a relative path that our absolute path ends with
    summary = json.loads((tmp_path / "orig" / "summary.json").read_text())
    summary["data_path"] = [["data/" + Path(p[0]).name] for p in summary["data_path"]]
    (tmp_path / "orig" / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="other train data"):  # "data/" is not the folder the files are in
        compat.read_run_predictions(tmp_path / "orig", stores_of(data, tmp_path / "cache"), "orig")
    summary["data_path"] = [[f"{data[s].parent.name}/{data[s].name}"] for s in SIZES]
    (tmp_path / "orig" / "summary.json").write_text(json.dumps(summary))
    assert_same(compat.read_run_predictions(tmp_path / "orig", stores_of(data, tmp_path / "cache"))["val"],
                expected["val"])


def test_original_run_of_other_data_is_a_user_error(data, tmp_path):
    other = {split: tmp_path / f"other_{split}.tsv" for split in SIZES}
    for i, path in enumerate(other.values()):
        write_table(generate(SIZES[list(SIZES)[i]], seed=700 + i), path)
    write_original_run(tmp_path / "orig", other, [0])
    with pytest.raises(UserError, match="compare_to 'v9'.*other train data") as info:
        compat.read_run_predictions(tmp_path / "orig", stores_of(data, tmp_path / "cache"), "v9")
    assert "\n" not in str(info.value)


def test_unsafe_prediction_file_is_never_unpickled(data, tmp_path):
    """A .pt holding anything but tensors is refused by weights_only loading; the csv is used instead."""
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(marker),))

    expected = write_original_run(tmp_path / "orig", data, [0, 3])
    torch.save({"x": Payload()}, tmp_path / "orig" / "prediction_random2.pt")
    old = compat.read_run_predictions(tmp_path / "orig", stores_of(data, tmp_path / "cache"), "orig")
    assert not marker.exists()
    assert_same(old["val"], expected["val"])
    (tmp_path / "orig" / "pred_data_random2.csv").unlink()  # without the csv it is a one-line error
    (tmp_path / "orig" / "summary.json").unlink()
    with pytest.raises(UserError) as info:
        compat.read_run_predictions(tmp_path / "orig", stores_of(data, tmp_path / "cache"), "orig")
    assert not marker.exists() and "\n" not in str(info.value)


@pytest.mark.parametrize("kind", ["missing", "empty folder", "a file"])
def test_not_a_run_folder(kind, data, tmp_path):
    run = tmp_path / "log" / "custom" / "version_7"
    if kind == "empty folder":
        run.mkdir(parents=True)
    elif kind == "a file":
        run.parent.mkdir(parents=True)
        run.write_text("x")
    with pytest.raises(UserError, match="compare_to 'custom/version_7'") as info:
        apply_compare_to(stores_of(data, tmp_path / "cache"), "custom/version_7", tmp_path / "log")
    message = str(info.value)
    assert "\n" not in message and str(run) in message
    assert ("not found" in message) == (kind == "missing")
