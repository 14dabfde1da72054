"""Sweeps on SLURM (`--sweep NAME -p --launcher slurm`) against the single-node test cluster: the trials as a job
array of agents and a job that finishes the sweep; the sweep's config defined only in this test process (the jobs
resolve against the sweep folder's configs.json, never the configs file); a cancelled array resumed without
training a finished trial again; the agents never taking the same trial; mistakes refused before submitting."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from neuro_trigger import REPO_ROOT
from neuro_trigger.runner.slurm_queue import queued_jobs
from neuro_trigger.sweep.slurm import sweep_job_ids
from neuro_trigger_tests.run_helpers import communicate_or_kill, status, toy_splits, wait_for

pytestmark = pytest.mark.slurm
SLURM = ["mem_gb=1", "time_min=10", "side_mem_gb=1"]
CONFIG = "sweep_slurm_test"  # a config of this test only: the configs file on disk has none of this name


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list[str]]:
    """About 2,400 training rows for expert 3: at batch size 8 an epoch lasts long enough to be stopped in."""
    return toy_splits(tmp_path_factory.mktemp("sweep_slurm_data"), {"train": 20000, "val": 800, "test": 800}, 21)


@pytest.fixture
def defined(monkeypatch, data):
    """Defines the test's config and a sweep on it (`sweep_slurm_test`) in the configs module of this process."""
    import configs

    def define(config: dict, sweep: dict) -> str:
        monkeypatch.setitem(configs.configs, CONFIG, {"extends": "baseline_v2", "data": data, "plot_every": 1000,
                                                      "early_stopping_patience": 1000, **config})
        monkeypatch.setitem(configs.sweeps, CONFIG, {"config": CONFIG, "pruner": "none", **sweep})
        return CONFIG

    assert CONFIG not in (REPO_ROOT / "configs" / "__init__.py").read_text(encoding="utf-8")
    return define


def trials_table(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "trials.csv")


