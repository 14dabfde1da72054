"""The trigger's view of a network: what share of the tracks from the interaction point its cut |z_pred| < cut
keeps (efficiency), what share of the tracks from far along the beam pipe it removes (rejection), both over
a range of cuts (ROC), and the z resolution binned by reco z, reco theta, expert and tracks in the event.
`judge` reports all of it for the new and the old network on the same rows (result_<split>.json's "trigger",
evaluate's and compare's metrics.json).

All inputs of `judge` are scaled ([-1, 1]); the other functions take cm and degrees. Rows with a NaN are
left out of what they spoil.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import theta_to_deg, z_to_cm
from neuro_trigger.errors import UserError
from neuro_trigger.judge.metrics import as_2d, finite_rows, loss_value, ratio

# The trigger keeps a track when |z_pred| < cut. Its efficiency is judged on tracks from the interaction
# point (|reco z| < IP_CM), its background rejection on tracks from far away (|reco z| > BACKGROUND_CM).
# All three are module constants (docs/metrics.md): change them here, or pass other values to the functions
# below; evaluate and compare take the cut as --cut.
TRIGGER_CUT_CM = 15.0
IP_CM = 1.0
BACKGROUND_CM = 20.0
ROC_CUTS_CM = np.arange(1.0, 61.0)  # 1, 2, ..., 60 cm
Z_BIN_EDGES_CM = np.arange(-100.0, 101.0, 10.0)
THETA_BIN_EDGES_DEG = np.arange(10.0, 171.0, 20.0)
NTRACKS_BIN_EDGES = np.array([0.5, 1.5, 2.5, 3.5, 5.5, 8.5, 12.5, 1000.5])
EXPERT_BIN_EDGES = np.arange(-1.5, 5.0)  # one bin per expert: -1 (no expert), 0, ..., 4


def _binomial(k: int, n: int) -> tuple[float, float]:
    """Fraction k/n and its binomial standard error sqrt(p (1 - p) / n); NaN for n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    return p, math.sqrt(p * (1 - p) / n)


