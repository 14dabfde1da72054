"""The detector as the toy sees it: CDC geometry, magnetic field, the 2D track finder's errors, hits,
relID scaling, drift times and segment efficiency, with the geometry helpers.

The generator draws from these; the reference fit and the per-layer residuals invert them.
"""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------
# Geometry (cm, rad). Radii of the priority layers of SL0..SL8 and wires per layer are those of
# the Belle II CDC (the radii reproduce the real alpha ratios between superlayers).
RADII = np.array([19.8, 29.8, 39.7, 52.1, 61.4, 72.5, 82.8, 93.9, 104.2])
N_WIRES = np.array([160, 160, 192, 224, 256, 288, 320, 352, 384])
WIRE_DPHI = 2.0 * np.pi / N_WIRES
AXIAL_SL = np.array([0, 2, 4, 6, 8])
STEREO_SL = np.array([1, 3, 5, 7])
# Stereo angles: U superlayers (SL1, SL5) positive, V superlayers (SL3, SL7) negative. A wire's azimuth
# grows with z by tan(stereo) z / r, so the wire a track crosses at height z is the one whose azimuth at
# z = 0 is smaller by that much: the relID of a U layer falls with z, that of a V layer rises (as in data).
STEREO_ANGLE = np.array([0.0, 0.045, 0.0, -0.055, 0.0, 0.065, 0.0, -0.075, 0.0])
# Chamber z extent at radius r, linear in r: z_back(r) <= z <= z_front(r) (the CDC is asymmetric).
Z_FRONT = (80.0, 0.95)  # z_front(r) = a + b * (r - RADII[0])
Z_BACK = (-50.0, -0.36)  # z_back(r) = a + b * (r - RADII[0])
EXPERT_OF_MISSING_STEREO = {None: 0, 7: 1, 5: 2, 3: 3, 1: 4}
LAYER_TYPE = np.array([0, 2, 1, 2, 1, 2, 1, 2, 1])  # 0: SL0 (small cells), 1: axial, 2: stereo

# Magnetic field and the 2D finder's curvature range (its tracks have PT_MIN <= pt <= PT_MAX, GeV).
B_FIELD = 1.5  # T
PT_MIN, PT_MAX = 0.3, 20.0  # the 2D finder's curvature range

# The 2D track (one per hardware track): azimuth error SIGMA_PHI0 (rad), relative curvature error
# CURVATURE_RESOLUTION; its azimuth error at radius r is dphi0 + r dkappa / 2 + d0 / r, the same for all
# superlayers of a row. A fraction ZERO_CURVATURE of 2D tracks carries curvature 0 (alpha = 0 on every
# layer while relID and driftT exist, as in 0.7% of the real rows).
SIGMA_PHI0 = 0.002
CURVATURE_RESOLUTION = 0.03
ZERO_CURVATURE = 0.0066
ALPHA_SCALE = 0.482  # alpha = ALPHA_SCALE * asin(r kappa / 2), signed by charge

# Hits, in wire units. hit = p - stereo shift + noise, p the track's true crossing; W = round(hit) the
# priority wire; rel = W - c, c the 2D track's crossing estimate; relID = RELID_GAIN (rel - RELID_CENTRE)
# clipped to [-1, 1]. noise is N(0, HIT_SIGMA); a stereo segment's priority hit is a wrong one (a
# neighbouring cell's, or a background hit) with probability WRONG_HIT (U, V superlayers), off by
# N(0, WRONG_HIT_SIGMA) wires more. WRONG_HIT is set by the real stereo relIDs' correlation with z (and
# the real rows' per-layer residuals, docs/toy_mc.md). RELID_GAIN and RELID_CENTRE are the hardware's
# per-superlayer scaling (its relevant wire range); they are set to the real relIDs' mean and width.
HIT_SIGMA = np.array([0.1, 0.3, 0.1, 0.3, 0.1, 0.3, 0.1, 0.3, 0.1])
WRONG_HIT = (0.5, 0.2)
WRONG_HIT_SIGMA = 1.5
RELID_GAIN = np.array([0.6222, 0.2738, 0.5685, 0.2654, 0.5791, 0.1201, 0.5262, 0.121, 0.2796])
RELID_CENTRE = np.array([-0.09555, -0.7193, -0.08413, 1.206, -0.04352, -1.172, -0.438, 1.992, -0.3893])

# Drift time, per layer type (SL0 with its small cells, axial, stereo). A present segment has a drift time
# unless its priority wire has no hit (DRIFT_MISSING, per layer: the hit inefficiency). With probability
# LATE the priority hit is a late (background or cross-talk) hit: |driftT| = 1 (saturated). Otherwise
# |driftT| = T_MAX (2 |x|)^XT_POWER + N(0, DRIFT_SIGMA), x the hit's signed distance from the wire in wire
# pitches (|x| <= 0.5). The sign is the left/right side of the hit, wrong with probability DRIFT_FLIP; the
# left/right table cannot resolve AMBIGUOUS of the in-time and LATE_AMBIGUOUS of the late hits and
# reports them as left (negative). The type parameters are fitted to the real non-zero driftT mean,
# width, positive fraction and 5%/95% quantiles of the layers of that type.
DRIFT_MISSING = np.array([0.390, 0.292, 0.440, 0.310, 0.388, 0.253, 0.372, 0.254, 0.410])
T_MAX = np.array([0.265, 0.378, 0.639])
XT_POWER = np.array([1.500, 1.487, 1.112])
DRIFT_SIGMA = np.array([0.231, 0.203, 0.037])
LATE = np.array([0.099, 0.125, 0.176])
LATE_AMBIGUOUS = np.array([0.422, 0.273, 0.137])
AMBIGUOUS = np.array([0.389, 0.172, 0.079])
DRIFT_FLIP = 0.03

# Segment finder inefficiency per superlayer, on top of the chamber acceptance: set to the real zero
# fractions of each superlayer's inputs (for the stereo ones these are the expert shares).
INEFFICIENCY = np.array([0.2251, 0.0839, 0.0715, 0.1607, 0.0816, 0.0546, 0.1266, 0.1120, 0.2512])
MIN_AXIAL = 3  # the 2D finder needs this many axial segments


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
    """relID per wire of each superlayer (the hardware's scaling gain)."""
    return RELID_GAIN.copy()


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
