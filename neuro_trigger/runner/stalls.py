"""Experts that show no sign of progress: a stopped process, a deadlocked data loader, a stuck filesystem
or a hung GPU all look alike from outside, so the launchers go by signs of progress alone.

A sign is anything an expert sends or writes as it goes: its start, a chunk of batches (ProgressReport
sends one at least every 10 s while it trains), an epoch, its results. After `stall_warn_s`
without one the run warns (console, app.log, the live view), naming the expert and its process or job;
after `stall_stop_s` the launcher stops it as failed, so that `--resume` retries it.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from neuro_trigger.run.status import note_in_log, now, update_status

log = logging.getLogger("neuro_trigger")

class StallWatch:
    """When each expert last gave a sign of progress, and what is due because of it."""

    def __init__(self, warn_s: float, stop_s: float | None, show: Callable[[dict], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.warn_s, self.stop_s = warn_s, stop_s
        self.show = show
        self.clock = clock
        self.last: dict[str, float] = {}
        self.warned: set[str] = set()

    def heard(self, key: str, when: float | None = None) -> None:
        """A sign of progress from `key` (at `when`, this watch's clock; now if None)."""
        when = self.clock() if when is None else when
        if when <= self.last.get(key, -float("inf")):
            return
        self.last[key] = when
        if key in self.warned:
            self.warned.discard(key)
            log.info("%s makes progress again", key)

    def forget(self, key: str) -> None:
        self.last.pop(key, None)
        self.warned.discard(key)

    def overdue(self, key: str, who: str) -> float | None:
        """Warns once when `key` (`who`: its pid or job) has been silent past stall_warn_s; returns the silent
        seconds once they pass stall_stop_s (the caller stops it), else None."""
        if key not in self.last:
            return None
        silent = self.clock() - self.last[key]
        if silent >= self.warn_s and key not in self.warned:
            self.warned.add(key)
            stop = f"; it is stopped as failed after {self.stop_s:g} s (stall_stop_s)" if self.stop_s else ""
            log.warning("%s (%s) has shown no progress for %.0f s (stopped? hung? waiting on a data loader, the "
                        "filesystem or a GPU?)%s", key, who, silent, stop)
            self.show({"expert": key, "status": "stalled", "error": f"no progress for {silent:.0f} s ({who})"})
        if self.stop_s is not None and silent >= self.stop_s:
            return silent
        return None


def mark_stalled(folder: Path, key: str, who: str, silent: float) -> str:
    """An expert the launcher stopped for want of progress: failed, with the reason in its status and its log."""
    reason = f"stopped after {silent:.0f} s without progress ({who}; stall_stop_s)"
    log.error("%s: %s", key, reason)
    note_in_log(folder, key, f"ERROR {key}: {reason}")
    update_status(folder, key, status="failed", error=reason, ended=now())
    return reason
