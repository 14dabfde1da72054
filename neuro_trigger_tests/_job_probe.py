"""Runs in a job process of the runner's process server; imports nothing of neuro_trigger itself."""
import gc
import sys


def project_modules(queue) -> None:
    """Which of this project's modules the job process had before it imported any of them itself, and how many
    objects it inherited frozen (out of the garbage collector's reach) against those the collector tracks."""
    queue.put((sorted(m for m in sys.modules if m.startswith("neuro_trigger")), gc.get_freeze_count(),
               len(gc.get_objects())))