def jobs(folder: Path) -> list[dict]:
    return json.loads((folder / "slurm_jobs.json").read_text())


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """main.py in a fresh interpreter, as a user runs it: the test's configs are not there."""
    proc = subprocess.Popen([sys.executable, "neuro_trigger/main.py", *args], cwd=REPO_ROOT, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    out, err = communicate_or_kill(proc, timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_sweep_trains_its_trials_in_agents_and_a_job_finishes_it(slurm_cluster, defined, tmp_path, capsys):
    """2 experts x 2 learning rates with workers=2: two agents share the four trials, the finish job writes
    trials.csv, best/ and summary.json; the command logs a line per ended trial. The jobs never saw this test's
    configs module: they resolved the config from the sweep folder's configs.json."""
    import configs
    from neuro_trigger.config.resolution import config_chain
    from neuro_trigger.sweep.api import sweep

    name = defined({"experts": [0, 3], "epochs": 2, "batch_size": 256, "workers": 2},
                   {"space": {"learning_rate": [1e-3, 3e-3]}})
    result = sweep(name, production=True, log_root=tmp_path, launcher="slurm", slurm=SLURM)
    folder = result.folder
    assert result.ok
    table = trials_table(folder)
    assert sorted(zip(table["expert"], table["trial"], strict=True)) == [
        ("expert_0", 0), ("expert_0", 1), ("expert_3", 0), ("expert_3", 1)]
    assert set(table["state"]) == {"finished"}, table
    assert (folder / "best" / "winners_config.json").is_file() and (folder / "best" / "weights.json").is_file()
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "finished" and set(summary["best"]) == {"expert_0", "expert_3"}

    [submission] = jobs(folder)
    agents, finish = submission["agents"], submission["finish"]
    assert len(agents) == 2 and len({a.split("_")[0] for a in agents}) == 1, agents  # one array, W = workers
    for agent in agents:  # each id is a job that ran this sweep's agent (its submitit folder, its own words)
        log = (folder / "slurm" / agent / f"{agent}_0_log.out").read_text()
        assert f"agent {agent} (process" in log and str(folder) in log, log
    finish_log = (folder / "slurm" / finish / f"{finish}_0_log.out").read_text()
    assert f"finishing the sweep in SLURM job {finish}" in finish_log, finish_log
    assert json.loads((folder / "slurm" / "finished.json").read_text())["job"] == finish
    for expert, trial in zip(table["expert"], table["trial"], strict=True):
        trial_dir = folder / "trials" / expert / f"trial_{trial:03d}"
        assert status(trial_dir, expert)["slurm_job_id"] in agents
        assert json.loads((trial_dir / "config.json").read_text())["name"] == CONFIG
    saved = json.loads((folder / "configs.json").read_text())["configs"]  # the config's chain, as resolved here
    assert CONFIG in saved and set(saved) == set(config_chain(CONFIG, configs.configs))
    assert queued_jobs(sweep_job_ids(folder)) == {}

    err = capsys.readouterr().err
    ended = [line for line in err.splitlines() if " trial " in line and "finished after 2 epoch(s)" in line]
    assert len(ended) == 4 and ended[-1].endswith("[4/4]"), err
    assert "sweep finished in" in err and "expert_3: best z_resolution" in err, err


@pytest.mark.slow  # the default run resumes a killed sweep locally (test_sweep_cli); this, with scancel, is ~50 s
def test_a_cancelled_array_resumes_without_training_a_finished_trial_again(slurm_cluster, defined, tmp_path):
    """One agent (workers=1) trains trial 0 (batch 512, quick), then trial 1 (batch 8); scancel of the array while
    trial 1 trains. The finish job (afterany) finishes the sweep as interrupted; --resume refuses while it is
    queued. --resume in a fresh interpreter then goes on with trial 1 from its checkpoint, leaves trial 0 as it
    was, and finishes the sweep."""
    from neuro_trigger.sweep.api import sweep

    name = defined({"experts": [3], "epochs": 40, "workers": 1}, {"space": {"batch_size": [512, 8]}})
    result = sweep(name, production=True, log_root=tmp_path, launcher="slurm", slurm=SLURM, detach=True)
    folder, [submission] = result.folder, jobs(result.folder)
    assert result.ok and result.records == []
    first, second = (folder / "trials" / "expert_3" / f"trial_{n:03d}" for n in (0, 1))

    def second_trains() -> bool:
        assert status(second, "expert_3").get("status") != "finished", "trial 1 ended before it could be stopped"
        return (second / "expert_3" / "ckpts" / "last.ckpt").is_file() and \
            status(second, "expert_3").get("status") == "running"

    try:
        wait_for(second_trains, "trial 1 to train an epoch", 150)
        kept = {path: path.read_bytes() for path in (first / "trial.json", first / "expert_3" / "status.json",
                                                     first / "weights.json")}
        subprocess.run(["scontrol", "hold", submission["finish"]], check=True)
        subprocess.run(["scancel", *submission["agents"]], check=True)
        wait_for(lambda: queued_jobs(submission["agents"]) == {}, "the agent to leave the queue", 60)

        refused = cli("--resume", str(folder))
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), refused.stderr
        assert "still on SLURM" in lines[0] and submission["finish"] in lines[0], lines
    finally:
        subprocess.run(["scontrol", "release", submission["finish"]], check=False)
    wait_for(lambda: queued_jobs([submission["finish"]]) == {}, "the finish job", 120)
    assert json.loads((folder / "summary.json").read_text())["status"] == "interrupted"
    assert list(trials_table(folder)["state"]) == ["finished", "interrupted"]
    assert status(second, "expert_3")["status"] == "interrupted"

    done = cli("--resume", str(folder))
    assert done.returncode == 0, done.stderr
    assert "expert_3 trial 1 finished after 40 epoch(s)" in done.stderr and "[2/2]" in done.stderr, done.stderr
    assert "trial 0 finished" not in done.stderr
    assert {path: path.read_bytes() for path in kept} == kept  # trial 0 was not trained again
    assert "continues from" in (second / "expert_3.log").read_text()
    assert pd.read_csv(second / "expert_3" / "csv" / "metrics.csv")["epoch"].tolist() == list(range(40))
    assert list(trials_table(folder)["state"]) == ["finished", "finished"]
    assert (folder / "best" / "weights.json").is_file()
    assert json.loads((folder / "summary.json").read_text())["status"] == "finished"
    latest = jobs(folder)[-1]
    assert len(jobs(folder)) == 2 and status(second, "expert_3")["slurm_job_id"] in latest["agents"]
    assert latest["slurm"] == {"mem_gb": 1, "time_min": 10, "side_mem_gb": 1}  # the settings it was submitted with


@pytest.mark.slow
def test_a_requeued_agent_goes_on_with_its_trial(slurm_cluster, defined, tmp_path):
    """The signal SLURM sends before a time limit (USR2, on which submitit requeues the job) while trial 1 trains:
    the agent's job runs again, takes its stopped trial and goes on from its checkpoint; trial 0 stays as it was."""
    from neuro_trigger.sweep.api import sweep

    name = defined({"experts": [3], "epochs": 40, "workers": 1}, {"space": {"batch_size": [512, 8]}})
    folder = sweep(name, production=True, log_root=tmp_path, launcher="slurm", slurm=SLURM, detach=True).folder
    [submission] = jobs(folder)
    first, second = (folder / "trials" / "expert_3" / f"trial_{n:03d}" for n in (0, 1))
    try:
        wait_for(lambda: (second / "expert_3" / "ckpts" / "last.ckpt").is_file(), "trial 1 to train an epoch", 150)
        kept = (first / "expert_3" / "status.json").read_bytes()
        subprocess.run(["scancel", "--signal=USR2", submission["agents"][0]], check=True)
        wait_for(lambda: (folder / "slurm" / "finished.json").is_file(), "the finish job", 240)
    finally:
        subprocess.run(["scancel", *sweep_job_ids(folder)], check=False)
    assert list(trials_table(folder)["state"]) == ["finished", "finished"]
    assert (first / "expert_3" / "status.json").read_bytes() == kept
    assert f"SLURM job {submission['agents'][0]} continues from" in (second / "expert_3.log").read_text()
    assert pd.read_csv(second / "expert_3" / "csv" / "metrics.csv")["epoch"].tolist() == list(range(40))


def test_agents_never_take_the_same_trial_and_take_a_stopped_one_first(defined, tmp_path):
    """The agents' claiming, without a cluster: a held trial is never handed out again; a stopped one nobody
    holds is, with its checkpoint; one that wrote its record before its study was told is told, not trained."""
    from neuro_trigger.run.files import write_json
    from neuro_trigger.sweep import studies
    from neuro_trigger.sweep.agent import next_trial
    from neuro_trigger.sweep.space import load_sweep
    from neuro_trigger.sweep.trial import new_record, trial_folder

    spec = load_sweep(defined({"experts": [3]}, {"space": {"batch_size": [64, 128, 256]}}))
    studies.create_studies(tmp_path, spec)
    rows = {3: 100}
    first = next_trial(tmp_path, spec, rows)
    second = next_trial(tmp_path, spec, rows)
    assert (first.asked.number, second.asked.number) == (0, 1) and first.resume_from is None
    checkpoint = trial_folder(tmp_path, 3, 0) / "expert_3" / "ckpts" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(b"state")
    first.lock.release()  # its agent stopped: trial 0 is unfinished and nobody holds it
    again = next_trial(tmp_path, spec, rows)
    assert (again.asked.number, again.resume_from) == (0, checkpoint)
    write_json(trial_folder(tmp_path, 3, 1) / "trial.json", {**new_record(tmp_path, second.asked), "state": "pruned"})
    second.lock.release()  # its agent stopped after writing the record, before telling the study
    third = next_trial(tmp_path, spec, rows)
    assert third.asked.number == 2
    assert [t.number for t in studies.unfinished(tmp_path, spec, 3)] == [0, 2]  # trial 1 told "pruned"
    assert next_trial(tmp_path, spec, rows) is None  # 0 and 2 are held, the grid has no point left


@pytest.mark.parametrize(("args", "parts"), [
    (["--slurm", "partition=nosuchpartition"], ["sbatch refuses", "--partition=nosuchpartition"]),
    (["--slurm", "gpus_per_expert=1", "-m", "accelerator=gpu"], ["gpus_per_expert=1", "no GPU"]),
])
def test_mistakes_are_one_line_and_submit_nothing(slurm_cluster, tmp_path, args, parts):
    done = cli("--sweep", "lr_batch_grid", "-p", "-d", "x", "--launcher", "slurm", "--log-root", str(tmp_path), *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert all(part in lines[0] for part in parts), lines
    assert not (tmp_path / "sweeps").exists()
