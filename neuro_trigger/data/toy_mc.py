"""Toy Monte Carlo of the neural z-vertex trigger's inputs: the embedded default data set.

Helix tracks from a z0 mixture (interaction point plus a lopsided beam background) cross the nine
CDC superlayers. A superlayer has a segment only while the track is inside the chamber's z extent
at that radius, so the missing stereo superlayer (hence the expert) follows from z0 and theta.
Stereo wires are tilted, so the azimuthal offset of a stereo hit from the 2D track grows with the
track's z at that radius: the 27 inputs determine z0 and theta as the real ones do. Everything is
vectorised with numpy (no loop over tracks) and written in the real neuroresults format.
See docs/toy_mc.md for the model and its comparison with real data.
"""

from __future__ import annotations

import argparse
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults import COLUMNS, INPUT_COLUMNS, INT_COLUMNS, write_table

TOY_VERSION = "2"
"""Bumped whenever the generator's output (or the files' bytes) changes, so that a stale cached default data
set is rebuilt. 2: relID clipped to [-1, 1]; gzip header without a time stamp (byte-identical files)."""

# ---------------------------------------------------------------------------------------------
# Geometry (cm, rad). Radii of the priority layers of SL0..SL8 and wires per layer are those of
# the Belle II CDC (the radii reproduce the real alpha ratios between superlayers).
RADII = np.array([19.8, 29.8, 39.7, 52.1, 61.4, 72.5, 82.8, 93.9, 104.2])
N_WIRES = np.array([160, 160, 192, 224, 256, 288, 320, 352, 384])
WIRE_DPHI = 2.0 * np.pi / N_WIRES
AXIAL_SL = np.array([0, 2, 4, 6, 8])
STEREO_SL = np.array([1, 3, 5, 7])
STEREO_ANGLE = np.array([0.0, 0.045, 0.0, -0.055, 0.0, 0.065, 0.0, -0.075, 0.0])
# Chamber z extent at radius r, linear in r: z_back(r) <= z <= z_front(r) (the CDC is asymmetric).
Z_FRONT = (80.0, 0.95)  # z_front(r) = a + b * (r - RADII[0])
Z_BACK = (-50.0, -0.36)  # z_back(r) = a + b * (r - RADII[0])
EXPERT_OF_MISSING_STEREO = {None: 0, 7: 1, 5: 2, 3: 3, 1: 4}

# Magnetic field and the crossing angle alpha = ALPHA_SCALE * asin(r / 2 rho), signed by charge.
B_FIELD = 1.5  # T
ALPHA_SCALE = 0.482  # fitted to the real alpha values; with PT_MIN gives max |alpha| 0.07 (SL0) / 0.43 (SL8)
# 1/pt is uniform in [1/PT_MAX, 1/PT_MIN] (GeV^-1), as the 2D finder's Hough cells are uniform in curvature.
PT_MIN, PT_MAX = 0.3, 20.0
CURVATURE_RESOLUTION = 0.03  # relative error of the 2D track's curvature, enters alpha

# Hit model, in wire units. relID = scale * (W - p): W the hit wire, p the 2D track's crossing in wire
# units; driftT = 2 * (hit - W) (signed, left/right), missing in a fraction of segments.
HIT_SIGMA = 0.1  # hit position error relative to the 2D track (wire units), stereo and axial
AXIAL_SIGMA = 0.6  # axial layers: the 2D track's own azimuth error at that layer (wire units)
AXIAL_RELID_SCALE = np.array([0.35, 0.0, 0.3, 0.0, 0.35, 0.0, 0.4, 0.0, 0.3])
DRIFT_SIGMA = 0.06  # smearing of the scaled drift time
DRIFT_FLIP = 0.05  # probability that the left/right sign is wrong
DRIFT_MISSING = np.array([0.3, 0.35, 0.55, 0.3, 0.3, 0.35, 0.3, 0.25, 0.45])
STEREO_RELID_SPAN = 0.8  # the largest |stereo offset| inside the chamber maps to this relID

# Segment finder inefficiency per superlayer, on top of the chamber acceptance. The stereo values are
# tuned to the real expert shares (experts 2 and 3 cannot come from the acceptance of a straight line).
INEFFICIENCY = np.array([0.25, 0.0651, 0.05, 0.1581, 0.06, 0.0562, 0.08, 0.0837, 0.12])
MIN_AXIAL = 3  # the 2D finder needs this many axial segments

