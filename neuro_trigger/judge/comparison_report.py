"""What a comparison writes into its folder: comparison.csv, metrics.json, config_diff.json, the figures and
report.html (the table, each run's verdict, the overlaid figures, the config differences, code and data)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from neuro_trigger.judge.compared_runs import OTHER_DATA
from neuro_trigger.judge.comparison_table import ComparisonResult, best_cells
from neuro_trigger.run.folder import library_versions


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
    from neuro_trigger.judge.report import Code, Figures, KeyValues, Table, Text, verdict_table, write_report
    from neuro_trigger.run.files import write_atomic, write_json

    folder, table, diff = result.folder, result.table, result.config_diff
    csv = table.to_csv(index=False).encode()
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
             f"trigger cut |z| < {cut_cm:g} cm. The column 'data' says what the common data are to each run (its "
             f"own split, or new data) and '{OTHER_DATA}' where its train and val files differ from the first "
             f"run's; 'training_data' is a short id of those files' content hashes."
             + "".join(f"\n\n{n}." for n in result.notes)),
        Table("Runs side by side", list(table.columns),
              [[None if v is None or v is pd.NA else v for v in row] for row in table.itertuples(False)],
              better=best_cells(table), note="per expert, the best run's value is marked; lower resolution, |bias| "
                                             "and loss ratio are better, higher efficiency and rejection"),
    ]
    for label in result.labels:
        per_run = result.metrics[label]
        sections.append(verdict_table({f"expert_{e}": m for e, m in per_run.items() if e != "all"},
                                      per_run.get("all"), title=f"{label}: new vs old network"))
    for group, figs in figures.items():
        sections.append(Figures(f"Overlaid figures: {group}", {f"{group}: {name}": png for name, png in figs.items()}))
    sections += [
        Table("Config differences", ["key", *result.labels], _diff_rows(diff),
              note="only the keys that differ; expert_N keys only where an expert's value is not the global one"),
        KeyValues("Code", {**{f"git id of {label}": git for label, git in diff["git_ids"].items()},
                           **{f"{name} (this comparison)": version for name, version in library_versions().items()}}),
        KeyValues("Run folders", {label: str(run) for label, run in zip(result.labels, runs, strict=True)}),
        KeyValues("Common data", {s["path"]: f"sha256 {s['sha256']}, {s['rows']} rows" for s in result.data}),
        Code("Config differences (JSON)", json.dumps(diff, indent=1, default=str)),
        Text("TensorBoard", "The runs' training curves side by side: .venv/bin/tensorboard --logdir_spec "
                            + ",".join(f"{label.replace(':', '_')}:{run}" for label, run
                                       in zip(result.labels, runs, strict=True))),
    ]
    write_report(folder / "report.html", f"Comparison {folder.name}", sections)
