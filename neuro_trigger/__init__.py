"""NeuroTrigger expert trainer: the Belle II level-1 neural z-vertex trigger, one network per expert."""
import importlib
import os
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cpu_cores() -> int:
    """The cores this process may run on (its affinity where the system tells, else all)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _writable_folder(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def matplotlib_folder() -> None:
    """Where the user's own matplotlib folders cannot be written (HOME read-only, or no HOME), one folder of
    this user's in the temporary folder takes their place: otherwise every process of a run warns about it
    and leaves a /tmp/matplotlib-* folder of its own behind. Set before anything imports matplotlib."""
    if "MPLCONFIGDIR" in os.environ:
        return
    try:
        home = Path.home()
    except (RuntimeError, KeyError):
        home = Path("/nonexistent")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "matplotlib"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or home / ".cache") / "matplotlib"
    if not (_writable_folder(config) and _writable_folder(cache)):
        own = Path(tempfile.gettempdir()) / f"nt_matplotlib_{os.getuid()}"
        if _writable_folder(own) and not own.is_symlink() and own.stat().st_uid == os.getuid():
            os.environ["MPLCONFIGDIR"] = str(own)


def moved_names(module: str, moved: dict[str, str]):
    """The `__getattr__` of a module whose names moved elsewhere: each is imported from its new module when first
    asked for, so notebooks written against an old import path go on working, with no second copy of the code."""

    def __getattr__(name: str):
        if name not in moved:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__


matplotlib_folder()
