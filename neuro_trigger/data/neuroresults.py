"""The Belle II neuroresults text format: tab separated, line 1 the column names, line 2 empty.

Reading is validated (every malformed file ends in one `DataFormatError` line "path:line: what") and
fast: line-aligned blocks parsed by pandas' C parser with explicit dtypes on every core while the next
block is inflated (isal) or read, and a cache of the parsed columns keyed by the sha256 of the file's bytes.
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import os
import tempfile
import threading
import uuid
import zipfile
import zlib
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

try:
    from isal import isal_zlib as _inflate
except ImportError:  # isal is in requirements.txt; zlib gives the same result, slower
    _inflate = zlib

from neuro_trigger import REPO_ROOT, cpu_cores
from neuro_trigger.errors import UserError

EVENT_COLUMNS = ["Experiment", "Run", "Subrun", "Event", "Track", "nTracks", "Expert", "iNodes", "oNodes"]
INPUT_COLUMNS = [f"SL{sl}-{name}" for sl in range(9) for name in ("relID", "driftT", "alpha")]
TARGET_COLUMNS = ["RecoZ", "RecoTheta"]
OLD_COLUMNS = ["ScaleZ", "RawZ", "ScaleTheta", "RawTheta"]
COLUMNS = EVENT_COLUMNS + INPUT_COLUMNS + TARGET_COLUMNS + OLD_COLUMNS
INT_COLUMNS = EVENT_COLUMNS + ["RawZ", "RawTheta"]
PREDICTION_COLUMNS = ["NewZ", "NewTheta"]

CACHE_DIR = REPO_ROOT / "data_cache" / "parsed"
FINITE_COLUMNS = INPUT_COLUMNS + TARGET_COLUMNS
"""Columns in which NaN or inf is a format error (the old network's output may be NaN)."""
NO_EXPERT = -1
"""Expert of a track that no expert takes (two or more stereo superlayers missing): a legitimate row
that is kept in the store (rows stay aligned with the file) but never trained on."""
VALUE_RANGES: dict[str, tuple[float, float]] = {
    "Expert": (NO_EXPERT, 4),
    **{name: (-1.0, 1.0) for name in INPUT_COLUMNS},  # the hardware scales every input to [-1, 1]
    "RecoZ": (-1.0, 1.0),  # z in [-100, 100] cm
    "RecoTheta": (-1.0, 1.0),  # theta in [10, 170] degrees
}
"""Closed range of every checked column (docs/data.md, "Value ranges"); a value outside, NaN or inf
is a DataFormatError naming the first such line and how many rows have it."""
_CHECKED_COLUMNS = [c for c in COLUMNS if c in VALUE_RANGES]  # file order: the earliest column wins a tie

_CACHE_FORMAT = 1  # bump when the parsed representation changes; older cache files are re-parsed
_NAN_STRINGS = ["nan", "NaN", "-nan", "-NaN", "NAN"]
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_HEADER_BYTES = 1 << 16
_PIECE_BYTES = 1 << 20  # read or inflated at a time
_BLOCK_BYTES = 32 << 20  # text per parsing task: about 100,000 rows (smaller blocks scale worse)


class DataFormatError(UserError):
    """A neuroresults file that cannot be read; the message is one line "path:line: what"."""

    def __init__(self, path: str | Path, line: int | None, what: str) -> None:
        self.path = str(path)
        self.line = line
        self.what = " ".join(str(what).split())
        where = self.path if line is None else f"{self.path}:{line}"
        super().__init__(f"{where}: {self.what}")


def write_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table with the 42 columns in the neuroresults format (gzip if the name ends in .gz).

    The bytes depend on the table only (the gzip header holds neither a time nor a file name).
    """
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"table lacks columns {missing}")
    path = Path(path)
    header = "\t".join(COLUMNS) + "\n\n"
    body = table[COLUMNS].to_csv(
        sep="\t", header=False, index=False, float_format="%.7g", lineterminator="\n"
    )
    data = (header + body).encode()
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1, mtime=0)  # no time, no name: the same table, the same bytes
    path.write_bytes(data)


# --------------------------------------------------------------------------------------------- hashing
_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_HASH_LOCK = threading.Lock()


def file_hash(path: str | Path) -> str:
    """sha256 hex digest of the file's raw bytes; memoised per (resolved path, size, mtime_ns)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    with _HASH_LOCK:
        known = _HASH_MEMO.get(key)
    if known is not None:
        return known
    with open(resolved, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with _HASH_LOCK:
        _HASH_MEMO[key] = digest
    return digest


# --------------------------------------------------------------------------------------------- reading
def read_neuroresults(
    path: str | Path, columns: list[str] | None = None, cache_dir: Path | None = CACHE_DIR
) -> dict[str, np.ndarray]:
    """Read a neuroresults file (plain or gzip) into column arrays: ints int64, floats float32.

    Returns the columns in file order (or in the order of `columns`). A prediction file (the 42
    columns plus NewZ NewTheta) is read too. The parsed columns are cached in
    `cache_dir/<sha256>.npz`, so a file is parsed once; `cache_dir=None` disables the cache.
    """
    path = Path(path)
    wanted = _check_requested(columns)
    _check_readable(path)
    _is_gzip(path)  # a .gz name on plain text is an error, cached content or not
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{file_hash(path)}.npz"
        checked = None if wanted is None else wanted + [c for c in _CHECKED_COLUMNS if c not in wanted]
        cached = _load_cache(cache_file, checked)
        if cached is not None:
            _check_values(path, None, cached)  # keyed by content: a cached file passes the same checks
            return cached if wanted is None else {c: cached[c] for c in wanted}
    table = _parse(path)
    if cache_file is not None:
        _store_cache(cache_file, table)
    if wanted is None:
        return table
    absent = [c for c in wanted if c not in table]
    if absent:
        raise DataFormatError(path, 1, f"the file has no column {absent[0]!r}")
    return {c: table[c] for c in wanted}


def _check_requested(columns: list[str] | None) -> list[str] | None:
    if columns is None:
        return None
    known = set(COLUMNS) | set(PREDICTION_COLUMNS)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"unknown neuroresults columns requested: {unknown}")
    return list(columns)


def _check_readable(path: Path) -> None:
    if not path.exists():
        raise DataFormatError(path, None, "file not found")
    if path.is_dir():
        raise DataFormatError(path, None, "is a directory, expected a neuroresults file")
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot open: {exc.strerror or exc}") from None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as handle:
        magic = handle.read(2)
    if magic == _GZIP_MAGIC:
        return True
    if path.suffix == ".gz" and magic:
        raise DataFormatError(path, 1, "not gzip data although the name ends in .gz")
    return False


def _dtypes(names: list[str]) -> dict[str, type]:
    return {c: (np.int64 if c in INT_COLUMNS else np.float32) for c in names}


def _csv_options(skip_line2: bool) -> dict:
    # skip_blank_lines=False keeps a 1:1 map from DataFrame rows to file lines (row i is line first+i);
    # a stray empty line then shows up as an error instead of silently shifting line numbers.
    return dict(
        sep="\t",
        engine="c",
        header=0,
        skiprows=[1] if skip_line2 else None,
        skip_blank_lines=False,
        quoting=csv.QUOTE_NONE,
        keep_default_na=False,
        na_values=_NAN_STRINGS,
    )


def _parse(path: Path) -> dict[str, np.ndarray]:
    """Parse and validate the whole file (no cache)."""
    gz = _is_gzip(path)
    header, line2 = _first_two_lines(path, gz)
    names = _check_header(path, header)
    if line2 == b"":
        raise DataFormatError(path, 2, "no data rows (header only)")
    skip_line2 = line2.strip(b"\r\n") == b""  # real files have an empty line 2; a missing one is tolerated
    first_line = 3 if skip_line2 else 2
    table = _read_table(path, gz, header, first_line, names)
    _check_values(path, first_line, table)
    return table


def first_data_line(path: str | Path) -> int:
    """Line number of the first row: 3, or 2 in a file without the empty line 2."""
    path = Path(path)
    _, line2 = _first_two_lines(path, _is_gzip(path))
    return 3 if line2.strip(b"\r\n") == b"" else 2


def _read_table(path: Path, gz: bool, header: bytes, first_line: int, names: list[str]) -> dict[str, np.ndarray]:
    """The fast path: line-aligned blocks of the text parsed by pandas' C parser in a thread per core
    (its tokenizer releases the GIL) while this thread inflates or reads the next block; on failure
    find out what and where."""
    workers = parse_threads()
    frames: list[pd.DataFrame] = []
    with ThreadPoolExecutor(workers, thread_name_prefix="parse") as pool:
        pending: deque[Future] = deque()
        try:
            for block in _blocks(_text_pieces(path, gz, first_line - 1), header):
                pending.append(pool.submit(_parse_block, block, names))
                while len(pending) > 2 * workers:  # bounds the text held in memory
                    frames.append(pending.popleft().result())
            frames += [future.result() for future in pending]
            if not frames:
                raise DataFormatError(path, first_line, "no data rows (header only)")
            # numpy copies without the GIL: one column per task
            columns = pool.map(lambda name: np.concatenate([frame[name].to_numpy() for frame in frames]), names)
            table = dict(zip(names, columns, strict=True))
        except _GzipStreamError:
            for future in pending:
                future.cancel()
            text, error = _read_text(path, gz)  # where it breaks off, counted on this rare path only
            raise DataFormatError(path, text.count(b"\n") + 1, f"truncated or corrupt gzip data ({error})") from None
        except (ValueError, OverflowError) as exc:
            for future in pending:
                future.cancel()
            raise _diagnose(path, gz, first_line, names, exc) from None
    return table


def parse_threads() -> int:
    """Threads parsing a file at once: one per core this process may use (at most 8)."""
    return max(1, min(8, cpu_cores()))


def _parse_block(parts: list[bytes | memoryview], names: list[str]) -> pd.DataFrame:
    """One block: the header line, then whole data lines."""
    return pd.read_csv(_TextBlock(parts), dtype=_dtypes(names), **_csv_options(False))


class _TextBlock(io.RawIOBase):
    """Pieces of text read as one file, without joining them into one buffer (pandas reads 256 kB at
    a time, in the parsing thread: the copy is spread over the threads instead of the inflating one)."""

    def __init__(self, parts: list[bytes | memoryview]) -> None:
        super().__init__()
        self.parts = deque(memoryview(part) for part in parts)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if not self.parts:
            return 0
        part = self.parts[0]
        n = min(len(buffer), len(part))
        buffer[:n] = part[:n]
        if n == len(part):
            self.parts.popleft()
        else:
            self.parts[0] = part[n:]
        return n


class _GzipStreamError(Exception):
    """The gzip stream broke off."""


def _text_pieces(path: Path, gz: bool, skip_lines: int) -> Iterator[bytes]:
    """The file's text after its first `skip_lines` lines, in pieces of a few megabytes."""
    pieces = _inflated_pieces(path) if gz else _read_pieces(path)
    for piece in pieces:
        while skip_lines and piece:
            end = piece.find(b"\n")
            if end < 0:
                piece = b""
                break
            piece = piece[end + 1:]
            skip_lines -= 1
        if piece:
            yield piece


def _read_pieces(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as source:
        while piece := source.read(_PIECE_BYTES):
            yield piece


def _inflated_pieces(path: Path) -> Iterator[bytes]:
    """Inflate every gzip member of the file (isal if installed: 2-3x zlib's speed; both release the GIL)."""
    try:
        with open(path, "rb") as source:
            yield from _gunzip(iter(lambda: source.read(_PIECE_BYTES // 4), b""))
    except (_inflate.error, zlib.error, EOFError) as exc:
        raise _GzipStreamError(str(exc) or type(exc).__name__) from None


def _gunzip(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The inflated data of every gzip member in `chunks` (the raw bytes in order).

    Zero bytes after a member are padding (tape archives write it; `gzip -t` accepts it) and are skipped;
    anything else after a member must be the next member. Raises EOFError if the data end inside a member.
    """
    inflater = _inflate.decompressobj(wbits=31)
    between = False  # after the end of a member: padding or the next member may follow
    for chunk in chunks:
        while chunk:
            if between:
                chunk = chunk.lstrip(b"\0")
                if not chunk:
                    break
                inflater = _inflate.decompressobj(wbits=31)
                between = False
            yield inflater.decompress(chunk)
            chunk = b""
            if inflater.eof:
                between = True
                chunk = inflater.unused_data
    if not between:
        raise EOFError("compressed data ends before the end-of-stream marker")


def _blocks(pieces: Iterator[bytes], header: bytes) -> Iterator[list[bytes | memoryview]]:
    """The header followed by whole lines, about _BLOCK_BYTES each, as a list of parts (not copied)."""
    held: list[bytes | memoryview] = []
    size = 0
    for piece in pieces:
        held.append(piece)
        size += len(piece)
        if size < _BLOCK_BYTES:
            continue
        cut = piece.rfind(b"\n") + 1
        if cut == 0:
            continue  # a line longer than the block: keep collecting
        view = memoryview(piece)
        held[-1] = view[:cut]
        yield [header, *held]
        held = [view[cut:]] if cut < len(piece) else []
        size = len(held[0]) if held else 0
    if size:
        yield [header, *held]


def _first_two_lines(path: Path, gz: bool) -> tuple[bytes, bytes]:
    try:
        with (gzip.open(path, "rb") if gz else open(path, "rb")) as handle:
            header = handle.readline(_MAX_HEADER_BYTES)
            line2 = handle.readline(_MAX_HEADER_BYTES) if header.endswith(b"\n") else b""
    except (OSError, EOFError, zlib.error) as exc:
        raise DataFormatError(path, 1, f"truncated or corrupt gzip data ({exc})") from None
    if header == b"":
        raise DataFormatError(path, 1, "empty file")
    if len(header) >= _MAX_HEADER_BYTES and not header.endswith(b"\n"):
        raise DataFormatError(path, 1, "line 1 is not a neuroresults header (too long)")
    return header, line2


def _check_header(path: Path, header: bytes) -> list[str]:
    """The header must be exactly the 42 names in order (optionally followed by NewZ NewTheta)."""
    names = header.rstrip(b"\r\n").decode("utf-8", errors="replace").split("\t")
    if names in (COLUMNS, COLUMNS + PREDICTION_COLUMNS):
        return names
    for position, expected in enumerate(COLUMNS):
        found = names[position] if position < len(names) else None
        if found == expected:
            continue
        if expected not in names:
            what = f"missing column {expected!r}"
            if found is not None and found not in COLUMNS:
                what += f" (found {found!r} as column {position + 1})"
        elif found is None:
            what = f"header ends after {len(names)} columns, expected {len(COLUMNS)}"
        elif found in COLUMNS:
            what = f"column {position + 1} is {found!r}, expected {expected!r} (columns out of order)"
        else:
            what = f"unexpected column {found!r} as column {position + 1}, expected {expected!r}"
        raise DataFormatError(path, 1, what)
    extra = names[len(COLUMNS):]
    raise DataFormatError(
        path, 1, f"unexpected extra columns {extra[:3]} after {COLUMNS[-1]!r} (only NewZ NewTheta may follow)"
    )


def _check_values(path: Path, first_line: int | None, table: dict[str, np.ndarray]) -> None:
    """Every checked column must be finite and inside its VALUE_RANGES range; else one error at the
    earliest bad line (then column), with the number of rows of that column like it."""
    best: tuple[int, int, str, np.ndarray] | None = None
    for order, name in enumerate(_CHECKED_COLUMNS):
        values = table.get(name)
        if values is None or len(values) == 0:
            continue
        lo, hi = VALUE_RANGES[name]
        if values.min() >= lo and values.max() <= hi:  # the fast path: two reductions; NaN fails both
            continue
        bad = ~((values >= lo) & (values <= hi))
        row = int(np.argmax(bad))
        if best is None or (row, order) < best[:2]:
            best = (row, order, name, bad)
    if best is None:
        return
    row, _, name, bad = best
    values = table[name]
    value = str(values[row])  # numpy's shortest repr of the float32 ("1.01", not "1.0099999904632568")
    finite = np.isfinite(values)
    if finite[row]:
        lo, hi = VALUE_RANGES[name]
        count = int(np.count_nonzero(bad & finite))
        what = f"column {name}: value {value} outside [{lo:g}, {hi:g}] ({count} rows like this)"
    else:
        what = f"column {name}: {value} is not a finite number ({int(np.count_nonzero(~finite))} rows like this)"
    line = first_line if first_line is not None else first_data_line(path)
    raise DataFormatError(path, line + row, what)


def _read_text(path: Path, gz: bool) -> tuple[bytes, Exception | None]:
    """The whole decompressed file, and the gzip error if it could not be inflated to the end."""
    raw = path.read_bytes()
    if not gz:
        return raw, None
    parts: list[bytes] = []
    try:
        for part in _gunzip([raw]):
            parts.append(part)
    except (_inflate.error, zlib.error, EOFError) as exc:
        return b"".join(parts), exc
    return b"".join(parts), None


def _line_bounds(text: bytes, count_fields: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Start, end (without the line break) and, if asked, field count of every line, vectorised."""
    buf = np.frombuffer(text, dtype=np.uint8)
    breaks = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], breaks + 1))
    ends = np.concatenate((breaks, [len(buf)]))
    if text.endswith(b"\n"):
        starts, ends = starts[:-1], ends[:-1]
    carriage = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    ends = ends - carriage
    if not count_fields:
        return starts, ends, None
    tabs = np.flatnonzero(buf == 9)
    fields = np.searchsorted(tabs, ends) - np.searchsorted(tabs, starts) + 1
    fields[ends == starts] = 0
    return starts, ends, fields


def _diagnose(path: Path, gz: bool, first_line: int, names: list[str], exc: Exception) -> DataFormatError:
    """Find line and column of the problem the fast parser tripped over (error path only)."""
    text, gzip_error = _read_text(path, gz)
    if gzip_error is not None:
        return DataFormatError(
            path, text.count(b"\n") + 1, f"truncated or corrupt gzip data ({gzip_error})"
        )
    _, _, fields = _line_bounds(text)
    assert fields is not None
    data_fields = fields[first_line - 1:]
    bad = np.flatnonzero(data_fields != len(names))
    if bad.size:
        line = first_line + int(bad[0])
        found = int(data_fields[bad[0]])
        if found == 0:
            return DataFormatError(path, line, f"empty line, expected {len(names)} tab-separated fields")
        return DataFormatError(path, line, f"expected {len(names)} tab-separated fields, found {found}")
    located = _locate_bad_value(text, first_line, names)
    if located is not None:
        return DataFormatError(path, *located)
    return DataFormatError(path, None, f"cannot parse: {exc}")


def _locate_bad_value(text: bytes, first_line: int, names: list[str]) -> tuple[int, str] | None:
    """Line and message of the earliest field that is not a number (or not an integer where one is due)."""
    options = _csv_options(first_line == 3)
    frame = pd.read_csv(io.BytesIO(text), encoding_errors="replace", **options)  # dtypes inferred
    best: tuple[int, int, str] | None = None
    for order, name in enumerate(names):
        column = frame[name]
        is_int = name in INT_COLUMNS
        if column.dtype == np.int64 or (not is_int and column.dtype == np.float64):
            continue
        suspects = _suspect_rows(column, is_int)
        if suspects is None:  # the inferred values look fine: look at the text of this column itself
            strings = pd.read_csv(
                io.BytesIO(text), usecols=[name], dtype=str, na_filter=False, encoding_errors="replace",
                **{**options, "keep_default_na": False, "na_values": None},
            )[name]
            suspects = _suspect_rows(strings, is_int, strict_text=True)
        if suspects is not None and (best is None or (suspects, order) < best[:2]):
            best = (suspects, order, name)
    if best is None:
        return None
    row, _, name = best
    value = str(frame[name].iloc[row])
    if len(value) > 40:
        value = value[:37] + "..."
    kind = "an integer" if name in INT_COLUMNS else "a number"
    return first_line + row, f"column {name}: {value!r} is not {kind}"


def _suspect_rows(column: pd.Series, is_int: bool, strict_text: bool = False) -> int | None:
    """Index of the first bad entry of one column, or None."""
    if strict_text:
        text = column.str.strip()
        if is_int:
            bad = ~text.str.fullmatch(r"[+-]?\d+")
        else:
            bad = pd.to_numeric(text, errors="coerce").isna() & ~text.isin(_NAN_STRINGS)
    else:
        numbers = pd.to_numeric(column, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = np.isnan(numbers) & column.notna().to_numpy()
        if is_int:
            bad |= ~np.isfinite(numbers) | (numbers != np.round(numbers))
    bad = np.asarray(bad, dtype=bool)
    return int(np.argmax(bad)) if bad.any() else None


# --------------------------------------------------------------------------------------------- cache
def _load_cache(cache_file: Path, wanted: list[str] | None) -> dict[str, np.ndarray] | None:
    """The cached columns, or None if absent, unreadable or from another cache format."""
    try:
        with np.load(cache_file, allow_pickle=False) as archive:
            if int(archive["__format__"]) != _CACHE_FORMAT:
                return None
            names = wanted if wanted is not None else [n for n in archive.files if n != "__format__"]
            return {name: archive[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _store_cache(cache_file: Path, table: dict[str, np.ndarray]) -> None:
    """Write the cache atomically (temp file + os.replace); a cache that cannot be written is skipped."""
    tmp_name = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        prefix = cache_file.stem[:16] + "."
        fd, tmp_name = tempfile.mkstemp(dir=cache_file.parent, prefix=prefix, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, __format__=np.array(_CACHE_FORMAT), **table)
        os.replace(tmp_name, cache_file)
        tmp_name = None
    except OSError:
        pass
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------- writing
_WRITE_CHUNK_ROWS = 1 << 16


def write_predictions(
    src: str | Path | Sequence[str | Path],
    dst: str | Path,
    prediction: np.ndarray,
    rows: Sequence[int] | None = None,
) -> None:
    """Write the file `src`, or the files of a split in order, as one file with two columns NewZ NewTheta
    (scaled) appended to every row.

    The header and the empty line 2 are written once; every row's line stays byte-for-byte unchanged
    (its line break included; a file without a line break after its last row gets one where another file
    follows, the last file's missing one stays missing). NaN is written as "nan"; values use the shortest
    representation that reads back to the same number. `rows` (one count per file, e.g. the store's
    `sources`) and the total, `len(prediction)`, are checked: a mismatch is a ValueError. `dst` is gzip if
    its name ends in .gz; it is written to a temp file and renamed, so a failure leaves no partial file.
    """
    sources = [Path(src)] if isinstance(src, str | Path) else [Path(p) for p in src]
    dst = Path(dst)
    values = np.asarray(prediction)
    if values.ndim != 2 or values.shape[1] != 2:
        raise ValueError(f"prediction must have shape (N, 2), got {values.shape}")
    if not sources:
        raise ValueError("no source files given")
    if rows is not None and len(rows) != len(sources):
        raise ValueError(f"{len(rows)} row counts given for {len(sources)} files")
    done = 0  # rows written so far
    eol = b"\n"
    pending_break = False  # the last row written had no line break
    with _AtomicSink(dst) as sink:
        for i, source in enumerate(sources):
            text, starts, ends, first = _prediction_source(source)
            n = len(starts) - first
            if rows is not None and n != rows[i]:
                raise ValueError(f"{source} has {n} rows, expected {rows[i]} (did the file change since it was read?)")
            if done + n > len(values):
                raise ValueError(f"{_describe(sources)} have at least {done + n} rows but the prediction has "
                                 f"{len(values)}")
            if i == 0:
                if len(starts) > 1:
                    eol = text[ends[0]:starts[1]]  # the header's own line break: "\n" or "\r\n"
                sink.write(text[:ends[0]] + ("\t" + "\t".join(PREDICTION_COLUMNS)).encode() + eol + eol)
            if n == 0:
                continue
            if pending_break:
                sink.write(eol)
            _write_rows(sink, text, starts[first:], ends[first:], values[done:done + n])
            pending_break = not text.endswith(b"\n")
            done += n
        if done != len(values):
            raise ValueError(f"{_describe(sources)} have {done} rows but the prediction has {len(values)}")


def _describe(sources: list[Path]) -> str:
    return f"{sources[0]}" if len(sources) == 1 else f"the {len(sources)} files {[str(p) for p in sources]}"


def _prediction_source(src: Path) -> tuple[bytes, np.ndarray, np.ndarray, int]:
    """The text of one source file, the start and end of each line, and the index of its first row's line."""
    _check_readable(src)
    text, gzip_error = _read_text(src, _is_gzip(src))
    if gzip_error is not None:
        raise DataFormatError(src, text.count(b"\n") + 1, f"truncated or corrupt gzip data ({gzip_error})")
    if not text:
        raise DataFormatError(src, 1, "empty file")
    starts, ends, _ = _line_bounds(text, count_fields=False)
    header = text[starts[0]:ends[0]]
    if header.decode("utf-8", errors="replace").split("\t") != COLUMNS:
        _check_header(src, header)  # explains what is wrong
        raise DataFormatError(src, 1, "already has NewZ NewTheta columns")
    first = 2 if len(starts) > 1 and ends[1] == starts[1] else 1  # index of the first row's line
    return text, starts, ends, first


def _write_rows(sink: _AtomicSink, text: bytes, starts: np.ndarray, ends: np.ndarray, values: np.ndarray) -> None:
    """The lines of the given rows (from the first row's start to the end of the text), fields appended."""
    buf = np.frombuffer(text, dtype=np.uint8)
    position = int(starts[0])
    # chunks of rows bound the memory of the index arrays; there is no loop over single rows
    for a in range(0, len(ends), _WRITE_CHUNK_ROWS):
        b = min(a + _WRITE_CHUNK_ROWS, len(ends))
        stop = int(starts[b]) if b < len(starts) else len(buf)
        sink.write(_append_fields(buf[position:stop], ends[a:b] - position, values[a:b]))
        position = stop
    sink.write(buf[position:])


def _append_fields(piece: np.ndarray, insert_at: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Insert "\tZ\tTheta" at the given offsets (the rows' line ends) of a block of file bytes."""
    rows = len(values)
    # shortest round-trip repr as fixed-width bytes; the NUL padding is dropped below
    z = values[:, 0].astype("S").view(np.uint8).reshape(rows, -1)
    theta = values[:, 1].astype("S").view(np.uint8).reshape(rows, -1)
    tab = np.full((rows, 1), ord("\t"), dtype=np.uint8)
    table = np.concatenate([tab, z, tab, theta], axis=1)
    keep = table != 0
    return np.insert(piece, np.repeat(insert_at, keep.sum(axis=1)), table[keep])


class _AtomicSink:
    """Write bytes (gzip-compressed if the name ends in .gz) to a temp file, renamed over `dst` on success."""

    def __init__(self, dst: Path) -> None:
        self._dst = dst
        self._compressor = zlib.compressobj(1, zlib.DEFLATED, 31) if dst.suffix == ".gz" else None
        dst.parent.mkdir(parents=True, exist_ok=True)
        # 0666 less the umask, as any file a program creates (mkstemp would make it private: 0600)
        self._tmp_name = str(dst.parent / f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        self._handle = os.fdopen(os.open(self._tmp_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")

    def write(self, data: bytes | np.ndarray) -> None:
        if self._compressor is not None:
            data = self._compressor.compress(data)
        self._handle.write(data)

    def __enter__(self) -> _AtomicSink:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        try:
            if exc_type is None and self._compressor is not None:
                self._handle.write(self._compressor.flush())
            self._handle.close()
            if exc_type is None:
                os.replace(self._tmp_name, self._dst)
        finally:
            Path(self._tmp_name).unlink(missing_ok=True)
