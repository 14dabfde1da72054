"""Run folder, journal and git snapshot: safe when several runs start at the same moment."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import git
import pytest

from neuro_trigger.errors import UserError
from neuro_trigger.run import folder as folder_mod
from neuro_trigger.run.folder import (
    append_journal,
    create_run_folder,
    ensure_writable,
    write_git_snapshot,
    write_new_folder,
)

N_PROCS = 6


def _fork_context():
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs the fork start method for a tight race")
    return mp.get_context("fork")


def _race_create(barrier, queue, root: str, per_proc: int) -> None:
    barrier.wait()
    for _ in range(per_proc):
        path = create_run_folder(Path(root), "cfg")
        (path / "owner").write_text(str(os.getpid()))
        queue.put(str(path))


def _race_journal(barrier, journal: str, proc: int, lines: int, payload: str) -> None:
    barrier.wait()
    for i in range(lines):
        append_journal(Path(journal), {"config": f"p{proc}", "folder": f"line{i}", "description": payload})


def _run_all(ctx, target, args_per_proc) -> None:
    procs = [ctx.Process(target=target, args=args) for args in args_per_proc]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0


def test_concurrent_run_folders_get_distinct_versions(tmp_path: Path) -> None:
    ctx = _fork_context()
    barrier, queue = ctx.Barrier(N_PROCS), ctx.Queue()
    per_proc = 3
    _run_all(ctx, _race_create, [(barrier, queue, str(tmp_path), per_proc)] * N_PROCS)
    paths = [queue.get(timeout=5) for _ in range(N_PROCS * per_proc)]
    assert len(set(paths)) == N_PROCS * per_proc
    names = sorted(Path(p).name for p in paths)
    assert names == sorted(f"version_{i}" for i in range(N_PROCS * per_proc))
    # every folder still holds the marker of the one process that claimed it
    owners = [(Path(p) / "owner").read_text() for p in paths]
    assert all(o.isdigit() for o in owners)


def test_run_folder_numbering_never_overwrites(tmp_path: Path) -> None:
    first = create_run_folder(tmp_path, "baseline")
    assert first == tmp_path / "baseline" / "version_0"
    (first / "marker.txt").write_text("keep me")
    assert create_run_folder(tmp_path, "baseline").name == "version_1"
    (tmp_path / "baseline" / "version_7").mkdir()
    (tmp_path / "baseline" / "version_x").mkdir()
    (tmp_path / "baseline" / "version_99.bak").mkdir()
    assert create_run_folder(tmp_path, "baseline").name == "version_8"
    assert (first / "marker.txt").read_text() == "keep me"
    assert create_run_folder(tmp_path, "other").name == "version_0"


def test_run_folder_rejects_path_like_config_names(tmp_path: Path) -> None:
    for bad in ("", "..", "a/b"):
        with pytest.raises(UserError):
            create_run_folder(tmp_path, bad)


def _chmod_is_effective(directory: Path) -> bool:
    """False when running as root (or similar): a read-only folder is still writable then."""
    probe = directory / "probe"
    try:
        probe.write_text("x")
    except PermissionError:
        return True
    probe.unlink()
    return False


def test_ensure_writable_creates_and_accepts(tmp_path: Path) -> None:
    root = tmp_path / "log" / "deep"
    ensure_writable(root)
    assert root.is_dir()
    assert list(root.iterdir()) == []  # the probe file is gone


def test_ensure_writable_path_below_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    root = tmp_path / "afile" / "log"
    with pytest.raises(UserError, match="not writable") as info:
        ensure_writable(root)
    assert str(root) in str(info.value)
    assert "\n" not in str(info.value)


def test_ensure_writable_read_only_dir(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if not _chmod_is_effective(ro):
            pytest.skip("permissions are not enforced for this user (root)")
        with pytest.raises(UserError, match="not writable") as info:
            ensure_writable(ro)
        assert str(ro) in str(info.value)
    finally:
        ro.chmod(0o700)


def test_ensure_writable_too_little_space(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class _Usage:
        total, used, free = 10**9, 10**9 - 3 * 1024 * 1024, 3 * 1024 * 1024

    monkeypatch.setattr(folder_mod.shutil, "disk_usage", lambda _path: _Usage())
    with pytest.raises(UserError, match="has only 3 MB free") as info:
        ensure_writable(tmp_path, min_free_mb=50)
    assert str(tmp_path) in str(info.value)


def test_concurrent_journal_lines_stay_intact(tmp_path: Path) -> None:
    ctx = _fork_context()
    journal = tmp_path / "sub" / "journal.tsv"
    lines, payload = 150, "x" * 3000 + "\ttab\nnewline"  # long lines make interleaving likely
    barrier = ctx.Barrier(N_PROCS)
    _run_all(ctx, _race_journal, [(barrier, str(journal), i, lines, payload) for i in range(N_PROCS)])
    text = journal.read_text()
    rows = text.splitlines()
    assert text.endswith("\n")
    assert len(rows) == N_PROCS * lines
    clean = "x" * 3000 + " tab newline"
    seen = set()
    for row in rows:
        fields = row.split("\t")
        assert len(fields) == 4, row[:80]
        stamp, config, where, description = fields
        assert stamp[:2] == "20" and "T" in stamp
        assert description == clean
        seen.add((config, where))
    assert seen == {(f"p{p}", f"line{i}") for p in range(N_PROCS) for i in range(lines)}


def test_journal_keeps_given_time_and_order(tmp_path: Path) -> None:
    journal = tmp_path / "journal.tsv"
    append_journal(journal, {"time": "t0", "config": "c", "folder": "f", "description": "d"})
    append_journal(journal, {"time": "t1", "config": "c2", "folder": "f2", "description": ""})
    assert journal.read_text() == "t0\tc\tf\td\nt1\tc2\tf2\t\n"


def _make_repo(path: Path, commit: bool = True) -> git.Repo:
    repo = git.Repo.init(path)
    with repo.config_writer() as cw:
        cw.set_value("user", "name", "Test")
        cw.set_value("user", "email", "test@example.invalid")
    if commit:
        (path / "code.py").write_text("a = 1\n")
        repo.index.add(["code.py"])
        repo.index.commit("initial")
    return repo


def test_git_snapshot_records_commit_diff_and_untracked(tmp_path: Path) -> None:
    repo_dir, out = tmp_path / "repo", tmp_path / "run"
    repo_dir.mkdir()
    out.mkdir()
    repo = _make_repo(repo_dir)
    (repo_dir / "code.py").write_text("a = 1\nb = 'changed line'\n")
    (repo_dir / "new_file.py").write_text("c = 3\n")
    (repo_dir / "sub").mkdir()
    sha = write_git_snapshot(out, repo_dir / "sub")  # found from a subfolder too
    assert sha == repo.head.commit.hexsha
    assert (out / "git_id.txt").read_text().startswith(sha)
    assert "dirty" in (out / "git_id.txt").read_text()
    diff = (out / "git_diff.txt").read_text()
    assert "+b = 'changed line'" in diff
    assert "new_file.py" in diff
    repo.close()


def test_git_snapshot_clean_checkout(tmp_path: Path) -> None:
    repo_dir, out = tmp_path / "repo", tmp_path / "run"
    repo_dir.mkdir()
    out.mkdir()
    repo = _make_repo(repo_dir)
    sha = write_git_snapshot(out, repo_dir)
    assert (out / "git_id.txt").read_text() == f"{sha}\n"
    assert "no changes" in (out / "git_diff.txt").read_text()
    repo.close()


def test_git_snapshot_without_commits(tmp_path: Path) -> None:
    repo_dir, out = tmp_path / "repo", tmp_path / "run"
    repo_dir.mkdir()
    out.mkdir()
    _make_repo(repo_dir, commit=False).close()
    assert write_git_snapshot(out, repo_dir) is None
    for name in ("git_id.txt", "git_diff.txt"):
        text = (out / name).read_text()
        assert "no commits" in text and text.count("\n") == 1


def test_git_snapshot_outside_git(tmp_path: Path) -> None:
    try:
        git.Repo(tmp_path, search_parent_directories=True)
        pytest.skip("the temporary folder lies inside a git checkout")
    except git.InvalidGitRepositoryError:
        pass
    out = tmp_path / "run"
    out.mkdir()
    assert write_git_snapshot(out, tmp_path / "missing") is None
    assert write_git_snapshot(out, tmp_path) is None
    for name in ("git_id.txt", "git_diff.txt"):
        text = (out / name).read_text()
        assert "not inside a git checkout" in text and text.count("\n") == 1


def _two_files(folder: Path) -> None:
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")


def test_a_new_folder_appears_whole_numbered_or_at_out(tmp_path: Path) -> None:
    parent = tmp_path / "run" / "exports"
    first = write_new_folder(_two_files, parent, "fmt")
    second = write_new_folder(_two_files, parent, "fmt")
    assert (first, second) == (parent / "fmt_0", parent / "fmt_1")
    assert sorted(p.name for p in second.iterdir()) == ["a.txt", "b.txt"]
    out = tmp_path / "deep" / "out"
    assert write_new_folder(_two_files, parent, "fmt", out) == out and (out / "b.txt").read_text() == "b"
    assert sorted(p.name for p in parent.iterdir()) == ["fmt_0", "fmt_1"]  # no staging folder left
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_a_failed_new_folder_leaves_nothing(tmp_path: Path) -> None:
    parent = tmp_path / "exports"

    def half(folder: Path) -> None:
        (folder / "a.txt").write_text("a")
        raise RuntimeError("the second file failed")

    with pytest.raises(RuntimeError, match="second file"):
        write_new_folder(half, parent, "fmt")
    assert list(parent.iterdir()) == []
    taken = tmp_path / "taken"
    taken.mkdir()
    with pytest.raises(UserError, match="exists already"):
        write_new_folder(_two_files, parent, "fmt", taken)
    assert list(taken.iterdir()) == [] and list(parent.iterdir()) == []

    def taken_meanwhile(folder: Path) -> None:
        _two_files(folder)
        (tmp_path / "late").mkdir()

    with pytest.raises(UserError, match="meanwhile"):
        write_new_folder(taken_meanwhile, parent, "fmt", tmp_path / "late")
    assert list((tmp_path / "late").iterdir()) == [] and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
