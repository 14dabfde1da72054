"""Helpers of the tests that run the CLI as a real process and watch its run folder."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from neuro_trigger import REPO_ROOT


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python neuro_trigger/main.py ARGS` in a session of its own (so signals can go to it alone); `env`: variables
    set in its environment over this process's (a locale, say)."""
    env = {**{k: v for k, v in os.environ.items() if k != "PYTHONPATH"}, **(env or {})}
    return subprocess.Popen([sys.executable, "neuro_trigger/main.py", *args], cwd=REPO_ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def communicate_or_kill(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """`proc.communicate(timeout)`; a run still going after it (the test fails) is killed with its whole session,
    so it does not train on after the test."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def wait_for(condition, what: str, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def status(folder: Path, key: str) -> dict:
    """An expert's status.json, or {} while it is not (fully) written."""
    try:
        return json.loads((folder / key / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def toy_splits(folder: Path, sizes: dict[str, int], seed: int) -> dict[str, list[str]]:
    """Small toy data files, one per split (`sizes`: tracks per split), as a config's `data` value."""
    from neuro_trigger.data.neuroresults.writer import write_table
    from neuro_trigger.data.toy.generator import generate

    paths = {}
    for i, (split, n) in enumerate(sizes.items()):
        write_table(generate(n, seed=seed + i), folder / f"{split}.gz")
        paths[split] = [str(folder / f"{split}.gz")]
    return paths


def load_script(name: str):
    """scripts/<name>.py as a module (the scripts folder is not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
