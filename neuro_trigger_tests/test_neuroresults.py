"""The neuroresults reader/writer: round trips, the real sample, every malformed-file case, the cache."""
from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from neuro_trigger.data.neuroresults import reader as nr_reader
from neuro_trigger.data.neuroresults import text as nr_text
from neuro_trigger.data.neuroresults.cache import file_hash
from neuro_trigger.data.neuroresults.format import COLUMNS, INPUT_COLUMNS, INT_COLUMNS, DataFormatError
from neuro_trigger.data.neuroresults.reader import read_neuroresults
from neuro_trigger.data.neuroresults.writer import write_predictions, write_table
from neuro_trigger.errors import UserError

SAMPLE = Path(__file__).parents[1] / ".." / "shared" / "data" / "neuroresults_sample.tsv"


@pytest.fixture(autouse=True, params=["one block", "many blocks"])
def blocks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test runs twice: files read as one parsing block, and cut into blocks of a few lines
    (read in pieces smaller than a line), parsed in parallel and joined again."""
    if request.param == "many blocks":
        monkeypatch.setattr(nr_text, "_BLOCK_BYTES", 700)
        monkeypatch.setattr(nr_text, "_PIECE_BYTES", 256)
    return request.param


def make_table(n: int, seed: int = 0) -> pd.DataFrame:
    """A small table in file order, plausible values (drift times on the 1/256 grid, zeros for absent SLs)."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {
        "Experiment": np.full(n, 20),
        "Run": rng.integers(700, 800, n),
        "Subrun": np.zeros(n, dtype=np.int64),
        "Event": np.sort(rng.integers(0, 10**6, n)),
        "Track": rng.integers(0, 6, n),
        "nTracks": rng.integers(1, 20, n),
        "Expert": rng.integers(0, 5, n),
        "iNodes": np.full(n, 27),
        "oNodes": np.full(n, 2),
    }
    for name in INPUT_COLUMNS:
        if "driftT" in name:
            values = np.round(rng.uniform(-1, 1, n) * 256) / 256
        else:
            values = rng.uniform(-0.9, 0.9, n)
        values[rng.random(n) < 0.2] = 0.0
        cols[name] = values
    cols["RecoZ"], cols["RecoTheta"] = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    cols["ScaleZ"], cols["ScaleTheta"] = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    cols["RawZ"] = np.round(cols["ScaleZ"] * 4096).astype(np.int64)
    cols["RawTheta"] = np.round(cols["ScaleTheta"] * 4096).astype(np.int64)
    return pd.DataFrame(cols)[COLUMNS]


def text_of(table: pd.DataFrame, tmp_path: Path) -> bytes:
    """The file bytes write_table produces for `table`."""
    path = tmp_path / "text_of.tsv"
    write_table(table, path)
    return path.read_bytes()


def assert_matches(read: dict[str, np.ndarray], table: pd.DataFrame) -> None:
    assert list(read) == COLUMNS
    for name in COLUMNS:
        if name in INT_COLUMNS:
            assert read[name].dtype == np.int64, name
            np.testing.assert_array_equal(read[name], table[name].to_numpy(), err_msg=name)
        else:
            assert read[name].dtype == np.float32, name
            np.testing.assert_allclose(read[name], table[name].to_numpy(), rtol=1e-6, atol=1e-7, err_msg=name)


