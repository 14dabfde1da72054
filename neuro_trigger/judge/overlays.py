"""Overlaid figures that put several networks side by side, as the trigger is judged: one colour per
network (a run of a comparison, or "new" in an evaluation), the old network as a black dashed reference.

The numbers come from `judge/trigger.py` (the same functions `judge` reports), so a figure and the
metrics JSON beside it never disagree; every binned value carries its statistical uncertainty as an
error bar. Like `judge/plots.py`, figures are made without pyplot (a Figure with its own Agg canvas).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from neuro_trigger.data.dataset import theta_to_deg, z_to_cm
from neuro_trigger.errors import UserError
from neuro_trigger.judge.metrics import as_2d
from neuro_trigger.judge.trigger import (
    BACKGROUND_CM,
    IP_CM,
    THETA_BIN_EDGES_DEG,
    TRIGGER_CUT_CM,
    Z_BIN_EDGES_CM,
    binned_resolution,
    efficiency_vs_z,
    resolution,
    roc_curve,
    trigger_metrics,
)

FIGSIZE = (6.4, 4.8)
DPI = 100
# one colour per network; black and grey are kept for the old network and the reference marks
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink",
           "tab:olive", "tab:cyan")
LINESTYLES = ("-", "-.", ":")  # after the colours run out, the next networks get the next line style
OLD_COLOUR = "black"
OLD_LABEL = "old network"
N_RESIDUAL_BINS = 100
DODGE = 0.12  # horizontal offset between networks in a bin, as a fraction of the bin width


@dataclass
class _Series:
    """One network's residuals on the rows it covers, and how it is drawn."""

    label: str
    colour: str
    linestyle: str
    marker: str
    reco_z: np.ndarray  # cm
    pred_z: np.ndarray  # cm
    reco_theta: np.ndarray  # deg, NaN where the target has no theta
    theta_residual: np.ndarray | None  # deg (out_size 2 only)

    @property
    def z_residual(self) -> np.ndarray:
        return self.reco_z - self.pred_z

    def line(self) -> dict:
        """Keyword arguments of `Axes.plot` / `Axes.errorbar` for this network."""
        return {"color": self.colour, "ls": self.linestyle, "marker": self.marker, "ms": 3.5, "lw": 1.2,
                "label": self.label}


def _series(label: str, target: np.ndarray, est: np.ndarray, rows: np.ndarray, k: int, style: tuple) -> _Series:
    t, e = target[rows], est[rows]
    reco_theta = theta_to_deg(t[:, 1]) if t.shape[1] >= 2 else np.full(len(t), np.nan)
    theta_res = reco_theta - theta_to_deg(e[:, 1]) if k == 2 else None
    return _Series(label, *style, z_to_cm(t[:, 0]), z_to_cm(e[:, 0]), reco_theta, theta_res)


def _all_series(target: np.ndarray, preds: dict[str, np.ndarray], old: np.ndarray | None,
                out_size: int) -> list[_Series]:
    """The networks of `preds` in order, then the old network on the rows some network of `preds` covers."""
    k = out_size
    t = as_2d(target)
    n = t.shape[0]
    if t.shape[1] < k:
        raise ValueError(f"target has {t.shape[1]} column(s), out_size is {k}")
    target_ok = np.isfinite(t[:, :k]).all(axis=1)
    out, covered = [], np.zeros(n, dtype=bool)
    for i, (label, pred) in enumerate(preds.items()):
        p = as_2d(pred)
        if p.shape[0] != n or p.shape[1] < k:
            raise ValueError(f"prediction {label!r} has shape {p.shape}, target {t.shape}, out_size {k}")
        rows = target_ok & np.isfinite(p[:, :k]).all(axis=1)
        covered |= rows
        style = (COLOURS[i % len(COLOURS)], LINESTYLES[i // len(COLOURS) % len(LINESTYLES)], "o")
        out.append(_series(str(label), t, p, rows, k, style))
    if old is not None:
        o = as_2d(old)
        if o.shape[0] != n or o.shape[1] < k:
            raise ValueError(f"old has shape {o.shape}, target {t.shape}, out_size {k}")
        rows = target_ok & np.isfinite(o[:, :k]).all(axis=1) & (covered if preds else True)
        out.append(_series(OLD_LABEL, t, o, rows, k, (OLD_COLOUR, "--", "s")))
    return out


def _figure(title: str, what: str) -> tuple[Figure, object]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.12, right=0.96, bottom=0.11, top=0.9)
    ax.set_title(f"{title}: {what}" if title else what, y=1.0, pad=6, fontsize="medium")
    ax.grid(alpha=0.3, lw=0.5)
    return fig, ax


def _legend(ax, empty: bool, loc: str = "best") -> None:
    if empty:
        ax.text(0.5, 0.5, "no tracks", transform=ax.transAxes, ha="center", va="center", color="grey")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc=loc, fontsize="x-small")


