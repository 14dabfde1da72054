"""Shared test setup: the `slurm`, `gpu` and `slow` markers, and the `slurm_cluster` fixture."""
import os
import subprocess
from pathlib import Path

import pytest

SLURM_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "slurm_cluster.sh"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slurm: runs jobs on a real single-node SLURM cluster started by scripts/slurm_cluster.sh")
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU; skipped without one")
    config.addinivalue_line(
        "markers", "slow: long end-to-end runs, left out of the default run (pyproject addopts); -m slow runs them")


def pytest_collection_modifyitems(config, items):
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if gpu_items:
        import torch  # only when a gpu test is collected: importing torch takes seconds

        if not torch.cuda.is_available():
            for item in gpu_items:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)"))


@pytest.fixture(scope="session")
def slurm_cluster():
    """A single-node SLURM cluster for the session: {"dir": its folder, "env": what clients need (in os.environ)}.

    Started with scripts/slurm_cluster.sh unless it already runs, and stopped at the end only if started here.
    Skips where slurm-wlm and munge cannot be installed (the script exits 3); any other failure is an error.
    """
    folder = os.environ.get("NT_SLURM_DIR", "/tmp/nt_slurm")

    def script(command, timeout=60):
        return subprocess.run(["bash", str(SLURM_SCRIPT), command, folder],
                              capture_output=True, text=True, timeout=timeout)

    started = script("status").returncode != 0
    if started:
        done = script("start", timeout=600)  # may install the packages with apt-get first
        if done.returncode == 3:
            pytest.skip(f"no SLURM cluster: {done.stderr.strip()}")
        if done.returncode != 0:
            pytest.fail(f"scripts/slurm_cluster.sh start failed ({done.returncode}): {done.stdout}{done.stderr}")
    env = dict(line.removeprefix("export ").split("=", 1) for line in script("env").stdout.split("\n") if line)
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    try:
        yield {"dir": Path(folder), "env": env}
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if started:
            script("stop")
