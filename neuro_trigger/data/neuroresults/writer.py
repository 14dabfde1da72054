"""Writing the neuroresults format: a table (`write_table`) and the predictions appended to the rows of
their source files (`write_predictions`)."""
from __future__ import annotations

import gzip
import os
import uuid
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from neuro_trigger.data.neuroresults.format import COLUMNS, PREDICTION_COLUMNS, DataFormatError
from neuro_trigger.data.neuroresults.reader import _check_header
from neuro_trigger.data.neuroresults.text import _check_readable, _is_gzip, _line_bounds, _read_text


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
    data = (header + body).encode("utf-8")
    if path.suffix == ".gz":
        data = gzip.compress(data, compresslevel=1, mtime=0)  # no time, no name: the same table, the same bytes
    path.write_bytes(data)


_WRITE_CHUNK_ROWS = 1 << 16


def write_predictions(
    src: str | Path | Sequence[str | Path],
    dst: str | Path,
    prediction: np.ndarray,
    rows: Sequence[int] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write the file `src`, or the files of a split in order, as one file with two columns NewZ NewTheta
    (scaled) appended to every row, and after them the columns of `extra` (name -> one value a row, in order:
    the hardware's HwRawZ HwRawTheta HwZ HwTheta). An integer column is written as integers, "nan" where it is
    masked (a numpy masked array); a float column as NewZ is.

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
    names = [*PREDICTION_COLUMNS, *(extra or {})]
    columns = [values[:, 0], values[:, 1], *(extra or {}).values()]
    if any(np.ndim(c) != 1 or len(c) != len(values) for c in columns):
        raise ValueError(f"every extra column needs one value for each of the prediction's {len(values)} rows")
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
                sink.write(text[:ends[0]] + ("\t" + "\t".join(names)).encode("utf-8") + eol + eol)
            if n == 0:
                continue
            if pending_break:
                sink.write(eol)
            _write_rows(sink, text, starts[first:], ends[first:], [c[done:done + n] for c in columns])
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


def _write_rows(sink: _AtomicSink, text: bytes, starts: np.ndarray, ends: np.ndarray,
                columns: list[np.ndarray]) -> None:
    """The lines of the given rows (from the first row's start to the end of the text), fields appended."""
    buf = np.frombuffer(text, dtype=np.uint8)
    position = int(starts[0])
    # chunks of rows bound the memory of the index arrays; there is no loop over single rows
    for a in range(0, len(ends), _WRITE_CHUNK_ROWS):
        b = min(a + _WRITE_CHUNK_ROWS, len(ends))
        stop = int(starts[b]) if b < len(starts) else len(buf)
        sink.write(_append_fields(buf[position:stop], ends[a:b] - position, [c[a:b] for c in columns]))
        position = stop
    sink.write(buf[position:])


def _append_fields(piece: np.ndarray, insert_at: np.ndarray, columns: list[np.ndarray]) -> np.ndarray:
    """Insert "\tZ\tTheta..." (a field per column) at the given offsets (the rows' line ends) of a block of file
    bytes."""
    rows = len(columns[0])
    tab = np.full((rows, 1), ord("\t"), dtype=np.uint8)
    parts = []
    for column in columns:
        parts += [tab, _field_bytes(column).view(np.uint8).reshape(rows, -1)]
    table = np.concatenate(parts, axis=1)
    keep = table != 0  # fixed-width bytes: the NUL padding is dropped
    return np.insert(piece, np.repeat(insert_at, keep.sum(axis=1)), table[keep])


def _field_bytes(column: np.ndarray) -> np.ndarray:
    """A column's values as fixed-width bytes: floats as their shortest round-trip repr ("nan" for NaN), integers
    as integers ("nan" where masked)."""
    if np.ma.isMaskedArray(column):
        text = np.ma.getdata(column).astype("S")
        return np.where(np.ma.getmaskarray(column), np.bytes_(b"nan"), text)
    return np.asarray(column).astype("S")


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
