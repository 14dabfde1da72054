"""Statistics of neuroresults tables and their comparison with the real Belle II sample (real_sample).

Used by the toy's command line and by scripts/toy_vs_real.py. Works on a DataFrame or on the reader's
dict of arrays, on toy and on real data alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from neuro_trigger.data.neuroresults.format import INPUT_COLUMNS
from neuro_trigger.data.toy import detector
from neuro_trigger.data.toy.real_sample import (
    INPUT_STAT_COLUMNS,
    REAL_STATS,
    THETA10_EDGES,
    THETA_EDGES,
    Z10_EDGES,
    Z_EDGES,
)
from neuro_trigger.data.toy.reference import reference_fit

STEREO = (1, 3, 5, 7)


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
    z0 = np.asarray(table["RecoZ"], dtype=np.float64) * 100.0
    cot = 1.0 / np.tan(np.radians(np.asarray(table["RecoTheta"], dtype=np.float64) * 80.0 + 90.0))
    out = {}
    for sl in STEREO:
        relid = np.asarray(table[f"SL{sl}-relID"], dtype=np.float64)
        alpha = np.asarray(table[f"SL{sl}-alpha"], dtype=np.float64)
        sel = relid != 0
        cm_per_wire = detector.RADII[sl] * detector.WIRE_DPHI[sl] / np.tan(detector.STEREO_ANGLE[sl])
        z_layer = -(relid / detector.RELID_GAIN[sl] + detector.RELID_CENTRE[sl]) * cm_per_wire
        a = np.minimum(np.abs(alpha) / detector.ALPHA_SCALE, np.pi / 2)
        s = detector.RADII[sl] * np.where(a > 1e-9, a / np.sin(np.maximum(a, 1e-9)), 1.0)
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

