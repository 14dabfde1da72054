"""The column store of a split: loading and concatenation, expert rows, shared memory, scaling helpers."""
from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.data import dataset
from neuro_trigger.data.dataset import (
    ColumnStore,
    SharedColumns,
    load_split,
    theta_from_deg,
    theta_to_deg,
    z_from_cm,
    z_to_cm,
)
from neuro_trigger.data.neuroresults.cache import file_hash
from neuro_trigger.data.neuroresults.format import COLUMNS, INPUT_COLUMNS
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.errors import UserError


def make_table(n: int, seed: int) -> pd.DataFrame:
    """Every column traceable: floats on a 1/64 grid, exact in float32 and in write_table's 7 digits."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {name: rng.integers(-64, 64, n) / 64 for name in COLUMNS}
    for name, values in [
        ("Experiment", np.full(n, 20)), ("Run", rng.integers(700, 800, n)), ("Subrun", np.zeros(n, int)),
        ("Event", rng.integers(0, 10**6, n)), ("Track", rng.integers(0, 6, n)),
        ("nTracks", rng.integers(1, 20, n)),
        ("Expert", rng.integers(0, 5, n)), ("iNodes", np.full(n, 27)), ("oNodes", np.full(n, 2)),
        ("RawZ", rng.integers(-4096, 4096, n)), ("RawTheta", rng.integers(-4096, 4096, n)),
    ]:
        cols[name] = values
    return pd.DataFrame(cols)[COLUMNS]


@pytest.fixture
def split(tmp_path: Path) -> tuple[list[Path], pd.DataFrame]:
    first, second = make_table(30, seed=1), make_table(20, seed=2)
    paths = [tmp_path / "part1.gz", tmp_path / "part2.tsv"]
    write_table(first, paths[0])
    write_table(second, paths[1])
    return paths, pd.concat([first, second], ignore_index=True)


@pytest.fixture
def store(split: tuple[list[Path], pd.DataFrame], tmp_path: Path) -> ColumnStore:
    return load_split(split[0], cache_dir=tmp_path / "cache")


def test_load_split_concatenates_in_order(store: ColumnStore, split: tuple[list[Path], pd.DataFrame]) -> None:
    paths, table = split
    n = 50
    assert len(store) == n
    expected = {
        "x": ((n, 27), np.float32, table[INPUT_COLUMNS]),
        "y": ((n, 2), np.float32, table[["RecoZ", "RecoTheta"]]),
        "y_old": ((n, 2), np.float32, table[["ScaleZ", "ScaleTheta"]]),
        "expert": ((n,), np.int64, table["Expert"]),
        "event": ((n, 4), np.int64, table[["Experiment", "Run", "Subrun", "Event"]]),
        "track": ((n,), np.int64, table["Track"]),
        "ntracks": ((n,), np.int64, table["nTracks"]),
        "row": ((n,), np.int64, np.arange(n)),
    }
    for name, (shape, dtype, values) in expected.items():
        array = getattr(store, name)
        assert array.shape == shape and array.dtype == dtype, name
        np.testing.assert_array_equal(array, np.asarray(values), err_msg=name)
    assert store.sources == [
        {"path": str(paths[0].resolve()), "sha256": file_hash(paths[0]), "rows": 30},
        {"path": str(paths[1].resolve()), "sha256": file_hash(paths[1]), "rows": 20},
    ]


def test_expert_rows_and_targets(store: ColumnStore) -> None:
    for expert in range(5):
        rows = store.expert_rows(expert)
        assert rows.dtype == np.int64
        np.testing.assert_array_equal(rows, np.flatnonzero(store.expert == expert))
        assert (store.expert[rows] == expert).all()
    assert sum(len(store.expert_rows(e)) for e in range(5)) == len(store)
    np.testing.assert_array_equal(store.expert_rows(-1), np.arange(len(store)))
    assert store.targets(1).shape == (50, 1) and store.targets(2).shape == (50, 2)
    assert np.shares_memory(store.targets(1), store.y)
    np.testing.assert_array_equal(store.targets(1)[:, 0], store.y[:, 0])


def test_relative_paths_resolve_against_repo_root(
    split: tuple[list[Path], pd.DataFrame], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths, _ = split
    monkeypatch.setattr(dataset, "REPO_ROOT", tmp_path)
    store = load_split(["part2.tsv"], cache_dir=None)
    assert len(store) == 20 and store.sources[0]["path"] == str(paths[1].resolve())


def test_no_files_is_a_user_error() -> None:
    with pytest.raises(UserError, match="no data files"):
        load_split([])


def _child_reads(handle: SharedColumns, queue: multiprocessing.Queue) -> None:
    store = ColumnStore.from_shared(handle)
    queue.put((len(store), float(store.x[7, 4]), store.expert_rows(2).tolist(), store.sources))


def test_shared_columns_round_trip_in_spawned_child(store: ColumnStore, tmp_path: Path,
                                                    capfd: pytest.CaptureFixture[str]) -> None:
    handle = store.to_shared(cache_dir=tmp_path / "columns")
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_child_reads, args=(handle, queue))
    child.start()
    child.join(timeout=120)  # the answer is small: it fits the pipe, so joining first cannot block
    if child.exitcode is None:
        child.kill()
    assert child.exitcode == 0, f"child failed (exit code {child.exitcode}): {capfd.readouterr().err}"
    length, value, rows, sources = queue.get(timeout=10)
    assert length == len(store) and value == float(store.x[7, 4])
    assert rows == store.expert_rows(2).tolist() and sources == store.sources
    handle.release()  # nothing to unlink: the files are a content-keyed cache
    again = ColumnStore.from_shared(handle)
    for name in ("x", "y", "y_old", "expert", "event", "track", "ntracks", "row"):
        np.testing.assert_array_equal(getattr(again, name), getattr(store, name), err_msg=name)
    assert not np.shares_memory(again.x, store.x)  # the mapped copy, not the original
    err = capfd.readouterr().err
    assert "resource_tracker" not in err and "leaked" not in err, err
    handle.release()  # idempotent


def test_scaling_numpy() -> None:
    scaled = np.array([-1.0, -0.5, 0.0, 1.0])
    np.testing.assert_allclose(z_to_cm(scaled), [-100.0, -50.0, 0.0, 100.0])
    np.testing.assert_allclose(theta_to_deg(scaled), [10.0, 50.0, 90.0, 170.0])
    np.testing.assert_allclose(z_from_cm(z_to_cm(scaled)), scaled)
    np.testing.assert_allclose(theta_from_deg(np.array([10.0, 90.0, 170.0])), [-1.0, 0.0, 1.0])
    assert z_to_cm(0.25) == 25.0
    assert z_to_cm(np.float32(0.5)).dtype == np.float32


def test_scaling_torch() -> None:
    torch = pytest.importorskip("torch")
    scaled = torch.tensor([-1.0, 0.0, 0.5], dtype=torch.float32)
    cm = z_to_cm(scaled)
    assert isinstance(cm, torch.Tensor) and cm.dtype == torch.float32
    assert torch.allclose(cm, torch.tensor([-100.0, 0.0, 50.0]))
    assert torch.allclose(theta_to_deg(scaled), torch.tensor([10.0, 90.0, 130.0]))
    assert torch.allclose(theta_from_deg(theta_to_deg(scaled)), scaled)
