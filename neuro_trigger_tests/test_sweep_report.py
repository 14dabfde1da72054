"""The figures of a sweep's report.html (sweep/report_figures.py): the axes of each kind of parameter, which
trials are drawn, the running best."""
from __future__ import annotations

import numpy as np
import pandas as pd

from neuro_trigger.sweep.report_figures import choice_index, history_figure, parameter_figure, running_best
from neuro_trigger.sweep.space import Param


def test_figures_axes_and_running_best() -> None:
    trials = pd.DataFrame({"trial": [0, 1, 2, 3, 4],
                           "state": ["finished", "pruned", "finished", "failed", "finished"],
                           "objective": [5.0, 9.0, 3.0, np.nan, 4.0],
                           "lr": ["0.001", "0.02", "0.005", "0.01", "0.0005"],
                           "act": ["relu", "", "relu", "", "128.0"]})
    lr = Param("lr", "log", (1e-4, 1e-1))
    ax = parameter_figure(trials, lr, "objective", best=2).axes[0]
    assert ax.get_xscale() == "log" and ax.get_xlim()[0] < 1e-4 and ax.get_xlim()[1] > 1e-1
    finished, pruned, best = (c.get_offsets() for c in ax.collections)
    assert len(finished) == 3 and len(pruned) == 1 and np.allclose(best, [[0.005, 3.0]])  # the failed one left out
    assert parameter_figure(trials, Param("lr", "float", (0.0, 0.1)), "o", None).axes[0].get_xscale() == "linear"
    choice = Param("act", "choice", ("relu", None, 128))
    ax = parameter_figure(trials, choice, "objective", best=2).axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["relu", "None", "128"]
    assert np.allclose(ax.collections[0].get_offsets()[:, 0], [0, 0, 2])
    assert [choice_index(c, choice.values) for c in ("relu", "", "128", "128.0", "tanh")] == [0, 1, 2, 2, None]
    numbers, values = running_best(trials, "minimize")
    assert numbers.tolist() == [0, 2, 4] and values.tolist() == [5, 3, 3]
    assert running_best(trials, "maximize")[1].tolist() == [5, 5, 5]
    history = history_figure(trials, "objective", "minimize", best=2).axes[0]
    assert history.lines[0].get_ydata().tolist() == [5, 3, 3, 3] and history.get_xlim() == (-0.5, 4.5)
