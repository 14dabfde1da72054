"""NeuroTrigger expert trainer: the Belle II level-1 neural z-vertex trigger, one network per expert."""
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


matplotlib_folder()