@pytest.mark.parametrize("name", ["split.tsv", "split.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    table = make_table(200)
    path = tmp_path / name
    write_table(table, path)
    assert_matches(read_neuroresults(path, cache_dir=None), table)


@pytest.mark.slow
def test_large_file_in_many_gzip_members_is_read_whole(tmp_path: Path, blocks: str) -> None:
    table = make_table(3000, seed=4)
    data = text_of(table, tmp_path)
    cut = data.index(b"\n", len(data) // 3) + 1
    path = tmp_path / "members.gz"
    path.write_bytes(gzip.compress(data[:cut]) + gzip.compress(data[cut:len(data) // 2]) + gzip.compress(
        data[len(data) // 2:]))  # the second member ends mid-line
    assert_matches(read_neuroresults(path, cache_dir=None), table)
    if blocks == "many blocks":
        assert len(list(nr_text._blocks(nr_text._text_pieces(path, True, 2), b"header\n"))) > 100


def test_column_subset_in_requested_order(tmp_path: Path) -> None:
    table = make_table(20)
    write_table(table, tmp_path / "a.tsv")
    read = read_neuroresults(tmp_path / "a.tsv", columns=["RecoZ", "Expert"], cache_dir=None)
    assert list(read) == ["RecoZ", "Expert"]
    np.testing.assert_array_equal(read["Expert"], table["Expert"])
    with pytest.raises(ValueError, match="Nonsense"):
        read_neuroresults(tmp_path / "a.tsv", columns=["Nonsense"], cache_dir=None)


def test_tolerates_missing_line2_crlf_and_nan_in_old_output(tmp_path: Path) -> None:
    table = make_table(10)
    lines = text_of(table, tmp_path).decode().split("\n")
    del lines[1]  # no empty line 2
    fields = lines[4].split("\t")
    fields[COLUMNS.index("ScaleZ")] = "nan"  # the old network's output may be missing
    lines[4] = "\t".join(fields)
    path = tmp_path / "crlf.tsv"
    path.write_bytes("\r\n".join(lines).encode())
    read = read_neuroresults(path, cache_dir=None)
    assert len(read["Run"]) == 10
    assert np.isnan(read["ScaleZ"][3]) and np.isfinite(np.delete(read["ScaleZ"], 3)).all()
    np.testing.assert_array_equal(read["RawTheta"], table["RawTheta"])


# ------------------------------------------------------------------------------------------- real data
@pytest.fixture
def sample() -> Path:
    if not SAMPLE.is_file():
        pytest.skip(f"real data sample {SAMPLE} is not present (it lives in the shared workplace folder)")
    return SAMPLE


def test_real_sample(sample: Path) -> None:
    read = read_neuroresults(sample, cache_dir=None)
    assert list(read) == COLUMNS
    assert all(len(v) == 51 for v in read.values())
    first = {name: values[0] for name, values in read.items()}
    assert [first[c] for c in ["Experiment", "Run", "Subrun", "Event", "Track", "nTracks", "Expert"]] == [
        20, 738, 0, 13824, 0, 5, 0,
    ]
    assert first["iNodes"] == 27 and first["oNodes"] == 2
    assert first["SL0-relID"] == np.float32(-0.724473)
    assert first["SL0-driftT"] == np.float32(0.496094)
    assert first["SL8-alpha"] == np.float32(-0.269049)
    assert first["RecoZ"] == np.float32(0.555959) and first["RecoTheta"] == np.float32(0.337421)
    assert first["ScaleZ"] == np.float32(0.4447564399951165) and first["RawZ"] == 1822
    assert first["ScaleTheta"] == np.float32(0.19057502136491267) and first["RawTheta"] == 781
    assert read["RawTheta"][-1] == 1116  # the last line has no line break
    assert np.bincount(read["Expert"], minlength=5).tolist() == [38, 1, 2, 6, 4]
    # the expert is defined by the missing stereo superlayer: its three inputs are all 0
    for expert, sl in [(1, 7), (2, 5), (3, 3), (4, 1)]:
        rows = read["Expert"] == expert
        for name in ("relID", "driftT", "alpha"):
            assert (read[f"SL{sl}-{name}"][rows] == 0).all(), (expert, sl, name)
    # RawZ is the old network's z output on the FPGA integer scale (in this sample: ceil(ScaleZ * 4096))
    for scaled, raw in [("ScaleZ", "RawZ"), ("ScaleTheta", "RawTheta")]:
        assert (np.abs(read[raw] - read[scaled].astype(np.float64) * 4096) < 1).all()


# ------------------------------------------------------------------------------------------- malformed
N_ROWS = 12


def _edit_field(data: bytes, row: int, column: str, value: str) -> bytes:
    lines = data.split(b"\n")
    fields = lines[2 + row].split(b"\t")
    fields[COLUMNS.index(column)] = value.encode()
    lines[2 + row] = b"\t".join(fields)
    return b"\n".join(lines)


def _edit_line(data: bytes, line: int, new: bytes | None) -> bytes:
    lines = data.split(b"\n")
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    return b"\n".join(lines)


def _header_only(data: bytes) -> bytes:
    return b"\n".join(data.split(b"\n")[:2]) + b"\n"


def _rename(data: bytes, old: str, new: str | None) -> bytes:
    names = data.split(b"\n", 1)[0].decode().split("\t")
    if new is None:
        names.remove(old)
    else:
        names[names.index(old)] = new
    return _edit_line(data, 1, "\t".join(names).encode())


def _drop_field(data: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[5] = lines[5].rsplit(b"\t", 1)[0]  # line 6 loses its last field
    return b"\n".join(lines)


def _extra_field(data: bytes) -> bytes:
    lines = data.split(b"\n")
    lines[8] = lines[8] + b"\t0"
    return b"\n".join(lines)


# (case id, edit of the file bytes, expected line, expected text in the message)
ROW_CASES = [
    ("empty", lambda d: b"", 1, "empty file"),
    ("header only", _header_only, 3, "no data rows"),
    ("header only, no line 2", lambda d: d.split(b"\n", 1)[0] + b"\n", 2, "no data rows"),
    ("renamed column", lambda d: _rename(d, "RecoZ", "RecoZZ"), 1, "missing column 'RecoZ'"),
    ("missing column", lambda d: _rename(d, "ScaleTheta", None), 1, "missing column 'ScaleTheta'"),
    ("too few fields", _drop_field, 6, "expected 42 tab-separated fields, found 41"),
    ("too many fields", _extra_field, 9, "expected 42 tab-separated fields, found 43"),
    ("empty line", lambda d: _edit_line(d, 7, b""), 7, "empty line"),
    ("non-numeric float", lambda d: _edit_field(d, 4, "SL3-alpha", "0.1x"), 7, "SL3-alpha: '0.1x' is not a"),
    ("non-numeric int", lambda d: _edit_field(d, 3, "Run", "run7"), 6, "Run: 'run7' is not an integer"),
    ("fractional int", lambda d: _edit_field(d, 9, "Event", "4.5"), 12, "Event: '4.5' is not an integer"),
    ("empty field", lambda d: _edit_field(d, 2, "SL4-relID", ""), 5, "SL4-relID: '' is not a number"),
    ("nan input", lambda d: _edit_field(d, 5, "SL2-driftT", "nan"), 8, "SL2-driftT: nan is not a finite"),
    ("inf target", lambda d: _edit_field(d, 10, "RecoZ", "inf"), 13, "RecoZ: inf is not a finite number"),
    (
        "earliest problem wins",
        lambda d: _edit_field(_edit_field(d, 8, "SL0-relID", "nan"), 6, "RecoTheta", "-inf"),
        9,
        "RecoTheta",
    ),
]


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gz"])
@pytest.mark.parametrize(("edit", "line", "what"), [c[1:] for c in ROW_CASES], ids=[c[0] for c in ROW_CASES])
def test_malformed_rows(tmp_path: Path, compress: bool, edit, line: int, what: str) -> None:
    data = edit(text_of(make_table(N_ROWS), tmp_path))
    path = tmp_path / ("bad.gz" if compress else "bad.tsv")
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataFormatError) as info:
        read_neuroresults(path, cache_dir=tmp_path / "cache")
    message = str(info.value)
    assert isinstance(info.value, UserError)
    assert message.startswith(f"{path}:{line}: "), message
    assert what in message
    assert "\n" not in message
    assert info.value.line == line
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())  # nothing cached


def test_line_numbers_without_line2(tmp_path: Path) -> None:
    data = _edit_line(_drop_field(text_of(make_table(N_ROWS), tmp_path)), 2, None)
    path = tmp_path / "bad.tsv"
    path.write_bytes(data)
    with pytest.raises(DataFormatError, match=rf"^{path}:5: expected 42"):
        read_neuroresults(path, cache_dir=None)


@pytest.mark.parametrize("keep", [0.5, -8], ids=["half", "no trailer"])
def test_truncated_gzip(tmp_path: Path, keep: float) -> None:
    data = text_of(make_table(300), tmp_path)
    packed = gzip.compress(data)
    cut = packed[: int(len(packed) * keep)] if keep > 0 else packed[:keep]
    path = tmp_path / "cut.gz"
    path.write_bytes(cut)
    inflated = zlib.decompressobj(wbits=31).decompress(cut)
    expected_line = inflated.count(b"\n") + 1  # the line at which the data ends
    with pytest.raises(DataFormatError, match=rf"^{path}:{expected_line}: truncated or corrupt gzip"):
        read_neuroresults(path, cache_dir=None)


def test_corrupt_gzip(tmp_path: Path) -> None:
    packed = bytearray(gzip.compress(text_of(make_table(300), tmp_path)))
    middle = len(packed) // 2
    packed[middle:middle + 64] = bytes(64)
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(DataFormatError, match=rf"^{path}:\d+: .*gzip"):
        read_neuroresults(path, cache_dir=None)


def test_gz_name_without_gzip_data(tmp_path: Path) -> None:
    path = tmp_path / "plain.gz"
    path.write_bytes(text_of(make_table(3), tmp_path))
    with pytest.raises(DataFormatError, match=rf"^{path}:1: not gzip data"):
        read_neuroresults(path, cache_dir=None)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=rf"^{tmp_path / 'nope.gz'}: file not found$"):
        read_neuroresults(tmp_path / "nope.gz")
    with pytest.raises(DataFormatError, match=rf"^{tmp_path}: is a directory"):
        read_neuroresults(tmp_path)


# ------------------------------------------------------------------------------------------- cache
def test_cache_hit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = make_table(50)
    path = tmp_path / "split.gz"
    write_table(table, path)
    cache = tmp_path / "cache"
    first = read_neuroresults(path, cache_dir=cache)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert file_hash(path) == digest
    assert (cache / f"{digest}.npz").is_file()
    assert [p.name for p in cache.iterdir()] == [f"{digest}.npz"]  # no temp file left behind

    def no_parsing(_path: Path) -> None:
        raise AssertionError("parsed again although cached")

    monkeypatch.setattr(nr_reader, "_parse", no_parsing)
    second = read_neuroresults(path, cache_dir=cache)
    assert list(second) == list(first)
    for name in first:
        assert second[name].dtype == first[name].dtype
        np.testing.assert_array_equal(second[name], first[name])
    subset = read_neuroresults(path, columns=["RecoTheta", "Track"], cache_dir=cache)
    assert list(subset) == ["RecoTheta", "Track"]
    np.testing.assert_array_equal(subset["Track"], table["Track"])


def test_corrupt_cache_is_reparsed(tmp_path: Path) -> None:
    table = make_table(30)
    path = tmp_path / "split.tsv"
    write_table(table, path)
    cache_file = tmp_path / "cache" / f"{file_hash(path)}.npz"
    cache_file.parent.mkdir()
    cache_file.write_bytes(b"not a zip archive")
    assert_matches(read_neuroresults(path, cache_dir=cache_file.parent), table)
    with np.load(cache_file, allow_pickle=False) as archive:  # rewritten, valid
        assert "RecoZ" in archive.files


def test_file_hash_follows_content(tmp_path: Path) -> None:
    path = tmp_path / "f.tsv"
    path.write_bytes(b"one")
    assert file_hash(path) == hashlib.sha256(b"one").hexdigest()
    path.write_bytes(b"other")
    assert file_hash(path) == hashlib.sha256(b"other").hexdigest()


# ------------------------------------------------------------------------------------------- predictions
@pytest.mark.parametrize(("src_name", "dst_name"), [("in.tsv", "out.tsv"), ("in.gz", "out.gz")])
def test_write_predictions(tmp_path: Path, src_name: str, dst_name: str) -> None:
    table = make_table(40, seed=3)
    src, dst = tmp_path / src_name, tmp_path / dst_name
    write_table(table, src)
    prediction = np.random.default_rng(1).uniform(-1, 1, (40, 2)).astype(np.float32)
    prediction[7, 0] = np.nan
    write_predictions(src, dst, prediction)

    raw_in = gzip.decompress(src.read_bytes()) if src_name.endswith(".gz") else src.read_bytes()
    raw_out = gzip.decompress(dst.read_bytes()) if dst_name.endswith(".gz") else dst.read_bytes()
    lines_in, lines_out = raw_in.split(b"\n"), raw_out.split(b"\n")
    assert len(lines_out) == len(lines_in)
    assert lines_out[0] == lines_in[0] + b"\tNewZ\tNewTheta"
    assert lines_out[1] == b""
    for old, new in zip(lines_in[2:-1], lines_out[2:-1], strict=True):
        assert new.rsplit(b"\t", 2)[0] == old  # byte for byte
    assert lines_out[2 + 7].endswith(b"\tnan\t" + str(prediction[7, 1]).encode())

    read = read_neuroresults(dst, cache_dir=None)
    assert list(read) == COLUMNS + ["NewZ", "NewTheta"]
    np.testing.assert_array_equal(read["NewZ"], prediction[:, 0])  # exact: shortest round-trip repr
    np.testing.assert_array_equal(read["NewTheta"], prediction[:, 1])
    assert_matches({c: read[c] for c in COLUMNS}, table)


def test_write_predictions_keeps_real_lines(sample: Path, tmp_path: Path) -> None:
    dst = tmp_path / "pred.tsv"
    write_predictions(sample, dst, np.zeros((51, 2), dtype=np.float32))
    raw_in, raw_out = sample.read_bytes(), dst.read_bytes()
    assert raw_out.count(b"\n") == raw_in.count(b"\n")  # no line break added after the last row
    assert raw_out.replace(b"\t0.0\t0.0", b"").replace(b"\tNewZ\tNewTheta", b"") == raw_in


def test_write_predictions_keeps_crlf_line_breaks(tmp_path: Path) -> None:
    lines = text_of(make_table(3), tmp_path).split(b"\n")[:-1]
    src, dst = tmp_path / "crlf.tsv", tmp_path / "out.tsv"
    src.write_bytes(b"\r\n".join(lines))  # CRLF, and no line break after the last row
    write_predictions(src, dst, np.array([[0.5, -0.25], [np.nan, 1.0], [0.0, 1e-9]], dtype=np.float32))
    out = dst.read_bytes().split(b"\r\n")
    assert out == [lines[0] + b"\tNewZ\tNewTheta", b"", lines[2] + b"\t0.5\t-0.25",
                   lines[3] + b"\tnan\t1.0", lines[4] + b"\t0.0\t1e-09"]


def test_write_predictions_row_mismatch(tmp_path: Path) -> None:
    src = tmp_path / "in.tsv"
    write_table(make_table(5), src)
    with pytest.raises(ValueError, match="5 rows but the prediction has 4"):
        write_predictions(src, tmp_path / "out.tsv", np.zeros((4, 2)))
    with pytest.raises(ValueError, match="shape"):
        write_predictions(src, tmp_path / "out.tsv", np.zeros(5))
    assert not (tmp_path / "out.tsv").exists()
