"""Statistics of neuroresults tables and their comparison with the real Belle II sample.

Used by the toy Monte Carlo (neuro_trigger.data.toy_mc re-exports summarize, format_comparison,
format_resolution and REAL_STATS) and by scripts/toy_vs_real.py. Works on a DataFrame or on the reader's
dict of arrays, on toy and on real data alike. The real numbers come from ../shared/belle2_neuroresults.md
and its per-input statistics file (REAL_INPUT_STATS_FILE), read with pandas.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults import INPUT_COLUMNS

REAL_INPUT_STATS_FILE = REPO_ROOT.parent / "shared" / "data" / "real_sample_input_stats.csv"
REAL_SAMPLE_FILE = REPO_ROOT.parent / "shared" / "data" / "neuroresults_sample.tsv"  # 51 real rows
INPUT_STAT_COLUMNS = [
    "mean", "std", "frac_zero", "frac_positive", "nonzero_mean", "nonzero_std", "p05", "p50", "p95"
]
STEREO = (1, 3, 5, 7)
Z_EDGES = np.array([-100.0, -50.0, -20.0, -10.0, -5.0, -2.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
THETA_EDGES = np.arange(10.0, 171.0, 20.0)
Z10_EDGES = np.arange(-100.0, 101.0, 10.0)
THETA10_EDGES = np.arange(10.0, 171.0, 10.0)

# Real-data statistics (belle2_neuroresults.md), in the structure summarize() returns.
REAL_STATS: dict[str, Any] = {
    "rows": 4998,
    "expert_share": {0: 0.673, 1: 0.096, 2: 0.039, 3: 0.128, 4: 0.065},
    "z_edges": Z_EDGES.tolist(),
    "z_hist": [39, 103, 162, 403, 48, 2227, 25, 94, 171, 620, 1106],
    "theta_edges": THETA_EDGES.tolist(),
    "theta_hist": [15, 755, 674, 782, 1332, 1258, 182, 0],
    "z10_hist": [0, 1, 3, 13, 22, 15, 27, 61, 162, 1249, 1548, 171, 326, 150, 144, 763, 223, 46, 25, 49],
    "theta10_hist": [1, 14, 345, 410, 341, 333, 345, 437, 613, 719, 809, 449, 167, 15, 0, 0],
    "duplicate_fraction": 0.55,
    "reco_per_event": {1: 1073, 2: 418, 3: 47, 4: 28, 5: 11, 6: 5},
    "ntracks": {"mean": 5.9, "median": 5.0, "max": 20},  # per row
    "rows_per_event": {"min": 1, "max": 15},
    "old_z_std": {0: 16.1, 1: 20.7, 2: 17.0, 3: 21.2, 4: 31.0, "ip": 11.2},
    "old_z_median_abs": {0: 6.6, 1: 9.6, 2: 8.8, 3: 8.0, 4: 17.1, "ip": 5.1},
    "old_theta_std": "12-20",
    "alpha_max": {0: 0.07, 8: 0.43},
    "relid_span": "about [-0.9, 0.9]",
    # least-squares slope of relID against reco z (per metre) and Pearson r, rows where relID != 0
    "stereo_slope": {1: (-0.77, -0.51), 3: (0.51, 0.36), 5: (-0.13, -0.14), 7: (0.06, 0.05)},
}

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


def read_real_input_stats(path: str | Path = REAL_INPUT_STATS_FILE) -> pd.DataFrame:
    """The real sample's per-input statistics: a DataFrame indexed by input column (27 rows)."""
    stats = pd.read_csv(path).set_index("column")
    missing = [c for c in INPUT_COLUMNS if c not in stats.index]
    if missing:
        raise ValueError(f"{path}: no statistics for {missing}")
    return stats.loc[INPUT_COLUMNS, INPUT_STAT_COLUMNS]


def input_stats(table: Mapping[str, Any]) -> pd.DataFrame:
    """Per-input statistics in the layout of the real statistics file (quantiles over all rows)."""
    rows = {}
    for col in INPUT_COLUMNS:
        x = np.asarray(table[col], dtype=np.float64)
        nz = x[x != 0]
        p05, p50, p95 = np.quantile(x, [0.05, 0.5, 0.95])
        rows[col] = [
            x.mean(), x.std(), np.mean(x == 0), np.mean(x > 0),
            nz.mean() if len(nz) else np.nan, nz.std() if len(nz) else np.nan, p05, p50, p95,
        ]
    return pd.DataFrame.from_dict(rows, orient="index", columns=INPUT_STAT_COLUMNS)


