"""Writing a run's files safely: atomically (a reader never sees half a file, a failure leaves none),
readable by the group (0666 less the umask), and a full disk as one line naming the file."""
from __future__ import annotations

import errno
import io
import json
import math
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from neuro_trigger.errors import UserError


def _plain(value: Any) -> Any:
    """JSON-safe: NaN and inf become null, numpy scalars plain numbers."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}


class DiskFullError(UserError):
    """No space left (disk or quota) while writing a run's files: one line naming the file."""


def is_disk_full(error: BaseException) -> bool:
    """An OSError saying the disk (or the user's quota) is full."""
    return isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS


@contextmanager
def disk_full_is_user_error(path: Path) -> Iterator[None]:
    """A full disk or quota while writing `path` becomes one line: UserError("disk full while writing ...")."""
    try:
        yield
    except OSError as e:
        if is_disk_full(e):
            raise DiskFullError(f"disk full while writing {path}: {e.strerror or e}") from None
        raise


def write_atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file through `write(binary file)` into a temp file beside it, renamed over `path` only when
    complete: a reader never sees half a file and a failure (a full disk, say) leaves none behind. The
    file gets mode 0o666 less the umask (0644 under the usual 022), as any file a program creates.
    A full disk or quota is a UserError naming the file."""
    path = Path(path)
    with disk_full_is_user_error(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _write_serialised(path: Path, save: Callable[[IO[bytes]], None]) -> None:
    """Serialise into memory first, then write atomically: torch.save and np.savez write zip archives whose
    error handling turns a full disk into a RuntimeError about file positions."""
    buffer = io.BytesIO()
    save(buffer)
    write_atomic(path, lambda f: f.write(buffer.getbuffer()))


def save_tensor(path: Path, array: np.ndarray) -> None:
    """An array as a torch tensor file (read back with torch.load(weights_only=True)), written atomically."""
    import torch

    _write_serialised(path, lambda f: torch.save(torch.from_numpy(np.ascontiguousarray(array)), f))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Arrays as an .npz file (read back with allow_pickle=False), written atomically."""
    _write_serialised(path, lambda f: np.savez(f, **arrays))


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (see write_atomic), so a reader never sees half a file."""
    text = json.dumps(_plain(data), indent=1).encode("utf-8")
    write_atomic(path, lambda f: f.write(text))


def read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{what}: file not found: {path}") from None
    except IsADirectoryError:
        raise UserError(f"{what}: {path} is a directory, expected a JSON file") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what}: {path} is not valid JSON ({e})") from None
