"""The parse cache: a file's parsed columns in `CACHE_DIR/<sha256>.npz`, keyed by the sha256 of its bytes."""
from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import numpy as np

from neuro_trigger import REPO_ROOT

CACHE_DIR = REPO_ROOT / "data_cache" / "parsed"
_CACHE_FORMAT = 1  # bump when the parsed representation changes; older cache files are re-parsed
_HASH_MEMO: dict[tuple, tuple[str, float]] = {}  # stat key -> (digest, when it was taken)
_HASH_LOCK = threading.Lock()
# Timestamps may tick as coarsely as this (some filesystems keep whole seconds): a file changed within one tick
# of being hashed may show the same times after the change, so its digest is not reused.
_TIMESTAMP_TICK_S = 2.0


def file_hash(path: str | Path) -> str:
    """sha256 hex digest of the file's raw bytes, memoised per (path, device, inode, size, mtime, ctime).

    ctime and inode cannot be set back by a user (an edit in place with its mtime restored, `cp -p`, `rsync -t`
    all move ctime); a digest taken within a timestamp tick of the file's last change is not reused, so a
    filesystem with coarse times cannot hide a change either."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
    with _HASH_LOCK:
        known = _HASH_MEMO.get(key)
    if known is not None and known[1] - max(stat.st_mtime, stat.st_ctime) > _TIMESTAMP_TICK_S:
        return known[0]
    taken = time.time()
    with open(resolved, "rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    with _HASH_LOCK:
        _HASH_MEMO[key] = (digest, taken)
    return digest


def _load_cache(cache_file: Path, wanted: list[str] | None) -> dict[str, np.ndarray] | None:
    """The cached columns, or None if absent, unreadable or from another cache format."""
    try:
        with np.load(cache_file, allow_pickle=False) as archive:
            if int(archive["__format__"]) != _CACHE_FORMAT:
                return None
            names = wanted if wanted is not None else [n for n in archive.files if n != "__format__"]
            return {name: archive[name] for name in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _store_cache(cache_file: Path, table: dict[str, np.ndarray]) -> None:
    """Write the cache atomically (temp file + os.replace); a cache that cannot be written is skipped."""
    tmp_name = None
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        prefix = cache_file.stem[:16] + "."
        fd, tmp_name = tempfile.mkstemp(dir=cache_file.parent, prefix=prefix, suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, __format__=np.array(_CACHE_FORMAT), **table)
        os.replace(tmp_name, cache_file)
        tmp_name = None
    except OSError:
        pass
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)

