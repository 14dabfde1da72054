"""Composable, vectorised row filters.

A filter maps a column store (see `dataset.ColumnStore`; only its arrays are used) to a boolean
keep-mask over its rows. Filters compose with `&`, `|` and `~`, and `str(f)` gives the config
syntax back, so `filter_parser.parse_filter(str(f)) == f`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

__all__ = [
    "AndFilter",
    "ConCatFilter",
    "DuplicateEventsFilter",
    "ExpertFilter",
    "Filter",
    "IdentityFilter",
    "Max2EventsFilter",
    "NotFilter",
    "OrFilter",
    "RangeFilter",
]

PREFIX = "dataset_filters"


class _Store(Protocol):
    """The part of `ColumnStore` the filters read."""

    y: np.ndarray
    expert: np.ndarray
    event: np.ndarray
    row: np.ndarray

    def __len__(self) -> int: ...


# --------------------------------------------------------------------------------------------
# Filters


class Filter:
    """Base class: `mask(store)` gives a boolean keep-mask of shape (len(store),)."""

    def mask(self, store: _Store) -> np.ndarray:
        raise NotImplementedError

    def __and__(self, other: Filter) -> Filter:
        if not isinstance(other, Filter):
            return NotImplemented
        return AndFilter(self, other)

    def __or__(self, other: Filter) -> Filter:
        if not isinstance(other, Filter):
            return NotImplemented
        return OrFilter(self, other)

    def __invert__(self) -> Filter:
        return NotFilter(self)

    def __str__(self) -> str:
        raise NotImplementedError

    def __repr__(self) -> str:
        return str(self)


def _n_rows(store: _Store) -> int:
    return len(store)


@dataclass(frozen=True, eq=True, repr=False)
class IdentityFilter(Filter):
    """Keeps every row."""

    def mask(self, store: _Store) -> np.ndarray:
        return np.ones(_n_rows(store), dtype=bool)

    def __str__(self) -> str:
        return f"{PREFIX}.IdentityFilter()"


@dataclass(frozen=True, eq=True, repr=False)
class ExpertFilter(Filter):
    """Keeps the rows of one expert (sector); expert -1 keeps all rows."""

    expert: int

    def __post_init__(self) -> None:
        if isinstance(self.expert, bool) or not isinstance(self.expert, int | np.integer):
            raise TypeError(f"ExpertFilter: expert must be an int, got {type(self.expert).__name__}")
        if not -1 <= int(self.expert) < 2**31:
            raise ValueError(f"ExpertFilter: expert must be -1 (all) or in 0..{2**31 - 1}, got {self.expert}")
        object.__setattr__(self, "expert", int(self.expert))

    def mask(self, store: _Store) -> np.ndarray:
        if self.expert == -1:  # the solo network: every track some expert takes (Expert -1: none does)
            return np.asarray(store.expert) >= 0
        return np.asarray(store.expert) == self.expert

    def __str__(self) -> str:
        return f"{PREFIX}.ExpertFilter({self.expert})"


@dataclass(frozen=True, eq=True, repr=False)
class RangeFilter(Filter):
    """Keeps rows whose row index (`store.row`, file order) lies in a Python range (steps allowed)."""

    r: range

    def __post_init__(self) -> None:
        if not isinstance(self.r, range):
            raise TypeError(f"RangeFilter: expected a range, got {type(self.r).__name__}")

    def mask(self, store: _Store) -> np.ndarray:
        row = np.asarray(store.row)
        r = self.r if self.r.step > 0 else self.r[::-1]  # same set of values, positive step
        if row.size == 0 or not r:
            return np.zeros(row.shape, dtype=bool)
        # Clamp the (possibly huge) Python ints to the rows present so that numpy never overflows.
        lo, hi = int(row.min()), int(row.max())
        start, stop, step = r.start, min(r.stop, hi + 1), r.step
        if start < lo:
            start += -((start - lo) // step) * step  # first value of r that is >= lo
        if start >= stop:
            return np.zeros(row.shape, dtype=bool)
        if step > stop - start:  # only `start` itself lies in [lo, hi]
            return row == start
        keep = (row >= start) & (row < stop)
        if step != 1:
            keep &= (row - start) % step == 0
        return keep

    def __str__(self) -> str:
        return f"{PREFIX}.RangeFilter({self.r!r})"


@dataclass(frozen=True, eq=True, repr=False)
class DuplicateEventsFilter(Filter):
    """Keeps, among rows of one event with the same reco track (RecoZ, RecoTheta), the first in file order.

    Several hardware tracks can be matched to the same reconstructed track; this keeps one of them.
    """

    def mask(self, store: _Store) -> np.ndarray:
        n = _n_rows(store)
        keep = np.zeros(n, dtype=bool)
        if n == 0:
            return keep
        order, new_event, new_pair = _event_track_groups(store)
        keep[order[new_pair]] = True
        return keep

    def __str__(self) -> str:
        return f"{PREFIX}.DuplicateEventsFilter()"


@dataclass(frozen=True, eq=True, repr=False)
class Max2EventsFilter(Filter):
    """Keeps all rows of events with at most 2 distinct reco tracks (distinct (RecoZ, RecoTheta) pairs)."""

    def mask(self, store: _Store) -> np.ndarray:
        n = _n_rows(store)
        keep = np.zeros(n, dtype=bool)
        if n == 0:
            return keep
        order, new_event, new_pair = _event_track_groups(store)
        event_index = np.cumsum(new_event) - 1  # per sorted row: which event
        pairs_per_event = np.bincount(event_index, weights=new_pair)
        keep[order] = pairs_per_event[event_index] <= 2
        return keep

    def __str__(self) -> str:
        return f"{PREFIX}.Max2EventsFilter()"


@dataclass(frozen=True, eq=True, repr=False, init=False)
class ConCatFilter(Filter):
    """Logical and of all given filters (an empty list keeps every row)."""

    filters: tuple[Filter, ...]

    def __init__(self, filters: Iterable[Filter] = ()) -> None:
        filters = tuple(filters)
        for f in filters:
            if not isinstance(f, Filter):
                raise TypeError(f"ConCatFilter: expected filters, got {type(f).__name__}")
        object.__setattr__(self, "filters", filters)

    def mask(self, store: _Store) -> np.ndarray:
        keep = np.ones(_n_rows(store), dtype=bool)
        for f in self.filters:
            keep &= f.mask(store)
        return keep

    def __str__(self) -> str:
        return f"{PREFIX}.ConCatFilter([{', '.join(str(f) for f in self.filters)}])"


@dataclass(frozen=True, eq=True, repr=False)
class AndFilter(Filter):
    """`a & b`."""

    left: Filter
    right: Filter

    def mask(self, store: _Store) -> np.ndarray:
        return self.left.mask(store) & self.right.mask(store)

    def __str__(self) -> str:
        return f"({self.left} & {self.right})"


@dataclass(frozen=True, eq=True, repr=False)
class OrFilter(Filter):
    """`a | b`."""

    left: Filter
    right: Filter

    def mask(self, store: _Store) -> np.ndarray:
        return self.left.mask(store) | self.right.mask(store)

    def __str__(self) -> str:
        return f"({self.left} | {self.right})"


@dataclass(frozen=True, eq=True, repr=False)
class NotFilter(Filter):
    """`~a`."""

    inner: Filter

    def mask(self, store: _Store) -> np.ndarray:
        return ~self.inner.mask(store)

    def __str__(self) -> str:
        return f"~{self.inner}"


# --------------------------------------------------------------------------------------------
# Grouping rows by event and reco track, vectorised


def _event_key(event: np.ndarray) -> np.ndarray | None:
    """One int64 per row, equal iff the (Experiment, Run, Subrun, Event) tuples are equal.

    Mixed radix over the columns' value ranges; None when that would not fit into 63 bits.
    """
    event = np.asarray(event)
    if event.ndim == 1:
        event = event[:, None]
    key = np.zeros(event.shape[0], dtype=np.int64)
    total = 1
    for j in range(event.shape[1]):
        col = event[:, j].astype(np.int64, copy=False)
        lo, hi = int(col.min()), int(col.max())
        width = hi - lo + 1
        total *= width
        if total >= 2**63:
            return None
        key = key * width + (col - lo)
    return key


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 (wrapping arithmetic): spreads keys for the hash sort."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _track_hash(z: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each (RecoZ, RecoTheta) pair; -0.0 and 0.0 hash alike (they compare equal)."""
    if z.dtype == np.float32 and theta.dtype == np.float32:
        zb = (z + np.float32(0.0)).view(np.uint32).astype(np.uint64)
        tb = (theta + np.float32(0.0)).view(np.uint32).astype(np.uint64)
        return _mix64((zb << np.uint64(32)) | tb)  # the pair's exact bits, then spread
    zb = (z.astype(np.float64) + 0.0).view(np.uint64)
    tb = (theta.astype(np.float64) + 0.0).view(np.uint64)
    return _mix64(_mix64(zb) ^ tb)


