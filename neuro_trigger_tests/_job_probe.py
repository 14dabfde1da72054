"""Runs in a job process of the runner's process server; imports nothing of neuro_trigger itself."""
import sys


def project_modules(queue) -> None:
    """Which of this project's modules the job process had before it imported any of them itself."""
    queue.put(sorted(m for m in sys.modules if m.startswith("neuro_trigger")))
