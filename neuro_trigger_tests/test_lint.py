"""The code stays ruff clean (the rules are in pyproject.toml)."""
import shutil
import subprocess
import sys

import pytest

from neuro_trigger import REPO_ROOT


def test_ruff_clean():
    ruff = shutil.which("ruff", path=str(__import__("pathlib").Path(sys.executable).parent))
    if ruff is None:
        pytest.skip("ruff is not installed beside this Python (it is in requirements.txt)")
    done = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