def stereo_slopes(table: Mapping[str, Any]) -> dict[int, tuple[float, float]]:
    """Per stereo superlayer: (slope of relID against reco z per metre, Pearson r), rows with relID != 0."""
    z = np.asarray(table["RecoZ"], dtype=np.float64)  # scaled z = z in metres
    out = {}
    for sl in STEREO:
        r = np.asarray(table[f"SL{sl}-relID"], dtype=np.float64)
        sel = r != 0
        zz, rr = z[sel] - z[sel].mean(), r[sel] - r[sel].mean()
        szr = (zz * rr).sum()
        out[sl] = (float(szr / (zz * zz).sum()), float(szr / np.sqrt((zz**2).sum() * (rr**2).sum())))
    return out


def layer_residuals(table: Mapping[str, Any]) -> pd.DataFrame:
    """Per stereo superlayer, how well relID gives z at that radius, with the toy's geometry and scaling.

    relID is unscaled (RELID_GAIN, RELID_CENTRE) and inverted through the stereo geometry into z at the
    layer, and compared with z0 + s cot(theta) from the reco track (s from alpha). Runs on real rows as on
    toy ones: where the toy's scaling and geometry are right, the real residuals are centred on 0 and as
    wide as the toy's. Columns: rows, mean, std, mad (median absolute deviation), r (z at layer vs truth).
    """
    from neuro_trigger.data import toy_mc  # toy_mc imports this module

    z0 = np.asarray(table["RecoZ"], dtype=np.float64) * 100.0
    cot = 1.0 / np.tan(np.radians(np.asarray(table["RecoTheta"], dtype=np.float64) * 80.0 + 90.0))
    out = {}
    for sl in STEREO:
        relid = np.asarray(table[f"SL{sl}-relID"], dtype=np.float64)
        alpha = np.asarray(table[f"SL{sl}-alpha"], dtype=np.float64)
        sel = relid != 0
        cm_per_wire = toy_mc.RADII[sl] * toy_mc.WIRE_DPHI[sl] / np.tan(toy_mc.STEREO_ANGLE[sl])
        z_layer = -(relid / toy_mc.RELID_GAIN[sl] + toy_mc.RELID_CENTRE[sl]) * cm_per_wire
        a = np.minimum(np.abs(alpha) / toy_mc.ALPHA_SCALE, np.pi / 2)
        s = toy_mc.RADII[sl] * np.where(a > 1e-9, a / np.sin(np.maximum(a, 1e-9)), 1.0)
        truth = z0 + s * cot
        d = (z_layer - truth)[sel]
        r = float(np.corrcoef(z_layer[sel], truth[sel])[0, 1]) if sel.sum() > 2 else float("nan")
        out[f"SL{sl}"] = [int(sel.sum()), d.mean(), d.std(), float(np.median(np.abs(d - np.median(d)))), r]
    return pd.DataFrame.from_dict(out, orient="index", columns=["rows", "mean", "std", "mad", "r"])


def _dense_key(*columns: np.ndarray) -> np.ndarray:
    """Dense int64 id per row of the combination of the given columns (equal rows, equal id)."""
    key = np.zeros(len(columns[0]), dtype=np.int64)
    for col in columns:
        _, inv = np.unique(np.asarray(col), return_inverse=True)
        _, key = np.unique(key * (int(inv.max(initial=0)) + 1) + inv.ravel(), return_inverse=True)
        key = key.ravel()
    return key


