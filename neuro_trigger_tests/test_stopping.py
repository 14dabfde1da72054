"""Safe to stop: SIGTERM/SIGHUP act as Ctrl-C, nothing outlives a killed run, --resume never runs beside
a live run, jobs run the code on disk, experts that die at start-up are reported, and --resume completes
what is missing and leaves a complete run alone."""
from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.main import main
from neuro_trigger.runner import processes
from neuro_trigger.runner.api import resume, train
from neuro_trigger.training.stopping import RunLock, Stopped, exit_code, process_start_time, stop_on_signals
from neuro_trigger_tests._job_probe import project_modules
from neuro_trigger_tests.run_helpers import start, status, wait_for


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    folder = tmp_path_factory.mktemp("stopping_data")
    paths = {}
    for i, (split, n) in enumerate({"train": 4000, "val": 1000, "test": 1000}.items()):
        path = folder / f"{split}.gz"
        write_table(generate(n, seed=300 + i), path)
        paths[split] = [str(path)]
    return paths


def session_processes(sid: int) -> list[int]:
    """Every live process of a session (the run was started as a session of its own)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
            pids.append(int(stat.parent.name))
    return pids


def shm_used_by(pids: list[int]) -> set[Path]:
    """The /dev/shm entries these processes hold open or mapped now (other programs' entries are not ours to judge)."""
    used = set()
    for pid in pids:
        try:
            links = [os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()]
            maps = [line.split(maxsplit=5)[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()]
        except OSError:
            continue  # it ended meanwhile
        used.update(Path(p.removesuffix(" (deleted)")) for p in links + maps if p.startswith("/dev/shm/"))
    return used


def long_run(data: dict, log_root: Path) -> tuple[subprocess.Popen, Path]:
    """A production run of two experts that would train for hours, once both train."""
    proc = start("baseline_v2", "-p", "-d", "stop test", "--log-root", str(log_root), "-m", f"data={data!r}",
                 "experts=[0, 3]", "batch_size=64", "plot_every=100000", "epochs=100000",
                 "early_stopping_patience=100000")
    folder = log_root / "baseline_v2" / "version_0"
    wait_for(lambda: all((folder / k / "ckpts" / "last.ckpt").exists() for k in ("expert_0", "expert_3")),
             "both experts to train an epoch")
    return proc, folder


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGTERM,
                                 pytest.param(signal.SIGKILL, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopping_the_main_process_stops_everything(data, tmp_path, sig):
    """SIGINT or SIGTERM to the main process alone (what kill and timeout send) stops the experts with their
    checkpoints, exit 130 or 143, summary and journal say interrupted. SIGKILL leaves the experts to stop by
    themselves. Either way no process of the run is left, nor anything the run held in /dev/shm."""
    proc, folder = long_run(data, tmp_path)
    shm_of_run = shm_used_by(session_processes(proc.pid))
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (128 + sig if sig != signal.SIGKILL else -signal.SIGKILL), err
    wait_for(lambda: not session_processes(proc.pid), "every process of the run to end", timeout=60)
    assert not [p for p in shm_of_run if p.exists()]
    for key in ("expert_0", "expert_3"):
        assert status(folder, key)["status"] == "interrupted", key
        assert status(folder, key)["epochs_done"] >= 1
        assert (folder / key / "ckpts" / "last.ckpt").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    if sig != signal.SIGKILL:
        assert summary["status"] == "interrupted"
        assert "[interrupted]" in (tmp_path / "log.txt").read_text()
        assert f"interrupted ({sig.name})" in err
    else:
        assert summary["status"] == "running"  # the main process had no chance to say more


def test_stop_signals_raise_stopped_with_their_exit_code():
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGHUP, 129)):
        with pytest.raises(Stopped) as raised, stop_on_signals():
            os.kill(os.getpid(), sig)
            time.sleep(5)  # the handler raises at once
        assert raised.value.signum == sig and exit_code(raised.value) == code


def interrupted_debug_run(data: dict, log_root: Path) -> Path:
    """A finished one-expert debug run, marked as if its expert had been interrupted."""
    result = train({"extends": "baseline_v2", "data": data, "experts": [2], "epochs": 1, "plot_every": 1000},
                   log_root=log_root, show_progress=False)
    assert result.ok
    state = status(result.folder, "expert_2")
    state["status"] = "running"
    (result.folder / "expert_2" / "status.json").write_text(json.dumps(state))
    return result.folder


def test_resume_refuses_beside_a_live_run_or_expert(data, tmp_path, capsys):
    folder = interrupted_debug_run(data, tmp_path)
    with RunLock(folder).acquire("test"):
        capsys.readouterr()
        assert main(["--resume", str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"process {os.getpid()}" in err[0] and "still going on" in err[0]

    leftover = subprocess.Popen(["sleep", "60"])  # stands for an expert process that outlived its run
    try:
        state = status(folder, "expert_2")
        state.update(pid=leftover.pid, pid_start=process_start_time(leftover.pid))
        (folder / "expert_2" / "status.json").write_text(json.dumps(state))
        assert main(["--resume", str(folder)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"process {leftover.pid}" in err[0] and "expert_2" in err[0]
    finally:
        leftover.kill()
        leftover.wait()
    assert main(["--resume", str(folder)]) == 0  # the process is gone: resuming is safe again
    assert json.loads((folder / "summary.json").read_text())["status"] == "finished"


def test_resume_draws_every_missing_figure_and_leaves_a_complete_run_alone(data, tmp_path):
    result = train({"extends": "baseline_v2", "data": data, "experts": [2], "epochs": 1, "plot_every": 1000},
                   log_root=tmp_path, show_progress=False)
    folder = result.folder
    plots = folder / "expert_2" / "plots" / "val"
    figures = sorted(p.name for p in plots.glob("*.png"))
    assert len(figures) >= 10
    summary_bytes = (folder / "summary.json").read_bytes()
    journal = (tmp_path / "log.txt").read_text()

    again = resume(folder, show_progress=False)  # complete: nothing to do, nothing changed
    assert again.ok
    assert (folder / "summary.json").read_bytes() == summary_bytes
    assert (tmp_path / "log.txt").read_text() == journal

    for name in figures[2:]:  # as if the run had stopped after drawing two of them
        (plots / name).unlink()
    assert resume(folder, show_progress=False).ok
    assert sorted(p.name for p in plots.glob("*.png")) == figures


def test_job_processes_import_this_project_from_disk_and_inherit_the_libraries_frozen():
    """The fork server preloads only libraries (and runner.preloaded, which freezes them): a job imports this
    project's modules from the files as they are when it starts, so a notebook that changed a module runs the
    changed code; the libraries' objects are out of the job's garbage collections."""
    processes.start_process_server()
    ctx = processes.process_context()
    queue = ctx.Queue()
    proc = ctx.Process(target=project_modules, args=(queue,))
    proc.start()
    inherited, frozen, tracked = queue.get(timeout=120)
    proc.join(30)
    assert [m for m in inherited if m.startswith("neuro_trigger.")] == ["neuro_trigger.runner",
                                                                         "neuro_trigger.runner.preloaded"], inherited
    assert frozen > 100_000 and tracked < frozen / 10, (frozen, tracked)  # torch and lightning alone: ~400k


def test_stopping_the_process_server_ends_it_at_once():
    """The command ends the fork server itself: left alone, the server tears torch down after the command
    has gone, seconds during which it holds the console's output open (a pipe reading it waits)."""
    from multiprocessing import forkserver

    from neuro_trigger.training.stopping import process_alive

    processes.start_process_server()
    pid = forkserver._forkserver._forkserver_pid
    assert pid is not None and process_alive(pid)
    processes.stop_process_server()
    assert not process_alive(pid)
    processes.start_process_server()  # later runs in this process start a new one
    assert process_alive(forkserver._forkserver._forkserver_pid)


def test_cli_leaves_no_process_behind_when_it_exits(data, tmp_path):
    """The folder is the last line, the verdict per expert is said, and nothing of the run is left."""
    proc = start("baseline_v2", "-p", "-d", "exit test", "--log-root", str(tmp_path), "-m", f"data={data!r}",
                 "experts=[2]", "epochs=1", "plot_every=1000")
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert Path(out.strip().splitlines()[-1]) == tmp_path / "baseline_v2" / "version_0"
    wait_for(lambda: not session_processes(proc.pid), "the run's processes to end", timeout=30)
    assert "every expert has trained: drawing the figures" in err  # the phase after the last expert
    umask = os.umask(0o022)
    os.umask(umask)
    for log_file in ("app.log", "expert_2.log", "pred_data_val.csv"):  # readable by the group, executable by nobody
        assert (tmp_path / "baseline_v2" / "version_0" / log_file).stat().st_mode & 0o777 == 0o666 & ~umask
    assert re.search(r"expert_2: 1/1 epochs; val z resolution [\d.]+ cm \(old [\d.]+ cm\)", err), err
    expert_log = (tmp_path / "baseline_v2" / "version_0" / "expert_2.log").read_text()
    assert "GPU available" not in expert_log and "Tip:" not in expert_log and "GPU available" not in err


def readme_example() -> str:
    text = (REPO_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    example = next(b for b in blocks if "train(" in b)
    assert 'if __name__ == "__main__":' in example
    return example


@pytest.mark.slow
def test_readme_example_runs_as_a_script(data, tmp_path):
    script = readme_example().replace('["epochs=5"]', repr(["epochs=1", "experts=[2]", f"data={data!r}"])) \
        .replace('description="notebook run"', f'description="notebook run", log_root={str(tmp_path)!r}')
    assert "epochs=1" in script and "log_root" in script
    path = tmp_path / "example.py"
    path.write_text(script)
    done = subprocess.run([sys.executable, str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((tmp_path / "baseline_v2" / "version_0" / "summary.json").read_text())["status"] == "finished"


def test_expert_dying_at_start_up_fails_the_run_and_says_why(data, tmp_path):
    """A script without the __main__ guard: every job process runs the script again on start and dies
    before its expert starts. The run ends failed (exit 1), the reason is in the status, the expert's log
    and on the console, and the journal line is marked."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import sys\n"
        "from neuro_trigger.training.experts import train\n"
        f"result = train({{'extends': 'baseline_v2', 'data': {data!r}, 'experts': [2], 'epochs': 1}}, "
        f"production=True, log_root={str(tmp_path / 'log')!r})\n"
        "sys.exit(0 if result.ok else 1)\n")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert done.returncode == 1, done.stderr[-3000:]
    folder = tmp_path / "log" / "custom" / "version_0"
    state = status(folder, "expert_2")
    assert state["status"] == "failed" and "died before the expert started" in state["error"]
    assert "__main__" in state["error"]
    assert "died before the expert started" in (folder / "expert_2.log").read_text()
    assert "died before the expert started" in done.stderr
    assert json.loads((folder / "summary.json").read_text())["status"] == "failed"
    assert (tmp_path / "log" / "log.txt").read_text().rstrip().endswith("[failed]")
    assert "done in" not in done.stderr


def test_job_processes_stop_when_sigint_was_ignored_by_the_shell():
    """A run started in the background inherits SIGINT ignored; its jobs must still stop on SIGINT."""
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        proc = ctx.Process(target=_sleeping_job, args=(os.getpid(), ready))
        proc.start()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert ready.wait(120)
    os.kill(proc.pid, signal.SIGINT)
    proc.join(60)
    assert proc.exitcode == 130


def _sleeping_job(run_pid: int, ready) -> None:
    from neuro_trigger.training.stopping import job_process

    with job_process(run_pid):
        ready.set()
        time.sleep(120)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_job_interrupted_in_its_first_moment_exits_as_interrupted(signum: int):
    """A signal that arrives while a job is still starting (here: the instant its handlers are set up) ends it
    with 128 + the signal, which the runner reads as interrupted, not with 1, which it reads as failed."""
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=_job_stopped_at_once, args=(os.getpid(), signum))
    proc.start()
    proc.join(60)
    assert proc.exitcode == 128 + signum


def _job_stopped_at_once(run_pid: int, signum: int) -> None:
    from neuro_trigger.training import stopping

    def stop_now() -> None:
        set_up()
        os.kill(os.getpid(), signum)

    set_up, stopping.stop_job_on_signals = stopping.stop_job_on_signals, stop_now
    with stopping.job_process(run_pid):
        time.sleep(60)
