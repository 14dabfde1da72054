"""The real Belle II sample the toy is compared with: its statistics (../shared/belle2_neuroresults.md)
in the structure `stats.summarize` returns, and its per-input statistics file (REAL_INPUT_STATS_FILE),
read with pandas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults.format import INPUT_COLUMNS

REAL_INPUT_STATS_FILE = REPO_ROOT.parent / "shared" / "data" / "real_sample_input_stats.csv"
REAL_SAMPLE_FILE = REPO_ROOT.parent / "shared" / "data" / "neuroresults_sample.tsv"  # 51 real rows
INPUT_STAT_COLUMNS = [
    "mean", "std", "frac_zero", "frac_positive", "nonzero_mean", "nonzero_std", "p05", "p50", "p95"
]
# Bins of the real histograms of reco z (cm) and theta (deg).
Z_EDGES = np.array([-100.0, -50.0, -20.0, -10.0, -5.0, -2.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0])
THETA_EDGES = np.arange(10.0, 171.0, 20.0)
Z10_EDGES = np.arange(-100.0, 101.0, 10.0)
THETA10_EDGES = np.arange(10.0, 171.0, 10.0)

# Real-data statistics (belle2_neuroresults.md), in the structure summarize() returns.
REAL_STATS: dict[str, Any] = {
    "rows": 4998,
    "expert_share": {0: 0.673, 1: 0.096, 2: 0.039, 3: 0.128, 4: 0.065},
    "z_edges": Z_EDGES.tolist(),
    "z_hist": [39, 103, 162, 403, 48, 2227, 25, 94, 171, 620, 1106],
    "theta_edges": THETA_EDGES.tolist(),
    "theta_hist": [15, 755, 674, 782, 1332, 1258, 182, 0],
    "z10_hist": [0, 1, 3, 13, 22, 15, 27, 61, 162, 1249, 1548, 171, 326, 150, 144, 763, 223, 46, 25, 49],
    "theta10_hist": [1, 14, 345, 410, 341, 333, 345, 437, 613, 719, 809, 449, 167, 15, 0, 0],
    "duplicate_fraction": 0.55,
    "reco_per_event": {1: 1073, 2: 418, 3: 47, 4: 28, 5: 11, 6: 5},
    "ntracks": {"mean": 5.9, "median": 5.0, "max": 20},  # per row
    "rows_per_event": {"min": 1, "max": 15},
    "old_z_std": {0: 16.1, 1: 20.7, 2: 17.0, 3: 21.2, 4: 31.0, "ip": 11.2},
    "old_z_median_abs": {0: 6.6, 1: 9.6, 2: 8.8, 3: 8.0, 4: 17.1, "ip": 5.1},
    "old_theta_std": "12-20",
    "alpha_max": {0: 0.07, 8: 0.43},
    "relid_span": "about [-0.9, 0.9]",
    # least-squares slope of relID against reco z (per metre) and Pearson r, rows where relID != 0
    "stereo_slope": {1: (-0.77, -0.51), 3: (0.51, 0.36), 5: (-0.13, -0.14), 7: (0.06, 0.05)},
}


def read_real_input_stats(path: str | Path = REAL_INPUT_STATS_FILE) -> pd.DataFrame:
    """The real sample's per-input statistics: a DataFrame indexed by input column (27 rows)."""
    stats = pd.read_csv(path, encoding="utf-8").set_index("column")
    missing = [c for c in INPUT_COLUMNS if c not in stats.index]
    if missing:
        raise ValueError(f"{path}: no statistics for {missing}")
    return stats.loc[INPUT_COLUMNS, INPUT_STAT_COLUMNS]

