"""The in-memory column store of one split, its shared form (memory-mapped files), and the z/theta scaling helpers.

A split is loaded once (`load_split`) and written once as .npy files into a content-keyed cache
(`ColumnStore.to_shared`); every expert process maps them read-only (`ColumnStore.from_shared`), sharing
the pages through the page cache, and holds index arrays into them. Nothing lives in /dev/shm, and
nothing needs cleaning up after a crash: the files are a cache that later runs reuse.
"""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from neuro_trigger import REPO_ROOT, cpu_cores
from neuro_trigger.data.neuroresults.cache import CACHE_DIR, file_hash
from neuro_trigger.data.neuroresults.format import INPUT_COLUMNS, NO_EXPERT, TARGET_COLUMNS
from neuro_trigger.data.neuroresults.reader import first_data_line, read_neuroresults
from neuro_trigger.errors import UserError

log = logging.getLogger(__name__)

Z_RANGE_CM = (-100.0, 100.0)
THETA_RANGE_DEG = (10.0, 170.0)
SHARED_DIR = REPO_ROOT / "data_cache" / "columns"
"""Default folder of the shared column files (`to_shared(cache_dir=...)` overrides it)."""

_EVENT_ID_COLUMNS = ["Experiment", "Run", "Subrun", "Event"]
_OLD_SCALED_COLUMNS = ["ScaleZ", "ScaleTheta"]
_ARRAY_FIELDS = ("x", "y", "y_old", "expert", "event", "track", "ntracks", "row")
_NEEDED_COLUMNS = (
    INPUT_COLUMNS + TARGET_COLUMNS + _OLD_SCALED_COLUMNS + _EVENT_ID_COLUMNS + ["Track", "nTracks", "Expert"]
)
_SHARED_FORMAT = b"neuro_trigger shared column v1"  # part of every file's key
_HASH_CHUNK = 32 << 20
_STALE_TMP_SECONDS = 24 * 3600  # temp files of a writer killed mid-write are removed after a day


@dataclass(eq=False)
class ColumnStore:
    """All rows of one split as column arrays (row i = i-th row over the concatenated files)."""

    x: np.ndarray  # (N, 27) float32, the network inputs
    y: np.ndarray  # (N, 2) float32, [RecoZ, RecoTheta] scaled
    y_old: np.ndarray  # (N, 2) float32, [ScaleZ, ScaleTheta]: the previous network's output
    expert: np.ndarray  # (N,) int64; NO_EXPERT (-1): a track no expert takes, never trained on
    event: np.ndarray  # (N, 4) int64, [Experiment, Run, Subrun, Event]
    track: np.ndarray  # (N,) int64
    ntracks: np.ndarray  # (N,) int64
    row: np.ndarray  # (N,) int64, 0..N-1
    sources: list[dict] = field(default_factory=list)  # [{path, sha256, rows}] in concatenation order

    def __len__(self) -> int:
        return len(self.row)

    @property
    def no_expert_rows(self) -> int:
        """Rows with Expert -1 (tracks no expert takes): kept, aligned with the files, never trained on."""
        return int(np.count_nonzero(self.expert == NO_EXPERT))

    def expert_rows(self, expert: int) -> np.ndarray:
        """Row indices (int64) of one expert's rows; expert -1 means the rows of all experts (Expert >= 0)."""
        if expert == -1:
            if not self.no_expert_rows:
                return np.arange(len(self), dtype=np.int64)
            return np.flatnonzero(self.expert >= 0).astype(np.int64, copy=False)
        return np.flatnonzero(self.expert == expert).astype(np.int64, copy=False)

    def targets(self, out_size: int) -> np.ndarray:
        """The first `out_size` targets (1: z only, 2: z and theta), a view of `y`."""
        return self.y[:, :out_size]

    def to_shared(self, cache_dir: str | Path | None = None) -> SharedColumns:
        """Write each array once as a .npy file keyed by its content into `cache_dir` (default SHARED_DIR;
        a temp folder if that is not writable) and return the picklable handle that workers map them by.

        A file already there (same content: an earlier run, another split, the same data with another
        y_old) is reused, not written again. Each file is written to a temp name and renamed, so a killed
        writer leaves no half file under a final name; there is nothing to release afterwards.
        """
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in _ARRAY_FIELDS}
        root = Path(cache_dir) if cache_dir is not None else SHARED_DIR
        try:
            files = _store_arrays(root, arrays)
        except OSError as first:
            fallback = Path(tempfile.gettempdir()) / "neuro_trigger_columns"
            if fallback.resolve() == root.resolve():
                raise UserError(f"{root}: cannot write the shared column files: {first.strerror or first}") from None
            log.warning("%s: cannot write the shared column files (%s); using %s", root, first.strerror or first,
                        fallback)
            try:
                files = _store_arrays(fallback, arrays)
            except OSError as second:
                raise UserError(f"{fallback}: cannot write the shared column files: "
                                f"{second.strerror or second}") from None
        blocks = {name: (str(files[name]), tuple(a.shape), a.dtype.str) for name, a in arrays.items()}
        return SharedColumns(blocks=blocks, sources=[dict(s) for s in self.sources])

    @classmethod
    def from_shared(cls, handle: SharedColumns) -> ColumnStore:
        """Map the files of `handle` read-only (no copy: the pages are shared through the page cache)."""
        arrays = {name: _map(path, tuple(shape), np.dtype(dtype))
                  for name, (path, shape, dtype) in handle.blocks.items()}
        return cls(**arrays, sources=[dict(s) for s in handle.sources])


