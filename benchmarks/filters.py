"""Group filters: DuplicateEventsFilter and Max2EventsFilter vs per-row Python loops."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from benchmarks.common import Row, Sizes, best_time


def _loop_events(event: Any, y: Any) -> Iterator[tuple[int, tuple, tuple]]:
    ev = event.tolist()
    zt = y[:, :2].tolist()
    for i in range(len(ev)):
        yield i, tuple(ev[i]), tuple(zt[i])


def loop_duplicate(event: Any, y: Any) -> list[bool]:
    """Reference: per-row Python loop, a dict of events -> set of reco tracks seen so far."""
    seen: dict[tuple, set] = {}
    keep = [False] * len(event)
    for i, key, pair in _loop_events(event, y):
        tracks = seen.setdefault(key, set())
        if pair not in tracks:
            tracks.add(pair)
            keep[i] = True
    return keep


def loop_max2(event: Any, y: Any) -> list[bool]:
    """Reference: per-row Python loop, a dict of events -> set of reco tracks, then a pass over the rows."""
    tracks: dict[tuple, set] = {}
    keys = []
    for _, key, pair in _loop_events(event, y):
        tracks.setdefault(key, set()).add(pair)
        keys.append(key)
    return [len(tracks[key]) <= 2 for key in keys]


def bench_filters(store: Any, sizes: Sizes) -> list[Row]:
    """DuplicateEventsFilter and Max2EventsFilter on a whole split vs a per-row loop (on a slice, scaled)."""
    import numpy as np

    from neuro_trigger.data.dataset import ColumnStore
    from neuro_trigger.data.filters import DuplicateEventsFilter, Max2EventsFilter

    n = len(store)
    m = min(n, sizes.loop_rows)
    part = ColumnStore(**{k: getattr(store, k)[:m] for k in ("x", "y", "y_old", "expert", "event", "track",
                                                              "ntracks", "row")})
    rows = []
    for row_id, name, flt, loop in (("filter_duplicate_events", "DuplicateEventsFilter", DuplicateEventsFilter(),
                                     loop_duplicate),
                                    ("filter_max2_events", "Max2EventsFilter", Max2EventsFilter(), loop_max2)):
        t_ours, mask = best_time(lambda f=flt: f.mask(store), 3)
        t_loop, ref = best_time(lambda fn=loop: fn(part.event, part.y), 1)
        agree = bool(np.array_equal(flt.mask(part), np.asarray(ref, dtype=bool)))
        t_loop_scaled = t_loop * n / m
        speedup = t_loop_scaled / t_ours
        rows.append(Row(
            row_id, f"{name}.mask on {n:,} rows ({int(mask.sum()):,} kept)", t_ours, "s",
            "per-row Python loop building a dict of events", t_loop_scaled, speedup, "speed-up",
            "< 1 s and >= 20x", t_ours < 1.0 and speedup >= 20,
            (f"loop timed on the first {m:,} rows, scaled; " if m < n else "")
            + f"loop and filter agree on those rows: {agree}",
            extra={"loop_rows": m, "loop_seconds": t_loop, "agree": agree}))
    return rows
