"""What every report page says first: the verdict of `trigger.judge` outputs (`verdict_table`, the measures it
shows, `MEASURES`, with their titles, units and digits; `hardware_table`, the new network on the trigger
hardware beside itself in floating point), and the constants of report.html. The page itself
(sections, templates, rendering) is `judge/page.py`, whose names are here too for the modules that build pages;
`judge/run_report.py` builds the report of a training run's folder with these.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from neuro_trigger.judge.page import (
    BETTER_MARK,
    FIGURE_DPI,
    MISSING,
    PNG_SIGNATURE,
    Code,
    Figures,
    KeyValues,
    Section,
    Table,
    Text,
    format_value,
    png_bytes,
    render_report,
    write_report,
)
from neuro_trigger.judge.trigger import BACKGROUND_CM, IP_CM, TRIGGER_CUT_CM

__all__ = ["BETTER_MARK", "FIGURE_DPI", "FIGURE_SPLITS", "MEASURES", "MISSING", "PNG_SIGNATURE", "REPORT_FILE",
           "VERDICT_SPLITS", "Code", "Figures", "KeyValues", "Measure", "Section", "Table", "Text", "as_number",
           "expert_label", "format_value", "gives_theta", "hardware_table", "lookup", "png_bytes", "render_report",
           "verdict_table", "write_report"]

REPORT_FILE = "report.html"
VERDICT_SPLITS = ("test", "val")  # the held-out split first
FIGURE_SPLITS = ("test",)  # the val split has its verdict table only: its figures would double the drawing time


# ---------------------------------------------------------------------------------------------- the verdict
def lookup(d: Any, *keys: str) -> Any:
    """d[k1][k2]... or None where a level is missing."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def as_number(value: Any) -> float:
    """A float, NaN for None (JSON's NaN) or anything not a number."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan


def _fixed(value: Any, digits: int = 2) -> str:
    v = as_number(value)
    return MISSING if math.isnan(v) else f"{v:.{digits}f}"


def _percent(value: Any, error: Any) -> str:
    v, e = as_number(value), as_number(error)
    if math.isnan(v):
        return MISSING
    return f"{100 * v:.1f}" if math.isnan(e) else f"{100 * v:.1f} \u00b1 {100 * e:.1f}"


def _count(value: Any) -> str:
    v = as_number(value)
    return MISSING if math.isnan(v) else f"{int(v):,}"


def expert_label(key: str) -> str:
    return key.replace("_", " ")


@dataclass(frozen=True)
class Measure:
    """One number of `metrics.judge`'s output as every report shows it: its column title with the unit, where
    it sits (`path` into the dict of one network, or of the judge output for the loss ratio), its decimals
    (a fraction: in percent, 1 decimal, with its binomial error where known), and which value is the better
    one: "low", "high" or "zero" (nearer zero). The verdict table and a comparison's table both take their
    columns from here, so that a number reads the same in each."""

    title: str
    path: tuple[str, ...]
    better: str
    decimals: int = 2
    percent: bool = False

    def value(self, judged: Any) -> float:
        """The number in `judged` (a network's dict of judge()), NaN where missing."""
        return as_number(lookup(judged, *self.path))

    def text(self, judged: Any) -> str:
        """The number in `judged` as the reports write it ('\u2013' where missing)."""
        if self.percent:
            return _percent(self.value(judged), lookup(judged, *self.path[:-1], self.path[-1] + "_err"))
        return _fixed(self.value(judged), self.decimals)


MEASURES: dict[str, Measure] = {
    "z_std": Measure("z \u03c3 [cm]", ("z", "std"), "low"),
    "z_trimmed_std": Measure("z trimmed \u03c3 [cm]", ("z", "trimmed_std"), "low"),
    "z_half_width_68": Measure("z 68% half-width [cm]", ("z", "half_width_68"), "low"),
    "z_mean": Measure("z bias (mean) [cm]", ("z", "mean"), "zero"),
    "z_median": Measure("z median [cm]", ("z", "median"), "zero"),
    "theta_std": Measure("\u03b8 \u03c3 [deg]", ("theta", "std"), "low"),
    "theta_half_width_68": Measure("\u03b8 68% half-width [deg]", ("theta", "half_width_68"), "low"),
    "efficiency": Measure("efficiency [%]", ("trigger", "efficiency"), "high", percent=True),
    "rejection": Measure("background rejection [%]", ("trigger", "rejection"), "high", percent=True),
    "loss_ratio": Measure("loss new / old", ("vs_old", "loss"), "low", decimals=3),  # of the judge output
}
VERDICT_PAIRS = ("z_std", "z_half_width_68", "z_mean", "efficiency", "rejection")  # new beside old
THETA_PAIRS = ("theta_std",)  # where the networks give theta
HARDWARE_PAIRS = ("z_std", "z_half_width_68", "efficiency", "rejection")  # float beside hardware
# how far the new network on the hardware strays from itself in floating point (judge/hardware.py), of the
# judge output: shown where some network has a hardware equivalent
HARDWARE_MEASURES = (Measure("max |\u0394z| hardware \u2212 float [cm]", ("hardware_vs_float", "z_abs_diff_max_cm"),
                             "low", decimals=3),
                     Measure("mean |\u0394z| hardware \u2212 float [cm]",
                             ("hardware_vs_float", "z_abs_diff_mean_cm"), "low", decimals=4),
                     Measure("flipped decisions", ("hardware_vs_float", "flipped"), "low", decimals=0))


def gives_theta(judged: Any) -> bool:
    """Whether the new network of a judge() output gives theta (out_size 2)."""
    return lookup(judged, "new", "theta") is not None


def _better(new: float, old: float, rule: str) -> str | None:
    """'new', 'old' or None (a tie, or a value missing)."""
    if math.isnan(new) or math.isnan(old):
        return None
    if rule == "zero":
        new, old = abs(new), abs(old)
    if new == old:
        return None
    lower_wins = rule in ("low", "zero")
    return "new" if (new < old) == lower_wins else "old"


def verdict_table(per_expert: dict[str, dict], overall: dict | None = None, title: str = "Verdict") -> Table:
    """The verdict of `metrics.judge` outputs: a row per expert (and "all experts" from `overall`) with
    z resolution new/old (std, 68% half-width), z bias, trigger efficiency and background rejection at
    the cut (with binomial errors), theta resolution where the networks give theta, and the loss against
    the old network's; the better of new and old marked in each pair (for a bias: the one nearer zero). The
    hardware's numbers are in `hardware_table`, beside it."""
    judged = dict(per_expert)
    if overall is not None:
        judged["all experts"] = overall
    pairs = [MEASURES[key] for key in VERDICT_PAIRS]
    if any(gives_theta(j) for j in judged.values()):
        pairs += [MEASURES[key] for key in THETA_PAIRS]
    loss = MEASURES["loss_ratio"]
    columns = ["expert", "rows"]
    for m in pairs:
        columns += [f"{m.title} new", f"{m.title} old"]
    columns.append(loss.title)
    rows: list[list[Any]] = []
    better: set[tuple[int, int]] = set()
    cuts, without_old = set(), 0
    for i, (key, j) in enumerate(judged.items()):
        row: list[Any] = [expert_label(key), _count(j.get("rows"))]
        for m in pairs:
            new, old = lookup(j, "new"), lookup(j, "old")
            row += [m.text(new), m.text(old)]
            winner = _better(m.value(new), m.value(old), m.better)
            if winner is not None:
                better.add((i, len(row) - (2 if winner == "new" else 1)))
        row.append(loss.text(j))
        rows.append(row)
        if j.get("cut_cm") is not None:
            cuts.add(float(j["cut_cm"]))
        if key != "all experts":
            n = as_number(j.get("rows_without_old"))
            without_old += 0 if math.isnan(n) else int(n)
    cut = ", ".join(f"{c:g}" for c in sorted(cuts)) or f"{TRIGGER_CUT_CM:g}"
    any_j = next(iter(judged.values()), {})
    ip, background = any_j.get("ip_cm", IP_CM), any_j.get("background_cm", BACKGROUND_CM)
    note = (f"{BETTER_MARK} bold: the better of new and old. The trigger keeps a track when |z pred| < {cut} cm; "
            f"efficiency: kept tracks from the interaction point (|reco z| < {ip:g} cm), background rejection: "
            f"removed tracks with |reco z| > {background:g} cm (binomial errors). z residual = reco z \u2212 "
            f"predicted z. Old values and 'loss new / old' use the rows where both networks give an output")
    note += f" ({without_old:,} rows without an old output left out)." if without_old else "."
    return Table(title, columns, rows, better, note)


def hardware_table(per_expert: dict[str, dict], overall: dict | None = None,
                   title: str = "Verdict on the hardware") -> Table | None:
    """The verdict's companion where some network has a hardware equivalent (judge/hardware.py): a row per
    expert (and "all experts") with the new network's z resolution, efficiency and background rejection at the
    cut in floating point beside the same on the trigger hardware, then the largest and mean |z hardware -
    z float| and the trigger decisions that flip; None where no network has hardware outputs. A table of its
    own beside the verdict, which would not fit a page's width with a third column per measure."""
    judged = dict(per_expert)
    if overall is not None:
        judged["all experts"] = overall
    if not any("hardware" in j for j in judged.values()):
        return None
    pairs = [MEASURES[key] for key in HARDWARE_PAIRS]
    if any(gives_theta(j) for j in judged.values()):
        pairs += [MEASURES[key] for key in THETA_PAIRS]
    columns = ["expert", "rows"]
    for m in pairs:
        columns += [f"{m.title} float", f"{m.title} hardware"]
    columns += [m.title for m in HARDWARE_MEASURES]
    rows = []
    for key, j in judged.items():
        row: list[Any] = [expert_label(key), _count(lookup(j, "hardware_vs_float", "rows"))]
        for m in pairs:
            row += [m.text(lookup(j, "new")), m.text(lookup(j, "hardware"))]
        rows.append(row + [m.text(j) for m in HARDWARE_MEASURES])
    cut = next((j["cut_cm"] for j in judged.values() if j.get("cut_cm") is not None), TRIGGER_CUT_CM)
    note = ("hardware: the new network in the trigger's fixed-point arithmetic, bit for bit (the precision of its "
            "expert's config), on the rows of its float self. \u0394z = z hardware \u2212 z float; flipped: "
            f"tracks the cut |z| < {cut:g} cm keeps in one of them and drops in the other. {MISSING} where a "
            "network has no hardware equivalent (or, over all experts, where one of them has none).")
    return Table(title, columns, rows, note=note)