# Track sources. z0: a narrow interaction-point peak plus a piecewise uniform background; theta piecewise
# uniform. The weights are before acceptance, tuned so that the accepted rows match the real histograms.
Z_EDGES = np.array([-100.0, -50.0, -20.0, -10.0, -5.0, -2.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
Z_BACKGROUND_WEIGHTS = np.array(
    [0.0173, 0.0234, 0.031, 0.0758, 0.0092, 0.0, 0.0046, 0.0175, 0.0311, 0.12, 0.255]
)
IP_WEIGHT = 0.415
IP_SIGMA = 0.1  # cm, luminous region plus reconstruction
THETA_EDGES = np.arange(10.0, 171.0, 20.0)
THETA_WEIGHTS = np.array([0.0956, 0.1734, 0.117, 0.125, 0.2083, 0.204, 0.0768, 0.0])
RECO_SIGMA = (0.05, 0.1)  # offline reconstruction error of z (cm) and theta (deg)

# Event structure: distinct reco tracks per event (1..6, before dropped rows), hardware tracks (rows)
# per reco track: geometric(DUPLICATE_P) >= 1, at most MAX_COPIES.
RECO_PER_EVENT = np.array([0.5684, 0.3581, 0.0279, 0.023, 0.0044, 0.0183])
DUPLICATE_P = 0.43
MAX_COPIES = 8
REDRAW = 0.35  # a duplicate re-draws the segment of a superlayer with this probability
UNMATCHED_MEAN = 2.7  # hardware tracks per event not matched to a reco track (not written)
MAX_NTRACKS = 20
MAX_ROWS_PER_EVENT = 15
EVENTS_PER_RUN = 20000
CHUNK_EVENTS = 25_000  # events generated per vectorised step (bounds the temporaries' memory)
EXPERIMENT = 0  # Belle II convention for Monte Carlo

# The previous network's prediction: biased towards the centre, core + tail resolution per expert,
# tuned to the real residuals.
OLD_Z_BIAS = (4.0, 0.8, -0.1)  # old z = a + b z + c z |z| / 100 (cm)
OLD_Z_SIGMA = np.array([4.3, 9.3, 8.2, 6.6, 17.5])  # core, per expert (cm)
OLD_Z_TAIL_SIGMA = np.array([23.8, 31.0, 18.6, 35.7, 22.3])  # tail, per expert (cm)
OLD_Z_TAIL = 0.15  # tail fraction
OLD_Z_GROWTH = 1.5  # both sigmas grow by (1 + growth |z| / 100): background tracks are measured worse
OLD_THETA_SHRINK = 0.8  # old theta - 90 = shrink * (theta - 90)
OLD_THETA_SIGMA = np.array([8.0, 10.0, 9.0, 10.0, 13.0])  # core, per expert (deg)
OLD_THETA_TAIL_SIGMA = np.array([24.0, 30.0, 27.0, 30.0, 39.0])  # tail, per expert (deg)
OLD_THETA_TAIL = 0.12  # tail fraction

# Default data set.
DEFAULT_DIR = REPO_ROOT / "data_cache" / "toy"
SPLITS = ("train", "val", "test")
DEFAULT_FILES = {split: f"data_cache/toy/neuroresults_random{i + 1}.gz" for i, split in enumerate(SPLITS)}
DEFAULT_TRACKS = {"train": 200_000, "val": 50_000, "test": 50_000}
DEFAULT_SEED = 0

# Real-data statistics (docs: belle2_neuroresults.md), in the structure summarize() returns.
REAL_STATS: dict[str, Any] = {
    "rows": 4998,
    "expert_share": {0: 0.673, 1: 0.096, 2: 0.039, 3: 0.128, 4: 0.065},
    "z_edges": Z_EDGES.tolist(),
    "z_hist": [39, 103, 162, 403, 48, 2227, 25, 94, 171, 620, 1106],
    "theta_edges": THETA_EDGES.tolist(),
    "theta_hist": [15, 755, 674, 782, 1332, 1258, 182, 0],
    "duplicate_fraction": 0.55,
    "reco_per_event": {1: 1073, 2: 418, 3: 47, 4: 28, 5: 11, 6: 5},
    "ntracks": {"mean": 5.9, "median": 5.0, "max": 20},
    "rows_per_event": {"min": 1, "max": 15},
    "old_z_std": {0: 16.1, 1: 20.7, 2: 17.0, 3: 21.2, 4: 31.0, "ip": 11.2},
    "old_z_median_abs": {0: 6.6, 1: 9.6, 2: 8.8, 3: 8.0, 4: 17.1, "ip": 5.1},
    "old_theta_std": "12-20",
    "alpha_max": {0: 0.07, 8: 0.43},
    "relid_span": "about [-0.9, 0.9]",
}


# ---------------------------------------------------------------------------------------------
# Geometry helpers
def z_front(r: np.ndarray | float) -> np.ndarray:
    """Forward end of the chamber (cm) at radius r."""
    return Z_FRONT[0] + Z_FRONT[1] * (np.asarray(r) - RADII[0])


def z_back(r: np.ndarray | float) -> np.ndarray:
    """Backward end of the chamber (cm) at radius r."""
    return Z_BACK[0] + Z_BACK[1] * (np.asarray(r) - RADII[0])


def stereo_wire_offset(z: np.ndarray, sl: np.ndarray | int) -> np.ndarray:
    """Azimuthal shift (wire units) of a stereo wire at height z: tan(stereo) z / r / wire pitch."""
    return np.tan(STEREO_ANGLE[sl]) * z / (RADII[sl] * WIRE_DPHI[sl])


def relid_scale() -> np.ndarray:
    """relID per wire of each superlayer; stereo: the chamber's largest offset maps to STEREO_RELID_SPAN."""
    scale = AXIAL_RELID_SCALE.copy()
    for sl in STEREO_SL:
        largest = max(
            abs(stereo_wire_offset(z_front(RADII[sl]), sl)), abs(stereo_wire_offset(z_back(RADII[sl]), sl))
        )
        scale[sl] = STEREO_RELID_SPAN / largest
    return scale


def arc_length(r: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """Transverse arc length (cm) from the beam line to radius r on a circle of radius rho (cm)."""
    return 2.0 * rho * np.arcsin(np.minimum(r / (2.0 * rho), 1.0))


def expert_of(present_stereo: np.ndarray) -> np.ndarray:
    """Expert per row from the presence (N, 4) of SL1, SL3, SL5, SL7; -1 where two or more are missing."""
    missing = ~present_stereo
    n_missing = missing.sum(axis=1)
    expert = np.zeros(len(present_stereo), dtype=np.int64)
    for col, sl in enumerate(STEREO_SL):
        expert[missing[:, col]] = EXPERT_OF_MISSING_STEREO[int(sl)]
    expert[n_missing >= 2] = -1
    return expert


# ---------------------------------------------------------------------------------------------
# Generation
def _piecewise_uniform(
    rng: np.random.Generator, edges: np.ndarray, weights: np.ndarray, n: int
) -> np.ndarray:
    """n values from a density that is constant within each bin, bin probabilities ~ weights."""
    p = np.asarray(weights, dtype=float) / np.sum(weights)
    k = rng.choice(len(p), size=n, p=p)
    return edges[k] + rng.random(n) * (edges[k + 1] - edges[k])


def _chunk(rng: np.random.Generator, n_events: int) -> dict[str, np.ndarray]:
    """Generate the kept rows of n_events events (rows with < 2 missing stereo SL and enough axial)."""
    n_reco = rng.choice(len(RECO_PER_EVENT), size=n_events, p=RECO_PER_EVENT / RECO_PER_EVENT.sum()) + 1
    reco_event = np.repeat(np.arange(n_events), n_reco)
    n_r = len(reco_event)

    # Reco tracks: vertex, direction, curvature.
    is_ip = rng.random(n_r) < IP_WEIGHT / (IP_WEIGHT + Z_BACKGROUND_WEIGHTS.sum())
    z0 = np.where(
        is_ip, rng.normal(0.0, IP_SIGMA, n_r), _piecewise_uniform(rng, Z_EDGES, Z_BACKGROUND_WEIGHTS, n_r)
    )
    z0 = np.clip(z0, -99.9, 99.9)
    theta = _piecewise_uniform(rng, THETA_EDGES, THETA_WEIGHTS, n_r)
    cot = 1.0 / np.tan(np.radians(theta))
    inv_pt = rng.uniform(1.0 / PT_MAX, 1.0 / PT_MIN, n_r)
    charge = np.where(rng.random(n_r) < 0.5, -1.0, 1.0)
    rho = 100.0 / (0.3 * B_FIELD * inv_pt)  # cm
    z_at_r = z0[:, None] + arc_length(RADII[None, :], rho[:, None]) * cot[:, None]  # (n_r, 9)
    inside = (z_at_r >= z_back(RADII)) & (z_at_r <= z_front(RADII))
    reco_z = np.clip(z0 + rng.normal(0.0, RECO_SIGMA[0], n_r), -100.0, 100.0)
    reco_theta = np.clip(theta + rng.normal(0.0, RECO_SIGMA[1], n_r), 10.0, 170.0)
    # The 2D finder's curvature range ends at PT_MIN.
    kappa_max = 0.3 * B_FIELD / PT_MIN / 100.0
    kappa_meas = np.minimum((1.0 / rho) * (1.0 + rng.normal(0.0, CURVATURE_RESOLUTION, n_r)), kappa_max)

    # Hardware tracks (rows): copies of each reco track. A duplicate re-draws the segment of each
    # superlayer with probability REDRAW, otherwise it shares the first copy's. seg indexes the
    # pool of segment realisations that every per-segment random quantity is drawn from.
    copies = np.minimum(rng.geometric(DUPLICATE_P, n_r), MAX_COPIES)
    reco = np.repeat(np.arange(n_r), copies)
    n = len(reco)
    first = np.repeat(np.cumsum(copies) - copies, copies)
    redraw = (np.arange(n) != first)[:, None] & (rng.random((n, 9)) < REDRAW)
    seg = reco[:, None] * 9 + np.arange(9)
    n_redraw = int(redraw.sum())
    seg[redraw] = n_r * 9 + np.arange(n_redraw)
    pool = n_r * 9 + n_redraw

    present = inside[reco] & (rng.random(pool)[seg] >= INEFFICIENCY)
    expert = expert_of(present[:, STEREO_SL])
    keep = (expert >= 0) & (present[:, AXIAL_SL].sum(axis=1) >= MIN_AXIAL)
    # At most MAX_ROWS_PER_EVENT kept rows per event (the hardware reports a limited number of tracks).
    row_event = reco_event[reco]
    kept_before = np.cumsum(keep) - keep
    event_first = np.searchsorted(row_event, np.arange(n_events))
    keep &= kept_before - kept_before[event_first][row_event] < MAX_ROWS_PER_EVENT
    reco, seg, present, expert = reco[keep], seg[keep], present[keep], expert[keep]
    n = len(reco)

    # Inputs. Offsets in wire units relative to the 2D track; stereo ones grow with z at that radius.
    sigma = np.where(np.isin(np.arange(9), AXIAL_SL), np.hypot(HIT_SIGMA, AXIAL_SIGMA), HIT_SIGMA)
    cross = rng.random(pool)[seg]  # the 2D track's crossing, as a fraction of a wire
    hit = cross + rng.standard_normal(pool)[seg] * sigma
    hit[:, STEREO_SL] += stereo_wire_offset(z_at_r[reco][:, STEREO_SL], STEREO_SL)
    wire = np.rint(hit)
    inputs = np.empty((n, 9, 3))  # SL-major: relID, driftT, alpha; a missing segment is 0 (never -0)
    # relID is clipped to [-1, 1], the range the hardware scales it to (its window of relevant wires)
    inputs[:, :, 0] = np.where(present, np.clip((wire - cross) * relid_scale(), -1.0, 1.0), 0.0)
    drift = 2.0 * (hit - wire) + rng.standard_normal(pool)[seg] * DRIFT_SIGMA
    drift *= np.where(rng.random(pool)[seg] < DRIFT_FLIP, -1.0, 1.0)
    drift = np.rint(np.clip(drift, -1.0, 1.0) * 256.0) / 256.0
    inputs[:, :, 1] = np.where(present & (rng.random(pool)[seg] >= DRIFT_MISSING), drift, 0.0) + 0.0
    x_alpha = np.minimum(RADII[None, :] * kappa_meas[reco, None] / 2.0, 1.0)
    inputs[:, :, 2] = np.where(present, ALPHA_SCALE * np.arcsin(x_alpha) * charge[reco, None], 0.0)

    # The previous network's prediction, per row.
    ztrue, ttrue = reco_z[reco], reco_theta[reco]
    zs = np.where(rng.random(n) < OLD_Z_TAIL, OLD_Z_TAIL_SIGMA[expert], OLD_Z_SIGMA[expert])
    zs *= 1.0 + OLD_Z_GROWTH * np.abs(ztrue) / 100.0
    old_z = OLD_Z_BIAS[0] + OLD_Z_BIAS[1] * ztrue + OLD_Z_BIAS[2] * ztrue * np.abs(ztrue) / 100.0
    old_z += rng.standard_normal(n) * zs
    ts = np.where(rng.random(n) < OLD_THETA_TAIL, OLD_THETA_TAIL_SIGMA[expert], OLD_THETA_SIGMA[expert])
    old_theta = 90.0 + OLD_THETA_SHRINK * (ttrue - 90.0) + rng.standard_normal(n) * ts

    return {
        "event": reco_event[reco],
        "expert": expert,
        "inputs": inputs.reshape(n, 27),
        "reco_z": ztrue,
        "reco_theta": ttrue,
        "old_z": old_z,
        "old_theta": old_theta,
    }


def _quantised_old(scaled: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Scale, Raw) of the old network's output: Raw = round(Scale * 4096), robust to text round trips.

    Scale * 4096 is kept at least 0.05 away from a half integer and Scale is rounded to 6 decimals,
    so Raw == round(Scale * 4096) also holds after %.7g formatting and float32 parsing.
    """
    x = np.clip(scaled, -1.0, 1.0) * 4096.0
    raw = np.rint(x)
    scale = np.round((raw + np.clip(x - raw, -0.45, 0.45)) / 4096.0, 6)
    return scale, np.rint(scale * 4096.0).astype(np.int64)


def _event_columns(rng: np.random.Generator, event: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Experiment/Run/Subrun/Event/Track/nTracks for rows grouped by (increasing) event index."""
    _, ev, rows = np.unique(event, return_inverse=True, return_counts=True)
    n_ev = len(rows)
    ntracks = np.minimum(rows + rng.poisson(UNMATCHED_MEAN, n_ev), np.maximum(MAX_NTRACKS, rows))
    # Track: the rows' indices among the event's ntracks hardware tracks, in increasing order. Each
    # unmatched hardware track falls into one of the rows + 1 gaps around the written rows.
    row_start = np.cumsum(rows) - rows
    unmatched_event = np.repeat(np.arange(n_ev), ntracks - rows)
    gap = (rng.random(len(unmatched_event)) * (rows[unmatched_event] + 1)).astype(np.int64)
    gaps_before = np.cumsum(
        np.bincount(row_start[unmatched_event] + unmatched_event + gap, minlength=len(event) + n_ev)
    )
    local = np.arange(len(event)) - row_start[ev]
    position = row_start[ev] + ev + local
    first_position = row_start[ev] + ev
    track = local + gaps_before[position] - np.where(first_position > 0, gaps_before[first_position - 1], 0)
    # Run changes every EVENTS_PER_RUN events; event numbers increase within a run and restart.
    run_index = np.arange(n_ev) // EVENTS_PER_RUN
    number = np.cumsum(rng.integers(1, 2000, n_ev))
    run_first = np.arange(0, n_ev, EVENTS_PER_RUN)
    number = number - (number[run_first] - 1)[run_index]
    return {
        "Experiment": np.full(len(event), EXPERIMENT, dtype=np.int64),
        "Run": (1 + (seed % 1000) * 100 + run_index)[ev].astype(np.int64),
        "Subrun": np.zeros(len(event), dtype=np.int64),
        "Event": number[ev].astype(np.int64),
        "Track": track.astype(np.int64),
        "nTracks": ntracks[ev].astype(np.int64),
    }


def generate(n_tracks: int, seed: int = 0) -> pd.DataFrame:
    """Generate n_tracks rows (the 42 columns in file order), deterministic for a seed."""
    if n_tracks < 0:
        raise ValueError(f"n_tracks must be >= 0, got {n_tracks}")
    if n_tracks == 0:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c in INT_COLUMNS else "float64") for c in COLUMNS})
    rng = np.random.default_rng(seed)
    n = n_tracks
    data = {
        "event": np.empty(n, dtype=np.int64),
        "expert": np.empty(n, dtype=np.int64),
        "inputs": np.empty((27, n)),  # one contiguous array per input column
        **{k: np.empty(n) for k in ("reco_z", "reco_theta", "old_z", "old_theta")},
    }
    have, event_offset = 0, 0
    while have < n:
        n_events = int(min(max((n - have) / 2.9 * 1.05, 64), CHUNK_EVENTS))
        part = _chunk(rng, n_events)
        m = min(len(part["event"]), n - have)
        rows = slice(have, have + m)
        data["event"][rows] = part["event"][:m] + event_offset
        data["inputs"][:, rows] = part["inputs"][:m].T
        for key in ("expert", "reco_z", "reco_theta", "old_z", "old_theta"):
            data[key][rows] = part[key][:m]
        event_offset += n_events
        have += m

    columns: dict[str, np.ndarray] = _event_columns(rng, data["event"], seed)
    columns["Expert"] = data["expert"]
    columns["iNodes"] = np.full(n_tracks, 27, dtype=np.int64)
    columns["oNodes"] = np.full(n_tracks, 2, dtype=np.int64)
    for i, name in enumerate(INPUT_COLUMNS):
        columns[name] = data["inputs"][i]
    columns["RecoZ"] = data["reco_z"] / 100.0
    columns["RecoTheta"] = (data["reco_theta"] - 90.0) / 80.0
    columns["ScaleZ"], columns["RawZ"] = _quantised_old(data["old_z"] / 100.0)
    columns["ScaleTheta"], columns["RawTheta"] = _quantised_old((data["old_theta"] - 90.0) / 80.0)
    return pd.DataFrame({c: columns[c] for c in COLUMNS}, copy=False)  # no consolidation copy


