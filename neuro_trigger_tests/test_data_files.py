"""Data files as a user may hand them over: streams that are not regular files."""
from __future__ import annotations

import hashlib
import json
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


def test_a_file_edited_in_place_with_its_mtime_restored_is_read_anew(tmp_path: Path) -> None:
    """Same length, same mtime (as `cp -p` or `rsync -t` leave it): a second train() in the same process must see
    the new values and record the new sha256, as a new process would."""
    from neuro_trigger.data.neuroresults.format import COLUMNS
    from neuro_trigger.data.neuroresults.writer import write_table
    from neuro_trigger.data.toy.generator import generate
    from neuro_trigger.runner.api import train

    data = {}
    for i, (split, n) in enumerate({"train": 3000, "val": 800, "test": 800}.items()):
        write_table(generate(n, seed=81 + i), tmp_path / f"{split}.tsv")  # plain text: editable in place
        data[split] = [str(tmp_path / f"{split}.tsv")]
    val = Path(data["val"][0])

    def run_and_recorded_val_hash() -> str:
        result = train("baseline_v2", [f"data={data!r}", "experts=[3]", "epochs=1"], log_root=tmp_path / "log",
                       show_progress=False)
        return json.loads((result.folder / "summary.json").read_text())["data"]["val"][0]["sha256"]

    first = run_and_recorded_val_hash()
    assert first == hashlib.sha256(val.read_bytes()).hexdigest()
    before = val.stat()
    text = val.read_text()
    last = text.rstrip("\n").rsplit("\n", 1)[1].split("\t")
    column = COLUMNS.index("RecoZ")
    digits = last[column]
    last[column] = digits[:-1] + ("1" if digits[-1] != "1" else "2")  # the same length, another value
    val.write_text(text.rstrip("\n").rsplit("\n", 1)[0] + "\n" + "\t".join(last) + "\n")
    os.utime(val, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert val.stat().st_size == before.st_size and val.stat().st_mtime_ns == before.st_mtime_ns
    second = run_and_recorded_val_hash()
    assert second == hashlib.sha256(val.read_bytes()).hexdigest() != first
