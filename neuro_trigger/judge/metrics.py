"""Resolution metrics of one expert on one split: loss, z/theta residual spread, and the same for
the previous (old) network, so that every run says whether it beats what runs on the FPGA today.

All inputs are scaled ([-1, 1]); residuals (reco - predicted) are reported in cm and degrees.
Vectorised numpy throughout; rows with a NaN are left out of the comparison they spoil. The trigger's
view of a network (efficiency, rejection, ROC, binned resolution) is in `judge/trigger.py`.
"""

from __future__ import annotations

import math

import numpy as np

from neuro_trigger.data.dataset import theta_to_deg, z_to_cm
from neuro_trigger.errors import UserError


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


def finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """Boolean mask of the rows that are finite in every array."""
    mask = np.ones(arrays[0].shape[0], dtype=bool)
    for a in arrays:
        for column in range(a.shape[1]):  # column by column: .all(axis=1) over 2 columns is slow
            mask &= np.isfinite(a[:, column])
    return mask


def ratio(a: float, b: float) -> float:
    """a / b, NaN where b is zero or either is NaN."""
    return a / b if b != 0 and not (math.isnan(a) or math.isnan(b)) else math.nan


def as_2d(a: np.ndarray) -> np.ndarray:
    """(N,) or (N, k) as (N, k) float64: every metric and figure converts to cm and degrees from this, the
    float32 columns being too coarse for sums over millions of residuals."""
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
    t, p, o = as_2d(target), as_2d(pred), as_2d(old)
    if not (t.shape == p.shape and t.shape[0] == o.shape[0] and o.shape[1] >= t.shape[1]):
        raise ValueError(f"shapes differ: target {t.shape}, pred {p.shape}, old {o.shape}")
    k = t.shape[1]
    o = o[:, :k]
    new_ok = finite_rows(t, p)
    both = new_ok & finite_rows(o)
    tn, pn = t[new_ok], p[new_ok]
    tb, pb, ob = t[both], p[both], o[both]

    new_z = residual_stats(z_to_cm(tn[:, 0]), z_to_cm(pn[:, 0]), trim)
    both_z = residual_stats(z_to_cm(tb[:, 0]), z_to_cm(pb[:, 0]), trim)
    old_z = residual_stats(z_to_cm(tb[:, 0]), z_to_cm(ob[:, 0]), trim)
    out: dict[str, float] = {
        "rows": int(t.shape[0]),
        "rows_without_old": int(new_ok.sum() - both.sum()),
        "loss": loss_value(pn, tn, loss),
        "old_loss": loss_value(ob, tb, loss),
    }
    out["loss_vs_old"] = ratio(loss_value(pb, tb, loss), out["old_loss"])
    out.update(
        z_diff_std_cm=new_z["std"],
        z_diff_trimmed_std_cm=new_z["trimmed_std"],
        z_diff_mean_cm=new_z["mean"],
        old_z_diff_std_cm=old_z["std"],
        old_z_diff_trimmed_std_cm=old_z["trimmed_std"],
        z_diff_std_vs_old=ratio(both_z["std"], old_z["std"]),
    )
    if k >= 2:
        new_t = residual_stats(theta_to_deg(tn[:, 1]), theta_to_deg(pn[:, 1]), trim)
        old_t = residual_stats(theta_to_deg(tb[:, 1]), theta_to_deg(ob[:, 1]), trim)
        out.update(
            theta_diff_std_deg=new_t["std"],
            theta_diff_trimmed_std_deg=new_t["trimmed_std"],
            old_theta_diff_std_deg=old_t["std"],
        )
    return out