# ---------------------------------------------------------------------------------------------
# Reference fit
def reference_fit(table: Mapping[str, Any]) -> np.ndarray:
    """Scaled (z0, theta) per row from a weighted least-squares straight-line fit z(s) = z0 + s cot(theta).

    Each present stereo superlayer gives z at its radius: relID (plus the drift distance where a
    drift time exists) is inverted through the stereo geometry; the arc length s comes from alpha.
    Weights follow the generator's resolution model. This is the physics ceiling of the toy data.
    Rows with fewer than two stereo segments give NaN. Outputs are clipped to [-1, 1].
    """
    scale = relid_scale()
    n = len(np.asarray(table["RecoZ"]))
    s1 = np.zeros(n)
    ss = np.zeros(n)
    sz = np.zeros(n)
    sss = np.zeros(n)
    ssz = np.zeros(n)
    count = np.zeros(n, dtype=np.int64)
    for sl in STEREO_SL:
        relid = np.asarray(table[f"SL{sl}-relID"], dtype=np.float64)
        drift = np.asarray(table[f"SL{sl}-driftT"], dtype=np.float64)
        alpha = np.asarray(table[f"SL{sl}-alpha"], dtype=np.float64)
        present = (relid != 0) | (drift != 0) | (alpha != 0)
        has_drift = drift != 0
        u = relid / scale[sl] + np.where(has_drift, drift / 2.0, 0.0)
        cm_per_wire = RADII[sl] * WIRE_DPHI[sl] / np.tan(STEREO_ANGLE[sl])
        z = u * cm_per_wire
        a = np.minimum(np.abs(alpha) / ALPHA_SCALE, np.pi / 2)
        s = RADII[sl] * np.where(a > 1e-9, a / np.sin(np.maximum(a, 1e-9)), 1.0)
        var_wire = HIT_SIGMA**2 + np.where(has_drift, DRIFT_SIGMA**2 / 4 + DRIFT_FLIP / 3, 1.0 / 12.0)
        w = present / (var_wire * cm_per_wire**2)
        s1 += w
        ss += w * s
        sz += w * z
        sss += w * s * s
        ssz += w * s * z
        count += present
    det = s1 * sss - ss * ss
    ok = (count >= 2) & (det > 0)
    det = np.where(ok, det, 1.0)
    cot = (s1 * ssz - ss * sz) / det
    z0 = (sss * sz - ss * ssz) / det
    theta = 90.0 - np.degrees(np.arctan(cot))
    out = np.stack([z0 / 100.0, (theta - 90.0) / 80.0], axis=1)
    out = np.clip(out, -1.0, 1.0)
    out[~ok] = np.nan
    return out


