"""Where the job processes of a local run come from: a fork server that has imported the heavy libraries
once, so that each job starts in a fraction of a second instead of the seconds a fresh interpreter takes
to import torch and lightning.

Only the standard library is imported here: the CLI starts the server before it imports anything else
of the project, so that the server's imports overlap with everything the run does before its first job.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal

# What every job process needs, imported once in the fork server. Only third-party libraries (and the one
# module below): this project's own modules are imported by each job from the files as they are when it
# starts, so a notebook that edits a module runs the code that git_diff.txt records.
# runner.preloaded comes last: it freezes what the others made, out of the garbage collector's reach.
PRELOAD = ["torch", "lightning", "torch.utils.tensorboard", "fsspec.implementations.local", "pandas",
           "matplotlib.figure", "matplotlib.backends.backend_agg", "neuro_trigger.runner.preloaded"]


def process_context(extra: tuple[str, ...] = ()) -> mp.context.BaseContext:
    """Where expert processes come from: a fork server that has imported PRELOAD and `extra` (Linux, macOS), else
    fresh interpreters (spawn). Nothing in the server touches CUDA or starts threads, so forking it is safe.
    `extra` counts only for a server not yet started (a sweep's command starts it with its own modules: its
    trials are many short processes, and its code is fixed at its start anyway, as its git_diff.txt records)."""
    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([*PRELOAD[:-1], *extra, PRELOAD[-1]])
    return ctx


def start_process_server(extra: tuple[str, ...] = ()) -> None:
    """Start the fork server now (if it is not running), so that its imports overlap with the run's set-up."""
    if "forkserver" in mp.get_all_start_methods():
        process_context(extra)
        from multiprocessing import forkserver

        forkserver.ensure_running()


def stop_process_server() -> None:
    """End the fork server now, when no job of it is left. Left to itself it ends once this process has
    ended, after tearing down torch and lightning, and until then it holds the console's output open
    (a shell pipe or a subprocess reading it would wait). Python has no public call for this."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server._stop()
