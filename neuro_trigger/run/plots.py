"""The matplotlib figures of one expert's predictions, shared by TensorBoard and the PNG output.

Figures are built with ``matplotlib.figure.Figure`` and an explicit Agg canvas, never through
pyplot: no global figure registry, so nothing leaks and figures can be made in any thread or
process. Histograms are computed with numpy and drawn as step lines and images; what remains is
matplotlib's fixed cost per figure (axes, ticks, text: about 60-80 ms each, 20 figures in total).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from neuro_trigger.data.dataset import THETA_RANGE_DEG, Z_RANGE_CM
from neuro_trigger.run.metrics import _theta_to_deg, _z_to_cm, residual_stats, trimmed_std

FIGSIZE = (6.4, 4.8)
DPI = 100
N_TICKS = 6
TRIM = 0.05
IP_CUT_CM = 1.0  # "from the interaction point": |reco z| below this
IP_RESIDUAL_RANGE = (-50.0, 50.0)
NEW_COLOUR, OLD_COLOUR, GT_COLOUR = "tab:blue", "tab:orange", "tab:green"


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


_Z = _Quantity("z", 0, _z_to_cm, "cm", Z_RANGE_CM, (-100.0, 100.0), 100, 200, 20)
_THETA = _Quantity("theta", 1, _theta_to_deg, "deg", THETA_RANGE_DEG, (-80.0, 80.0), 80, 160, 16)


def _new_figure() -> tuple[Figure, object]:
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.12, right=0.95, bottom=0.11, top=0.92)
    # fewer ticks: tick objects and their labels are most of matplotlib's drawing time
    ax.xaxis.set_major_locator(MaxNLocator(N_TICKS, steps=[1, 2, 2.5, 5, 10]))
    ax.yaxis.set_major_locator(MaxNLocator(N_TICKS, steps=[1, 2, 2.5, 5, 10]))
    return fig, ax


def _mark_empty(ax, n: int) -> None:
    """Say so on the plot when there was nothing to show (empty split, all rows NaN)."""
    if n == 0:
        ax.text(0.5, 0.5, "no tracks", transform=ax.transAxes, ha="center", va="center", color="grey")


def _title(ax, text: str) -> None:
    # a fixed title position skips matplotlib's costly automatic placement
    ax.set_title(text, y=1.0, pad=6, fontsize="medium")


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
        f"{title}\ncount {s['count']}\nmean {s['mean']:.3g} {unit}\nstd {s['std']:.3g} {unit}\n"
        f"trimmed std ({TRIM:.0%}) {s['trimmed_std']:.3g} {unit}"
    )
    return label + (f"\noutside plot range {outside}" if outside else "")


def _fig_vs_reco(q: _Quantity, reco: np.ndarray, est: np.ndarray, who: str) -> Figure:
    """2D histogram of network output vs reco, log colour scale, with the ideal diagonal."""
    fig, ax = _new_figure()
    lo, hi = q.wide_range
    h, xe, ye = np.histogram2d(reco, est, bins=q.n_bins, range=(q.value_range, (lo, hi)))
    image = ax.imshow(
        np.ma.masked_equal(h.T, 0),
        origin="lower",
        extent=(xe[0], xe[-1], ye[0], ye[-1]),
        aspect="auto",
        interpolation="nearest",
        norm=LogNorm(vmin=1, vmax=max(float(h.max()), 2.0)),
        cmap="viridis",
    )
    fig.colorbar(image, ax=ax, label="tracks").minorticks_off()
    ax.plot(q.value_range, q.value_range, color="grey", lw=0.8, ls="--")
    ax.set_xlim(xe[0], xe[-1])
    ax.set_ylim(ye[0], ye[-1])
    ax.set_xlabel(f"reco {q.name} [{q.unit}]")
    ax.set_ylabel(f"{who} network {q.name} [{q.unit}]")
    _mark_empty(ax, reco.size)
    _title(ax, f"{who} network {q.name} vs reco ({reco.size} tracks)")
    return fig


def _fig_pred(q: _Quantity, est: np.ndarray, reco: np.ndarray, who: str, colour: str) -> Figure:
    """Distribution of the network output, reco overlaid for reference."""
    fig, ax = _new_figure()
    outside = _hist(ax, est, q.wide_range, q.n_bins, color=colour, label=f"{who} network ({est.size})")
    _hist(ax, reco, q.wide_range, q.n_bins, color=GT_COLOUR, ls="--", lw=0.8, label="reco")
    if outside:
        ax.plot([], [], " ", label=f"{who} outside plot range {outside}")
    ax.set_xlabel(f"{who} network {q.name} [{q.unit}]")
    ax.set_ylabel("tracks")
    _mark_empty(ax, est.size)
    _title(ax, f"{who} network {q.name}")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _fig_residual(
    q: _Quantity, res: np.ndarray, who: str, colour: str, value_range: tuple[float, float], title: str
) -> Figure:
    """Residual histogram; the legend carries count, mean, std and trimmed std."""
    fig, ax = _new_figure()
    counts, edges = np.histogram(res, bins=q.n_residual_bins, range=value_range)
    outside = int(res.size - counts.sum())
    _steps(ax, counts, edges, color=colour, label=_stats_label(f"{who} network", res, q.unit, outside))
    ax.set_xlim(*value_range)
    ax.set_xlabel(f"reco {q.name} - {who} network {q.name} [{q.unit}]")
    ax.set_ylabel("tracks")
    _mark_empty(ax, res.size)
    _title(ax, title)
    ax.legend(loc="upper right", fontsize="small")
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


def _fig_profile(
    q: _Quantity,
    reco: np.ndarray,
    res: np.ndarray,
    who: str,
    colour: str,
    reference: tuple[np.ndarray, np.ndarray] | None = None,
) -> Figure:
    """Residual std (and trimmed std) in bins of reco; ``reference`` (reco, residual) adds the old one."""
    fig, ax = _new_figure()
    centres, std, tstd = _profile(q, reco, res)
    ax.plot(centres, std, "o-", color=colour, ms=4, label=f"{who} network std")
    ax.plot(centres, tstd, "s--", color=colour, ms=3, lw=0.8, label=f"{who} network trimmed std ({TRIM:.0%})")
    shown = [std, tstd]
    if reference is not None:
        ref_std = _profile(q, *reference)[1]
        ax.plot(centres, ref_std, "o:", color=OLD_COLOUR, ms=3, label="old network std")
        shown.append(ref_std)
    finite = np.concatenate(shown)
    finite = finite[np.isfinite(finite)]
    top = float(finite.max()) if finite.size else 0.0
    ax.set_xlim(*q.value_range)
    ax.set_ylim(0, 1.4 * top if top > 0 else 1.0)  # head room for the legend
    if not np.isfinite(std).any():
        ax.text(0.5, 0.5, "too few tracks", transform=ax.transAxes, ha="center", va="center")
    ax.set_xlabel(f"reco {q.name} [{q.unit}]")
    ax.set_ylabel(f"std of reco {q.name} - {who} network {q.name} [{q.unit}]")
    _title(ax, f"{who} network {q.name} residual spread vs reco {q.name}")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _fig_gt(q: _Quantity, reco: np.ndarray) -> Figure:
    """Distribution of the reco value (the training target)."""
    fig, ax = _new_figure()
    _hist(ax, reco, q.value_range, q.n_bins, color=GT_COLOUR, label=f"reco ({reco.size} tracks)")
    ax.set_xlabel(f"reco {q.name} [{q.unit}]")
    ax.set_ylabel("tracks")
    _mark_empty(ax, reco.size)
    _title(ax, f"reco {q.name} (ground truth)")
    ax.legend(loc="upper right", fontsize="small")
    return fig


def _as_2d(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return a.reshape(-1, 1) if a.ndim == 1 else a


def prediction_figures(
    target: np.ndarray, pred: np.ndarray, old: np.ndarray, out_size: int
) -> dict[str, Figure]:
    """All figures of one expert on one split, by name (scaled (N, k) inputs, k >= out_size).

    Per quantity (z; theta too when out_size is 2): "<q>_vs_reco", "<q>_pred", "<q>_residual",
    "<q>_residual_std_vs_<q>" (plus "z_residual_ip" for |reco z| < 1 cm), each again for the
    old network with suffix "-old", and "<q>-gt" (the reco distribution). Rows with a NaN in
    the values a figure compares are skipped.
    """
    if out_size not in (1, 2):
        raise ValueError(f"out_size must be 1 or 2, got {out_size}")
    t, p, o = _as_2d(target), _as_2d(pred), _as_2d(old)
    figs: dict[str, Figure] = {}
    for q in (_Z, _THETA)[:out_size]:
        c = q.column
        reco_all = q.to_physical(t[:, c])
        per_net = {}
        for who, est_scaled in (("new", p[:, c]), ("old", o[:, c])):
            est_all = q.to_physical(est_scaled)
            ok = np.isfinite(reco_all) & np.isfinite(est_all)
            per_net[who] = (reco_all[ok], est_all[ok], reco_all[ok] - est_all[ok])
        for who, suffix, colour in (("new", "", NEW_COLOUR), ("old", "-old", OLD_COLOUR)):
            reco, est, res = per_net[who]
            figs[f"{q.name}_vs_reco{suffix}"] = _fig_vs_reco(q, reco, est, who)
            figs[f"{q.name}_pred{suffix}"] = _fig_pred(q, est, reco, who, colour)
            figs[f"{q.name}_residual{suffix}"] = _fig_residual(
                q, res, who, colour, q.residual_range, f"{who} network {q.name} residual"
            )
            reference = (per_net["old"][0], per_net["old"][2]) if who == "new" else None
            figs[f"{q.name}_residual_std_vs_{q.name}{suffix}"] = _fig_profile(
                q, reco, res, who, colour, reference
            )
            if q is _Z:
                ip = np.abs(reco) < IP_CUT_CM
                title = f"{who} network z residual, |reco z| < {IP_CUT_CM:g} cm"
                figs[f"z_residual_ip{suffix}"] = _fig_residual(
                    q, res[ip], who, colour, IP_RESIDUAL_RANGE, title
                )
        figs[f"{q.name}-gt"] = _fig_gt(q, reco_all[np.isfinite(reco_all)])
    return figs


_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]")


def figure_names(out_size: int) -> list[str]:
    """The names `prediction_figures` gives its figures, in its order, without drawing them."""
    names = []
    for q in ("z", "theta")[:out_size]:
        for suffix in ("", "-old"):
            names += [f"{q}_vs_reco{suffix}", f"{q}_pred{suffix}", f"{q}_residual{suffix}",
                      f"{q}_residual_std_vs_{q}{suffix}"] + ([f"z_residual_ip{suffix}"] if q == "z" else [])
        names.append(f"{q}-gt")
    return names


def figure_file(name: str) -> str:
    """The PNG file name of a figure."""
    return f"{_UNSAFE.sub('_', name)}.png"


def save_figures(figs: dict[str, Figure], folder: Path, dpi: int = DPI) -> list[Path]:
    """Write each figure as ``folder/<name>.png`` (folder created); return the paths in order.

    Each file appears whole or not at all (written under a temporary name, then renamed), so a run
    stopped while drawing leaves only complete figures, and `--resume` draws the missing ones."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = folder / figure_file(name)
        partial = path.with_name(f".{path.name}.part")
        # zlib level 1: files about 10% larger than the default level 6, encoding twice as fast
        fig.savefig(partial, dpi=dpi, format="png", pil_kwargs={"compress_level": 1})
        os.chmod(partial, 0o644)
        os.replace(partial, path)
        paths.append(path)
    return paths


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array (for TensorBoard ``add_image``, HWC)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
