"""NeuroTrigger expert trainer: the Belle II level-1 neural z-vertex trigger, one network per expert."""
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the system tells, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