def _residual_figure(series: list[_Series], residuals: list[np.ndarray], name: str, unit: str,
                     title: str, full_range: float) -> Figure:
    """Residual histograms normalised to each network's tracks (networks may cover different rows); the
    range follows the widest 68% half-width (5 of them each side, within +-full_range)."""
    fig, ax = _figure(title, f"{name} residual (reco - network)")
    widths = [resolution(r)["half_width_68"] for r in residuals]
    widths = [w for w in widths if np.isfinite(w) and w > 0]
    half = float(np.clip(5 * max(widths), 1.0, full_range)) if widths else full_range
    edges = np.linspace(-half, half, N_RESIDUAL_BINS + 1)
    top = 0.0
    for s, r in zip(series, residuals, strict=True):
        r = r[np.isfinite(r)]
        counts = np.histogram(r, bins=edges)[0]
        fraction = counts / r.size if r.size else counts.astype(float)
        stats = resolution(r)
        outside = r.size - int(counts.sum())
        label = (f"{s.label} ({r.size} tracks" + (f", {outside} outside the plot)" if outside else ")")
                 + f"\nstd {stats['std']:.3g} {unit}, 68% half-width {stats['half_width_68']:.3g} {unit}, "
                 f"mean {stats['mean']:.2g} {unit}")
        top = max(top, float(fraction.max(initial=0.0)))
        ax.plot(np.repeat(edges, 2), np.concatenate(([0], np.repeat(fraction, 2), [0])), color=s.colour,
                ls=s.linestyle, lw=1.2, label=label)
    ax.set_xlim(-half, half)
    ax.set_ylim(0, (1.15 + 0.12 * len(series)) * top if top > 0 else 1.0)  # head room for the legend
    ax.set_xlabel(f"reco {name} - network {name} [{unit}]")
    ax.set_ylabel("fraction of tracks per bin")
    _legend(ax, not any(r.size for r in residuals), "upper right")
    return fig


def _centres(edges: np.ndarray, i: int, n: int) -> np.ndarray:
    """Bin centres, moved apart a little per network so that the error bars stay readable."""
    edges = np.asarray(edges, dtype=np.float64)
    width = np.diff(edges)
    return 0.5 * (edges[:-1] + edges[1:]) + (i - (n - 1) / 2) * DODGE * width / max(n - 1, 1)


