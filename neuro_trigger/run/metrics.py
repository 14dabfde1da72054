"""Resolution metrics of one expert on one split: loss, z/theta residual spread, and the same for
the previous (old) network, so that every run says whether it beats what runs on the FPGA today.

All inputs are scaled ([-1, 1]); residuals (reco - predicted) are reported in cm and degrees.
Vectorised numpy throughout; rows with a NaN are left out of the comparison they spoil.
"""

from __future__ import annotations

import math

import numpy as np

from neuro_trigger.data.dataset import theta_to_deg, z_to_cm
from neuro_trigger.errors import UserError


def _z_to_cm(scaled: np.ndarray) -> np.ndarray:
    """Scaled z → cm in float64: the float32 columns are too coarse for sums over millions of residuals."""
    return z_to_cm(np.asarray(scaled, dtype=np.float64))


def _theta_to_deg(scaled: np.ndarray) -> np.ndarray:
    """Scaled theta → degrees in float64."""
    return theta_to_deg(np.asarray(scaled, dtype=np.float64))


def trimmed_std(x: np.ndarray, trim: float = 0.05) -> float:
    """Standard deviation after dropping the ``trim`` fraction of lowest and of highest values.

    A resolution measure that a handful of wild outliers cannot dominate. NaNs are ignored;
    ``floor(n * trim)`` values go on each side. Empty input gives NaN.
    """
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim}")
    x = np.asarray(x, dtype=np.float64).ravel()
    x = x[~np.isnan(x)]
    n = x.size
    k = int(math.floor(n * trim))
    if n - 2 * k <= 0:
        return math.nan
    if k:
        x = np.partition(x, (k - 1, n - k))[k : n - k]  # O(n), no full sort
    return float(x.std())


def residual_stats(reco: np.ndarray, pred: np.ndarray, trim: float = 0.05) -> dict[str, float]:
    """Mean, std, trimmed std and count of the residual ``reco - pred`` (NaN rows ignored)."""
    r = np.asarray(reco, dtype=np.float64).ravel() - np.asarray(pred, dtype=np.float64).ravel()
    r = r[~np.isnan(r)]
    if r.size == 0:
        return {"mean": math.nan, "std": math.nan, "trimmed_std": math.nan, "count": 0}
    return {
        "mean": float(r.mean()),
        "std": float(r.std()),
        "trimmed_std": trimmed_std(r, trim),
        "count": int(r.size),
    }


# loss name (as in the config) -> (torch.nn.functional name, keyword arguments)
_LOSSES: dict[str, tuple[str, dict[str, float]]] = {
    "MSELoss": ("mse_loss", {}),
    "L1Loss": ("l1_loss", {}),
    "HuberLoss": ("huber_loss", {"delta": 1.0}),
}


def loss_value(pred: np.ndarray, target: np.ndarray, loss: str) -> float:
    """The training loss (torch's default mean reduction) of ``pred`` against ``target``, both (N, k).

    Empty input gives NaN. An unknown loss name raises ``UserError``.
    """
    try:
        fn_name, kwargs = _LOSSES[loss]
    except KeyError:
        raise UserError(f"unknown loss {loss!r}; known: {', '.join(_LOSSES)}") from None
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(target, dtype=np.float64)
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} != target shape {t.shape}")
    if p.size == 0:
        return math.nan
    import torch  # imported lazily: the rest of this module (and plots.py) needs numpy only

    fn = getattr(torch.nn.functional, fn_name)
    return float(fn(torch.from_numpy(p), torch.from_numpy(t), **kwargs))


