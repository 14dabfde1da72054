"""The thread plan (issue 24): decided before any expert starts, from each job's work, the cores and `workers`
alone; the same config, data and seed on the same cores give byte-identical weights however busy the machine is;
the plan is recorded and can be forced from the config."""
from __future__ import annotations

import ast
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from neuro_trigger import cpu_cores
from neuro_trigger.config.errors import ConfigError
from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.runner import plan as plan_module
from neuro_trigger.runner.plan import Job, make_plan, simulate, useful_threads
from neuro_trigger_tests.run_helpers import toy_splits

# baseline_v2's training rows per expert on the embedded default data set (200k tracks), 200 epochs
BASELINE_V2_ROWS = {"expert_0": 134757, "expert_1": 19207, "expert_2": 7765, "expert_3": 25466, "expert_4": 12805}


def baseline_v2(batch_size: int = 2048, then: tuple[float, ...] = ()) -> list[Job]:
    return [Job(key, rows, 200, batch_size, then=then) for key, rows in BASELINE_V2_ROWS.items()]


# ------------------------------------------------------------------------------------------ the planner's rule
FIGURES = (1_000_000, 1_000_000, 700_000)  # an expert's figure jobs, as the local launcher counts them


def test_baseline_v2_on_2_cores_trains_every_expert_on_one_thread_the_largest_first():
    """Expert 0 (two thirds of the rows) on one core from the start; the small ones on the other, largest first,
    and their figures while expert 0 still trains: both threads for expert 0 would push all of that behind it."""
    plan = make_plan(baseline_v2(then=FIGURES), cores=2, workers=5)
    assert [job.key for job in plan.jobs] == ["expert_0", "expert_3", "expert_1", "expert_4", "expert_2"]
    assert plan.threads() == dict.fromkeys(BASELINE_V2_ROWS, 1) and plan.at_once == 2
    first, *small = plan.jobs
    assert first.start == small[0].start == 0 and all(job.end < first.end for job in small)
    assert all(job.set_by == "plan" for job in plan.jobs)


def test_a_job_with_most_of_the_work_takes_every_core_alone_and_the_small_ones_are_packed_after_it():
    jobs = [Job("big", 90_000, 10, 2048), Job("small_a", 5000, 10, 2048), Job("small_b", 4000, 10, 2048)]
    plan = make_plan(jobs, cores=2, workers=5)
    assert plan.threads() == {"big": 2, "small_a": 1, "small_b": 1}
    big, *small = plan.jobs
    assert big.start == 0 and all(job.start == big.end for job in small)  # alone, then two at a time


def test_on_16_cores_the_large_expert_gets_two_threads_and_the_others_run_beside_it():
    for then in ((), FIGURES):
        plan = make_plan(baseline_v2(then=then), cores=16, workers=5)
        assert plan.threads() == {"expert_0": 2, "expert_3": 1, "expert_1": 1, "expert_4": 1, "expert_2": 1}
        assert all(job.start == 0 for job in plan.jobs) and plan.at_once == 5


def test_threads_that_would_leave_work_waiting_are_not_given():
    """Two jobs of 60% and 40% on 2 cores: one thread each side by side ends sooner than the larger one on both
    cores first."""
    jobs = [Job("a", 60_000, 10, 2048), Job("b", 40_000, 10, 2048)]
    assert make_plan(jobs, cores=2, workers=5).threads() == {"a": 1, "b": 1}


def test_a_lone_job_takes_what_its_batch_can_use():
    assert useful_threads(2048, cores=2) == 2
    assert useful_threads(2048, cores=1) == 1
    assert useful_threads(1024, cores=16) == 1  # small batches: threads would wait for each other
    assert useful_threads(1 << 20, cores=16) == plan_module.MAX_THREADS
    assert make_plan([Job("e", 100_000, 50, 4096)], cores=16, workers=5).threads() == {"e": 4}
    assert make_plan([Job("e", 100_000, 50, 4096)], cores=1, workers=5).threads() == {"e": 1}
    assert make_plan(baseline_v2(batch_size=512), cores=16, workers=5).threads() == dict.fromkeys(BASELINE_V2_ROWS, 1)


