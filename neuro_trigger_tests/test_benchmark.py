"""The benchmark (benchmarks/run.py) runs end to end in --quick mode and reports every row; no timing is checked."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import TreeMemory
from neuro_trigger import REPO_ROOT

ROWS = {
    "parse_gz_vs_loadtxt", "parse_gz_vs_decompress", "parse_plain_vs_loadtxt", "cache_reload",
    "filter_duplicate_events", "filter_max2_events", "bucket_sampler",
    "train_bs2048_vs_raw", "train_bs128_vs_raw", "train_bs16_vs_raw", "train_bs2048_vs_per_sample",
    "per_epoch_fixed_cost",
    "experts_parallel_vs_sequential", "memory_5_vs_1_expert", "evaluate_vs_reload", "fixed_point_vs_float",
    "main_baseline_v2",
    "main_vs_floor", "startup_to_first_batch", "tail_after_last_epoch",
    "large_parse", "large_cache_reload", "large_epoch_expert0", "large_run_memory",
    "info_threads_1_vs_2", "info_chunks_vs_single_batches",
}
# minutes long: only with --with-main (the quick run below leaves them out; the large rows it runs, tiny)
OPTIONAL = {"main_baseline_v2", "main_vs_floor", "startup_to_first_batch", "tail_after_last_epoch"}
QUICK_LIMIT_S = 1800


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@pytest.mark.slow
def test_quick_benchmark_reports_every_row(tmp_path: Path) -> None:
    out = tmp_path / "x.json"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the script must find the package itself
    # ~1 minute on a quiet 2-core machine, several times that when other test runs share the cores: the
    # limit only catches a hang, so it is far above any loaded run (no test depends on a quiet machine)
    try:
        done = subprocess.run([sys.executable, "benchmarks/run.py", "--quick", "--with-large", "--json", str(out)],
                              cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=QUICK_LIMIT_S)
    except subprocess.TimeoutExpired as hung:
        pytest.fail(f"benchmarks/run.py --quick still running after {QUICK_LIMIT_S} s; its last output:\n"
                    + _text(hung.stdout)[-3000:] + _text(hung.stderr)[-3000:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    rows = {row["id"]: row for row in results["rows"]}
    assert set(rows) == ROWS
    for row_id, row in rows.items():
        if row["skipped"]:
            assert row_id in OPTIONAL, row_id
            continue
        assert is_number(row["figure"]), row
        if row_id not in OPTIONAL:
            assert is_number(row["reference_figure"]) and is_number(row["ratio"]), row
            assert row["reference"] and row["target"], row
        assert row["met"] is None or isinstance(row["met"], bool), row
    for row in rows.values():
        assert row["what"] in results["table"], row["what"]
    assert results["machine"]["cores"] >= 1 and results["command"].endswith(str(out))
    assert "| what |" in done.stdout


class _StarvedThread:
    """A sampling thread that never gets a core before the job ends (a heavily loaded machine)."""

    def start(self) -> None:
        pass

    def join(self) -> None:
        pass


def test_tree_memory_has_a_sample_even_if_its_thread_never_runs() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        memory = TreeMemory(child.pid, interval=60)
        memory._thread = _StarvedThread()
        with memory:
            pass
    finally:
        child.kill()
        child.wait()
    assert memory.samples >= 1 and memory.peak_rss_kb > 0 and memory.peak_processes == 1