def _finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that are finite in every array."""
    mask = np.ones(arrays[0].shape[0], dtype=bool)
    for a in arrays:
        mask &= np.isfinite(a).all(axis=1)
    return mask


def _ratio(a: float, b: float) -> float:
    """a / b, NaN where b is zero or either is NaN."""
    return a / b if b != 0 and not (math.isnan(a) or math.isnan(b)) else math.nan


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def split_metrics(
    target: np.ndarray, pred: np.ndarray, old: np.ndarray, loss: str, trim: float = 0.05
) -> dict[str, float]:
    """Loss and residual metrics of the new and the old network on one split (scaled (N, k) inputs).

    Keys: rows, rows_without_old, loss, old_loss, loss_vs_old, z_diff_std_cm, z_diff_trimmed_std_cm,
    z_diff_mean_cm, old_z_diff_std_cm, old_z_diff_trimmed_std_cm, z_diff_std_vs_old and, for k == 2,
    theta_diff_std_deg, theta_diff_trimmed_std_deg, old_theta_diff_std_deg.

    ``rows`` counts all input rows. The new network's own numbers use the rows where target and
    prediction are finite. The old network's numbers and every ratio "vs old" use the rows where
    target, prediction and old output are all finite (the rows both networks cover), so that a ratio
    never mixes two sets of rows; ``rows_without_old`` counts the rows with a usable new prediction but
    no (finite) old one, which are left out of those. Values are plain Python floats (the counts ints),
    NaN where there is nothing to compute.
    """
    t, p, o = _as_2d(target), _as_2d(pred), _as_2d(old)
    if not (t.shape == p.shape and t.shape[0] == o.shape[0] and o.shape[1] >= t.shape[1]):
        raise ValueError(f"shapes differ: target {t.shape}, pred {p.shape}, old {o.shape}")
    k = t.shape[1]
    o = o[:, :k]
    new_ok = _finite_rows(t, p)
    both = new_ok & _finite_rows(o)
    tn, pn = t[new_ok], p[new_ok]
    tb, pb, ob = t[both], p[both], o[both]

    new_z = residual_stats(_z_to_cm(tn[:, 0]), _z_to_cm(pn[:, 0]), trim)
    both_z = residual_stats(_z_to_cm(tb[:, 0]), _z_to_cm(pb[:, 0]), trim)
    old_z = residual_stats(_z_to_cm(tb[:, 0]), _z_to_cm(ob[:, 0]), trim)
    out: dict[str, float] = {
        "rows": int(t.shape[0]),
        "rows_without_old": int(new_ok.sum() - both.sum()),
        "loss": loss_value(pn, tn, loss),
        "old_loss": loss_value(ob, tb, loss),
    }
    out["loss_vs_old"] = _ratio(loss_value(pb, tb, loss), out["old_loss"])
    out.update(
        z_diff_std_cm=new_z["std"],
        z_diff_trimmed_std_cm=new_z["trimmed_std"],
        z_diff_mean_cm=new_z["mean"],
        old_z_diff_std_cm=old_z["std"],
        old_z_diff_trimmed_std_cm=old_z["trimmed_std"],
        z_diff_std_vs_old=_ratio(both_z["std"], old_z["std"]),
    )
    if k >= 2:
        new_t = residual_stats(_theta_to_deg(tn[:, 1]), _theta_to_deg(pn[:, 1]), trim)
        old_t = residual_stats(_theta_to_deg(tb[:, 1]), _theta_to_deg(ob[:, 1]), trim)
        out.update(
            theta_diff_std_deg=new_t["std"],
            theta_diff_trimmed_std_deg=new_t["trimmed_std"],
            old_theta_diff_std_deg=old_t["std"],
        )
    return out


# ---------------------------------------------------------------------------------------------- the trigger's view
# The trigger keeps a track when |z_pred| < cut. Its efficiency is judged on tracks from the interaction
# point (|reco z| < IP_CM), its background rejection on tracks from far away (|reco z| > BACKGROUND_CM).
TRIGGER_CUT_CM = 15.0
IP_CM = 1.0
BACKGROUND_CM = 20.0
ROC_CUTS_CM = np.arange(1.0, 61.0)
Z_BIN_EDGES_CM = np.arange(-100.0, 101.0, 10.0)
THETA_BIN_EDGES_DEG = np.arange(10.0, 171.0, 20.0)
NTRACKS_BIN_EDGES = np.array([0.5, 1.5, 2.5, 3.5, 5.5, 8.5, 12.5, 1000.5])


def _binomial(k: int, n: int) -> tuple[float, float]:
    """Fraction k/n and its binomial standard error; NaN for n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    return p, math.sqrt(p * (1 - p) / n)


def trigger_metrics(reco_z_cm: np.ndarray, pred_z_cm: np.ndarray, cut_cm: float = TRIGGER_CUT_CM,
                    ip_cm: float = IP_CM, background_cm: float = BACKGROUND_CM) -> dict[str, float]:
    """Efficiency (IP tracks kept) and background rejection (far tracks removed) of the cut |z_pred| < cut_cm,
    with binomial errors and the number of tracks each is judged on. Rows with a NaN are left out."""
    reco = np.asarray(reco_z_cm, dtype=np.float64).ravel()
    pred = np.asarray(pred_z_cm, dtype=np.float64).ravel()
    ok = np.isfinite(reco) & np.isfinite(pred)
    reco, kept = reco[ok], np.abs(pred[ok]) < cut_cm
    ip, background = np.abs(reco) < ip_cm, np.abs(reco) > background_cm
    efficiency, efficiency_err = _binomial(int(np.count_nonzero(kept & ip)), int(np.count_nonzero(ip)))
    rejection, rejection_err = _binomial(int(np.count_nonzero(~kept & background)), int(np.count_nonzero(background)))
    return {"cut_cm": float(cut_cm), "efficiency": efficiency, "efficiency_err": efficiency_err,
            "rejection": rejection, "rejection_err": rejection_err, "ip_tracks": int(np.count_nonzero(ip)),
            "background_tracks": int(np.count_nonzero(background))}