def summarize(table: Mapping[str, Any], reference: bool = False) -> dict[str, Any]:
    """Statistics of a table in the structure of REAL_STATS (plus a few toy-only entries).

    reference=True adds the reference fit's z residual std per expert (cm).
    """
    expert = np.asarray(table["Expert"], dtype=np.int64)
    n = len(expert)
    if n == 0:
        raise ValueError("summarize: the table has no rows")
    z = np.asarray(table["RecoZ"], dtype=np.float64) * 100.0
    theta = np.asarray(table["RecoTheta"], dtype=np.float64) * 80.0 + 90.0
    old_z = np.asarray(table["ScaleZ"], dtype=np.float64) * 100.0
    old_theta = np.asarray(table["ScaleTheta"], dtype=np.float64) * 80.0 + 90.0
    event = _dense_key(
        *(np.asarray(table[c], dtype=np.int64) for c in ("Experiment", "Run", "Subrun", "Event"))
    )
    reco = _dense_key(event, z, theta)
    n_reco = int(reco.max()) + 1
    reco_event = np.zeros(n_reco, dtype=np.int64)
    reco_event[reco] = event
    reco_per_event = np.bincount(np.bincount(reco_event))
    rows_per_event = np.bincount(event)
    ntracks = np.asarray(table["nTracks"], dtype=np.int64)  # per row, as the real statistics

    def res_stats(res: np.ndarray) -> tuple[float, float]:
        return (float(np.std(res)), float(np.median(np.abs(res)))) if len(res) else (float("nan"),) * 2

    old_z_std, old_z_med, old_t_std = {}, {}, {}
    for e in range(5):
        sel = expert == e
        old_z_std[e], old_z_med[e] = res_stats(z[sel] - old_z[sel])
        old_t_std[e] = float(np.std(theta[sel] - old_theta[sel])) if sel.any() else float("nan")
    ip = np.abs(z) < 2.0
    old_z_std["ip"], old_z_med["ip"] = res_stats(z[ip] - old_z[ip])

    alpha_max, relid_q = {}, {}
    present_frac = {}
    for sl in range(9):
        r = np.asarray(table[f"SL{sl}-relID"], dtype=np.float64)
        d = np.asarray(table[f"SL{sl}-driftT"], dtype=np.float64)
        a = np.asarray(table[f"SL{sl}-alpha"], dtype=np.float64)
        pres = (r != 0) | (d != 0) | (a != 0)
        present_frac[sl] = float(pres.mean())
        alpha_max[sl] = float(np.abs(a).max())
        relid_q[sl] = (
            (float(np.quantile(r[pres], 0.001)), float(np.quantile(r[pres], 0.999))) if pres.any() else ()
        )

    out: dict[str, Any] = {
        "rows": n,
        "events": len(rows_per_event),
        "expert_share": {e: float(np.mean(expert == e)) for e in range(5)},
        "z_edges": Z_EDGES.tolist(),
        "z_hist": np.histogram(z, Z_EDGES)[0].tolist(),
        "theta_edges": THETA_EDGES.tolist(),
        "theta_hist": np.histogram(theta, THETA_EDGES)[0].tolist(),
        "z10_hist": np.histogram(z, Z10_EDGES)[0].tolist(),
        "theta10_hist": np.histogram(theta, THETA10_EDGES)[0].tolist(),
        "duplicate_fraction": 1.0 - n_reco / n,
        "reco_per_event": {k: int(c) for k, c in enumerate(reco_per_event) if k > 0},
        "ntracks": {
            "mean": float(ntracks.mean()),
            "median": float(np.median(ntracks)),
            "max": int(ntracks.max()),
        },
        "rows_per_event": {"min": int(rows_per_event.min()), "max": int(rows_per_event.max())},
        "old_z_std": old_z_std,
        "old_z_median_abs": old_z_med,
        "old_theta_std": old_t_std,
        "alpha_max": alpha_max,
        "relid_span": relid_q,
        "present_fraction": present_frac,
        "stereo_slope": stereo_slopes(table),
    }
    if reference:
        from neuro_trigger.data.toy_mc import reference_fit  # toy_mc imports this module

        fit = reference_fit(table) * np.array([100.0, 80.0])
        ref_std, ref_med, ref_t = {}, {}, {}
        for e in range(5):
            sel = (expert == e) & np.isfinite(fit[:, 0])
            ref_std[e], ref_med[e] = res_stats(z[sel] - fit[sel, 0])
            ref_t[e] = float(np.std(theta[sel] - 90.0 - fit[sel, 1])) if sel.any() else float("nan")
        sel = ip & np.isfinite(fit[:, 0])
        ref_std["ip"], ref_med["ip"] = res_stats(z[sel] - fit[sel, 0])
        out["ref_z_std"], out["ref_z_median_abs"], out["ref_theta_std"] = ref_std, ref_med, ref_t
    return out


def _percent(counts: list[int]) -> list[str]:
    total = max(sum(counts), 1)
    return [f"{100.0 * c / total:.1f}%" for c in counts]


