"""The in-memory column store of one split, its shared-memory form, and the z/theta scaling helpers.

A split is loaded once (`load_split`) and copied once into shared memory (`ColumnStore.to_shared`);
expert processes attach to it zero-copy (`ColumnStore.from_shared`) and hold index arrays into it.
"""
from __future__ import annotations

import os
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults import (
    CACHE_DIR,
    INPUT_COLUMNS,
    TARGET_COLUMNS,
    file_hash,
    read_neuroresults,
)
from neuro_trigger.errors import UserError

Z_RANGE_CM = (-100.0, 100.0)
THETA_RANGE_DEG = (10.0, 170.0)

_EVENT_ID_COLUMNS = ["Experiment", "Run", "Subrun", "Event"]
_OLD_SCALED_COLUMNS = ["ScaleZ", "ScaleTheta"]
_ARRAY_FIELDS = ("x", "y", "y_old", "expert", "event", "track", "ntracks", "row")
_NEEDED_COLUMNS = (
    INPUT_COLUMNS + TARGET_COLUMNS + _OLD_SCALED_COLUMNS + _EVENT_ID_COLUMNS + ["Track", "nTracks", "Expert"]
)


@dataclass(eq=False)
class ColumnStore:
    """All rows of one split as column arrays (row i = i-th row over the concatenated files)."""

    x: np.ndarray  # (N, 27) float32, the network inputs
    y: np.ndarray  # (N, 2) float32, [RecoZ, RecoTheta] scaled
    y_old: np.ndarray  # (N, 2) float32, [ScaleZ, ScaleTheta]: the previous network's output
    expert: np.ndarray  # (N,) int64
    event: np.ndarray  # (N, 4) int64, [Experiment, Run, Subrun, Event]
    track: np.ndarray  # (N,) int64
    ntracks: np.ndarray  # (N,) int64
    row: np.ndarray  # (N,) int64, 0..N-1
    sources: list[dict] = field(default_factory=list)  # [{path, sha256, rows}] in concatenation order

    def __len__(self) -> int:
        return len(self.row)

    def expert_rows(self, expert: int) -> np.ndarray:
        """Row indices (int64) of one expert's rows; expert -1 means all rows."""
        if expert == -1:
            return np.arange(len(self), dtype=np.int64)
        return np.flatnonzero(self.expert == expert).astype(np.int64, copy=False)

    def targets(self, out_size: int) -> np.ndarray:
        """The first `out_size` targets (1: z only, 2: z and theta), a view of `y`."""
        return self.y[:, :out_size]

    def to_shared(self) -> SharedColumns:
        """Copy the arrays once into shared memory; the handle is picklable and sent to workers.

        The caller owns the blocks and must call `release()` on the handle when all workers are done.
        """
        blocks: dict[str, tuple[str, tuple[int, ...], str]] = {}
        owned: list[SharedMemory] = []
        try:
            for name in _ARRAY_FIELDS:
                array = np.ascontiguousarray(getattr(self, name))
                shm = SharedMemory(create=True, size=max(array.nbytes, 1))
                owned.append(shm)
                view = np.ndarray(array.shape, dtype=array.dtype, buffer=shm.buf)
                view[...] = array
                del view  # no export may outlive the copy, or closing the block fails
                blocks[name] = (shm.name, tuple(array.shape), array.dtype.str)
        except BaseException:
            for shm in owned:
                shm.close()
                shm.unlink()
            raise
        return SharedColumns(blocks=blocks, sources=[dict(s) for s in self.sources], _owned=owned)

    @classmethod
    def from_shared(cls, handle: SharedColumns) -> ColumnStore:
        """Attach to the shared blocks of `handle` without copying; treat the arrays as read-only."""
        arrays: dict[str, np.ndarray] = {}
        blocks = []
        for name, (shm_name, shape, dtype) in handle.blocks.items():
            shm = _attach(shm_name)
            blocks.append(shm)
            arrays[name] = np.ndarray(shape, dtype=np.dtype(dtype), buffer=shm.buf)
        store = cls(**arrays, sources=[dict(s) for s in handle.sources])
        # numpy keeps no buffer export of the block: were the block collected, its mapping would go
        # with it and every view would point at unmapped memory. The store keeps its blocks alive.
        store._blocks = blocks
        return store


@dataclass
class SharedColumns:
    """Picklable handle of a ColumnStore in shared memory: block names, shapes, dtypes and sources."""

    blocks: dict[str, tuple[str, tuple[int, ...], str]]
    sources: list[dict]
    _owned: list[SharedMemory] = field(default_factory=list, repr=False, compare=False)

    def __getstate__(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "sources": self.sources}  # the owner's objects stay home

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.blocks = state["blocks"]
        self.sources = state["sources"]
        self._owned = []

    def release(self) -> None:
        """Close and unlink the blocks (idempotent); views attached elsewhere stay valid until dropped."""
        if self._owned:
            for shm in self._owned:
                shm.close()
                try:
                    shm.unlink()
                except FileNotFoundError:
                    pass
            self._owned = []
            return
        for shm_name, _, _ in self.blocks.values():  # a copy of the handle: unlink by name
            try:
                shm = SharedMemory(name=shm_name)
            except FileNotFoundError:
                continue
            shm.close()
            shm.unlink()

    def __enter__(self) -> SharedColumns:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class _AttachedBlock(SharedMemory):
    """A block attached by a non-owner, never closed explicitly.

    Numpy arrays made on `shm.buf` keep the underlying mmap object as their base but no buffer export, so
    `SharedMemory.close()` (also called by its `__del__`) would unmap memory that views still use. Here
    the mapping lives exactly as long as its mmap object is referenced (by this block or any array) and
    is unmapped with the last one; the file descriptor is closed at once (POSIX), it is not needed.
    """

    def __init__(self, name: str, **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        pass


_TRACKER_LOCK = threading.Lock()


def _attach(name: str) -> SharedMemory:
    """Attach to a block without registering it with this process's resource tracker.

    Before Python 3.13 attaching registers the block too, so a worker with its own tracker would unlink
    the parent's block at exit (and warn about a "leak"); the owner alone is responsible for it.
    """
    if sys.version_info >= (3, 13):
        return _AttachedBlock(name=name, track=False)
    with _TRACKER_LOCK:
        register = resource_tracker.register
        resource_tracker.register = lambda *args, **kwargs: None
        try:
            return _AttachedBlock(name=name)
        finally:
            resource_tracker.register = register


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