def roc_curve(reco_z_cm: np.ndarray, pred_z_cm: np.ndarray, cuts_cm: np.ndarray = ROC_CUTS_CM,
              ip_cm: float = IP_CM, background_cm: float = BACKGROUND_CM) -> dict[str, list[float]]:
    """Efficiency and rejection for every cut in `cuts_cm` (default 1 to 60 cm), from one sort of |z_pred|."""
    reco = np.asarray(reco_z_cm, dtype=np.float64).ravel()
    pred = np.asarray(pred_z_cm, dtype=np.float64).ravel()
    ok = np.isfinite(reco) & np.isfinite(pred)
    reco, distance = reco[ok], np.abs(pred[ok])
    cuts = np.asarray(cuts_cm, dtype=np.float64)
    ip_d = np.sort(distance[np.abs(reco) < ip_cm])
    bg_d = np.sort(distance[np.abs(reco) > background_cm])
    kept_ip = np.searchsorted(ip_d, cuts, side="left")  # |z_pred| < cut
    kept_bg = np.searchsorted(bg_d, cuts, side="left")
    with np.errstate(invalid="ignore", divide="ignore"):
        efficiency = kept_ip / ip_d.size if ip_d.size else np.full(cuts.size, np.nan)
        rejection = 1 - kept_bg / bg_d.size if bg_d.size else np.full(cuts.size, np.nan)
    return {"cut_cm": cuts.tolist(), "efficiency": np.asarray(efficiency, float).tolist(),
            "rejection": np.asarray(rejection, float).tolist()}


def efficiency_vs_z(reco_z_cm: np.ndarray, pred_z_cm: np.ndarray, edges_cm: np.ndarray = Z_BIN_EDGES_CM,
                    cut_cm: float = TRIGGER_CUT_CM) -> dict[str, list[float]]:
    """The fraction of tracks the cut keeps in bins of reco z, with binomial errors and counts."""
    reco = np.asarray(reco_z_cm, dtype=np.float64).ravel()
    pred = np.asarray(pred_z_cm, dtype=np.float64).ravel()
    ok = np.isfinite(reco) & np.isfinite(pred)
    reco, kept = reco[ok], np.abs(pred[ok]) < cut_cm
    edges = np.asarray(edges_cm, dtype=np.float64)
    index = np.digitize(reco, edges) - 1
    inside = (index >= 0) & (index < edges.size - 1)
    count = np.bincount(index[inside], minlength=edges.size - 1)
    passed = np.bincount(index[inside], weights=kept[inside], minlength=edges.size - 1)
    pairs = [_binomial(int(k), int(n)) for k, n in zip(passed, count, strict=True)]
    return {"edges": edges.tolist(), "count": count.tolist(), "efficiency": [p for p, _ in pairs],
            "efficiency_err": [e for _, e in pairs]}


def resolution(residual: np.ndarray, trim: float = 0.05) -> dict[str, float]:
    """How wide and how biased a residual distribution is: std, trimmed std, the half-width of its central
    68% (a Gaussian's sigma, robust to tails), mean and median, and the count (NaN ignored)."""
    r = np.asarray(residual, dtype=np.float64).ravel()
    r = r[~np.isnan(r)]
    if r.size == 0:
        return {"count": 0, "std": math.nan, "trimmed_std": math.nan, "half_width_68": math.nan,
                "mean": math.nan, "median": math.nan}
    q16, q50, q84 = np.percentile(r, [15.865, 50.0, 84.135])
    return {"count": int(r.size), "std": float(r.std()), "trimmed_std": trimmed_std(r, trim),
            "half_width_68": float((q84 - q16) / 2), "mean": float(r.mean()), "median": float(q50)}


def binned_resolution(x: np.ndarray, residual: np.ndarray, edges: np.ndarray) -> dict[str, list[float]]:
    """Residual mean, median and std in bins of `x`, with the statistical uncertainty of each bin's mean
    (std / sqrt(n)) and std (std / sqrt(2 (n - 1)), a Gaussian's); NaN where a bin has too few rows."""
    x = np.asarray(x, dtype=np.float64).ravel()
    r = np.asarray(residual, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(r)
    x, r = x[ok], r[ok]
    edges = np.asarray(edges, dtype=np.float64)
    index = np.digitize(x, edges) - 1
    out: dict[str, list[float]] = {"edges": edges.tolist(), "count": [], "mean": [], "mean_err": [],
                                   "median": [], "std": [], "std_err": []}
    order = np.argsort(index, kind="stable")
    bounds = np.searchsorted(index[order], np.arange(edges.size))
    for b in range(edges.size - 1):
        part = r[order[bounds[b]:bounds[b + 1]]]
        n = part.size
        std = float(part.std(ddof=1)) if n > 1 else math.nan
        out["count"].append(int(n))
        out["mean"].append(float(part.mean()) if n else math.nan)
        out["mean_err"].append(std / math.sqrt(n) if n > 1 else math.nan)
        out["median"].append(float(np.median(part)) if n else math.nan)
        out["std"].append(std)
        out["std_err"].append(std / math.sqrt(2 * (n - 1)) if n > 1 else math.nan)
    return out
