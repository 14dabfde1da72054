"""What a run will write, in bytes, estimated before it starts: the free-space check of the log location.
It counts the figures each expert draws, so it sits in judge/ beside them."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.fpga.fixed_point import HARDWARE_ACTIVATIONS
from neuro_trigger.judge.expert_results import PLOT_SPLITS
from neuro_trigger.judge.plots import figure_names

# Measured on runs of the toy data (baseline_v2): one figure in TensorBoard ~26 kB per plot epoch, one
# PNG of expert_N/plots ~32 kB, a data row of the text format ~300-330 bytes.
_FIGURE_TB_BYTES = 26_000
_FIGURE_PNG_BYTES = 32_000
_REPORT_FIGURES = 7  # overlays.overlay_figures per expert and figure split, at most
_TEXT_ROW_BYTES = 330
_NEW_FIELDS_BYTES = 24  # "\tNewZ\tNewTheta": shortest float32 repr, or nan
_HARDWARE_FIELDS_BYTES = 44  # "\tHwRawZ\tHwRawTheta\tHwZ\tHwTheta": integers and exact binary fractions, or nan
_RUN_FIXED_BYTES = 300_000  # config, summary, git diff, logs, mean_expert
_EXPERT_FIXED_BYTES = 30_000  # csv metrics, result_*.json, status, hparams, log, scalars


def _text_bytes(source: dict[str, Any]) -> int:
    """Bytes of a data file's text once inflated: its size, or the gzip trailer's (mod 2^32) where it is
    plausible, else a typical row length times its rows."""
    path, rows = Path(source["path"]), int(source.get("rows", 0))
    guess = rows * _TEXT_ROW_BYTES
    try:
        size = path.stat().st_size
        if path.suffix != ".gz":
            return size
        with open(path, "rb") as f:
            f.seek(-4, os.SEEK_END)
            inflated = int.from_bytes(f.read(4), "little")
    except OSError:
        return guess
    plausible = inflated >= size and (rows == 0 or 50 * rows <= inflated <= 5000 * rows)
    return inflated if plausible else guess


def _parameter_count(config: dict[str, Any]) -> int:
    from neuro_trigger import registry

    model = registry.build_model(config["model"], config["in_size"], config["out_size"], config["act"])
    return sum(t.numel() for t in model.state_dict().values())


def estimated_run_bytes(stores: dict[str, ColumnStore], resolved: dict[str, Any]) -> int:
    """What a run of `resolved` (config.json's content) on `stores` writes, in bytes, for the free-space
    check before it starts: per split pred_data_<split>.csv (the data's text plus two fields a row, six with the
    hardware's) and
    prediction_<split>.pt; per expert its predictions (.npz), two checkpoints, two weights.json copies,
    TensorBoard (figures every plot_every epochs, up to the configured epochs) and its PNG plots.
    Early stopping only makes a run smaller. A default run (baseline_v2, toy data) writes about 162 MB."""
    total = _RUN_FIXED_BYTES
    # the hardware's columns where an expert's activation has a hardware table (an upper bound: batch norm has none)
    hardware = any(c["act"] in HARDWARE_ACTIVATIONS for c in resolved["experts"].values())
    for store in stores.values():
        n = len(store)
        total += sum(_text_bytes(s) for s in store.sources) + n * _NEW_FIELDS_BYTES
        total += n * _HARDWARE_FIELDS_BYTES if hardware else 0
        total += n * 2 * 4 + 1_000
    plot_splits = [s for s in PLOT_SPLITS if s in stores]
    for config in resolved["experts"].values():
        out = config["out_size"]
        params = _parameter_count(config)
        figures = len(figure_names(out))
        for store in stores.values():
            rows = len(store) if config["expert"] == -1 else int(np.count_nonzero(store.expert == config["expert"]))
            total += rows * (8 + 4 * out + (8 * out if config["act"] in HARDWARE_ACTIVATIONS else 0)) + 600
        total += 2 * (params * 4 * 3 + 20_000)  # best and last checkpoint: weights and Adam's two moments
        total += 2 * params * 24 + 2_000  # weights.json of the expert and its copy in the run's
        total += (config["epochs"] // max(1, config["plot_every"])) * figures * _FIGURE_TB_BYTES
        total += len(plot_splits) * figures * _FIGURE_PNG_BYTES + _EXPERT_FIXED_BYTES
        total += _REPORT_FIGURES * _FIGURE_PNG_BYTES  # report.html's figures of the expert (test split)
    return int(total)
