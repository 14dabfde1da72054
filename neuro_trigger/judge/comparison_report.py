"""What a comparison writes into its folder: comparison.csv, metrics.json, config_diff.json, the figures and
report.html (the runs side by side, each run's verdict, the overlaid figures, the config differences, code and
data)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pandas as pd

from neuro_trigger.judge.compared_runs import OTHER_DATA
from neuro_trigger.judge.comparison_table import ComparisonResult, best_cells
from neuro_trigger.judge.report import (
    MEASURES,
    MISSING,
    Code,
    Figures,
    KeyValues,
    Table,
    Text,
    as_number,
    gives_theta,
    hardware_table,
    verdict_table,
    write_report,
)
from neuro_trigger.run.files import write_atomic, write_json
from neuro_trigger.run.folder import library_versions

# the judge() numbers of comparison.csv that report.html shows, under the verdict table's titles, units and
# digits: the measure (report.MEASURES) -> its column in comparison.csv
SHOWN: dict[str, str] = {
    "z_std": "z_std_cm", "z_trimmed_std": "z_trimmed_std_cm", "z_half_width_68": "z_half_width_68_cm",
    "z_mean": "z_mean_cm", "z_median": "z_median_cm", "theta_std": "theta_std_deg",
    "theta_half_width_68": "theta_half_width_68_deg", "loss_ratio": "loss_vs_old", "efficiency": "efficiency",
    "rejection": "rejection",
}
OLD_NETWORK = "old network"
ON_HARDWARE = "on the hardware"  # a run's networks in the trigger's fixed-point arithmetic (judge/hardware.py)


def _expert_order(expert: str) -> tuple[int, str]:
    """Experts by number, "all" after them."""
    return (int(expert), "") if expert.lstrip("-").isdigit() else (1 << 30, expert)


def runs_table(result: ComparisonResult) -> Table:
    """The runs side by side: per expert (then over all experts) a row per run (followed by one of its network
    on the hardware, where it has a hardware equivalent) and one of the old network on the same rows, as the
    reference; the numbers of comparison.csv written as the verdict table writes them
    (`report.MEASURES`: titles, units, digits; efficiency and rejection with their binomial errors), and per
    expert the best run's value of each measure marked (`best_cells`). How each run came about (its data, its
    training files, best epochs, training time, folder) is in `runs_facts`: a row per run, which keeps this
    table within a page's width."""
    table = result.table
    judged_all = [j for per_run in result.metrics.values() for j in per_run.values()]
    shown = [key for key in SHOWN if not key.startswith("theta") or any(gives_theta(j) for j in judged_all)]
    facts = ["expert", "run", "rows", "predicted rows"]
    columns = [*facts, *(MEASURES[key].title for key in shown)]
    order = sorted(range(len(table)), key=lambda i: _expert_order(str(table["expert"].iloc[i])))  # stable: runs
    rows: list[list[Any]] = []
    at: dict[int, int] = {}  # a row of comparison.csv -> its row here
    for n, i in enumerate(order):
        row = table.iloc[i]
        expert = row["expert"]
        judged = result.metrics[row["run"]][expert]
        at[i] = len(rows)
        rows.append([expert, row["run"], int(row["rows"]), int(row["predicted_rows"]),
                     *(MEASURES[key].text(judged if key == "loss_ratio" else judged["new"]) for key in shown)])
        if "hardware" in judged:  # the same network on the trigger hardware, beside it
            rows.append([expert, f"{row['run']} {ON_HARDWARE}", int(row["rows"]),
                         int(judged["hardware"]["z"]["count"]),
                         *(None if key == "loss_ratio" else MEASURES[key].text(judged["hardware"]) for key in shown)])
        if n + 1 == len(order) or table["expert"].iloc[order[n + 1]] != expert:  # the expert's last run
            rows.append([expert, OLD_NETWORK, int(judged["rows"]), int(judged["old"]["z"]["count"]),
                         *(None if key == "loss_ratio" else MEASURES[key].text(judged["old"]) for key in shown)])
    place = {SHOWN[key]: len(facts) + k for k, key in enumerate(shown)}  # a column of comparison.csv -> here
    names = list(table.columns)
    better = {(at[i], place[names[j]]) for i, j in best_cells(table) if names[j] in place}
    note = ("Per expert, the best run's value is bold with a \u2713: lower resolution (\u03c3; trimmed \u03c3: "
            "without the 5% lowest and 5% highest residuals; 68% half-width), bias nearer zero, lower loss ratio, "
            f"higher efficiency and rejection. '{OLD_NETWORK}': the predictions the common data carry (the network "
            f"on the FPGA) on the same rows, for reference. '{ON_HARDWARE}': the run's network in the trigger's "
            "fixed-point arithmetic (bit for bit), where it has a hardware equivalent. Every number is in "
            "comparison.csv too.")
    return Table("Runs side by side", columns, rows, better=better, note=note)


