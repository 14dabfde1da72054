"""The comparison's table: one row per (run, expert) and per (run, "all") of judge() numbers and run facts
(comparison.csv), the best run's cells per expert, and the table as text for the terminal."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# the table's columns, in order; "lower"/"higher": which value is the better one (marked in the report)
COLUMNS: dict[str, str | None] = {
    "run": None, "expert": None, "data": None, "training_data": None, "rows": None, "predicted_rows": None,
    "z_std_cm": "lower", "z_trimmed_std_cm": "lower", "z_half_width_68_cm": "lower",
    "z_mean_cm": "abs", "z_median_cm": "abs", "old_z_std_cm": None,
    "theta_std_deg": "lower", "theta_half_width_68_deg": "lower", "loss_vs_old": "lower",
    "efficiency": "higher", "old_efficiency": None, "rejection": "higher", "old_rejection": None,
    "best_epoch": None, "training_time_s": None,
}
# the new network on the hardware (judge/hardware.py), beside the float network: left out of the table where no
# run's networks have a hardware equivalent, empty for a run whose networks have none
HARDWARE_COLUMNS: dict[str, tuple[str, ...]] = {
    "hw_z_std_cm": ("hardware", "z", "std"), "hw_z_half_width_68_cm": ("hardware", "z", "half_width_68"),
    "hw_efficiency": ("hardware", "trigger", "efficiency"), "hw_rejection": ("hardware", "trigger", "rejection"),
    "hw_z_abs_diff_max_cm": ("hardware_vs_float", "z_abs_diff_max_cm"),
    "hw_z_abs_diff_mean_cm": ("hardware_vs_float", "z_abs_diff_mean_cm"),
    "hw_flipped": ("hardware_vs_float", "flipped"),
}


@dataclass
class ComparisonResult:
    """What a comparison wrote: its folder, the table, and what went into it."""

    folder: Path
    table: pd.DataFrame
    labels: list[str]
    config_diff: dict[str, Any]
    data: list[dict[str, Any]]  # the common data files: [{path, sha256, rows}]
    metrics: dict[str, dict[str, dict]] = field(default_factory=dict)  # run label -> expert ("2", "all") -> judge()
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------- the table
def table_row(label: str, expert: str, note: str, training: str, judged: dict, best_epoch: int | None,
              seconds: float) -> dict:
    """One row of the table: a run's expert (or "all") as judge() judged it, with the run's facts."""
    new, old = judged["new"], judged["old"]
    theta = new.get("theta") or {}
    return {
        "run": label, "expert": expert, "data": note, "training_data": training, "rows": judged["rows"],
        "predicted_rows": new["z"]["count"],
        "z_std_cm": new["z"]["std"], "z_trimmed_std_cm": new["z"]["trimmed_std"],
        "z_half_width_68_cm": new["z"]["half_width_68"], "z_mean_cm": new["z"]["mean"],
        "z_median_cm": new["z"]["median"], "old_z_std_cm": old["z"]["std"],
        "theta_std_deg": theta.get("std", math.nan), "theta_half_width_68_deg": theta.get("half_width_68", math.nan),
        "loss_vs_old": judged["vs_old"]["loss"],
        "efficiency": new["trigger"]["efficiency"], "old_efficiency": old["trigger"]["efficiency"],
        "rejection": new["trigger"]["rejection"], "old_rejection": old["trigger"]["rejection"],
        "best_epoch": best_epoch, "training_time_s": seconds,
        **{column: _found(judged, path) for column, path in HARDWARE_COLUMNS.items()},
    }


def _found(judged: dict, path: tuple[str, ...]) -> Any:
    """judged[p1][p2]...; None where a level is missing (a network without hardware outputs)."""
    for key in path:
        if not isinstance(judged, dict) or key not in judged:
            return None
        judged = judged[key]
    return judged


def frame(rows: list[dict]) -> pd.DataFrame:
    """The rows as the table, its columns in COLUMNS' order with integer counts and epochs, then the hardware's
    where any run has them."""
    hardware = [c for c in HARDWARE_COLUMNS if any(row.get(c) is not None for row in rows)]
    table = pd.DataFrame(rows, columns=[*COLUMNS, *hardware])
    table["best_epoch"] = table["best_epoch"].astype("Int64")
    if "hw_flipped" in table:
        table["hw_flipped"] = table["hw_flipped"].astype("Int64")
    for column in hardware:
        if column != "hw_flipped":
            table[column] = table[column].astype("float64")  # None (no hardware outputs) as NaN
    for column in ("rows", "predicted_rows"):
        table[column] = table[column].astype("int64")
    return table


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def best_cells(table: pd.DataFrame) -> set[tuple[int, int]]:
    """(row, column) positions of the best run's value per expert and metric (lowest resolution, |bias|, loss
    ratio; highest efficiency, rejection), for marking in the report. Ties mark every best run."""
    cells: set[tuple[int, int]] = set()
    columns = list(table.columns)
    for _, group in table.groupby("expert", sort=False):
        if len(group) < 2:
            continue
        for column, better in COLUMNS.items():
            if better is None:
                continue
            values = np.array([_number(v) for v in group[column]])
            if better == "abs":
                values = np.abs(values)
            if better == "higher":
                values = -values
            if not np.isfinite(values).any():
                continue
            best = np.nanmin(values)
            for position, value in zip(group.index, values, strict=True):
                if value == best:
                    cells.add((int(table.index.get_loc(position)), columns.index(column)))
    return cells


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or value is pd.NA:
        return ""
    if isinstance(value, float | np.floating):
        return "" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


# short headers of the terminal table: (header, column(s)); a pair prints "new (old)"
_TEXT_COLUMNS: list[tuple[str, tuple[str, ...]]] = [
    ("run", ("run",)), ("expert", ("expert",)), ("rows", ("predicted_rows",)),
    ("z std cm", ("z_std_cm", "old_z_std_cm")), ("z 68% cm", ("z_half_width_68_cm",)),
    ("z bias cm", ("z_mean_cm",)), ("theta std", ("theta_std_deg",)), ("loss/old", ("loss_vs_old",)),
    ("eff (old)", ("efficiency", "old_efficiency")), ("rej (old)", ("rejection", "old_rejection")),
    ("hw z std", ("hw_z_std_cm",)), ("max |dz|", ("hw_z_abs_diff_max_cm",)), ("flips", ("hw_flipped",)),
    ("best ep", ("best_epoch",)), ("time s", ("training_time_s",)), ("data", ("data",)),
]


def format_table(table: pd.DataFrame) -> str:
    """The comparison table as compact text for the terminal: one line per (run, expert), 3-4 digits per value,
    the old network's value in parentheses beside the new one's where the table has both; the hardware's z
    resolution, largest |z_hardware - z_float| and flipped decisions where the table has them."""
    shown = [(header, names) for header, names in _TEXT_COLUMNS if all(n in table for n in names)]
    lines = []
    for _, row in table.iterrows():
        cells = []
        for _, names in shown:
            if len(names) == 2:
                cells.append(f"{_fmt(row[names[0]], 3)} ({_fmt(row[names[1]], 3)})")
            else:
                cells.append(_fmt(row[names[0]], 3 if names[0] not in ("run", "data") else 4))
        lines.append(cells)
    headers = [h for h, _ in shown]
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    text = ["  ".join(h.ljust(w) if i in (0, len(headers) - 1) else h.rjust(w)
                      for i, (h, w) in enumerate(zip(headers, widths, strict=True)))]
    for line in lines:
        text.append("  ".join(c.ljust(w) if i in (0, len(headers) - 1) else c.rjust(w)
                              for i, (c, w) in enumerate(zip(line, widths, strict=True))))
    return "\n".join(line.rstrip() for line in text)
