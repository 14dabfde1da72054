"""The toy's physics: track sources, directions and momenta, events of duplicated hardware tracks, and
the previous network's prediction; `generate` draws rows of the 42 neuroresults columns from them
through the detector (see the package's docstring and docs/toy_mc.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from neuro_trigger.data.neuroresults.format import COLUMNS, INPUT_COLUMNS, INT_COLUMNS
from neuro_trigger.data.toy.detector import (
    ALPHA_SCALE,
    AMBIGUOUS,
    AXIAL_SL,
    B_FIELD,
    CURVATURE_RESOLUTION,
    DRIFT_FLIP,
    DRIFT_MISSING,
    DRIFT_SIGMA,
    HIT_SIGMA,
    INEFFICIENCY,
    LATE,
    LATE_AMBIGUOUS,
    LAYER_TYPE,
    MIN_AXIAL,
    PT_MAX,
    PT_MIN,
    RADII,
    RELID_CENTRE,
    RELID_GAIN,
    SIGMA_PHI0,
    STEREO_ANGLE,
    STEREO_SL,
    T_MAX,
    WIRE_DPHI,
    WRONG_HIT,
    WRONG_HIT_SIGMA,
    XT_POWER,
    ZERO_CURVATURE,
    arc_length,
    expert_of,
    stereo_wire_offset,
    z_back,
    z_front,
)

TOY_VERSION = "3"
"""Bumped whenever the generator's output (or the files' bytes) changes, so that a stale cached default data
set is rebuilt. 2: relID clipped to [-1, 1]; gzip header without a time stamp (byte-identical files).
3: physics revised against the real per-input statistics (issue 12): stereo shift sign, background
sources and directions, charge asymmetry, 2D track errors, drift-time model, relID scaling."""

# ---------------------------------------------------------------------------------------------
# Track sources: (name, weight before acceptance, z0 shape, shape parameters in cm). "normal": (mean,
# sigma); "uniform": (low, high); "exponential": density ~ exp(z / length) on (low, high, length);
# "tail": an edge at a with an exponential tail of length b towards +z (a shower behind an object).
# Source 0 (collisions) is charge-symmetric and stiff; all others are beam background: soft and mostly
# positive (particles lost from the positron ring), which makes the charge asymmetry of alpha. The
# weights are tuned to the real reco z histogram (10 cm bins and the finer bins near the IP).
Z_SOURCES: tuple[tuple[str, float, str, tuple[float, ...]], ...] = (
    ('collisions', 0.4223, 'normal', (0.04, 0.1)),
    ('object at -7.5 cm', 0.0678, 'normal', (-7.5, 1.2)),
    ('Touschek spread', 0.0948, 'normal', (0.0, 13.0)),
    ('beam-gas', 0.0795, 'exponential', (-100.0, 100.0, 100.0)),
    ('LER upstream losses', 0.0906, 'uniform', (0.0, 50.0)),
    ('object at 25 cm', 0.0482, 'normal', (25.0, 3.0)),
    ('object at 50 cm', 0.1968, 'tail', (50.0, 8.0)),
)
# Direction: a track that the trigger sees crosses the chamber and leaves it through the outer wall; its
# z there (at R_EXIT, the CDC's outer radius) is drawn piecewise uniformly over EXIT_EDGES with
# EXIT_WEIGHTS (collisions) or EXIT_WEIGHTS_BKG (background), and cot(theta) = (z_exit - z0) / R_EXIT.
# Background from large z0 thus flies backwards, and z at a radius r depends on z0 by (1 - r / R_EXIT):
# this is why the stereo relIDs' slopes against z fall from SL1 to SL7. Both weight sets are fitted to
# the real theta histogram and the four stereo slopes at once (smooth, by least squares).
R_EXIT = 111.0
EXIT_EDGES = np.arange(-100.0, 181.0, 20.0)
EXIT_WEIGHTS = np.array(
    [0.0000, 0.0989, 0.1772, 0.1515, 0.1106, 0.0527, 0.0232,
     0.0268, 0.0387, 0.0625, 0.0761, 0.0527, 0.0415, 0.0876]
)
EXIT_WEIGHTS_BKG = np.array(
    [0.0082, 0.0253, 0.0616, 0.0966, 0.1393, 0.1639, 0.1506,
     0.1185, 0.0818, 0.0558, 0.0383, 0.0216, 0.0156, 0.0229]
)
# Momentum and charge. Collisions: 1/pt uniform in [1/PT_MAX, 1/PT_MIN_COLLISION] (GeV^-1), charge +-1
# with equal probability. Background: 1/pt normal (BKG_INV_PT, BKG_INV_PT_SIGMA), folded into the 2D
# finder's range, positive with probability BKG_POSITIVE; its d0 (cm, distance of closest approach to
# the beam line, where the 2D finder assumes tracks come from) is normal (0, BKG_D0). Fitted to the real
# alpha statistics (positive fraction 70% of non-zero values on every layer, mean and width).
PT_MIN_COLLISION = 0.45
BKG_INV_PT, BKG_INV_PT_SIGMA = 2.0, 0.75
BKG_POSITIVE = 0.87
BKG_D0 = 0.3

RECO_SIGMA = (0.05, 0.1)  # offline reconstruction error of z (cm) and theta (deg)

# Event structure: distinct reco tracks per event (1..6, before dropped rows), hardware tracks (rows)
# per reco track: geometric(DUPLICATE_P) >= 1, at most MAX_COPIES. A duplicate has its own 2D track with
# probability REDRAW_2D (else the first copy's) and re-draws the segment of a superlayer with probability
# REDRAW. nTracks = rows + Poisson(UNMATCHED_MEAN) unmatched hardware tracks, tuned to the real mean per
# row (5.9; the mean per event is lower, as events with many rows weigh more per row).
RECO_PER_EVENT = np.array([0.6586, 0.2825, 0.0279, 0.0184, 0.0078, 0.0048])
DUPLICATE_P = 0.43
MAX_COPIES = 8
REDRAW = 0.35
REDRAW_2D = 0.5
UNMATCHED_MEAN = 0.784
MAX_NTRACKS = 20
MAX_ROWS_PER_EVENT = 15
EVENTS_PER_RUN = 20000
CHUNK_EVENTS = 25_000  # events generated per vectorised step (bounds the temporaries' memory)
EXPERIMENT = 0  # Belle II convention for Monte Carlo

# The previous network's prediction: biased towards the centre, core + tail resolution per expert,
# tuned to the real residuals (std and median |residual| per expert and for |z| < 2 cm).
OLD_Z_BIAS = (2.6, 0.8, -0.1)  # old z = a + b z + c z |z| / 100 (cm)
OLD_Z_SIGMA = np.array([3.6, 7.8, 7.2, 4.6, 15.9])  # core, per expert (cm)
OLD_Z_TAIL_SIGMA = np.array([14.2, 18.5, 13.7, 20.2, 23.9])  # tail, per expert (cm)
OLD_Z_TAIL = 0.4  # tail fraction
OLD_Z_GROWTH = 2.02  # both sigmas grow by (1 + growth |z| / 100): background tracks are measured worse
OLD_THETA_SHRINK = 0.8  # old theta - 90 = shrink * (theta - 90)
OLD_THETA_SIGMA = np.array([8.0, 10.0, 9.0, 10.0, 13.0])  # core, per expert (deg)
OLD_THETA_TAIL_SIGMA = np.array([24.0, 30.0, 27.0, 30.0, 39.0])  # tail, per expert (deg)
OLD_THETA_TAIL = 0.12  # tail fraction


# ---------------------------------------------------------------------------------------------
# Generation
def _piecewise_uniform(
    rng: np.random.Generator, edges: np.ndarray, weights: np.ndarray, n: int
) -> np.ndarray:
    """n values from a density that is constant within each bin, bin probabilities ~ weights."""
    p = np.asarray(weights, dtype=float) / np.sum(weights)
    k = rng.choice(len(p), size=n, p=p)
    return edges[k] + rng.random(n) * (edges[k + 1] - edges[k])


def _source_z(rng: np.random.Generator, shape: str, par: tuple[float, ...], n: int) -> np.ndarray:
    """n values of z0 (cm) from one source's shape (see Z_SOURCES)."""
    if shape == "normal":
        return rng.normal(par[0], par[1], n)
    if shape == "uniform":
        return rng.uniform(par[0], par[1], n)
    if shape == "exponential":  # inverse CDF of exp(z / L) on [a, b]
        a, b, length = par
        u = rng.random(n)
        return length * np.log(np.exp(a / length) + u * (np.exp(b / length) - np.exp(a / length)))
    if shape == "tail":
        return par[0] + rng.exponential(par[1], n)
    raise ValueError(f"unknown source shape {shape!r}")