def _event_track_groups(store: _Store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort rows by (event, reco track) with ties in file order.

    Returns (order, new_event, new_pair): `order` the stable sorting permutation, and over the sorted
    rows two boolean arrays marking the first row of each event and of each (event, track) group.

    Two stable sorts: by event (cheap on files where an event's rows are adjacent), then by
    (dense event id, 41-bit hash of the track) on nearly sorted data. Hash collisions are detected
    by comparing the actual values and fall back to an exact lexsort, so the result is always exact.
    """
    n = _n_rows(store)
    y = np.asarray(store.y)
    z = np.ascontiguousarray(y[:, 0])
    theta = np.ascontiguousarray(y[:, 1])
    event = np.asarray(store.event)
    if event.ndim == 1:
        event = event[:, None]

    key = _event_key(event)
    if key is None:
        order_e = np.lexsort(event.T[::-1])
        ev_sorted = event[order_e]
        new_event = np.empty(n, dtype=bool)
        new_event[0] = True
        new_event[1:] = np.any(ev_sorted[1:] != ev_sorted[:-1], axis=1)
    else:
        order_e = np.argsort(key, kind="stable")
        key_sorted = key[order_e]
        new_event = np.empty(n, dtype=bool)
        new_event[0] = True
        np.not_equal(key_sorted[1:], key_sorted[:-1], out=new_event[1:])
    dense_event = np.cumsum(new_event, dtype=np.int64) - 1  # event number in sorted order

    zs, ts = z[order_e], theta[order_e]
    bits = max(1, int(dense_event[-1]).bit_length())
    if bits <= 40:
        # Event id in the high bits, a hash of the track in the rest: already sorted by event, so
        # the stable sort only has to order the short runs within each event.
        track_hash = _track_hash(zs, ts)
        combined = (dense_event.astype(np.uint64) << np.uint64(64 - bits)) | (track_hash >> np.uint64(bits))
        perm = np.argsort(combined, kind="stable")
        zs, ts, combined = zs[perm], ts[perm], combined[perm]
        new_pair = new_event.copy()
        new_pair[1:] |= combined[1:] != combined[:-1]
        same = ~new_pair[1:]
        if not np.any(same & ((zs[1:] != zs[:-1]) | (ts[1:] != ts[:-1]))):
            return order_e[perm], new_event, new_pair
    # Exact path (hash collision or absurdly many events): lexsort by event, RecoZ, RecoTheta.
    zs, ts = z[order_e], theta[order_e]
    perm = np.lexsort((ts, zs, dense_event))
    zs, ts = zs[perm], ts[perm]
    new_pair = new_event.copy()
    new_pair[1:] |= (zs[1:] != zs[:-1]) | (ts[1:] != ts[:-1])
    return order_e[perm], new_event, new_pair