def test_many_equal_jobs_are_packed_one_thread_each():
    """A sweep's trials: 40 alike on 16 cores, at most 16 at once."""
    trials = [Job(f"trial_{i}", 20_000, 100, 2048) for i in range(40)]
    plan = make_plan(trials, cores=16, workers=16)
    assert set(plan.threads().values()) == {1} and plan.at_once == 16
    assert [job.key for job in plan.jobs] == sorted(f"trial_{i}" for i in range(40))  # equal work: by name


def test_workers_bounds_the_jobs_at_once():
    plan = make_plan(baseline_v2(), cores=16, workers=1)
    assert plan.at_once == 1
    ends = [job.end for job in plan.jobs]
    assert all(later.start >= earlier.end for earlier, later in zip(plan.jobs, plan.jobs[1:], strict=False))
    assert ends == sorted(ends)


def test_fixed_threads_are_kept_and_a_job_needing_more_cores_than_there_are_runs_alone():
    jobs = [Job("big", 100_000, 10, 2048, threads=3, set_by="config"), Job("small", 1000, 10, 2048)]
    plan = make_plan(jobs, cores=2, workers=5)
    assert plan.threads()["big"] == 3
    big, small = plan.jobs
    assert big.set_by == "config" and small.set_by == "plan"
    assert small.start >= big.end  # nothing beside a job that needs every core (and more)


def test_a_job_waits_for_the_cores_it_needs_and_no_later_job_passes_it():
    jobs = [Job("a", 1000, 1, 2048, threads=1), Job("b", 500, 1, 2048, threads=2), Job("c", 100, 1, 2048, threads=1)]
    times, end = simulate(jobs, {j.key: j.threads for j in jobs}, cores=2, at_once=2)
    assert times["b"][0] == times["a"][1]  # b waits for a's core
    assert times["c"][0] == times["b"][1]  # c could have run beside a, but b comes first
    assert end == times["c"][1]


def test_the_jobs_that_follow_a_job_join_the_queue_when_it_ends():
    a, b = Job("a", 1000, 1, 2048, threads=1, then=(300.0,)), Job("b", 100, 1, 2048, threads=1)
    times, end = simulate([a, b], {"a": 1, "b": 1}, cores=2, at_once=2)
    assert times == {"a": (0.0, a.work), "b": (0.0, b.work)}
    assert end == a.work + 300.0  # a's figure job starts when a ends, not before, though a core is free earlier


