"""Group main: a whole `main.py baseline_v2 -p` (only with --with-main; otherwise a skipped row)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.common import REPO_ROOT, CpuShare, Row, TreeMemory, log, tree_cpu


def bench_main(tmp: Path, quick: bool) -> Row:
    """`python neuro_trigger/main.py baseline_v2 -p` on the embedded default data set, timed."""
    from neuro_trigger.data import toy_mc

    had_toy = all((REPO_ROOT / p).is_file() for p in toy_mc.DEFAULT_FILES.values())
    command = [sys.executable, "neuro_trigger/main.py", "baseline_v2", "-p", "-d", "benchmark",
               "--log-root", str(tmp / "main_log")]
    if quick:
        command += ["-m", "epochs=2"]
    log("main.py " + " ".join(command[2:]))
    with open(tmp / "main.log", "wb") as out, CpuShare() as cpu:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        with TreeMemory(proc.pid) as memory:
            code = proc.wait()
    wall = cpu.wall
    cpu_seconds, others = tree_cpu(cpu, memory)
    epochs = {}
    for summary in (tmp / "main_log").glob("baseline_v2/version_*/summary.json"):
        for key, status in json.loads(summary.read_text()).get("experts", {}).items():
            epochs[key] = status.get("epochs_done", status.get("epochs"))
    if code != 0:
        log("main.py failed:\n" + (tmp / "main.log").read_text(errors="replace")[-3000:])
    return Row("main_baseline_v2", "main.py baseline_v2 -p -d benchmark" + (" -m epochs=2" if quick else ""),
               wall, "s", "-", None, None, "", "<= 600 s", wall <= 600 and code == 0,
               f"exit code {code}; epochs per expert {dict(sorted(epochs.items()))}; toy data "
               + ("already generated" if had_toy else "generated in this run")
               + f"; peak RSS of the tree {memory.peak_rss_kb / 1024:.0f} MB; CPU {cpu_seconds:.0f} s; other work "
               f"meanwhile {others:.2f} cores",
               extra={"exit_code": code, "epochs": epochs, "peak_rss_mb": memory.peak_rss_kb / 1024,
                      "cpu_seconds": cpu_seconds, "others_cores": round(others, 2)})


def skipped_main() -> Row:
    return Row("main_baseline_v2", "main.py baseline_v2 -p -d benchmark", None, "s", "-", None, None, "",
               "<= 600 s", None, "skipped: pass --with-main", skipped=True)
