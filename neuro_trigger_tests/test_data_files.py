"""Data files as a user may hand them over: streams that are not regular files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from neuro_trigger import REPO_ROOT
from neuro_trigger.main import main


def test_a_fifo_as_data_file_is_named_for_what_it_is(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A named pipe (what `<(zcat file)` hands over) is not 'not found': it is there, but a stream."""
    fifo = tmp_path / "train.fifo"
    os.mkfifo(fifo)
    data = {"train": [str(fifo)], "val": [str(fifo)], "test": [str(fifo)]}
    capsys.readouterr()
    code = main(["baseline_v2", "-m", f"data={data!r}", "--log-root", str(tmp_path / "log")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert "named pipe" in err[0] and "not a regular file" in err[0] and str(fifo) in err[0], err
    assert "not found" not in err[0]
    assert not (tmp_path / "log").exists() or not any((tmp_path / "log").rglob("version_*"))


def test_a_run_without_a_writable_home_neither_warns_nor_leaves_temporary_folders(tmp_path: Path) -> None:
    """HOME not writable (here a file, which even root cannot write into): matplotlib's folders go to one folder
    of this user's, so no process of the run warns about them or leaves a matplotlib-* folder behind; nor does
    the run leave multiprocessing's pymp-* folder (the command ends with os._exit, which skips its clean-up).
    Caches that every run reuses (matplotlib's, torch's) may stay."""
    from neuro_trigger_tests.run_helpers import toy_splits

    data = toy_splits(tmp_path, {"train": 3000, "val": 800, "test": 800}, seed=61)
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MPLCONFIGDIR", "XDG_CONFIG_HOME",
                                                              "XDG_CACHE_HOME")}
    env.update(HOME="/dev/null", TMPDIR=str(temp))
    done = subprocess.run([sys.executable, "neuro_trigger/main.py", "baseline_v2", "-p", "-d", "no home", "-m",
                           f"data={data!r}", "experts=[3]", "epochs=1", "--log-root", str(tmp_path / "log")],
                          cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    logs = done.stdout + done.stderr + "".join(p.read_text() for p in (tmp_path / "log").rglob("*.log"))
    assert "matplotlib" not in logs.lower()
    left = sorted(p.name for p in temp.iterdir())
    assert f"nt_matplotlib_{os.getuid()}" in left
    assert not [name for name in left if name.startswith(("matplotlib-", "pymp-"))], left