def test_the_plan_is_a_pure_function_of_its_inputs():
    """Nothing measured: the module imports no clock, no load, no randomness; equal inputs give equal plans."""
    tree = ast.parse(Path(plan_module.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"__future__", "heapq", "collections", "dataclasses", "typing"}, imported
    assert make_plan(baseline_v2(), 2, 5) == make_plan(list(reversed(baseline_v2())), 2, 5)
    with pytest.raises(ValueError, match="distinct"):
        make_plan([Job("a", 1, 1, 1), Job("a", 2, 1, 1)], 2, 5)


def test_the_plan_as_summary_json_records_it():
    recorded = make_plan(baseline_v2(), cores=16, workers=5).as_dict()
    assert recorded["cores"] == 16 and recorded["workers"] == 5 and recorded["at_once"] == 5
    assert recorded["experts"]["expert_0"] == {
        "order": 0, "threads": 2, "set_by": "plan", "work_rows": 200 * (134757 + 66 * plan_module.STEP_ROWS),
        "batch_size": 2048, "estimated_share": [0.0, 1.0]}
    assert recorded["experts"]["expert_2"]["order"] == 4
    assert json.loads(json.dumps(recorded)) == recorded


# ------------------------------------------------------------------------------------------ the launcher's side
def write_folder(folder: Path, summary: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(summary))


def test_a_run_records_its_plan_and_a_resumed_run_keeps_the_threads_it_recorded(tmp_path, caplog):
    from neuro_trigger.runner.local import plan_run

    resolved = resolve_config("baseline_v2", ["expert_4.threads=3"])
    counts = dict(BASELINE_V2_ROWS)
    write_folder(tmp_path, {"experts": {}})
    with caplog.at_level(logging.INFO, logger="neuro_trigger"):
        plan = plan_run(tmp_path, resolved, counts, on_cpu=True, workers=5, figure_jobs=("plots", "report"))
    assert "thread plan for" in caplog.text and "expert_4 3 threads (by the config)" in caplog.text
    recorded = json.loads((tmp_path / "summary.json").read_text())["plan"]
    assert recorded == plan.as_dict() and recorded["cores"] == cpu_cores()
    assert recorded["experts"]["expert_4"]["threads"] == 3 and recorded["experts"]["expert_4"]["set_by"] == "config"

    # a resume on whatever machine: every expert goes on with the threads the run started with
    earlier = json.loads((tmp_path / "summary.json").read_text())
    earlier["plan"]["experts"]["expert_0"]["threads"] = 4
    write_folder(tmp_path, earlier)
    again = plan_run(tmp_path, resolved, {"expert_0": counts["expert_0"], "expert_4": counts["expert_4"]},
                     on_cpu=True, workers=5)
    assert again.threads() == {"expert_0": 4, "expert_4": 3}
    assert {job.key: job.set_by for job in again.jobs} == {"expert_0": "earlier plan", "expert_4": "config"}
    assert json.loads((tmp_path / "summary.json").read_text()) == earlier  # the first launch's plan stays


def test_threads_is_a_config_key_and_adaptive_threads_is_retired(caplog):
    resolved = resolve_config("baseline_v2", ["threads=1", "expert_0.threads=2"])
    assert resolved["global"]["threads"] == 1
    assert resolved["experts"]["expert_0"]["threads"] == 2 and resolved["experts"]["expert_1"]["threads"] == 1
    assert resolve_config("baseline_v2")["experts"]["expert_0"]["threads"] is None
    with pytest.raises(ConfigError, match="threads.*must be >= 1"):
        resolve_config("baseline_v2", ["threads=0"])
    with pytest.raises(ConfigError, match="adaptive_threads' is retired"):
        resolve_config("baseline_v2", ["adaptive_threads=True"])
    with caplog.at_level(logging.WARNING):
        old = resolve_config({"extends": "baseline_v2", "adaptive_threads": True})
    assert "adaptive_threads' is ignored: retired" in caplog.text and "adaptive_threads" not in old["global"]


# ------------------------------------------------------------------------------------------ byte-identical weights
@pytest.fixture(scope="module")
def plan_data(tmp_path_factory) -> dict[str, list[str]]:
    return toy_splits(tmp_path_factory.mktemp("plan_data"), {"train": 16000, "val": 3000, "test": 2000}, seed=240)


def busy_loops(n: int) -> list[subprocess.Popen]:
    """`n` processes that keep a core busy each until killed."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def test_same_config_data_and_seed_give_byte_identical_weights_however_busy_the_machine(plan_data, tmp_path):
    """The same production run twice, the second while other processes keep every core busy: byte-identical
    weights.json and the same plan. Expert 3 is forced onto two threads and expert 0 is planned: a thread count
    that followed the load (as adaptive_threads did) would train other weights."""
    config = {"extends": "baseline_v2", "data": plan_data, "experts": [0, 3], "epochs": 6, "plot_every": 1000,
              "expert_3": {"threads": 2}}
    from neuro_trigger.runner.api import train

    quiet = train(config, production=True, log_root=tmp_path / "quiet", show_progress=False)
    loops = busy_loops(cpu_cores())
    try:
        busy = train(config, production=True, log_root=tmp_path / "busy", show_progress=False)
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    assert quiet.ok and busy.ok
    assert (quiet.folder / "weights.json").read_bytes() == (busy.folder / "weights.json").read_bytes()
    assert quiet.summary["plan"] == busy.summary["plan"]
    forced = busy.summary["plan"]["experts"]["expert_3"]
    assert forced["threads"] == 2 and forced["set_by"] == "config"
    for folder in (quiet.folder, busy.folder):
        for key, planned in folder_plan(folder).items():
            assert f"{key}: process" in (log := (folder / f"{key}.log").read_text())
            assert f"{planned} CPU thread(s) as the run's plan says" in log, key
        assert "thread plan for" in (folder / "app.log").read_text()


def folder_plan(folder: Path) -> dict[str, int]:
    plan = json.loads((folder / "summary.json").read_text())["plan"]
    return {key: entry["threads"] for key, entry in plan["experts"].items()}
