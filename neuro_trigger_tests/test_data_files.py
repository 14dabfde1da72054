"""Data files as a user may hand them over: streams that are not regular files."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

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
