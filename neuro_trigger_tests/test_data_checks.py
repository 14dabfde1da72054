"""Data you can trust: impossible values, padded gzip, reproducible toy files, split prediction tables,
and the columns shared through memory-mapped files (no /dev/shm)."""
from __future__ import annotations

import gzip
import logging
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.data import dataset
from neuro_trigger.data.dataset import ColumnStore, SharedColumns, load_split
from neuro_trigger.data.neuroresults import cache as nr_cache
from neuro_trigger.data.neuroresults import reader as nr_reader
from neuro_trigger.data.neuroresults import text as nr_text
from neuro_trigger.data.neuroresults.cache import file_hash
from neuro_trigger.data.neuroresults.format import COLUMNS, INPUT_COLUMNS, INT_COLUMNS, VALUE_RANGES, DataFormatError
from neuro_trigger.data.neuroresults.reader import read_neuroresults
from neuro_trigger.data.neuroresults.writer import write_predictions, write_table
from neuro_trigger.data.toy import default_set
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.errors import UserError

SAMPLE = Path(__file__).parents[1] / ".." / "shared" / "data" / "neuroresults_sample.tsv"


def make_table(n: int, seed: int = 0) -> pd.DataFrame:
    """Plausible rows: floats on a 1/64 grid inside [-1, 1) (exact in text and float32), experts 0..4."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {name: rng.integers(-64, 64, n) / 64 for name in COLUMNS}
    for name, values in [
        ("Experiment", np.full(n, 20)), ("Run", rng.integers(700, 800, n)), ("Subrun", np.zeros(n, int)),
        ("Event", np.arange(n) * 3), ("Track", rng.integers(0, 6, n)), ("nTracks", rng.integers(6, 20, n)),
        ("Expert", rng.integers(0, 5, n)), ("iNodes", np.full(n, 27)), ("oNodes", np.full(n, 2)),
        ("RawZ", rng.integers(-4096, 4096, n)), ("RawTheta", rng.integers(-4096, 4096, n)),
    ]:
        cols[name] = values
    return pd.DataFrame(cols)[COLUMNS]


def _write(table: pd.DataFrame, path: Path) -> Path:
    write_table(table, path)
    return path


# ------------------------------------------------------------------------------- 1. impossible values
BAD_VALUES = [  # (column, value, printed value, range)
    ("Expert", 5, "5", "[-1, 4]"),
    ("Expert", -2, "-2", "[-1, 4]"),
    ("RecoZ", 1.5, "1.5", "[-1, 1]"),
    ("RecoTheta", -1.25, "-1.25", "[-1, 1]"),
    ("SL3-relID", 1.5, "1.5", "[-1, 1]"),
    ("SL2-driftT", -1.25, "-1.25", "[-1, 1]"),
    ("SL8-alpha", 2.0, "2.0", "[-1, 1]"),
]


@pytest.mark.parametrize("name", ["bad.tsv", "bad.gz"])
@pytest.mark.parametrize(("column", "value", "shown", "bounds"), BAD_VALUES,
                         ids=[f"{c} {v}" for c, v, _, _ in BAD_VALUES])
def test_value_outside_its_range_is_an_error_with_line_and_count(
    tmp_path: Path, name: str, column: str, value: float, shown: str, bounds: str
) -> None:
    table = make_table(20)
    table.loc[[4, 9, 15], column] = value
    path = _write(table, tmp_path / name)
    cache = tmp_path / "cache"
    with pytest.raises(DataFormatError) as info:
        read_neuroresults(path, cache_dir=cache)
    assert isinstance(info.value, UserError)
    assert str(info.value) == f"{path}:7: column {column}: value {shown} outside {bounds} (3 rows like this)"
    assert not cache.exists() or not list(cache.iterdir())  # nothing cached
    with pytest.raises(DataFormatError, match=rf"^{path}:7: column {column}"):
        load_split([path], cache_dir=cache)


def test_earliest_bad_row_wins_and_line_numbers_follow_a_missing_line2(tmp_path: Path) -> None:
    table = make_table(12)
    table.loc[8, "SL0-relID"] = 3.0
    table.loc[5, "RecoTheta"] = 1.01
    path = _write(table, tmp_path / "bad.tsv")
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:1] + lines[2:]))  # no empty line 2: rows start on line 2
    with pytest.raises(DataFormatError, match=rf"^{path}:7: column RecoTheta: value 1.01 outside \[-1, 1\] "
                                              r"\(1 rows like this\)$"):
        read_neuroresults(path, cache_dir=None)


def test_boundary_values_and_expert_minus_one_are_accepted(tmp_path: Path) -> None:
    table = make_table(10)
    table.loc[0, ["RecoZ", "SL1-relID", "SL1-driftT"]] = -1.0
    table.loc[1, ["RecoTheta", "SL7-alpha"]] = 1.0
    table.loc[2, "Expert"] = -1
    table.loc[3, "Expert"] = 4
    read = read_neuroresults(_write(table, tmp_path / "edge.gz"), cache_dir=None)
    assert read["Expert"][:4].tolist() == [table["Expert"][0], table["Expert"][1], -1, 4]


def test_a_cached_parse_passes_the_same_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache is keyed by content: a cache entry for a file with an impossible value (written by an
    older version without the range checks) must not let the file through."""
    table = make_table(20)
    table.loc[11, "SL5-driftT"] = 1.5
    path = _write(table, tmp_path / "bad.gz")
    cache = tmp_path / "cache"
    parsed = {name: table[name].to_numpy(np.int64 if name in INT_COLUMNS else np.float32) for name in COLUMNS}
    nr_cache._store_cache(cache / f"{file_hash(path)}.npz", parsed)

    def no_parsing(_path: Path) -> None:
        raise AssertionError("parsed again although cached")

    monkeypatch.setattr(nr_reader, "_parse", no_parsing)
    for columns in (None, ["RecoZ"]):  # a subset read checks too
        with pytest.raises(DataFormatError, match=rf"^{path}:14: column SL5-driftT: value 1.5 outside \[-1, 1\]"):
            read_neuroresults(path, columns=columns, cache_dir=cache)


