"""Reading a neuroresults file: validated (one `DataFormatError` line "path:line: what" for a malformed
file) and fast (line-aligned blocks parsed by pandas' C parser in a thread per core, the parse cache)."""
from __future__ import annotations

import csv
import io
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from neuro_trigger import cpu_cores
from neuro_trigger.data.neuroresults.cache import CACHE_DIR, _load_cache, _store_cache, file_hash
from neuro_trigger.data.neuroresults.format import (
    COLUMNS,
    HARDWARE_COLUMNS,
    INT_COLUMNS,
    PREDICTION_COLUMNS,
    VALUE_RANGES,
    DataFormatError,
)
from neuro_trigger.data.neuroresults.text import (
    _blocks,
    _check_readable,
    _first_two_lines,
    _GzipStreamError,
    _is_gzip,
    _line_bounds,
    _read_text,
    _text_pieces,
    _TextBlock,
)

_CHECKED_COLUMNS = [c for c in COLUMNS if c in VALUE_RANGES]  # file order: the earliest column wins a tie
_NAN_STRINGS = ["nan", "NaN", "-nan", "-NaN", "NAN"]


def read_neuroresults(
    path: str | Path, columns: list[str] | None = None, cache_dir: Path | None = CACHE_DIR
) -> dict[str, np.ndarray]:
    """Read a neuroresults file (plain or gzip) into column arrays: ints int64, floats float32.

    Returns the columns in file order (or in the order of `columns`). A prediction file (the 42
    columns plus NewZ NewTheta, and perhaps the hardware's HwRawZ HwRawTheta HwZ HwTheta) is read too. The
    parsed columns are cached in `cache_dir/<sha256>.npz`, so a file is parsed once; `cache_dir=None` disables
    the cache.
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
    known = set(COLUMNS) | set(PREDICTION_COLUMNS) | set(HARDWARE_COLUMNS)
    unknown = [c for c in columns if c not in known]
    if unknown:
        raise ValueError(f"unknown neuroresults columns requested: {unknown}")
    return list(columns)


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



# --------------------------------------------------------------------------------------------- validation

def _check_header(path: Path, header: bytes) -> list[str]:
    """The header must be exactly the 42 names in order (optionally followed by NewZ NewTheta, and those by
    the hardware's HwRawZ HwRawTheta HwZ HwTheta)."""
    names = header.rstrip(b"\r\n").decode("utf-8", errors="replace").split("\t")
    if names in (COLUMNS, COLUMNS + PREDICTION_COLUMNS, COLUMNS + PREDICTION_COLUMNS + HARDWARE_COLUMNS):
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
        path, 1, f"unexpected extra columns {extra[:3]} after {COLUMNS[-1]!r} (only NewZ NewTheta may follow, and "
                 f"after them HwRawZ HwRawTheta HwZ HwTheta)"
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


