"""The figures of a sweep's report.html, one expert's trials each: the objective against each parameter, and the
history of the search (the objective per trial number with the running best).

`trials` is one expert's rows of trials.csv as `report.read_trials` gives them: `trial` and `objective` as
numbers (NaN: none), `state`, and each parameter's cell as the text trials.csv holds. Finished trials are
filled dots, the best one ringed; pruned trials that reported an objective are hollow grey dots (an objective
after fewer epochs, not comparable with the finished ones'); failed and interrupted trials have no objective
and are left out (the report counts them).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from neuro_trigger.sweep.records import column
from neuro_trigger.sweep.space import Param

FIGURE_SIZE = (5.6, 3.8)  # inches; at the report's 90 dpi two of them sit side by side in the page
FINISHED, PRUNED, BEST, RUNNING_BEST = "#2f6db3", "#8a8f99", "#c0392b", "#e08e0b"


def choice_index(cell: str, values: tuple) -> int | None:
    """The position of a trials.csv cell among a choice parameter's values (as written in the space), None when
    it is none of them. The CSV writes None as an empty cell and may write a whole number as 128.0."""
    for i, value in enumerate(values):
        if cell == ("" if value is None else str(value)):
            return i
    for i, value in enumerate(values):
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                if float(cell) == float(value):
                    return i
            except ValueError:
                return None
    return None


def parameter_positions(cells: pd.Series, param: Param) -> np.ndarray:
    """Each trial's x: a choice's position among its values, a range's value; NaN where unreadable."""
    if param.kind == "choice":
        found = [choice_index(str(c), param.values) for c in cells]
        return np.array([math.nan if i is None else i for i in found], dtype=float)
    return pd.to_numeric(cells, errors="coerce").to_numpy(dtype=float)


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=FIGURE_SIZE, layout="constrained")
    return fig, fig.add_subplot()


def _points(ax: Any, x: np.ndarray, trials: pd.DataFrame, best: int | None) -> None:
    """Finished trials filled, pruned ones hollow grey, the best ringed; trials without an objective left out."""
    y = trials["objective"].to_numpy(dtype=float)
    has = np.isfinite(x) & np.isfinite(y)
    finished = has & (trials["state"] == "finished").to_numpy()
    pruned = has & (trials["state"] == "pruned").to_numpy()
    if finished.any():
        ax.scatter(x[finished], y[finished], s=28, color=FINISHED, label="finished", zorder=3)
    if pruned.any():
        ax.scatter(x[pruned], y[pruned], s=28, facecolors="none", edgecolors=PRUNED, label="pruned", zorder=2)
    winner = has & (trials["trial"] == best).to_numpy()
    if winner.any():
        ax.scatter(x[winner], y[winner], s=150, facecolors="none", edgecolors=BEST, linewidths=1.8,
                   label="best", zorder=4)
    if not has.any():
        ax.text(0.5, 0.5, "no trial with an objective", transform=ax.transAxes, ha="center", va="center",
                color=PRUNED)
    elif finished.any() or pruned.any():
        ax.legend(fontsize="small", loc="best")
    ax.grid(True, alpha=0.3)


def parameter_figure(trials: pd.DataFrame, param: Param, label: str, best: int | None) -> Figure:
    """The objective against one parameter: a choice's values as categories in the space's order, a range on a
    numeric axis over the whole range (a log axis for a "log" or "log_int" range)."""
    fig, ax = _figure()
    name = column(param.key)
    x = parameter_positions(trials[name], param) if name in trials else np.full(len(trials), np.nan)
    _points(ax, x, trials, best)
    if param.kind == "choice":
        ax.set_xticks(range(len(param.values)), ["None" if v is None else str(v) for v in param.values])
        ax.set_xlim(-0.5, len(param.values) - 0.5)
    else:
        low, high = float(param.values[0]), float(param.values[1])
        if param.kind.startswith("log"):
            ax.set_xscale("log")
            ax.set_xlim(low / 1.15, high * 1.15)
        else:
            pad = 0.04 * (high - low)
            ax.set_xlim(low - pad, high + pad)
    ax.set_xlabel(f"{param.key} ({param.kind}{'' if param.kind == 'choice' else ' range'})")
    ax.set_ylabel(label)
    return fig


def running_best(trials: pd.DataFrame, direction: str) -> tuple[np.ndarray, np.ndarray]:
    """(trial numbers, the best objective of the finished trials up to each), over the finished trials in
    trial order."""
    done = trials[(trials["state"] == "finished") & np.isfinite(trials["objective"])].sort_values("trial")
    values = done["objective"].to_numpy(dtype=float)
    best = np.minimum.accumulate(values) if direction == "minimize" else np.maximum.accumulate(values)
    return done["trial"].to_numpy(dtype=float), best


def history_figure(trials: pd.DataFrame, label: str, direction: str, best: int | None) -> Figure:
    """The objective per trial number (the order the trials were asked for), with the running best."""
    fig, ax = _figure()
    _points(ax, trials["trial"].to_numpy(dtype=float), trials, best)
    numbers, values = running_best(trials, direction)
    if len(numbers):
        last = trials["trial"].max()
        ax.step(np.append(numbers, last), np.append(values, values[-1]), where="post", color=RUNNING_BEST,
                label="best so far", zorder=1)
        ax.legend(fontsize="small", loc="best")
    if len(trials):  # every trial number on the axis, those without an objective too
        ax.set_xlim(trials["trial"].min() - 0.5, trials["trial"].max() + 0.5)
    ax.set_xlabel("trial")
    ax.set_ylabel(label)
    ax.xaxis.get_major_locator().set_params(integer=True)
    return fig