def test_expert_minus_one_rows_are_counted_reported_and_not_trained(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = make_table(30)
    table.loc[[6, 7, 20], "Expert"] = -1
    path = _write(table, tmp_path / "part.tsv")
    with caplog.at_level(logging.WARNING, logger="neuro_trigger.data.dataset"):
        store = load_split([path], cache_dir=None)
    assert len(store) == 30 and store.no_expert_rows == 3  # kept: the rows stay aligned with the file
    assert f"{path}:9: 3 rows with Expert -1" in caplog.text
    rows = store.expert_rows(-1)
    assert len(rows) == 27 and (store.expert[rows] >= 0).all()


def test_toy_inputs_stay_inside_their_ranges(tmp_path: Path) -> None:
    table = generate(20_000, seed=0)  # before the fix 4 axial relID values lay beyond +-1
    assert np.abs(table[INPUT_COLUMNS].to_numpy()).max() <= 1.0
    read_neuroresults(_write(table, tmp_path / "toy.gz"), cache_dir=None)


def test_real_sample_is_inside_the_ranges() -> None:
    if not SAMPLE.is_file():
        pytest.skip(f"real data sample {SAMPLE} is not present (it lives in the shared workplace folder)")
    read = read_neuroresults(SAMPLE, cache_dir=None)
    for name, (lo, hi) in VALUE_RANGES.items():
        assert lo <= read[name].min() and read[name].max() <= hi, name


# ------------------------------------------------------------------------------- 2. padded gzip
@pytest.mark.parametrize("pieces", ["whole", "small pieces"])
def test_gzip_with_zero_padding_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pieces: str) -> None:
    if pieces == "small pieces":  # the padding spans many reads
        monkeypatch.setattr(nr_text, "_PIECE_BYTES", 256)
        monkeypatch.setattr(nr_text, "_BLOCK_BYTES", 700)
    table = make_table(300)
    text = _write(table, tmp_path / "t.tsv").read_bytes()
    cut = text.index(b"\n", len(text) // 2) + 1
    padded = tmp_path / "padded.gz"
    padded.write_bytes(gzip.compress(text) + b"\0" * 1000)
    between = tmp_path / "between.gz"  # zeros between members too, as tape tools write them
    between.write_bytes(gzip.compress(text[:cut]) + b"\0" * 700 + gzip.compress(text[cut:]) + b"\0" * 1000)
    for path in (padded, between):
        read = read_neuroresults(path, cache_dir=None)
        np.testing.assert_array_equal(read["Event"], table["Event"])
        np.testing.assert_array_equal(read["SL4-alpha"], table["SL4-alpha"].to_numpy(np.float32))
        out = tmp_path / "pred.tsv"
        write_predictions(path, out, np.zeros((300, 2), np.float32))
        assert out.read_bytes().count(b"\n") == text.count(b"\n")
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(gzip.compress(text) + b"\0" * 10 + b"junk")
    with pytest.raises(DataFormatError, match=rf"^{garbage}:\d+: truncated or corrupt gzip"):
        read_neuroresults(garbage, cache_dir=None)


# ------------------------------------------------------------------------------- 3. reproducible toy files
def test_toy_files_are_byte_identical_for_a_version_and_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(default_set, "DEFAULT_TRACKS", {"train": 300, "val": 100, "test": 100})
    written = []
    for folder in ("one", "two"):
        monkeypatch.setattr(default_set, "REPO_ROOT", tmp_path / folder)
        monkeypatch.setattr(default_set, "DEFAULT_DIR", tmp_path / folder / "data_cache" / "toy")
        written.append({split: path.read_bytes() for split, path in default_set.ensure_default_dataset().items()})
    assert written[0] == written[1]
    for data in written[0].values():
        assert data[:2] == b"\x1f\x8b"
        assert data[4:8] == b"\0\0\0\0"  # gzip header: mtime 0
        assert not data[3] & 0x08  # no file name stored


# ------------------------------------------------------------------------------- 4. split prediction tables
@pytest.mark.parametrize("suffix", [".tsv", ".gz"])
def test_prediction_table_of_a_split_keeps_every_row(tmp_path: Path, suffix: str) -> None:
    from neuro_trigger.run.prediction_tables import _write_prediction_table

    tables = [make_table(n, seed) for n, seed in ((40, 1), (35, 2), (25, 3))]
    texts = []
    for i, table in enumerate(tables):
        text = _write(table, tmp_path / "t.tsv").read_bytes()
        if i == 1:
            text = text.replace(b"\n\n", b"\n", 1)  # no empty line 2
        if i == 2:
            text = text[:-1]  # no line break after the last row
        texts.append(text)
    paths = []
    for i, text in enumerate(texts):
        path = tmp_path / f"part{i}{suffix}"
        path.write_bytes(gzip.compress(text) if suffix == ".gz" else text)
        paths.append(path)
    store = load_split(paths, cache_dir=None)
    pred = np.random.default_rng(5).uniform(-1, 1, (100, 2)).astype(np.float32)
    pred[3] = np.nan
    dst = tmp_path / "pred_data_val.csv"
    _write_prediction_table(store, pred, dst)

    out = dst.read_bytes().split(b"\n")
    header = texts[0].split(b"\n", 1)[0]
    assert out[:2] == [header + b"\tNewZ\tNewTheta", b""]
    rows_in = [line for text in texts for line in text.split(b"\n")[1:] if line]
    assert len(out) - 2 == len(rows_in) == 100  # 100 rows in, 100 out (no final line break: the last file has none)
    for i, (row_in, row_out) in enumerate(zip(rows_in, out[2:], strict=True)):
        assert row_out == row_in + b"\t" + str(pred[i, 0]).encode() + b"\t" + str(pred[i, 1]).encode()
    read = read_neuroresults(dst, cache_dir=None)
    np.testing.assert_array_equal(read["NewZ"], pred[:, 0])
    np.testing.assert_array_equal(read["Event"], np.concatenate([t["Event"] for t in tables]))
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []  # no temp file left

    # a count that does not match the store: a clear error, and the earlier file stays whole
    before = dst.read_bytes()
    with pytest.raises(ValueError, match=r"100 rows .* the prediction has 99"):
        _write_prediction_table(store, pred[:99], dst)
    store.sources[1]["rows"] = 36
    with pytest.raises(ValueError, match=rf"{paths[1]} has 35 rows, expected 36"):
        _write_prediction_table(store, pred, dst)
    assert dst.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []
    with pytest.raises(ValueError, match="100 rows .* the prediction has 101"):
        write_predictions(paths, tmp_path / "other.csv", np.zeros((101, 2)))
    assert not (tmp_path / "other.csv").exists()


# ------------------------------------------------------------------------------- 5. columns in mapped files
@pytest.fixture
def store(tmp_path: Path) -> ColumnStore:
    paths = [_write(make_table(30, 1), tmp_path / "a.gz"), _write(make_table(20, 2), tmp_path / "b.tsv")]
    return load_split(paths, cache_dir=None)


def _shm_names() -> set[str]:
    """/dev/shm's entries, less multiprocessing's own semaphores (a Queue's locks live there)."""
    names = os.listdir("/dev/shm") if os.path.isdir("/dev/shm") else []
    return {name for name in names if not name.startswith("sem.")}


def test_to_shared_creates_nothing_in_dev_shm_and_reuses_its_files(store: ColumnStore, tmp_path: Path) -> None:
    before = _shm_names()
    cache = tmp_path / "columns"
    handle = store.to_shared(cache_dir=cache)
    attached = ColumnStore.from_shared(handle)
    assert _shm_names() - before == set()
    files = sorted(cache.iterdir())
    assert len(files) == len(dataset._ARRAY_FIELDS) and all(f.suffix == ".npy" for f in files)  # no temp files
    inodes = {f: f.stat().st_ino for f in files}
    again = store.to_shared(cache_dir=cache)  # same content: the same files, not written again
    assert again.blocks == handle.blocks and {f: f.stat().st_ino for f in files} == inodes
    for name in dataset._ARRAY_FIELDS:
        np.testing.assert_array_equal(getattr(attached, name), getattr(store, name), err_msg=name)
        assert not getattr(attached, name).flags.writeable
    assert not np.shares_memory(attached.x, store.x)
    store.y_old = store.y_old + 1  # compare_to replaces y_old: only that array is written anew
    changed = store.to_shared(cache_dir=cache)
    assert [n for n in dataset._ARRAY_FIELDS if changed.blocks[n] != handle.blocks[n]] == ["y_old"]
    handle.release()
    handle.release()  # nothing to unlink; idempotent; the files stay usable
    assert ColumnStore.from_shared(handle).x[3, 5] == store.x[3, 5]


def test_shared_columns_follow_the_cache_dir_default(store: ColumnStore, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dataset, "SHARED_DIR", tmp_path / "default")
    handle = store.to_shared()
    assert all(Path(path).parent == tmp_path / "default" for path, _, _ in handle.blocks.values())


def _child_reads(handle: SharedColumns, queue: multiprocessing.Queue) -> None:
    store = ColumnStore.from_shared(handle)
    try:
        store.x[0, 0] = 5.0
        written = True
    except ValueError:
        written = False
    queue.put((len(store), store.x.tolist(), store.event.tolist(), store.expert_rows(2).tolist(), store.sources,
               written, [getattr(store, n).flags.writeable for n in dataset._ARRAY_FIELDS]))


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_child_process_sees_the_same_read_only_columns(store: ColumnStore, tmp_path: Path, method: str,
                                                       capfd: pytest.CaptureFixture[str]) -> None:
    before = _shm_names()
    handle = store.to_shared(cache_dir=tmp_path / "columns")
    context = multiprocessing.get_context(method)
    queue = context.Queue()
    child = context.Process(target=_child_reads, args=(handle, queue))
    child.start()
    answer = queue.get(timeout=120)
    child.join(timeout=60)
    assert child.exitcode == 0, capfd.readouterr().err
    length, x, event, rows, sources, written, writeable = answer
    assert length == len(store) and x == store.x.tolist() and event == store.event.tolist()
    assert rows == store.expert_rows(2).tolist() and sources == store.sources
    assert not written and writeable == [False] * len(dataset._ARRAY_FIELDS)
    assert _shm_names() - before == set()


def test_shared_empty_store(tmp_path: Path) -> None:
    empty = ColumnStore(
        x=np.zeros((0, 27), np.float32), y=np.zeros((0, 2), np.float32), y_old=np.zeros((0, 2), np.float32),
        expert=np.zeros(0, np.int64), event=np.zeros((0, 4), np.int64), track=np.zeros(0, np.int64),
        ntracks=np.zeros(0, np.int64), row=np.zeros(0, np.int64),
    )
    with empty.to_shared(cache_dir=tmp_path) as handle:
        attached = ColumnStore.from_shared(handle)
        assert len(attached) == 0 and attached.x.shape == (0, 27) and attached.x.dtype == np.float32
