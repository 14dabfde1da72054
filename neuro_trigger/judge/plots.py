"""The matplotlib figures of one expert's predictions, shared by TensorBoard and the PNG output.

The new and the old network are drawn in the same figure (overlaid, or in two panels side by side for
the 2D histograms), and every title names the expert and the split, so a copied PNG still says what it
shows. The figures that compare several runs are in `judge/overlays.py`; saving figures as PNG files, PNG
bytes or pixel arrays in `judge/figure_files.py`.

Figures are built with ``matplotlib.figure.Figure`` and an explicit Agg canvas, never through
pyplot: no global figure registry, so nothing leaks and figures can be made in any thread or
process. Histograms are computed with numpy and drawn as step lines and images; what remains is
matplotlib's fixed cost per figure (axes, ticks, text: about 60-80 ms each, 11 figures in total).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from neuro_trigger.data.dataset import THETA_RANGE_DEG, Z_RANGE_CM, theta_to_deg, z_to_cm
from neuro_trigger.judge.figure_files import DPI
from neuro_trigger.judge.metrics import as_2d, residual_stats, trimmed_std

FIGSIZE = (6.4, 4.8)
N_TICKS = 6
TRIM = 0.05
IP_CUT_CM = 1.0  # "from the interaction point": |reco z| below this
IP_RESIDUAL_RANGE = (-50.0, 50.0)
NEW_COLOUR, OLD_COLOUR, GT_COLOUR = "tab:blue", "black", "tab:green"  # old: the reference, as in overlays


@dataclass(frozen=True)
class _Quantity:
    """How one output (z or theta) is converted, binned and labelled."""

    name: str
    column: int
    to_physical: Callable[[np.ndarray], np.ndarray]
    unit: str
    value_range: tuple[float, float]  # the physical range of the scaled [-1, 1]
    residual_range: tuple[float, float]
    n_bins: int
    n_residual_bins: int
    n_profile_bins: int

    @property
    def wide_range(self) -> tuple[float, float]:
        """Range for predictions, which may leave [-1, 1]: 10% margin on each side."""
        lo, hi = self.value_range
        m = 0.1 * (hi - lo)
        return lo - m, hi + m


_Z = _Quantity("z", 0, z_to_cm, "cm", Z_RANGE_CM, (-100.0, 100.0), 100, 200, 20)
_THETA = _Quantity("theta", 1, theta_to_deg, "deg", THETA_RANGE_DEG, (-80.0, 80.0), 80, 160, 16)


def _new_figure(panels: int = 1) -> tuple[Figure, list]:
    """A figure of `panels` axes side by side (each of the usual size), with few ticks."""
    fig = Figure(figsize=(FIGSIZE[0] * (0.9 * panels if panels > 1 else 1), FIGSIZE[1]), dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    axes = [fig.add_subplot(1, panels, i + 1) for i in range(panels)]
    if panels == 1:
        fig.subplots_adjust(left=0.12, right=0.95, bottom=0.11, top=0.92)
    else:
        fig.subplots_adjust(left=0.07, right=0.9, bottom=0.11, top=0.86, wspace=0.22)
    for ax in axes:
        # fewer ticks: tick objects and their labels are most of matplotlib's drawing time
        ax.xaxis.set_major_locator(MaxNLocator(N_TICKS, steps=[1, 2, 2.5, 5, 10]))
        ax.yaxis.set_major_locator(MaxNLocator(N_TICKS, steps=[1, 2, 2.5, 5, 10]))
    return fig, axes


def _mark_empty(ax, n: int) -> None:
    """Say so on the plot when there was nothing to show (empty split, all rows NaN)."""
    if n == 0:
        ax.text(0.5, 0.5, "no tracks", transform=ax.transAxes, ha="center", va="center", color="grey")


def _title(ax, text: str) -> None:
    # a fixed title position skips matplotlib's costly automatic placement
    ax.set_title(text, y=1.0, pad=6, fontsize="medium")


def _headed(what: str, text: str) -> str:
    """A figure title: what the figures are of (expert, split), then what this one shows."""
    return f"{what}: {text}" if what else text


def describe(expert: int | None = None, split: str = "") -> str:
    """"expert 2, val split" (either part left out when not given): the start of every figure title."""
    parts = ([f"expert {expert}" + (" (solo: all data)" if expert == -1 else "")] if expert is not None else [])
    return ", ".join(parts + ([f"{split} split"] if split else []))


def _steps(ax, counts: np.ndarray, edges: np.ndarray, **kwargs) -> None:
    """A step histogram as one Line2D (much cheaper to add than ``Axes.stairs``' patch)."""
    ax.plot(np.repeat(edges, 2), np.concatenate(([0], np.repeat(counts, 2), [0])), **kwargs)


def _hist(ax, values: np.ndarray, value_range: tuple[float, float], bins: int, **kwargs) -> int:
    """Draw a step histogram; return the number of values outside the range."""
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    _steps(ax, counts, edges, **kwargs)
    ax.set_xlim(*value_range)
    return int(values.size - counts.sum())


def _stats_label(title: str, values: np.ndarray, unit: str, outside: int) -> str:
    s = residual_stats(values, np.zeros_like(values), TRIM)
    label = (
        f"{title}, count {s['count']}\nmean {s['mean']:.3g} {unit}, std {s['std']:.3g} {unit}\n"
        f"trimmed std ({TRIM:.0%}) {s['trimmed_std']:.3g} {unit}"
    )
    return label + (f"\noutside plot range {outside}" if outside else "")


# (reco, network output, residual) of one network on the rows where both are finite, physical units
_Net = tuple[np.ndarray, np.ndarray, np.ndarray]
_WHO = (("new", NEW_COLOUR), ("old", OLD_COLOUR))


def _fig_vs_reco(q: _Quantity, nets: dict[str, _Net], what: str) -> Figure:
    """2D histograms of the new and the old network's output vs reco, side by side on one log colour scale,
    with the ideal diagonal."""
    fig, axes = _new_figure(2)
    lo, hi = q.wide_range
    hists = {who: np.histogram2d(nets[who][0], nets[who][1], bins=q.n_bins, range=(q.value_range, (lo, hi)))
             for who, _ in _WHO}
    norm = LogNorm(vmin=1, vmax=max(max(float(h[0].max(initial=0)) for h in hists.values()), 2.0))
    for ax, (who, _) in zip(axes, _WHO, strict=True):
        h, xe, ye = hists[who]
        image = ax.imshow(np.ma.masked_equal(h.T, 0), origin="lower", extent=(xe[0], xe[-1], ye[0], ye[-1]),
                          aspect="auto", interpolation="nearest", norm=norm, cmap="viridis",
                          label=f"{who} network")
        ax.plot(q.value_range, q.value_range, color="grey", lw=0.8, ls="--")
        ax.set_xlim(xe[0], xe[-1])
        ax.set_ylim(ye[0], ye[-1])
        ax.set_xlabel(f"reco {q.name} [{q.unit}]")
        ax.set_ylabel(f"{who} network {q.name} [{q.unit}]")
        _mark_empty(ax, nets[who][0].size)
        _title(ax, f"{who} network ({nets[who][0].size} tracks)")
    bar = fig.colorbar(image, cax=fig.add_axes((0.92, 0.11, 0.015, 0.75)), label="tracks")
    bar.minorticks_off()
    # 1, 10, 100 as plain numbers: the default 10^n labels go through mathtext, a third of this figure's drawing
    bar.formatter = FuncFormatter(lambda value, _: f"{value:g}")
    fig.suptitle(_headed(what, f"network {q.name} vs reco {q.name}"), y=0.97, fontsize="medium")
    return fig


def _fig_pred(q: _Quantity, nets: dict[str, _Net], what: str) -> Figure:
    """Distributions of the new and the old network's output, reco (of the new network's rows) for reference."""
    fig, (ax,) = _new_figure()
    notes = []
    for who, colour in _WHO:
        est = nets[who][1]
        outside = _hist(ax, est, q.wide_range, q.n_bins, color=colour, label=f"{who} network ({est.size})")
        if outside:
            notes.append(f"{who} outside plot range {outside}")
    _hist(ax, nets["new"][0], q.wide_range, q.n_bins, color=GT_COLOUR, ls="--", lw=0.8, label="reco")
    for note in notes:
        ax.plot([], [], " ", label=note)
    ax.set_xlabel(f"network {q.name} [{q.unit}]")
    ax.set_ylabel("tracks")
    _mark_empty(ax, nets["new"][1].size + nets["old"][1].size)
    _title(ax, _headed(what, f"{q.name} of the new and the old network"))
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _fig_residual(q: _Quantity, residuals: dict[str, np.ndarray], value_range: tuple[float, float],
                  title: str) -> Figure:
    """Residual histograms of the new and the old network; the legend carries count, mean, std, trimmed std."""
    fig, (ax,) = _new_figure()
    for who, colour in _WHO:
        res = residuals[who]
        counts, edges = np.histogram(res, bins=q.n_residual_bins, range=value_range)
        outside = int(res.size - counts.sum())
        _steps(ax, counts, edges, color=colour, label=_stats_label(f"{who} network", res, q.unit, outside))
    ax.set_xlim(*value_range)
    ax.set_xlabel(f"reco {q.name} - network {q.name} [{q.unit}]")
    ax.set_ylabel("tracks")
    _mark_empty(ax, residuals["new"].size + residuals["old"].size)
    _title(ax, title)
    ax.legend(loc="upper right", fontsize="x-small")
    return fig


def _profile(q: _Quantity, reco: np.ndarray, res: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin centres, residual std and trimmed std per bin of reco (NaN where < 2 entries)."""
    n = q.n_profile_bins
    edges = np.linspace(*q.value_range, n + 1)
    idx = np.clip(np.searchsorted(edges, reco, side="right") - 1, 0, n - 1)
    cnt = np.bincount(idx, minlength=n).astype(np.float64)
    s1 = np.bincount(idx, weights=res, minlength=n)
    s2 = np.bincount(idx, weights=res * res, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s1 / cnt
        std = np.sqrt(np.maximum(s2 / cnt - mean * mean, 0.0))
    std[cnt < 2] = np.nan
    # trimmed std needs the values of each bin: one sort, then a loop over the (few) bins
    order = np.argsort(idx, kind="stable")
    bounds = np.concatenate(([0], np.cumsum(cnt).astype(np.int64)))
    sorted_res = res[order]
    tstd = np.array(
        [
            trimmed_std(sorted_res[bounds[i] : bounds[i + 1]], TRIM) if cnt[i] >= 2 else np.nan
            for i in range(n)
        ]
    )
    return 0.5 * (edges[:-1] + edges[1:]), std, tstd


def _fig_profile(q: _Quantity, nets: dict[str, _Net], what: str) -> Figure:
    """Residual std and trimmed std in bins of reco, of the new and the old network."""
    fig, (ax,) = _new_figure()
    shown = []
    for who, colour in _WHO:
        centres, std, tstd = _profile(q, nets[who][0], nets[who][2])
        ax.plot(centres, std, "o-" if who == "new" else "o:", color=colour, ms=4 if who == "new" else 3,
                label=f"{who} network std")
        ax.plot(centres, tstd, "s--", color=colour, ms=3, lw=0.8, label=f"{who} network trimmed std ({TRIM:.0%})")
        shown += [std, tstd]
    finite = np.concatenate(shown)
    finite = finite[np.isfinite(finite)]
    top = float(finite.max()) if finite.size else 0.0
    ax.set_xlim(*q.value_range)
    ax.set_ylim(0, 1.4 * top if top > 0 else 1.0)  # head room for the legend
    if not finite.size:
        ax.text(0.5, 0.5, "too few tracks", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel(f"reco {q.name} [{q.unit}]")
    ax.set_ylabel(f"std of reco {q.name} - network {q.name} [{q.unit}]")
    _title(ax, _headed(what, f"{q.name} residual spread vs reco {q.name}"))
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _fig_gt(q: _Quantity, reco: np.ndarray, what: str) -> Figure:
    """Distribution of the reco value (the training target)."""
    fig, (ax,) = _new_figure()
    _hist(ax, reco, q.value_range, q.n_bins, color=GT_COLOUR, label=f"reco ({reco.size} tracks)")
    ax.set_xlabel(f"reco {q.name} [{q.unit}]")
    ax.set_ylabel("tracks")
    _mark_empty(ax, reco.size)
    _title(ax, _headed(what, f"reco {q.name} (ground truth)"))
    ax.legend(loc="upper right", fontsize="small")
    return fig


def prediction_figures(target: np.ndarray, pred: np.ndarray, old: np.ndarray, out_size: int,
                       expert: int | None = None, split: str = "",
                       only: Collection[str] | None = None) -> dict[str, Figure]:
    """All figures of one expert on one split, by name (scaled (N, k) inputs, k >= out_size).

    Per quantity (z; theta too when out_size is 2): "<q>_vs_reco" (new and old network in two panels),
    "<q>_pred", "<q>_residual", "<q>_residual_std_vs_<q>" (plus "z_residual_ip" for |reco z| < 1 cm), each
    with the new and the old network in the same figure, and "<q>-gt" (the reco distribution); the same
    names, in the same order, as `figure_names`. Every title starts with the expert and the split
    (`describe`). Rows with a NaN in the values a figure compares are skipped. `only`: just the figures of
    these names, in the same order.
    """
    if out_size not in (1, 2):
        raise ValueError(f"out_size must be 1 or 2, got {out_size}")
    t, p, o = as_2d(target), as_2d(pred), as_2d(old)
    what = describe(expert, split)
    wanted = set(figure_names(out_size) if only is None else only)
    figs: dict[str, Figure] = {}
    for q in (_Z, _THETA)[:out_size]:
        names = [n for n in figure_names(out_size) if n in wanted and (n.startswith(f"{q.name}_")
                                                                        or n == f"{q.name}-gt")]
        if not names:
            continue
        c = q.column
        reco_all = q.to_physical(t[:, c])
        nets: dict[str, _Net] = {}
        for who, est_scaled in (("new", p[:, c]), ("old", o[:, c])):
            est_all = q.to_physical(est_scaled)
            ok = np.isfinite(reco_all) & np.isfinite(est_all)
            nets[who] = (reco_all[ok], est_all[ok], reco_all[ok] - est_all[ok])
        for name in names:
            figs[name] = _quantity_figure(name, q, nets, reco_all, what)
    return figs


def _quantity_figure(name: str, q: _Quantity, nets: dict[str, _Net], reco_all: np.ndarray, what: str) -> Figure:
    """The figure `name` (one of `figure_names`) of quantity `q`."""
    if name == f"{q.name}_vs_reco":
        return _fig_vs_reco(q, nets, what)
    if name == f"{q.name}_pred":
        return _fig_pred(q, nets, what)
    if name == f"{q.name}_residual":
        return _fig_residual(q, {who: nets[who][2] for who, _ in _WHO}, q.residual_range,
                             _headed(what, f"{q.name} residual"))
    if name == f"{q.name}_residual_std_vs_{q.name}":
        return _fig_profile(q, nets, what)
    if name == "z_residual_ip":
        ip = {who: nets[who][2][np.abs(nets[who][0]) < IP_CUT_CM] for who, _ in _WHO}
        return _fig_residual(q, ip, IP_RESIDUAL_RANGE, _headed(what, f"z residual, |reco z| < {IP_CUT_CM:g} cm"))
    if name == f"{q.name}-gt":
        return _fig_gt(q, reco_all[np.isfinite(reco_all)], what)
    raise ValueError(f"no figure {name!r} of {q.name}")


def residual_histograms(target: np.ndarray, pred: np.ndarray, out_size: int) -> dict[str, dict]:
    """The residual (reco - network) of z in cm (and of theta in degrees when out_size is 2) as histograms on
    the figures' fixed ranges, as keyword arguments of TensorBoard's ``add_histogram_raw``, by tag
    ("z_residual_cm", "theta_residual_deg"). Values outside the range count in its outer bins; rows with a NaN
    are left out. Cheap enough for every plot event."""
    t, p = as_2d(target), as_2d(pred)
    out: dict[str, dict] = {}
    for q in (_Z, _THETA)[:out_size]:
        res = q.to_physical(t[:, q.column]) - q.to_physical(p[:, q.column])
        res = res[np.isfinite(res)]
        lo, hi = q.residual_range
        # a quarter of the figure's bins: TensorBoard shows about 30 of its own, and every bin costs writing
        counts, edges = np.histogram(np.clip(res, lo, hi), bins=q.n_residual_bins // 4, range=(lo, hi))
        out[f"{q.name}_residual_{q.unit}"] = {
            "min": float(res.min()) if res.size else 0.0, "max": float(res.max()) if res.size else 0.0,
            "num": int(res.size), "sum": float(res.sum()), "sum_squares": float(np.dot(res, res)),
            "bucket_limits": edges[1:].tolist(), "bucket_counts": counts.tolist()}
    return out


def figure_names(out_size: int) -> list[str]:
    """The names `prediction_figures` gives its figures, in its order, without drawing them."""
    names = []
    for q in ("z", "theta")[:out_size]:
        names += [f"{q}_vs_reco", f"{q}_pred", f"{q}_residual", f"{q}_residual_std_vs_{q}"]
        names += ["z_residual_ip"] if q == "z" else []
        names.append(f"{q}-gt")
    return names
