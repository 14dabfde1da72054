"""Stopping a run safely: signals, a parent that dies, and one runner per run folder.

- SIGTERM and SIGHUP (what `kill`, `timeout` and cluster schedulers send) are turned into `Stopped`, a
  KeyboardInterrupt, so they take the path Ctrl-C takes: experts stop at the end of a step and keep
  their last checkpoints, the folder is assembled, summary.json says "interrupted".
- Every job process watches the process that started the run; if that one dies without a word
  (SIGKILL, the OOM killer), the job stops itself the same way instead of training on unattended.
- A run folder is locked (flock) by the process running it, so `--resume` never runs beside it, and an
  expert records its pid and the pid's start time, so a leftover expert process is recognised too.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from neuro_trigger.errors import UserError

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
LOCK_FILE = ".run.lock"


class Stopped(KeyboardInterrupt):
    """The run was asked to stop by a signal; `signum` gives the exit code 128 + signum."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code(stop: BaseException) -> int:
    """The shell's convention: 128 + the signal (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP)."""
    return 128 + getattr(stop, "signum", signal.SIGINT)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """While inside, SIGTERM and SIGHUP raise `Stopped` once (later ones are ignored while the run winds
    down). Outside the main thread signals cannot be caught; then this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise Stopped(signum)

    previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """While inside, SIGINT, SIGTERM and SIGHUP are only recorded; on leaving, the handlers before are back and
    the first of them is raised again, so it acts as it would have (Stopped, KeyboardInterrupt, or the default
    action): for a short step that must finish whole once begun. Python-level handlers, as those are what turn a
    signal into an exception (pthread_sigmask alone would not hold a Python handler back). Outside the main
    thread signals cannot be caught; then this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, *STOP_SIGNALS)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if received:
            signal.raise_signal(received[0])


def stop_job_on_signals() -> None:
    """In a job process: SIGINT, SIGTERM and SIGHUP interrupt it (Lightning then stops gracefully).

    SIGINT is set explicitly: a run started in the background by a shell inherits SIGINT ignored, and
    the runner stops its jobs with SIGINT."""

    def handler(signum: int, frame: object) -> None:
        raise Stopped(signum)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    for s in STOP_SIGNALS:
        signal.signal(s, handler)


@contextlib.contextmanager
def job_process(run_pid: int | None = None) -> Iterator[None]:
    """The whole body of a job process: SIGINT, SIGTERM and SIGHUP interrupt it from the moment they are
    set up, and an interrupt anywhere inside, however early, ends the process with 128 + the signal
    (130, 143, 129), which the runner reads as interrupted, never as failed. `run_pid`: also stop when
    that process (the run's) dies."""
    try:
        stop_job_on_signals()
        if run_pid is not None:
            watch_parent(run_pid)
        yield
    except KeyboardInterrupt as stop:
        sys.exit(exit_code(stop))


# ---------------------------------------------------------------------------------------------- processes
def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat after the command name (field 3, the state, first); None where it cannot be read."""
    try:
        return Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace").rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot, /proc/<pid>/stat field 22), to tell a pid
    from a later process that got the same number; None where that cannot be read."""
    fields = _stat_fields(pid)
    return None if fields is None else int(fields[19])


def process_alive(pid: int, start_time: int | None = None) -> bool:
    """Whether `pid` is a live (not zombie) process, and the same one when `start_time` is given."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: kill(0) is all there is
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or int(fields[19]) == start_time


def watch_parent(pid: int, grace: float = 30.0) -> None:
    """In a job process: if process `pid` (the run's) dies, interrupt this process like Ctrl-C; if it is
    still alive `grace` seconds later, end it. Runs in a daemon thread."""

    def wait_for_death() -> None:
        try:
            fd = os.pidfd_open(pid)
        except (AttributeError, OSError):
            fd = None
        if fd is not None:
            select.select([fd], [], [])
            os.close(fd)
        else:
            while process_alive(pid):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(grace)
        os._exit(1)

    threading.Thread(target=wait_for_death, name="watch-parent", daemon=True).start()


# ---------------------------------------------------------------------------------------------- the run lock
class RunLock:
    """An exclusive lock on a run folder, held while a process trains into it; released when that
    process ends in any way (the kernel drops flock locks of dead processes)."""

    def __init__(self, folder: Path) -> None:
        self.path = Path(folder) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, what: str) -> RunLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"{what}: the run in {self.path.parent} is still going on in process {holder}; "
                            f"stop it first (kill {holder})") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