# ---------------------------------------------------------------------------------------------
# Statistics
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
    ev_first = np.unique(event, return_index=True)[1]
    ntracks = np.asarray(table["nTracks"], dtype=np.int64)[ev_first]

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
    }
    if reference:
        fit = reference_fit(table) * np.array([100.0, 80.0])
        ref_std, ref_med, ref_t = {}, {}, {}
        for e in range(5):
            sel = expert == e
            ref_std[e], ref_med[e] = res_stats(z[sel] - fit[sel, 0])
            ref_t[e] = float(np.std(theta[sel] - 90.0 - fit[sel, 1])) if sel.any() else float("nan")
        ref_std["ip"], ref_med["ip"] = res_stats(z[ip] - fit[ip, 0])
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
            "nTracks mean / median / max",
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
# Files
def split_seed(seed: int, split: str) -> int:
    """Seed of one split (train, val, test), distinct for each split and base seed."""
    return 1000 * seed + SPLITS.index(split) + 1


def write_atomic(table: pd.DataFrame, path: Path) -> Path:
    """Write a table with write_table under a temporary name, then os.replace: concurrent writers are safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def default_dataset_current() -> bool:
    """Whether the default files exist and were written by this version of the generator."""
    stamp = DEFAULT_DIR / "VERSION"
    return (stamp.is_file() and stamp.read_text().strip() == TOY_VERSION
            and all((REPO_ROOT / DEFAULT_FILES[split]).is_file() for split in SPLITS))


def ensure_default_dataset() -> dict[str, Path]:
    """Paths of the default train/val/test files under DEFAULT_DIR, generated on first use (and again when
    the generator's version changed) and reused."""
    paths = {split: REPO_ROOT / DEFAULT_FILES[split] for split in SPLITS}
    stamp = DEFAULT_DIR / "VERSION"
    if default_dataset_current():
        return paths
    for split, path in paths.items():
        write_atomic(generate(DEFAULT_TRACKS[split], split_seed(DEFAULT_SEED, split)), path)
    tmp = stamp.with_name(f".VERSION.{os.getpid()}.{uuid.uuid4().hex}")
    tmp.write_text(TOY_VERSION + "\n")
    os.replace(tmp, stamp)
    return paths


def main(argv: list[str] | None = None) -> int:
    """CLI: write toy files in the neuroresults format, and/or compare their statistics with real data."""
    parser = argparse.ArgumentParser(prog="python -m neuro_trigger.data.toy_mc", description=main.__doc__)
    parser.add_argument("--out", type=Path, help="directory for neuroresults_random{1,2,3}.gz")
    parser.add_argument("--tracks", type=int, default=DEFAULT_TRACKS["train"], help="tracks per file")
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="base seed (each split derives its own)"
    )
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated subset of train,val,test")
    parser.add_argument("--compare", action="store_true", help="print toy vs real statistics (first split)")
    args = parser.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        parser.error(f"--splits: unknown split(s) {bad}; choose from {','.join(SPLITS)}")
    if args.tracks < 1:
        parser.error("--tracks must be >= 1")
    if args.out is None and not args.compare:
        parser.error("give --out DIR and/or --compare")
    first: pd.DataFrame | None = None
    for split in splits:
        seed = split_seed(args.seed, split)
        if args.out is None:  # --compare only: the first split, in memory
            first = generate(args.tracks, seed)
            break
        table = generate(args.tracks, seed)
        path = write_atomic(table, args.out / Path(DEFAULT_FILES[split]).name)
        print(f"{split}: {path} ({args.tracks} tracks, seed {seed})")
        first = table if first is None else first
    if args.compare and first is not None:
        stats = summarize(first, reference=True)
        print(f"\nToy ({splits[0]} split) vs real data:\n{format_comparison(stats)}")
        print(f"\nResolution of the old network and of the reference fit (toy):\n{format_resolution(stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