def _finite_pairs(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two 1-d float64 arrays with the rows where either is NaN or infinite left out."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"lengths differ: {a.size} and {b.size}")
    ok = np.isfinite(a) & np.isfinite(b)
    return (a, b) if ok.all() else (a[ok], b[ok])


def _bin_index(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin of each x: i for edges[i] <= x < edges[i + 1], the last bin closed on the right (as np.histogram);
    -1 below the first edge or NaN, len(edges) - 1 above the last. int16 (a stable sort of it is a radix sort).

    Integers are looked up in a table of their range; equally spaced edges are found by arithmetic, corrected
    by one comparison with each neighbouring edge (so a value on an edge lands exactly where a binary search
    puts it); both several times faster than the binary search used otherwise."""
    x = np.asarray(x).ravel()
    edges = np.asarray(edges, dtype=np.float64).ravel()
    nbins = edges.size - 1
    if nbins < 1 or nbins >= 30_000 or np.any(np.diff(edges) <= 0):
        raise ValueError(f"bin edges must increase, 2 to 30000 of them: {edges}")
    if x.dtype.kind in "iu":
        if x.size == 0:
            return np.zeros(0, np.int16)
        lo, hi = int(x.min()), int(x.max())
        if hi - lo < 1_000_000:
            table = _bin_index(np.arange(lo, hi + 1, dtype=np.float64), edges)
            return np.take(table, x - lo if lo else x)
    x = np.asarray(x, dtype=np.float64)
    x = np.where(np.isnan(x), -np.inf, x)
    step = (edges[-1] - edges[0]) / nbins
    if np.allclose(np.diff(edges), step, rtol=1e-9, atol=0.0):
        scaled = x - edges[0]
        scaled *= 1.0 / step
        np.floor(scaled, out=scaled)
        np.clip(scaled, 0, nbins - 1, out=scaled)
        guess = scaled.astype(np.int32)
        index = guess.astype(np.int16)
        index -= x < np.take(edges, guess)  # the guess is at most one bin off
        guess += 1
        index += x >= np.take(edges, guess)
    else:
        index = (np.searchsorted(edges, x, side="right") - 1).astype(np.int16)
    index[x == edges[-1]] = nbins - 1
    return index


def trigger_metrics(reco_z_cm: np.ndarray, pred_z_cm: np.ndarray, cut_cm: float = TRIGGER_CUT_CM,
                    ip_cm: float = IP_CM, background_cm: float = BACKGROUND_CM) -> dict[str, float]:
    """Efficiency (IP tracks kept) and background rejection (far tracks removed) of the cut |z_pred| < cut_cm,
    with binomial errors and the number of tracks each is judged on. Rows with a NaN are left out.

    IP tracks: |reco z| < ip_cm; background tracks: |reco z| > background_cm (both strict), all in cm.
    """
    reco, pred = _finite_pairs(reco_z_cm, pred_z_cm)
    kept = np.abs(pred) < cut_cm
    distance = np.abs(reco)
    ip, background = distance < ip_cm, distance > background_cm
    n_ip, n_bg = int(np.count_nonzero(ip)), int(np.count_nonzero(background))
    efficiency, efficiency_err = _binomial(int(np.count_nonzero(kept & ip)), n_ip)
    rejection, rejection_err = _binomial(int(np.count_nonzero(~kept & background)), n_bg)
    return {"cut_cm": float(cut_cm), "efficiency": efficiency, "efficiency_err": efficiency_err,
            "rejection": rejection, "rejection_err": rejection_err, "ip_tracks": n_ip, "background_tracks": n_bg}


def roc_curve(reco_z_cm: np.ndarray, pred_z_cm: np.ndarray, cuts_cm: np.ndarray = ROC_CUTS_CM,
              ip_cm: float = IP_CM, background_cm: float = BACKGROUND_CM) -> dict[str, list[float]]:
    """Efficiency and rejection (as in `trigger_metrics`) for every cut in `cuts_cm` (default 1 to 60 cm), in
    the order given; NaN throughout where a class of tracks is empty. Each track is placed among the sorted
    cuts once (no sort of the tracks): the tracks a cut keeps are those placed below it."""
    reco, pred = _finite_pairs(reco_z_cm, pred_z_cm)
    cuts = np.asarray(cuts_cm, dtype=np.float64).ravel()
    sorted_cuts = np.sort(cuts)
    distance, reco_distance = np.abs(pred), np.abs(reco)
    result = {}
    for name, chosen in (("efficiency", reco_distance < ip_cm), ("rejection", reco_distance > background_cm)):
        d = distance[chosen]
        if d.size == 0:
            result[name] = [math.nan] * cuts.size
            continue
        # kept by cut j: |z_pred| < cut_j, i.e. fewer than j + 1 sorted cuts are <= |z_pred|
        position = np.searchsorted(sorted_cuts, d, side="right")
        kept = np.cumsum(np.bincount(position, minlength=cuts.size + 1))[:-1]
        kept = kept[np.searchsorted(sorted_cuts, cuts, side="left")]  # back to the order given (first of equals)
        fraction = kept / d.size
        result[name] = (fraction if name == "efficiency" else 1 - fraction).tolist()
    return {"cut_cm": cuts.tolist(), **result}


def efficiency_vs_z(reco_z_cm: np.ndarray, pred_z_cm: np.ndarray, edges_cm: np.ndarray = Z_BIN_EDGES_CM,
                    cut_cm: float = TRIGGER_CUT_CM) -> dict[str, list[float]]:
    """The fraction of tracks the cut keeps in bins of reco z, with binomial errors and counts (NaN for an
    empty bin). Inside the IP region this is the efficiency, far out it is 1 - rejection."""
    reco, pred = _finite_pairs(reco_z_cm, pred_z_cm)
    edges = np.asarray(edges_cm, dtype=np.float64).ravel()
    return _efficiency_in_bins(_bin_index(reco, edges), np.abs(pred) < cut_cm, edges)


def _efficiency_in_bins(index: np.ndarray, kept: np.ndarray, edges: np.ndarray) -> dict[str, list[float]]:
    """efficiency_vs_z from the bin of each track (`_bin_index`) and whether the cut keeps it."""
    nbins = edges.size - 1
    shifted = index.astype(np.int64) + 1  # 0: underflow, nbins + 1: overflow
    count = np.bincount(shifted, minlength=nbins + 2)[1:-1]
    passed = np.bincount(shifted, weights=kept, minlength=nbins + 2)[1:-1]
    pairs = [_binomial(int(k), int(n)) for k, n in zip(passed, count, strict=True)]
    return {"edges": edges.tolist(), "count": count.tolist(), "efficiency": [p for p, _ in pairs],
            "efficiency_err": [e for _, e in pairs]}


def resolution(residual: np.ndarray, trim: float = 0.05) -> dict[str, float]:
    """How wide and how biased a residual distribution is: std (ddof 0), trimmed std (`trimmed_std`), the
    half-width of its central 68.27% ((q84.135 - q15.865) / 2, a Gaussian's sigma, robust to tails), mean and
    median, and the count. NaN and infinite values are left out; empty input gives NaN and count 0."""
    r = np.asarray(residual, dtype=np.float64).ravel()
    r = r[np.isfinite(r)]
    n = r.size
    if n == 0:
        return {"count": 0, "std": math.nan, "trimmed_std": math.nan, "half_width_68": math.nan,
                "mean": math.nan, "median": math.nan}
    if not 0.0 <= trim < 0.5:
        raise ValueError(f"trim must lie in [0, 0.5), got {trim}")
    # one partition places every order statistic needed: the trimmed range's ends and, for each quantile,
    # the two values np.percentile's linear interpolation uses (position h = (n - 1) q)
    cut = int(math.floor(n * trim))
    positions = np.array([15.865, 50.0, 84.135]) / 100 * (n - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, n - 1)
    kth = {int(i) for i in (*low, *high)} | ({cut - 1, n - cut} if cut else set())
    part = np.partition(r, sorted(kth))
    q16, q50, q84 = part[low] + (positions - low) * (part[high] - part[low])
    trimmed = float(part[cut:n - cut].std()) if n - 2 * cut > 0 else math.nan
    return {"count": int(n), "std": float(r.std()), "trimmed_std": trimmed,
            "half_width_68": float((q84 - q16) / 2), "mean": float(r.mean()), "median": float(q50)}


def binned_resolution(x: np.ndarray, residual: np.ndarray, edges: np.ndarray) -> dict[str, list[float]]:
    """Residual mean, median and std (ddof 1) in bins of `x`, with the statistical uncertainty of each bin's
    mean (std / sqrt(n)) and of its std (std / sqrt(2 (n - 1)), exact for a Gaussian); the mean and median
    need one row, std and both uncertainties two (NaN otherwise). Bins as in np.histogram; rows outside
    the edges or with a NaN are left out."""
    x = np.asarray(x).ravel()
    r = np.asarray(residual, dtype=np.float64).ravel()
    if x.shape != r.shape:
        raise ValueError(f"lengths differ: {x.size} and {r.size}")
    edges = np.asarray(edges, dtype=np.float64).ravel()
    return _Grouping(x, edges).stats(r, np.isfinite(r))


class _Grouping:
    """The rows of a table grouped by the bin of x, sorted once (a stable radix sort of the int16 bins), so
    that the binned residuals of several networks, each on its own subset of the rows, cost one gather each."""

    def __init__(self, x: np.ndarray, edges: np.ndarray) -> None:
        self.edges = edges
        self.index = _bin_index(x, edges)
        self.order = np.argsort(self.index, kind="stable")

    def stats(self, residual: np.ndarray, rows: np.ndarray | None = None) -> dict[str, list[float]]:
        """binned_resolution of `residual` (one value per row of x) over the rows where `rows` is True
        (None: all)."""
        nbins = self.edges.size - 1
        order, index = self.order, self.index
        if rows is not None and not rows.all():
            order, index = order[rows[order]], index[rows]  # a subset of a grouped order stays grouped
        counts = np.bincount(index.astype(np.int64) + 1, minlength=nbins + 2)  # underflow, bins, overflow
        starts = np.cumsum(counts)  # bin b: starts[b] up to starts[b + 1]
        grouped = residual[order]
        out: dict[str, list[float]] = {"edges": self.edges.tolist(), "count": [], "mean": [], "mean_err": [],
                                       "median": [], "std": [], "std_err": []}
        for b in range(nbins):
            part = grouped[starts[b]:starts[b + 1]]  # a view of the gathered copy: partitioned in place below
            n = part.size
            mean = float(part.mean()) if n else math.nan
            std = float(np.sqrt(np.square(part - mean).sum() / (n - 1))) if n > 1 else math.nan
            median = math.nan
            if n:
                half = n // 2
                part.partition((half - 1, half) if n % 2 == 0 else half)
                median = float((part[half - 1] + part[half]) / 2 if n % 2 == 0 else part[half])
            out["count"].append(int(n))
            out["mean"].append(mean)
            out["mean_err"].append(std / math.sqrt(n) if n > 1 else math.nan)
            out["median"].append(median)
            out["std"].append(std)
            out["std_err"].append(std / math.sqrt(2 * (n - 1)) if n > 1 else math.nan)
        return out


# ---------------------------------------------------------------------------------------------- judge
def _network(pred: np.ndarray, rows: np.ndarray, reco_z: np.ndarray, reco_theta: np.ndarray | None,
             target: np.ndarray, groups: dict[str, _Grouping], loss: str, cut_cm: float, ip_cm: float,
             background_cm: float) -> dict[str, Any]:
    """Everything `judge` reports for one network (scaled (N, k) `pred`) on the rows where `rows` is True."""
    k = pred.shape[1]
    every = bool(rows.all())
    pred_z = z_to_cm(pred[:, 0])
    residual_z = reco_z - pred_z  # every row; the groupings pick `rows`
    chosen = (lambda a: a) if every else (lambda a: a[rows])
    reco_z_rows, pred_z_rows = chosen(reco_z), chosen(pred_z)
    out: dict[str, Any] = {"loss": loss_value(chosen(pred), chosen(target[:, :k]), loss),
                           "z": resolution(reco_z_rows - pred_z_rows)}
    if k == 2:
        out["theta"] = resolution(chosen(reco_theta) - theta_to_deg(chosen(pred[:, 1])))
    z_bins = groups["z_vs_reco_z"].index
    out.update(
        trigger=trigger_metrics(reco_z_rows, pred_z_rows, cut_cm, ip_cm, background_cm),
        roc=roc_curve(reco_z_rows, pred_z_rows, ROC_CUTS_CM, ip_cm, background_cm),
        efficiency_vs_z=_efficiency_in_bins(chosen(z_bins), np.abs(pred_z_rows) < cut_cm, Z_BIN_EDGES_CM),
    )
    for name, grouping in groups.items():
        out[name] = grouping.stats(residual_z, None if every else rows)
    return out


def judge(target: np.ndarray, pred: np.ndarray, old: np.ndarray, loss: str, expert: np.ndarray,
          ntracks: np.ndarray, cut_cm: float = TRIGGER_CUT_CM, ip_cm: float = IP_CM,
          background_cm: float = BACKGROUND_CM) -> dict[str, Any]:
    """The new and the old network judged as the trigger is judged, on one set of rows.

    `target`, `pred`, `old` are scaled (N, k) arrays (k = out_size, 1 or 2; `target` and `old` may have
    more columns, e.g. the full (N, 2) y and y_old: a second target column then also bins z by reco theta
    for k == 1; without one that binning stays empty), `expert` and `ntracks` the (N,) columns of the same
    rows. Returns ``{"rows", "rows_without_old", "cut_cm", "new": NET, "old": NET, "vs_old"}`` where NET holds
    the loss, the z resolution in cm (`resolution`), the theta resolution in degrees (k == 2 only),
    `trigger_metrics` at `cut_cm`, `roc_curve`, `efficiency_vs_z` and the z residual binned
    (`binned_resolution`) by reco z ("z_vs_reco_z"), reco theta, expert and tracks in the event.

    "new" uses the rows where target and prediction are finite; "old" and everything in "vs_old" the rows
    where target, prediction and old output all are (the rows both networks cover, so that a comparison never
    mixes two sets of rows). ``rows`` counts every input row, ``rows_without_old`` the rows with a usable new
    prediction but no finite old output. "vs_old" holds the ratios new / old of the loss, the z std and the
    z 68% half-width (below 1: the new network is better), ``rows`` (the rows both cover) and the differences
    new - old of efficiency and rejection at the cut on those rows. Values are plain Python numbers and
    lists, NaN where there is nothing to compute (write_json stores NaN as null).
    """
    if not cut_cm > 0:
        raise UserError(f"the trigger cut must be above 0 cm, got {cut_cm}")
    if not 0 < ip_cm <= background_cm:
        raise UserError(f"need 0 < IP region ({ip_cm} cm) <= background region ({background_cm} cm)")
    p = as_2d(pred)
    n, k = p.shape
    t, o = as_2d(target), as_2d(old)
    expert, ntracks = np.asarray(expert).ravel(), np.asarray(ntracks).ravel()
    if k not in (1, 2) or t.shape[0] != n or o.shape[0] != n or t.shape[1] < k or o.shape[1] < k \
            or expert.size != n or ntracks.size != n:
        raise ValueError(f"shapes differ: target {t.shape}, pred {p.shape}, old {o.shape}, expert {expert.shape}, "
                         f"ntracks {ntracks.shape}")
    o = o[:, :k]
    new_ok = finite_rows(t[:, :k], p)
    both = new_ok & finite_rows(o)
    reco_z = z_to_cm(t[:, 0])
    reco_theta = theta_to_deg(t[:, 1]) if t.shape[1] >= 2 else np.full(n, np.nan)
    groups = {"z_vs_reco_z": _Grouping(reco_z, Z_BIN_EDGES_CM),
              "z_vs_reco_theta": _Grouping(reco_theta, THETA_BIN_EDGES_DEG),
              "z_vs_expert": _Grouping(expert, EXPERT_BIN_EDGES),
              "z_vs_ntracks": _Grouping(ntracks, NTRACKS_BIN_EDGES)}
    args = (reco_z, reco_theta, t, groups, loss, cut_cm, ip_cm, background_cm)
    new = _network(p, new_ok, *args)
    old_net = _network(o, both, *args)
    if bool((both == new_ok).all()):
        new_both = new  # the same rows: nothing to compute twice
    else:
        zb, pzb = reco_z[both], z_to_cm(p[both, 0])
        new_both = {"loss": loss_value(p[both], t[both, :k], loss), "z": resolution(zb - pzb),
                    "trigger": trigger_metrics(zb, pzb, cut_cm, ip_cm, background_cm)}
    vs_old = {
        "loss": ratio(new_both["loss"], old_net["loss"]),
        "z_std": ratio(new_both["z"]["std"], old_net["z"]["std"]),
        "z_half_width_68": ratio(new_both["z"]["half_width_68"], old_net["z"]["half_width_68"]),
        "rows": int(both.sum()),
        "efficiency_diff": new_both["trigger"]["efficiency"] - old_net["trigger"]["efficiency"],
        "rejection_diff": new_both["trigger"]["rejection"] - old_net["trigger"]["rejection"],
    }
    return {"rows": int(n), "rows_without_old": int(new_ok.sum() - both.sum()), "cut_cm": float(cut_cm),
            "new": new, "old": old_net, "vs_old": vs_old}
