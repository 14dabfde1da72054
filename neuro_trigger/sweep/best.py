"""The sweep's answer: `best/`, a complete run folder assembled from the best trial of each expert.

Each winner's expert folder is copied from its trial; then the folder is assembled as a run's (prediction
tables, weights.json in the original's layout, summary.json), its figures drawn and its report.html written.
Its config.json holds each winner's config as its expert's; `winners_config.json` is the same as a config to
train again (`main.py best/winners_config.json -p`): each expert's block holds what differs from the config the
sweep started from, its CPU threads included, so it trains the same networks.
"""
from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

from neuro_trigger.config.resolution import resolve_config
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.judge.assemble import assemble, start_summary
from neuro_trigger.judge.expert_results import PLOT_SPLITS, write_expert_plots
from neuro_trigger.judge.run_report import write_run_report
from neuro_trigger.run.files import read_json, write_json
from neuro_trigger.runner.local import run_parallel
from neuro_trigger.sweep.space import Sweep

log = logging.getLogger("neuro_trigger")

NOT_A_SETTING = ("expert", "experts")  # what a resolved expert config records about itself


def best_records(records: list[dict[str, Any]], sweep: Sweep) -> dict[int, dict[str, Any]]:
    """The best finished trial of each expert (the lowest trial number among equals); pruned and failed trials
    never win."""
    best: dict[int, dict[str, Any]] = {}
    sign = 1 if sweep.direction == "minimize" else -1
    for record in sorted(records, key=lambda r: (r["expert"], r["trial"])):
        if record["state"] != "finished" or record["objective"] is None:
            continue
        held = best.get(record["expert"])
        if held is None or sign * record["objective"] < sign * held["objective"]:
            best[record["expert"]] = record
    return best


def winners_config(sweep: Sweep, configs: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A config that trains each winner again: the sweep's config, and per expert every key whose value differs."""
    base = resolve_config(sweep.config)["global"]
    out: dict[str, Any] = {"extends": sweep.config,
                           "description": f"the best trial of each expert of sweep {sweep.name}"}
    experts = sorted(int(key.removeprefix("expert_")) for key in configs)
    if experts != list(base["experts"]):
        out["experts"] = experts
    for key, config in sorted(configs.items()):
        out[key] = {k: v for k, v in config.items() if k not in NOT_A_SETTING and v != base.get(k)}
    return out


def build_best(sweep_folder: Path, sweep: Sweep, stores: dict[str, ColumnStore], records: list[dict[str, Any]],
               git_id: str | None, production: bool = True) -> Path | None:
    """best/ from the best trial of each expert (built beside and then put in place of an earlier best/); None
    when no expert has a finished trial."""
    winners = best_records(records, sweep)
    if not winners:
        log.warning("no trial finished: no best/ folder")
        return None
    partial = sweep_folder / "best.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    resolved = resolve_config(sweep.config, sweep.overrides, experts=sorted(winners))
    configs = {}
    for expert, record in sorted(winners.items()):
        key = f"expert_{expert}"
        trial = sweep_folder / record["folder"]
        configs[key] = read_json(trial / "config.json", "config.json")["experts"][key]
        shutil.copytree(trial / key, partial / key)
        if (trial / f"{key}.log").is_file():
            shutil.copy2(trial / f"{key}.log", partial / f"{key}.log")
    description = f"the best trial of each expert of sweep {sweep.name} ({sweep.objective})"
    resolved.update(experts=configs, description=description, mode="production",
                    runs_root=str(sweep_folder.parent.parent.parent), launcher={"name": "local"},
                    sweep={"folder": str(sweep_folder), "objective": sweep.objective,
                           "winners": {f"expert_{e}": {k: r[k] for k in ("trial", "params", "objective", "folder")}
                                       for e, r in sorted(winners.items())}})
    write_json(partial / "config.json", resolved)
    write_json(partial / "winners_config.json", winners_config(sweep, configs))
    start_summary(partial, resolved, stores, git_id, description, time.time())
    log.info("best/: assembling the winners' run folder (prediction tables, weights.json, summary.json)")
    assemble(partial, stores)
    log.info("best/: drawing the winners' figures")
    unplotted = [(key, split) for key in configs for split in PLOT_SPLITS if split in stores]
    if production:  # as a run's figures: jobs of the fork server, on every core
        run_parallel(partial, resolved, stores, {}, {}, False, unplotted)
    else:
        for key, split in unplotted:
            write_expert_plots(partial / key, configs[key], stores[split], split)
    write_run_report(partial, stores)
    best = sweep_folder / "best"
    if best.exists():  # a resumed sweep's answer replaces the one it had
        shutil.rmtree(best)
    partial.rename(best)
    return best
