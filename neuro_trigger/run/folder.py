"""The versioned run folder, the run journal and the git snapshot.

Several training processes may start at the same moment and share one log location, so every
step here is safe against concurrent use: run folders are claimed with an atomic ``os.mkdir``
and journal lines are appended with a single ``os.write`` on an ``O_APPEND`` descriptor.

Permissions follow the user's umask, as for any file a program creates: folders are made with mode
0o777 and files with 0o666 before the umask applies (0755 and 0644 under the usual umask 022), never
with a narrower mode of our own, so that colleagues can read a run where the umask lets them.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

from neuro_trigger.errors import UserError

GIT_ID_FILE = "git_id.txt"
GIT_DIFF_FILE = "git_diff.txt"


def ensure_writable(root: Path, min_free_mb: int = 50) -> None:
    """Fail early, before any training, if the log location cannot take a run's output.

    Creates ``root`` if needed, then proves it is writable by creating and removing a temporary
    file, and checks that at least ``min_free_mb`` MB are free there. Raises ``UserError``.
    """
    root = Path(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write_probe_", dir=root)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise UserError(f"log location {root} is not writable: {reason}") from exc
    free_mb = shutil.disk_usage(root).free // (1024 * 1024)
    if free_mb < min_free_mb:
        raise UserError(f"log location {root} has only {free_mb} MB free (at least {min_free_mb} MB needed)")


class FolderNotCreated(Exception):
    """``os.mkdir`` could not create ``folder`` for a reason other than a lost race (``error``), for the
    caller to say in its own words which folder it was claiming."""

    def __init__(self, folder: Path, error: OSError) -> None:
        super().__init__(folder, error)
        self.folder, self.error = folder, error


def claim_numbered_folder(parent: Path, name: str, max_attempts: int = 1000) -> Path | None:
    """Create and return a fresh ``parent/<name>_N`` (N = highest existing + 1, 0 first), or None when
    ``max_attempts`` numbers in a row were taken by others first; ``parent`` must exist.

    The folder is claimed with ``os.mkdir`` (no ``exist_ok``): if another process took the same
    number in the meantime, the listing is read again and the next number tried, so concurrent
    runs (or evaluations) never share or overwrite a folder. Any other failure of ``os.mkdir`` is
    raised as ``FolderNotCreated``.
    """
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)$")
    for _ in range(max_attempts):
        with os.scandir(parent) as entries:
            taken = [int(m.group(1)) for entry in entries if (m := pattern.match(entry.name))]
        folder = Path(parent) / f"{name}_{max(taken) + 1 if taken else 0}"
        try:
            os.mkdir(folder)
        except FileExistsError:
            continue  # lost the race to another process: look again
        except OSError as exc:
            raise FolderNotCreated(folder, exc) from exc
        return folder
    return None


def write_new_folder(write: Callable[[Path], None], parent: Path, name: str, out: Path | None = None) -> Path:
    """A new folder filled whole or not at all: `write(folder)` fills a hidden temp folder beside the target,
    which is then renamed onto a freshly claimed `out` (which must not exist) or `parent/<name>_N`
    (`claim_numbered_folder`; `parent` is created). A reader never sees a half-filled folder, and a failure
    anywhere (in `write`, a full disk, a taken `out`) leaves nothing behind. UserError for a taken or
    uncreatable `out` or `parent`."""
    if out is not None and (out.exists() or out.is_symlink()):
        raise UserError(f"--out {out}: exists already; an export goes into a new folder (nothing is overwritten)")
    base = parent if out is None else out.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        staging = base / f".{name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        os.mkdir(staging)  # 0o777 less the umask, as the final folder should be
    except OSError as e:
        raise UserError(f"{out if out is not None else parent}: cannot be created: {e.strerror or e}") from None
    claimed: Path | None = None
    try:
        write(staging)
        if out is None:
            try:
                claimed = claim_numbered_folder(parent, name)
            except FolderNotCreated as e:
                raise UserError(f"cannot create {e.folder}: {e.error.strerror or e.error}") from None
            if claimed is None:
                raise UserError(f"{parent}: no free {name}_N folder")
        else:
            try:
                os.mkdir(out)
            except FileExistsError:
                raise UserError(f"--out {out}: was created by someone else meanwhile; nothing written") from None
            claimed = out
        os.replace(staging, claimed)  # onto the empty folder just claimed: atomic on POSIX
        return claimed
    except BaseException:
        if claimed is not None and claimed.is_dir() and not any(claimed.iterdir()):
            claimed.rmdir()
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def create_run_folder(root: Path, config_name: str, max_attempts: int = 1000) -> Path:
    """Create and return a fresh ``root/<config_name>/version_N`` (N = highest existing + 1, 0 first),
    claimed atomically (`claim_numbered_folder`): concurrent runs never share a folder.
    """
    if not config_name or config_name in (".", "..") or "/" in config_name or os.sep in config_name:
        raise UserError(f"config name {config_name!r} cannot be used as a log folder name")
    parent = Path(root) / config_name
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create log folder {parent}: {exc.strerror or exc}") from exc
    try:
        folder = claim_numbered_folder(parent, "version", max_attempts)
    except FolderNotCreated as e:
        raise UserError(f"cannot create run folder {e.folder}: {e.error.strerror or e.error}") from e.error
    if folder is None:
        raise UserError(f"could not claim a new version folder in {parent} after {max_attempts} attempts")
    return folder


def write_git_snapshot(folder: Path, repo_dir: Path) -> str | None:
    """Record the code state of a run: ``git_id.txt`` (HEAD commit) and ``git_diff.txt``.

    ``git_id.txt`` is one line, the HEAD hexsha followed by `` (dirty)`` when a tracked file differs
    from HEAD (staged or not); untracked files do not make a checkout dirty, since they are not part
    of the code a commit names. ``git_diff.txt`` holds ``git diff HEAD`` (tracked files), then how many
    untracked files there are and their names. Returns the HEAD hexsha, or ``None`` when ``repo_dir``
    is not in a git checkout, the repository has no commits yet, or git fails; then both files say
    why in one line and the run goes on.
    """
    import git  # GitPython; imported here so that the rest of the module works without it

    folder = Path(folder)
    id_path, diff_path = folder / GIT_ID_FILE, folder / GIT_DIFF_FILE

    def _no_snapshot(reason: str) -> None:
        id_path.write_text(f"no git id: {reason}\n", encoding="utf-8", errors="surrogateescape")
        diff_path.write_text(f"no git diff: {reason}\n", encoding="utf-8", errors="surrogateescape")

    try:
        repo = git.Repo(repo_dir, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        _no_snapshot(f"{repo_dir} is not inside a git checkout")
        return None
    try:
        with repo:
            if not repo.head.is_valid():
                _no_snapshot(f"the git repository {repo.working_dir} has no commits yet")
                return None
            sha = repo.head.commit.hexsha
            dirty = repo.is_dirty(index=True, working_tree=True, untracked_files=False)
            diff = repo.git.diff("HEAD")
            untracked = repo.untracked_files
    except (git.GitError, ValueError, OSError) as exc:
        first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        _no_snapshot(f"git failed in {repo_dir}: {first_line}")
        return None
    id_path.write_text(f"{sha}{' (dirty)' if dirty else ''}\n", encoding="utf-8")
    parts = [diff.rstrip("\n") + "\n" if diff else "# no changes to tracked files\n"]
    if untracked:
        parts.append(f"\n# untracked files ({len(untracked)}), not part of the diff above nor of the dirty flag:\n")
        parts.extend(f"{name}\n" for name in untracked)
    else:
        parts.append("\n# untracked files (0)\n")
    diff_path.write_text("".join(parts), encoding="utf-8", errors="surrogateescape")
    return sha


def _sanitise(value: object) -> str:
    """One journal field: tabs, newlines and other control whitespace become single spaces."""
    return re.sub(r"[\t\r\n\v\f]+", " ", str(value)).strip()


def append_journal(journal: Path, fields: dict[str, str]) -> None:
    """Append one tab-separated line (the field values, in the given order) to the run journal.

    A ``time`` field (local time, ISO format, seconds) is put first when ``fields`` has none.
    The line goes out in a single ``os.write`` on an ``O_APPEND`` descriptor, so lines of runs
    writing at the same moment never interleave.
    """
    journal = Path(journal)
    values = dict(fields)
    if "time" not in values:
        values = {"time": _dt.datetime.now().isoformat(timespec="seconds"), **values}
    # UTF-8 whatever the locale; a path or argument Python could not decode (under an ASCII locale every non-ASCII
    # byte) holds its bytes as lone surrogates, which surrogateescape writes back as those bytes
    line = ("\t".join(_sanitise(v) for v in values.values()) + "\n").encode("utf-8", errors="surrogateescape")
    journal.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # the umask applies
    try:
        written = os.write(fd, line)
    finally:
        os.close(fd)
    if written != len(line):  # only on a full disk or similar; say so rather than leave half a line
        raise OSError(f"journal {journal}: wrote {written} of {len(line)} bytes")


def journal_lines(journal: Path, folder: Path) -> list[str]:
    """The lines of the run journal about the run in `folder`, oldest first, their fields tab-separated (see
    `append_journal`). The journal is the log root's, so its runs are `<config>/version_N` under it: a line is
    the run's when its folder field ends in the same two parts, however the run named its log root."""
    try:
        data = Path(journal).read_bytes()
    except FileNotFoundError:
        return []
    ours = []
    for line in data.splitlines():
        fields = line.split(b"\t")
        # the folder field as this process names paths (fsdecode), to compare with `folder`
        if len(fields) >= 3 and Path(os.fsdecode(fields[2])).parts[-2:] == Path(folder).parts[-2:]:
            ours.append(line.decode("utf-8", errors="replace"))
    return ours


def library_versions() -> dict[str, str]:
    """Python's and the main libraries' versions, from the installed packages' metadata (importing
    lightning just for its version takes seconds)."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {"python": platform.python_version(),
            **{name: installed(name) for name in ("torch", "lightning", "numpy", "pandas", "matplotlib")}}