@dataclass
class SharedColumns:
    """Picklable handle of a ColumnStore written by `to_shared`: per array its .npy file, shape and dtype
    (`blocks`), and the sources."""

    blocks: dict[str, tuple[str, tuple[int, ...], str]]
    sources: list[dict]

    def release(self) -> None:
        """Nothing to free (kept for the API): the files are a content-keyed cache that later runs reuse,
        and every mapping goes with the arrays that use it."""

    def __enter__(self) -> SharedColumns:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _array_keys(arrays: dict[str, np.ndarray], pool: ThreadPoolExecutor) -> dict[str, str]:
    """Per C-contiguous array a sha256 over the format, its dtype and shape, and the sha256 of each chunk
    of its bytes (chunks hashed in parallel: hashlib releases the GIL; nothing is copied)."""
    chunks = [(name, flat[i:i + _HASH_CHUNK])
              for name, flat in ((n, a.reshape(-1).view(np.uint8)) for n, a in arrays.items())
              for i in range(0, max(len(flat), 1), _HASH_CHUNK)]
    digests = pool.map(lambda item: hashlib.sha256(item[1]).digest(), chunks)
    keys = {name: hashlib.sha256(_SHARED_FORMAT + f"|{a.dtype.str}|{a.shape}|{_HASH_CHUNK}|".encode())
            for name, a in arrays.items()}
    for (name, _), digest in zip(chunks, digests, strict=True):
        keys[name].update(digest)
    return {name: key.hexdigest() for name, key in keys.items()}


def _store_arrays(root: Path, arrays: dict[str, np.ndarray]) -> dict[str, Path]:
    """The file of every array under `root`, written where absent (temp file, then rename)."""
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temp_files(root)
    with ThreadPoolExecutor(max(1, min(8, cpu_cores())), thread_name_prefix="columns") as pool:
        files = {name: root / f"{key}.npy" for name, key in _array_keys(arrays, pool).items()}
        missing = [name for name in arrays if not _usable(files[name], arrays[name])]
        list(pool.map(lambda name: _write_array(files[name], arrays[name]), missing))  # raises the first error
    return files


