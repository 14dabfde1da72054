"""The test SLURM cluster (scripts/slurm_cluster.sh) does what a launcher needs, driven through submitit.

The cluster has no accounting storage, so submitit never learns that a job was cancelled: states are read
with scontrol, results are waited for with a timeout, and no test calls result() on a cancelled job.
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cloudpickle
import pytest
import submitit

pytestmark = pytest.mark.slurm
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the jobs cannot import this test module


def square(x):
    return x * x, os.environ.get("SLURM_ARRAY_TASK_ID")


def wait_for_sigterm(folder):
    folder = Path(folder)

    def on_sigterm(signum, frame):
        (folder / "sigterm").write_text(str(os.getpid()))
        os._exit(143)

    signal.signal(signal.SIGTERM, on_sigterm)  # replaces submitit's handler, which ignores SIGTERM
    (folder / "started").write_text(str(os.getpid()))
    time.sleep(120)


def wait_until(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.1)


def result(job, timeout=30):
    """job.result(), but with a timeout: without accounting it waits for ever on a job that left no result."""
    wait_until(job.paths.result_pickle.exists, timeout, f"a result from job {job.job_id}")
    return job.result()


def job_state(job_id):
    shown = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=10).stdout
    return dict(word.split("=", 1) for word in shown.split() if "=" in word).get("JobState", "GONE")


def executor(folder, **parameters):
    ex = submitit.AutoExecutor(folder=folder / "%j", cluster="slurm")
    ex.update_parameters(timeout_min=5, cpus_per_task=1, mem_gb=0.5, **parameters)
    return ex


def test_job_array_returns_results(slurm_cluster, tmp_path):
    jobs = executor(tmp_path).map_array(square, [2, 3])
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "one array job"
    assert [result(job) for job in jobs] == [(4, "0"), (9, "1")]


def test_scancel_sends_sigterm_and_afterany_job_runs(slurm_cluster, tmp_path):
    ex = executor(tmp_path)
    victim = ex.submit(wait_for_sigterm, str(tmp_path))
    wait_until((tmp_path / "started").exists, 30, "the job to start")
    ex.update_parameters(slurm_additional_parameters={"dependency": f"afterany:{victim.job_id}"})
    after = ex.submit(square, 5)
    assert job_state(after.job_id) == "PENDING"

    subprocess.run(["scancel", victim.job_id], check=True, timeout=10)
    wait_until((tmp_path / "sigterm").exists, 10, "SIGTERM in the job's Python process")
    assert (tmp_path / "sigterm").read_text() == (tmp_path / "started").read_text()  # the same process
    assert result(after) == (25, None)
    assert job_state(victim.job_id) == "CANCELLED"