def format_comparison(toy: dict[str, Any], real: dict[str, Any] = REAL_STATS) -> str:
    """A markdown table comparing toy statistics (from summarize) with the real sample's."""
    rows: list[tuple[str, str, str]] = []
    for e in range(5):
        rows.append(
            (
                f"expert {e} share",
                f"{100 * real['expert_share'][e]:.1f}%",
                f"{100 * toy['expert_share'][e]:.1f}%",
            )
        )
    for name, unit in (("z", "cm"), ("theta", "deg")):
        edges = real[f"{name}_edges"]
        pairs = zip(_percent(real[f"{name}_hist"]), _percent(toy[f"{name}_hist"]), strict=True)
        for i, (r, t) in enumerate(pairs):
            rows.append((f"reco {name} in [{edges[i]:g}, {edges[i + 1]:g}) {unit}", r, t))
    rows.append(
        (
            "duplicate rows",
            f"{100 * real['duplicate_fraction']:.0f}%",
            f"{100 * toy['duplicate_fraction']:.1f}%",
        )
    )
    toy_counts = [toy["reco_per_event"].get(k, 0) for k in range(1, 7)]
    toy_counts[-1] += sum(c for k, c in toy["reco_per_event"].items() if k > 6)
    pairs = zip(_percent(list(real["reco_per_event"].values())), _percent(toy_counts), strict=True)
    for k, (r, t) in enumerate(pairs, start=1):
        rows.append((f"events with {k if k < 6 else '6+'} distinct reco tracks", r, t))
    rn, tn = real["ntracks"], toy["ntracks"]
    rows.append(
        (
            "nTracks per row: mean / median / max",
            f"{rn['mean']:g} / {rn['median']:g} / {rn['max']}",
            f"{tn['mean']:.1f} / {tn['median']:g} / {tn['max']}",
        )
    )
    rr, tr = real["rows_per_event"], toy["rows_per_event"]
    rows.append(("rows per event", f"{rr['min']} to {rr['max']}", f"{tr['min']} to {tr['max']}"))
    for key in [0, 1, 2, 3, 4, "ip"]:
        label = f"expert {key}" if key != "ip" else "\\|z\\| < 2 cm"
        rows.append(
            (
                f"old net z residual std / median\\|res\\|, {label} (cm)",
                f"{real['old_z_std'][key]:.1f} / {real['old_z_median_abs'][key]:.1f}",
                f"{toy['old_z_std'][key]:.1f} / {toy['old_z_median_abs'][key]:.1f}",
            )
        )
    t_std = ", ".join(f"{toy['old_theta_std'][e]:.1f}" for e in range(5))
    rows.append(("old net theta residual std, experts 0-4 (deg)", real["old_theta_std"], t_std))
    for sl in (0, 8):
        rows.append((f"max \\|alpha\\| SL{sl}", f"{real['alpha_max'][sl]}", f"{toy['alpha_max'][sl]:.3f}"))
    spans = ", ".join(f"SL{sl} [{lo:.2f}, {hi:.2f}]" for sl, (lo, hi) in toy["relid_span"].items())
    rows.append(("relID 0.1%-99.9% range", real["relid_span"], spans))
    for sl in STEREO:
        (rs, rr_), (ts, tr_) = real["stereo_slope"][sl], toy["stereo_slope"][sl]
        rows.append(
            (f"SL{sl} relID vs reco z: slope per m / r", f"{rs:+.2f} / {rr_:+.2f}", f"{ts:+.2f} / {tr_:+.2f}")
        )
    head = [f"| quantity | real ({real['rows']} rows) | toy ({toy['rows']} rows) |", "|---|---|---|"]
    return "\n".join(head + [f"| {q} | {r} | {t} |" for q, r, t in rows])


def format_resolution(toy: dict[str, Any]) -> str:
    """A markdown table: old network vs reference fit residuals (from summarize(..., reference=True))."""
    lines = [
        "| rows | old net z std / median\\|res\\| (cm) | reference fit z std / median\\|res\\| (cm) "
        "| old net theta std (deg) | reference fit theta std (deg) |",
        "|---|---|---|---|---|",
    ]
    for key in [0, 1, 2, 3, 4, "ip"]:
        label = f"expert {key}" if key != "ip" else "\\|z\\| < 2 cm"
        old_t = f"{toy['old_theta_std'][key]:.1f}" if key != "ip" else "-"
        ref_t = f"{toy['ref_theta_std'][key]:.1f}" if key != "ip" else "-"
        lines.append(
            f"| {label} | {toy['old_z_std'][key]:.1f} / {toy['old_z_median_abs'][key]:.1f} "
            f"| {toy['ref_z_std'][key]:.1f} / {toy['ref_z_median_abs'][key]:.1f} | {old_t} | {ref_t} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# The criteria of issue 12: one row per criterion, pass or miss.
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