def _tracks(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """n reco tracks: source, z0 (cm), cot(theta), charge, curvature (1/cm), d0 (cm)."""
    weights = np.array([s[1] for s in Z_SOURCES])
    source = rng.choice(len(Z_SOURCES), size=n, p=weights / weights.sum())
    z0 = np.empty(n)
    for k, (_, _, shape, par) in enumerate(Z_SOURCES):
        sel = source == k
        z0[sel] = _source_z(rng, shape, par, int(sel.sum()))
    z0 = np.clip(z0, -99.9, 99.9)
    collision = source == 0
    z_exit = np.where(
        collision,
        _piecewise_uniform(rng, EXIT_EDGES, EXIT_WEIGHTS, n),
        _piecewise_uniform(rng, EXIT_EDGES, EXIT_WEIGHTS_BKG, n),
    )
    cot = (z_exit - z0) / R_EXIT
    inv_pt = np.where(
        collision,
        rng.uniform(1.0 / PT_MAX, 1.0 / PT_MIN_COLLISION, n),
        np.abs(rng.normal(BKG_INV_PT, BKG_INV_PT_SIGMA, n)),
    )
    inv_pt = np.clip(inv_pt, 1.0 / PT_MAX, 1.0 / PT_MIN)
    positive = rng.random(n) < np.where(collision, 0.5, BKG_POSITIVE)
    d0 = np.where(collision, 0.0, rng.normal(0.0, BKG_D0, n))
    return {
        "source": source,
        "z_exit": z_exit,
        "z0": z0,
        "cot": cot,
        "charge": np.where(positive, 1.0, -1.0),
        "kappa": 0.3 * B_FIELD * inv_pt / 100.0,
        "d0": d0,
    }


def _chunk(rng: np.random.Generator, n_events: int) -> dict[str, np.ndarray]:
    """Generate the kept rows of n_events events (rows with < 2 missing stereo SL and enough axial)."""
    n_reco = rng.choice(len(RECO_PER_EVENT), size=n_events, p=RECO_PER_EVENT / RECO_PER_EVENT.sum()) + 1
    reco_event = np.repeat(np.arange(n_events), n_reco)
    n_r = len(reco_event)

    # Reco tracks: vertex, direction, curvature.
    trk = _tracks(rng, n_r)
    z0, cot, charge, kappa = trk["z0"], trk["cot"], trk["charge"], trk["kappa"]
    theta = 90.0 - np.degrees(np.arctan(cot))
    z_at_r = z0[:, None] + arc_length(RADII[None, :], 1.0 / kappa[:, None]) * cot[:, None]  # (n_r, 9)
    inside = (z_at_r >= z_back(RADII)) & (z_at_r <= z_front(RADII))
    reco_z = np.clip(z0 + rng.normal(0.0, RECO_SIGMA[0], n_r), -100.0, 100.0)
    reco_theta = np.clip(theta + rng.normal(0.0, RECO_SIGMA[1], n_r), 10.0, 170.0)

    # Hardware tracks (rows): copies of each reco track. A duplicate re-draws the segment of each
    # superlayer with probability REDRAW, otherwise it shares the first copy's; it has its own 2D track
    # with probability REDRAW_2D. seg indexes the pool of segment realisations that every per-segment
    # random quantity is drawn from, trk2d the pool of 2D tracks.
    copies = np.minimum(rng.geometric(DUPLICATE_P, n_r), MAX_COPIES)
    reco = np.repeat(np.arange(n_r), copies)
    n = len(reco)
    first = np.repeat(np.cumsum(copies) - copies, copies)
    is_copy = np.arange(n) != first
    redraw = is_copy[:, None] & (rng.random((n, 9)) < REDRAW)
    seg = reco[:, None] * 9 + np.arange(9)
    n_redraw = int(redraw.sum())
    seg[redraw] = n_r * 9 + np.arange(n_redraw)
    pool = n_r * 9 + n_redraw
    own_2d = is_copy & (rng.random(n) < REDRAW_2D)
    trk2d = reco.copy()
    trk2d[own_2d] = n_r + np.arange(int(own_2d.sum()))
    pool_2d = n_r + int(own_2d.sum())

    present = inside[reco] & (rng.random(pool, dtype=np.float32)[seg] >= INEFFICIENCY)
    expert = expert_of(present[:, STEREO_SL])
    keep = (expert >= 0) & (present[:, AXIAL_SL].sum(axis=1) >= MIN_AXIAL)
    # At most MAX_ROWS_PER_EVENT kept rows per event (the hardware reports a limited number of tracks).
    row_event = reco_event[reco]
    kept_before = np.cumsum(keep) - keep
    event_first = np.searchsorted(row_event, np.arange(n_events))
    keep &= kept_before - kept_before[event_first][row_event] < MAX_ROWS_PER_EVENT
    reco, seg, present, expert, trk2d = reco[keep], seg[keep], present[keep], expert[keep], trk2d[keep]
    n = len(reco)

    # The 2D track: azimuth error at each radius (rad) from its phi0 and curvature errors and from the
    # track's d0 (the finder assumes tracks from the beam line); measured curvature for alpha.
    dphi0 = rng.normal(0.0, SIGMA_PHI0, pool_2d)[trk2d]
    dkappa = rng.normal(0.0, CURVATURE_RESOLUTION, pool_2d)[trk2d] * kappa[reco]
    kappa_max = 0.3 * B_FIELD / PT_MIN / 100.0
    kappa_meas = np.minimum(kappa[reco] + dkappa, kappa_max)
    kappa_meas *= rng.random(pool_2d)[trk2d] >= ZERO_CURVATURE
    err = dphi0[:, None] + 0.5 * RADII[None, :] * dkappa[:, None] + trk["d0"][reco][:, None] / RADII[None, :]

    # Hits: wire units relative to the true crossing p (uniform within a wire).
    cross = rng.random(pool)[seg]
    wrong = np.zeros(9)
    wrong[STEREO_SL] = np.where(STEREO_ANGLE[STEREO_SL] > 0, WRONG_HIT[0], WRONG_HIT[1])
    sigma = np.where(rng.random(pool, dtype=np.float32)[seg] < wrong, np.hypot(HIT_SIGMA, WRONG_HIT_SIGMA), HIT_SIGMA)
    hit = cross + rng.standard_normal(pool)[seg] * sigma
    hit[:, STEREO_SL] -= stereo_wire_offset(z_at_r[reco][:, STEREO_SL], STEREO_SL)
    wire = np.rint(hit)
    rel = wire - cross - err / WIRE_DPHI[None, :]
    inputs = np.empty((n, 9, 3))  # SL-major: relID, driftT, alpha; a missing segment is 0 (never -0)
    inputs[:, :, 0] = np.where(present, np.clip((rel - RELID_CENTRE) * RELID_GAIN, -1.0, 1.0), 0.0)

    # Drift time: signed distance from the wire, late hits, left/right ambiguity.
    ltype = LAYER_TYPE[None, :]
    x = hit - wire
    u = rng.random((4, pool), dtype=np.float32)[:, seg]  # late, ambiguous, flip, missing (float32: comparisons only)
    late = u[0] < LATE[ltype]
    t = T_MAX[ltype] * np.abs(2.0 * x) ** XT_POWER[ltype] + rng.standard_normal(pool)[seg] * DRIFT_SIGMA[ltype]
    t = np.where(late, 1.0, np.clip(np.abs(t), 0.0, 1.0))
    side = np.where(x >= 0, 1.0, -1.0) * np.where(u[2] < DRIFT_FLIP, -1.0, 1.0)
    ambiguous = u[1] < np.where(late, LATE_AMBIGUOUS[ltype], AMBIGUOUS[ltype])
    side = np.where(ambiguous, -1.0, side)
    drift = np.rint(side * t * 256.0) / 256.0
    inputs[:, :, 1] = np.where(present & (u[3] >= DRIFT_MISSING), drift, 0.0) + 0.0
    x_alpha = np.minimum(RADII[None, :] * kappa_meas[:, None] / 2.0, 1.0)
    inputs[:, :, 2] = np.where(present, ALPHA_SCALE * np.arcsin(x_alpha) * charge[reco, None], 0.0) + 0.0

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
        "source": trk["source"][reco],  # for calibration and tests; not written
        "z_exit": trk["z_exit"][reco],
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
