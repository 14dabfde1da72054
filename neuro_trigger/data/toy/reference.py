"""The reference fit: what the toy's stereo inputs carry about z and theta, from its geometry alone."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from neuro_trigger.data.toy.detector import (
    ALPHA_SCALE,
    DRIFT_SIGMA,
    HIT_SIGMA,
    RADII,
    RELID_CENTRE,
    RELID_GAIN,
    STEREO_ANGLE,
    STEREO_SL,
    T_MAX,
    WIRE_DPHI,
    XT_POWER,
)


def reference_fit(table: Mapping[str, Any], iterations: int = 4) -> np.ndarray:
    """Scaled (z0, theta) per row from a robust straight-line fit z(s) = z0 + s cot(theta).

    Each present stereo superlayer gives z at its radius: relID is unscaled to the hit's wire offset from
    the 2D track (plus the drift distance where an in-time drift time exists) and inverted through the
    stereo geometry; the arc length s comes from alpha. The fit is weighted least squares with the
    generator's core resolution, iterated with Cauchy weights so that wrong hits (the resolution's tails)
    count less. It knows the toy's geometry and scaling, not its sources or the z and theta
    distributions: an estimate of what the stereo inputs carry, not a trained network. Rows with fewer
    than two stereo segments give NaN. Outputs are clipped to [-1, 1].
    """
    n = len(np.asarray(table["RecoZ"]))
    z = np.zeros((n, 4))
    s = np.ones((n, 4))
    w0 = np.zeros((n, 4))
    sigma = np.ones((n, 4))
    t_max = T_MAX[2]
    for k, sl in enumerate(STEREO_SL):
        relid = np.asarray(table[f"SL{sl}-relID"], dtype=np.float64)
        drift = np.asarray(table[f"SL{sl}-driftT"], dtype=np.float64)
        alpha = np.asarray(table[f"SL{sl}-alpha"], dtype=np.float64)
        present = (relid != 0) | (drift != 0) | (alpha != 0)
        in_time = (drift != 0) & (np.abs(drift) < 0.99)
        x = np.sign(drift) * (np.minimum(np.abs(drift), t_max) / t_max) ** (1.0 / XT_POWER[2]) / 2.0
        u = relid / RELID_GAIN[sl] + RELID_CENTRE[sl] + np.where(in_time, x, 0.0)
        cm_per_wire = RADII[sl] * WIRE_DPHI[sl] / np.tan(STEREO_ANGLE[sl])
        z[:, k] = -u * cm_per_wire
        a = np.minimum(np.abs(alpha) / ALPHA_SCALE, np.pi / 2)
        s[:, k] = RADII[sl] * np.where(a > 1e-9, a / np.sin(np.maximum(a, 1e-9)), 1.0)
        var_wire = HIT_SIGMA[sl] ** 2 + np.where(in_time, (DRIFT_SIGMA[2] / t_max) ** 2 / 4 + 0.02, 1.0 / 12.0)
        sigma[:, k] = np.sqrt(var_wire) * abs(cm_per_wire)
        w0[:, k] = present / sigma[:, k] ** 2
    ok = (w0 > 0).sum(axis=1) >= 2
    w = w0
    for _ in range(iterations + 1):
        s1, ss, sz = w.sum(1), (w * s).sum(1), (w * z).sum(1)
        sss, ssz = (w * s * s).sum(1), (w * s * z).sum(1)
        det = s1 * sss - ss * ss
        good = ok & (det > 1e-12 * np.maximum(s1 * sss, 1e-300))
        det = np.where(good, det, 1.0)
        cot = (s1 * ssz - ss * sz) / det
        z0 = (sss * sz - ss * ssz) / det
        pull = (z - z0[:, None] - s * cot[:, None]) / (2.0 * sigma)
        w = w0 / (1.0 + pull**2)
    theta = 90.0 - np.degrees(np.arctan(cot))
    out = np.stack([z0 / 100.0, (theta - 90.0) / 80.0], axis=1)
    out = np.clip(out, -1.0, 1.0)
    out[~ok] = np.nan
    return out
