"""The precision scan's figure (`judge/precision_scan.py`), drawn from its table so that both say the same.

Three columns, one per width scanned one at a time (nodes, weights, table; the other two at basf2's
12/10/10), two rows: how much wider the z resolution is than the float network's, in percent (+1% is the
limit, dashed), and the efficiency at the cut less the float network's, in percentage points (-1 is the
limit); both on a symmetric log scale, linear within 1. One colour per network; its smallest width within
1% is a star, and the legend names its smallest combination (the joint search).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter

from neuro_trigger.fpga import width_search
from neuro_trigger.judge.figure_files import DPI

TITLES = {"node": "node (and input) bits", "weight": "weight bits", "lut": "table bits"}


def scan_figure(table: pd.DataFrame, title: str) -> Figure:
    """The figure of a scan table (`precision_scan.scan_table`'s columns)."""
    fig = Figure(figsize=(13.0, 7.0), dpi=DPI)
    FigureCanvasAgg(fig)  # attaches itself as fig.canvas
    axes = fig.subplots(2, 3, sharex="col")
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.84, wspace=0.25, hspace=0.08)
    base = width_search.BASF2
    fig.suptitle(f"precision scan: {title}\none width at a time, the others at basf2's "
                 f"{base.node}/{base.weight}/{base.lut}; star: the smallest width within 1% of the float network",
                 fontsize="medium")
    colours = [f"C{i}" for i in range(10)]
    for n, (key, part) in enumerate(table.groupby("expert", sort=True)):
        colour = colours[n % len(colours)]
        joint = part[(part["scan"] == "joint") & part["smallest"]]
        label = key.replace("_", " ") + (f" (together {joint['node'].iloc[0]}/{joint['weight'].iloc[0]}/"
                                         f"{joint['lut'].iloc[0]})" if len(joint) else " (together: none)")
        for column, axis in enumerate(width_search.AXES):
            points = part[part["scan"] == axis].sort_values(axis)
            widths = points[axis].to_numpy(dtype=np.float64)
            ratio = 100.0 * (points["z_std_vs_float"].to_numpy(dtype=np.float64) - 1.0)
            lost = 100.0 * points["efficiency_vs_float"].to_numpy(dtype=np.float64)
            top, bottom = axes[0][column], axes[1][column]
            top.plot(widths, ratio, "o-", color=colour, markersize=3, label=label if column == 0 else None)
            bottom.plot(widths, lost, "o-", color=colour, markersize=3)
            best = points["smallest"].to_numpy(dtype=bool)
            top.plot(widths[best], ratio[best], "*", color=colour, markersize=13)
            bottom.plot(widths[best], lost[best], "*", color=colour, markersize=13)
    for column, axis in enumerate(width_search.AXES):
        top, bottom = axes[0][column], axes[1][column]
        top.axhline(100.0 * (width_search.RESOLUTION_FACTOR - 1.0), color="grey", linestyle="--", linewidth=1)
        bottom.axhline(-100.0 * width_search.EFFICIENCY_DROP, color="grey", linestyle="--", linewidth=1)
        bottom.xaxis.set_major_locator(MaxNLocator(integer=True))
        bottom.set_xlabel(TITLES[axis])
        top.set_title(TITLES[axis], fontsize="medium")
        for ax in (top, bottom):
            ax.set_yscale("symlog", linthresh=1.0)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.axhline(0.0, color="grey", linewidth=0.5)
            ax.grid(True, alpha=0.3)
    axes[0][0].set_ylabel("z resolution wider than float's (%)")
    axes[1][0].set_ylabel("efficiency - float network's (points)")
    axes[0][0].legend(fontsize="x-small", loc="upper right")
    return fig