def _write_array(path: Path, array: np.ndarray) -> None:
    """np.save to a temp file beside `path`, then rename: a file under its final name is always whole."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem[:16]}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, array, allow_pickle=False)
        os.chmod(tmp, 0o444)  # the content is fixed by its name
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _usable(path: Path, array: np.ndarray) -> bool:
    """Whether an existing file holds an array of this shape and dtype (its name vouches for the bytes)."""
    try:
        mapped = _map(path, array.shape, array.dtype)
    except (OSError, ValueError):
        return False
    del mapped
    try:
        os.utime(path)  # marks it as in use, for pruning the cache by age (docs/data.md)
    except OSError:
        pass
    return True


def _map(path: str | Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """The array of a .npy file, mapped read-only; its shape and dtype must be the expected ones."""
    if int(np.prod(shape)) == 0:  # an empty file region cannot be mapped
        with open(path, "rb") as handle:
            array = np.lib.format.read_array(handle, allow_pickle=False)
        array.flags.writeable = False
    else:
        array = np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)
    if array.shape != tuple(shape) or array.dtype != dtype:
        raise ValueError(f"{path}: holds {array.dtype}{list(array.shape)}, expected {dtype}{list(shape)}")
    return array


def _remove_stale_temp_files(root: Path) -> None:
    now = time.time()
    for tmp in root.glob(".*.tmp"):
        try:
            if now - tmp.stat().st_mtime > _STALE_TMP_SECONDS:
                tmp.unlink()
        except OSError:
            pass


def load_split(paths: Sequence[str | Path], cache_dir: Path | None = CACHE_DIR) -> ColumnStore:
    """Read and concatenate the files of one split (in order) into a ColumnStore.

    Relative paths are relative to the repository root. Each file is parsed once and cached (see
    `read_neuroresults`); `sources` records path, sha256 and row count of every file.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise UserError("no data files given for the split")
    resolved = [p if p.is_absolute() else REPO_ROOT / p for p in map(Path, paths)]
    tables = [read_neuroresults(p, columns=_NEEDED_COLUMNS, cache_dir=cache_dir) for p in resolved]
    counts = [len(t["Expert"]) for t in tables]
    n = sum(counts)

    def fill(columns: list[str], dtype: type) -> np.ndarray:
        out = np.empty((n, len(columns)), dtype=dtype)
        start = 0
        for table, count in zip(tables, counts, strict=True):
            for j, name in enumerate(columns):
                out[start:start + count, j] = table[name]
            start += count
        return out

    store = ColumnStore(
        x=fill(INPUT_COLUMNS, np.float32),
        y=fill(TARGET_COLUMNS, np.float32),
        y_old=fill(_OLD_SCALED_COLUMNS, np.float32),
        expert=fill(["Expert"], np.int64)[:, 0],
        event=fill(_EVENT_ID_COLUMNS, np.int64),
        track=fill(["Track"], np.int64)[:, 0],
        ntracks=fill(["nTracks"], np.int64)[:, 0],
        row=np.arange(n, dtype=np.int64),
        sources=[
            {"path": str(p.resolve()), "sha256": file_hash(p), "rows": count}
            for p, count in zip(resolved, counts, strict=True)
        ],
    )
    for path, table in zip(resolved, tables, strict=True):
        no_expert = table["Expert"] == NO_EXPERT
        if no_expert.any():
            log.warning("%s:%d: %d rows with Expert -1 (tracks no expert takes): kept in the split, excluded "
                        "from training and from every expert's metrics", path, first_data_line(path) +
                        int(np.argmax(no_expert)), int(np.count_nonzero(no_expert)))
    return store


# ------------------------------------------------------------------------------------------ scaling
ArrayT = TypeVar("ArrayT")

_Z_MID = (Z_RANGE_CM[1] + Z_RANGE_CM[0]) / 2
_Z_HALF = (Z_RANGE_CM[1] - Z_RANGE_CM[0]) / 2
_THETA_MID = (THETA_RANGE_DEG[1] + THETA_RANGE_DEG[0]) / 2
_THETA_HALF = (THETA_RANGE_DEG[1] - THETA_RANGE_DEG[0]) / 2


def z_to_cm(z: ArrayT) -> ArrayT:
    """Scaled z in [-1, 1] → cm in [-100, 100] (numbers, numpy arrays, torch tensors)."""
    return z * _Z_HALF + _Z_MID  # type: ignore[operator]


def z_from_cm(z_cm: ArrayT) -> ArrayT:
    """z in cm → scaled [-1, 1]."""
    return (z_cm - _Z_MID) / _Z_HALF  # type: ignore[operator]


def theta_to_deg(theta: ArrayT) -> ArrayT:
    """Scaled theta in [-1, 1] → degrees in [10, 170]."""
    return theta * _THETA_HALF + _THETA_MID  # type: ignore[operator]


def theta_from_deg(theta_deg: ArrayT) -> ArrayT:
    """theta in degrees → scaled [-1, 1]."""
    return (theta_deg - _THETA_MID) / _THETA_HALF  # type: ignore[operator]