def _binned_figure(series: list[_Series], x_of, edges: np.ndarray, value: str, title: str, what: str,
                   xlabel: str, ylabel: str) -> Figure:
    """`binned_resolution`'s `value` ("std" or "mean") of the z residual in bins of x, with its error bars."""
    fig, ax = _figure(title, what)
    n = len(series)
    for i, s in enumerate(series):
        b = binned_resolution(x_of(s), s.z_residual, edges)
        ax.errorbar(_centres(edges, i, n), b[value], yerr=b[f"{value}_err"], capsize=2, **s.line())
    if value == "mean":
        ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlim(edges[0], edges[-1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    _legend(ax, not any(s.reco_z.size for s in series))
    return fig


def _efficiency_figure(series: list[_Series], cut_cm: float, title: str) -> Figure:
    """The fraction of tracks the cut keeps in bins of reco z; the IP and background regions shaded."""
    fig, ax = _figure(title, f"tracks kept by |z| < {cut_cm:g} cm vs reco z")
    edges = Z_BIN_EDGES_CM
    ax.axvspan(-IP_CM, IP_CM, color="tab:green", alpha=0.15, lw=0, label=f"IP region |z| < {IP_CM:g} cm")
    for side in (-1, 1):
        ax.axvspan(side * BACKGROUND_CM, side * edges[-1], color="grey", alpha=0.1, lw=0,
                   label=f"background |z| > {BACKGROUND_CM:g} cm" if side > 0 else None)
    n = len(series)
    for i, s in enumerate(series):
        e = efficiency_vs_z(s.reco_z, s.pred_z, edges, cut_cm)
        ax.errorbar(_centres(edges, i, n), e["efficiency"], yerr=e["efficiency_err"], capsize=2, **s.line())
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(-0.02, 1.1)
    ax.set_xlabel("reco z [cm]")
    ax.set_ylabel("fraction kept")
    _legend(ax, not any(s.reco_z.size for s in series))
    return fig


def _roc_figure(series: list[_Series], cut_cm: float, title: str) -> Figure:
    """Background rejection against efficiency for cuts of 1-60 cm, each network's point at the cut marked."""
    fig, ax = _figure(title, f"ROC, cut 1-60 cm (marked: {cut_cm:g} cm)")
    for s in series:
        roc = roc_curve(s.reco_z, s.pred_z)
        at = trigger_metrics(s.reco_z, s.pred_z, cut_cm)
        ax.plot(roc["efficiency"], roc["rejection"], color=s.colour, ls=s.linestyle, lw=1.2,
                label=f"{s.label}: efficiency {at['efficiency']:.3f}, rejection {at['rejection']:.3f}")
        ax.errorbar([at["efficiency"]], [at["rejection"]], xerr=[at["efficiency_err"]],
                    yerr=[at["rejection_err"]], color=s.colour, marker="*", ms=9, capsize=2)
    ax.set_xlabel(f"efficiency (|reco z| < {IP_CM:g} cm, kept)")
    ax.set_ylabel(f"background rejection (|reco z| > {BACKGROUND_CM:g} cm, removed)")
    _legend(ax, not any(s.reco_z.size for s in series))
    return fig


def overlay_figures(target: np.ndarray, preds: dict[str, np.ndarray], old: np.ndarray | None, out_size: int,
                    cut_cm: float = TRIGGER_CUT_CM, title: str = "") -> dict[str, Figure]:
    """The figures that compare networks on the same rows, by name, each titled "`title`: what it shows".

    `target` (N, >= out_size), each entry of `preds` (N, >= out_size) and `old` (N, >= out_size, or None)
    are scaled; one colour per entry of `preds` (its key is the legend label), the old network a black dashed
    line, drawn on the rows some entry of `preds` covers. Each network uses its rows where target and
    prediction are finite. Names, in order: "z_residual", "theta_residual" (out_size 2), "z_resolution_vs_reco_z",
    "z_resolution_vs_reco_theta" (when `target` has a theta column), "z_bias_vs_reco_z",
    "efficiency_vs_reco_z" (at `cut_cm`) and "roc" (cuts of 1-60 cm, the point at `cut_cm` marked).
    """
    if out_size not in (1, 2):
        raise ValueError(f"out_size must be 1 or 2, got {out_size}")
    if not cut_cm > 0:
        raise UserError(f"the trigger cut must be above 0 cm, got {cut_cm}")
    series = _all_series(target, preds, old, out_size)
    figs: dict[str, Figure] = {"z_residual": _residual_figure(series, [s.z_residual for s in series], "z", "cm",
                                                              title, 100.0)}
    if out_size == 2:
        figs["theta_residual"] = _residual_figure(series, [s.theta_residual for s in series], "theta", "deg",
                                                  title, 80.0)
    figs["z_resolution_vs_reco_z"] = _binned_figure(
        series, lambda s: s.reco_z, Z_BIN_EDGES_CM, "std", title, "z resolution vs reco z", "reco z [cm]",
        "std of z residual [cm]")
    if as_2d(target).shape[1] >= 2:
        figs["z_resolution_vs_reco_theta"] = _binned_figure(
            series, lambda s: s.reco_theta, THETA_BIN_EDGES_DEG, "std", title, "z resolution vs reco theta",
            "reco theta [deg]", "std of z residual [cm]")
    figs["z_bias_vs_reco_z"] = _binned_figure(
        series, lambda s: s.reco_z, Z_BIN_EDGES_CM, "mean", title, "z bias vs reco z", "reco z [cm]",
        "mean z residual (reco - network) [cm]")
    figs["efficiency_vs_reco_z"] = _efficiency_figure(series, cut_cm, title)
    figs["roc"] = _roc_figure(series, cut_cm, title)
    return figs
