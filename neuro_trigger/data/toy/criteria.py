"""The criteria of issue 12: every quantity of a toy table against the real sample's, within a tolerance,
one row per criterion with pass or miss (scripts/toy_vs_real.py)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neuro_trigger.data.neuroresults.format import INPUT_COLUMNS
from neuro_trigger.data.toy.real_sample import (
    REAL_STATS,
    THETA10_EDGES,
    Z10_EDGES,
    Z_EDGES,
    read_real_input_stats,
)
from neuro_trigger.data.toy.stats import STEREO, input_stats, summarize

# Tolerances of the comparison (scripts/toy_vs_real.py). The untuned ones are the goals of issue 12;
# the tuned ones say how far the quantities the toy was tuned to may move.
TOLERANCE = {
    "slope_rel": 0.2,  # stereo relID slope against reco z: same sign, within 20%
    "r_abs": 0.1,  # its correlation, absolute
    "axial_r": 0.05,  # axial relIDs do not correlate with z (real: |r| < 0.05)
    "mean_in_std": 0.1,  # input mean within 0.1 real standard deviations
    "std_rel": 0.1,  # input std and non-zero std within 10%
    "frac_abs": 0.03,  # zero fraction and positive fraction, absolute
    "share_pp": 2.0,  # reco z (10 cm) and reco theta (10 deg) bin shares, percentage points
    "expert_pp": 1.0,  # tuned: expert shares, percentage points
    "duplicate_abs": 0.02,  # tuned: duplicate fraction
    "reco_per_event_pp": 2.0,  # tuned: events with k distinct reco tracks, percentage points
    "ntracks_mean_abs": 0.3,  # tuned: nTracks mean per row
    "old_rel": 0.1,  # tuned: old network z residual std and median |res|, relative
    "fine_z_pp": 1.5,  # tuned: reco z in the 11 bins of the original histogram, percentage points
}


CRITERIA_GROUPS = ("relID vs z", "input", "reco z", "reco theta", "tuned")


def _relid_r(table: Mapping[str, Any], sl: int) -> float:
    z = np.asarray(table["RecoZ"], dtype=np.float64)
    r = np.asarray(table[f"SL{sl}-relID"], dtype=np.float64)
    sel = r != 0
    return float(np.corrcoef(z[sel], r[sel])[0, 1]) if sel.sum() > 2 else float("nan")


def criteria(
    table: Mapping[str, Any], real_inputs: pd.DataFrame | None = None, real: dict[str, Any] = REAL_STATS
) -> pd.DataFrame:
    """Every comparison criterion, toy (table) against real: columns group, criterion, real, toy, limit, ok.

    Groups (CRITERIA_GROUPS): "relID vs z" (stereo slopes and correlations, axial correlations), "input"
    (27 inputs x mean, std, non-zero std, zero and positive fraction), "reco z", "reco theta" (shares in
    10 cm and 10 degree bins) and "tuned" (the quantities the toy was tuned to before issue 12).
    """
    tol = TOLERANCE
    real_inputs = read_real_input_stats() if real_inputs is None else real_inputs
    toy_inputs = input_stats(table)
    stats = summarize(table)
    out: list[tuple[str, str, float, float, str, bool]] = []

    def add(group: str, name: str, r: float, t: float, limit: str, ok: bool) -> None:
        out.append((group, name, float(r), float(t), limit, bool(ok)))

    for sl in STEREO:
        (rs, rr), (ts_, tr) = real["stereo_slope"][sl], stats["stereo_slope"][sl]
        ok = np.sign(ts_) == np.sign(rs) and abs(ts_ - rs) <= tol["slope_rel"] * abs(rs)
        add("relID vs z", f"SL{sl}-relID slope vs z (per m)", rs, ts_, f"same sign, ±{tol['slope_rel']:.0%}", ok)
        add("relID vs z", f"SL{sl}-relID r vs z", rr, tr, f"±{tol['r_abs']}", abs(tr - rr) <= tol["r_abs"])
    for sl in (0, 2, 4, 6, 8):
        t = _relid_r(table, sl)
        add("relID vs z", f"SL{sl}-relID r vs z (axial)", 0.0, t, f"|r| < {tol['axial_r']}", abs(t) < tol["axial_r"])

    for col in INPUT_COLUMNS:
        r, t = real_inputs.loc[col], toy_inputs.loc[col]
        lim = tol["mean_in_std"] * r["std"]
        add("input", f"{col} mean", r["mean"], t["mean"], f"±{lim:.4f}", abs(t["mean"] - r["mean"]) <= lim)
        for key in ("std", "nonzero_std"):
            ok = abs(t[key] - r[key]) <= tol["std_rel"] * r[key]
            add("input", f"{col} {key}", r[key], t[key], f"±{tol['std_rel']:.0%}", ok)
        for key in ("frac_zero", "frac_positive"):
            add("input", f"{col} {key}", r[key], t[key], f"±{tol['frac_abs']}", abs(t[key] - r[key]) <= tol["frac_abs"])

    for name, unit, edges in (("z", "cm", Z10_EDGES), ("theta", "deg", THETA10_EDGES)):
        rsh = _pct(real[f"{name}10_hist"])
        tsh = _pct(stats[f"{name}10_hist"])
        for i in range(len(rsh)):
            label = f"reco {name} in [{edges[i]:g}, {edges[i + 1]:g}) {unit}, %"
            ok = abs(tsh[i] - rsh[i]) <= tol["share_pp"]
            add(f"reco {name}", label, rsh[i], tsh[i], f"±{tol['share_pp']:g} pp", ok)

    def tuned(name: str, r: float, t: float, limit: float, relative: bool = False, unit: str = "") -> None:
        lim = limit * abs(r) if relative else limit
        text = f"±{limit:.0%}" if relative else f"±{limit:g}{unit}"
        add("tuned", name, r, t, text, abs(t - r) <= lim)

    for e in range(5):
        tuned(f"expert {e} share, %", 100 * real["expert_share"][e], 100 * stats["expert_share"][e],
              tol["expert_pp"], unit=" pp")
    rz, tz = _pct(real["z_hist"]), _pct(stats["z_hist"])
    for i in range(len(rz)):
        tuned(f"reco z in [{Z_EDGES[i]:g}, {Z_EDGES[i + 1]:g}) cm, %", rz[i], tz[i], tol["fine_z_pp"], unit=" pp")
    tuned("duplicate fraction", real["duplicate_fraction"], stats["duplicate_fraction"], tol["duplicate_abs"])
    r_counts = _pct([real["reco_per_event"].get(k, 0) for k in range(1, 7)])
    t_raw = [stats["reco_per_event"].get(k, 0) for k in range(1, 7)]
    t_raw[-1] += sum(c for k, c in stats["reco_per_event"].items() if k > 6)
    t_counts = _pct(t_raw)
    for k in range(6):
        label = f"events with {k + 1 if k < 5 else '6+'} distinct reco tracks, %"
        tuned(label, r_counts[k], t_counts[k], tol["reco_per_event_pp"], unit=" pp")
    tuned("nTracks mean per row", real["ntracks"]["mean"], stats["ntracks"]["mean"], tol["ntracks_mean_abs"])
    r_, t_ = real["ntracks"]["median"], stats["ntracks"]["median"]
    add("tuned", "nTracks median per row", r_, t_, "equal", r_ == t_)
    for key in [0, 1, 2, 3, 4, "ip"]:
        label = f"expert {key}" if key != "ip" else "|z| < 2 cm"
        for what, name in (("old_z_std", "std"), ("old_z_median_abs", "median |res|")):
            label_ = f"old net z residual {name}, {label} (cm)"
            tuned(label_, real[what][key], stats[what][key], tol["old_rel"], relative=True)
    return pd.DataFrame(out, columns=["group", "criterion", "real", "toy", "limit", "ok"])


def _pct(counts: Any) -> np.ndarray:
    c = np.asarray(counts, dtype=float)
    return 100.0 * c / max(c.sum(), 1.0)