def runs_facts(result: ComparisonResult, runs: list[Path]) -> Table:
    """A row per run: what the common data are to it, the id of its training files, each expert's best epoch,
    how long it trained, its folder."""
    rows = []
    for label, run in zip(result.labels, runs, strict=True):
        own = result.table[result.table["run"] == label]
        experts, overall = own[own["expert"] != "all"], own[own["expert"] == "all"]
        epochs = ", ".join(f"{e}: {MISSING if b is pd.NA else int(b)}"
                           for e, b in zip(experts["expert"], experts["best_epoch"], strict=True))
        seconds = as_number(overall["training_time_s"].iloc[0]) if len(overall) else math.nan
        rows.append([label, own["data"].iloc[0], own["training_data"].iloc[0], epochs or MISSING,
                     MISSING if math.isnan(seconds) else f"{seconds:.0f}", str(run)])
    return Table("Runs", ["run", "the common data are", "training data", "best epoch by expert", "training time [s]",
                          "folder"], rows,
                 note=f"'{OTHER_DATA}': the run's train and val files differ from the first run's. 'training data': "
                      "a short id of the content hashes of its train and val files. Each expert's training time is "
                      "in comparison.csv.")


def _diff_rows(diff: dict[str, Any]) -> list[list[Any]]:
    def show(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, default=str)

    rows = [[key, *map(show, values)] for key, values in diff["global"].items()]
    for expert, keys in diff["experts"].items():
        rows += [[f"{expert}.{key}", *map(show, values)] for key, values in keys.items()]
    for expert, having in diff["experts_only_in"].items():
        rows.append([f"{expert} (trained)", *["yes" if label in having else "no" for label in diff["runs"]]])
    return rows


def write_comparison(result: ComparisonResult, runs: list[Path], split: str, cut_cm: float, what: str,
                     figures: dict[str, dict[str, bytes]]) -> None:
    """Write the comparison's files into `result.folder` (see `comparison`'s module doc); `what`: the common
    data in words, `figures`: PNG bytes by group and name."""
    folder, table, diff = result.folder, result.table, result.config_diff
    csv = table.to_csv(index=False).encode("utf-8")
    write_atomic(folder / "comparison.csv", lambda f: f.write(csv))
    write_json(folder / "metrics.json", {"cut_cm": cut_cm, "data": result.data, "runs": result.metrics})
    write_json(folder / "config_diff.json", {**diff, "folders": {label: str(run) for label, run
                                                                  in zip(result.labels, runs, strict=True)},
                                             "data": result.data, "split": split, "cut_cm": cut_cm})
    for group, figs in figures.items():
        for name, png in figs.items():
            write_atomic(folder / "figures" / (re.sub(r"[^A-Za-z0-9]+", "_", f"{group} {name}").strip("_") + ".png"),
                         lambda f, png=png: f.write(png))

    sections: list[Any] = [
        Text("What is compared",
             f"{len(result.labels)} runs on one common data set: {what} ({sum(s['rows'] for s in result.data)} rows); "
             f"trigger cut |z| < {cut_cm:g} cm. 'Runs' says what the common data are to each run (its own split, "
             f"or new data) and '{OTHER_DATA}' where its train and val files differ from the first run's."
             + "".join(f"\n\n{n}." for n in result.notes)),
        runs_table(result),
        runs_facts(result, runs),
    ]
    for label in result.labels:
        per_run = result.metrics[label]
        per_expert = {f"expert_{e}": m for e, m in per_run.items() if e != "all"}
        sections.append(verdict_table(per_expert, per_run.get("all"), title=f"{label}: new vs old network"))
        on_hardware = hardware_table(per_expert, per_run.get("all"), title=f"{label}: on the hardware vs float")
        sections += [on_hardware] if on_hardware is not None else []
    for group, figs in figures.items():
        sections.append(Figures(f"Overlaid figures: {group}", {f"{group}: {name}": png for name, png in figs.items()}))
    sections += [
        Table("Config differences", ["key", *result.labels], _diff_rows(diff),
              note="only the keys that differ; expert_N keys only where an expert's value is not the global one"),
        KeyValues("Code", {**{f"git id of {label}": git for label, git in diff["git_ids"].items()},
                           **{f"{name} (this comparison)": version for name, version in library_versions().items()}}),
        KeyValues("Common data", {s["path"]: f"sha256 {s['sha256']}, {s['rows']} rows" for s in result.data}),
        Code("Config differences (JSON)", json.dumps(diff, indent=1, default=str)),
        Text("TensorBoard", "The runs' training curves side by side: .venv/bin/tensorboard --logdir_spec "
                            + ",".join(f"{label.replace(':', '_')}:{run}" for label, run
                                       in zip(result.labels, runs, strict=True))),
    ]
    write_report(folder / "report.html", f"Comparison {folder.name}", sections)
