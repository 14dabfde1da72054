"""What one finished expert leaves in its folder: its best network's predictions per split, the metrics of each
split (result_<split>.json), its weights.json entry, and its figures.

Each expert writes only its own part, so experts may run as separate processes or batch jobs;
`judge/assemble.py` then combines the parts of every expert into the run-level files.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.filter_parser import parse_filter
from neuro_trigger.data.selection import expert_rows
from neuro_trigger.fpga.outputs import config_precision, hardware_outputs, no_hardware_reason
from neuro_trigger.judge.figure_files import figure_file, pngs_to_tensorboard, save_figures
from neuro_trigger.judge.filtered import is_identity_filter
from neuro_trigger.judge.hardware import judge_hardware
from neuro_trigger.judge.metrics import split_metrics
from neuro_trigger.judge.plots import prediction_figures
from neuro_trigger.run.files import save_npz, write_json
from neuro_trigger.run.prediction_tables import HW_NODE_BITS, HW_RAW, NO_HARDWARE
from neuro_trigger.run.weights import weights_to_json

PLOT_SPLITS = ("val", "test")


def write_expert_results(expert_dir: Path, module, config: dict[str, Any],
                         stores: dict[str, ColumnStore], plots: bool = True) -> None:
    """Predictions of the best network for the expert's rows (with the hardware's output integers where the
    network has a hardware equivalent), metrics per split (result_<split>.json: the resolution metrics
    "unfiltered" / "filtered" and the trigger's view "trigger", see judge/trigger.judge, with the hardware's
    beside it, judge/hardware.judge_hardware),
    weights, and (unless `plots` is False: a parallel run draws them in jobs of their own) the plots."""
    import torch

    from neuro_trigger.judge.trigger import judge
    out = config["out_size"]
    filtered = _is_filtered(config)
    node_bits = config_precision(config).node
    for split, store in stores.items():
        rows = expert_rows(store, config, filtered=False)
        pred = module.predict(torch.from_numpy(store.x[rows])).numpy()
        # the hardware's integers once, beside the float outputs: the run's tables and verdict take them from here
        raw = hardware_outputs(module.model, config, store.x[rows])
        hardware = {HW_RAW: raw, HW_NODE_BITS: np.int64(node_bits)} if raw is not None else \
            {NO_HARDWARE: np.str_(no_hardware_reason(config))}
        save_npz(expert_dir / f"prediction_{split}.npz", rows=rows, pred=pred, **hardware)
        y, y_old = store.y[rows, :out], store.y_old[rows, :out]
        result = {"unfiltered": split_metrics(y, pred, y_old, config["loss"])}
        keep = np.isin(rows, expert_rows(store, config)) if filtered else slice(None)
        if filtered:
            result["filtered"] = split_metrics(y[keep], pred[keep], y_old[keep], config["loss"])
        # the trigger's view (judge/trigger.judge) on the rows the expert is judged on: its filter's, if any;
        # the full y gives reco theta for the binning by theta even when out_size is 1
        result["trigger"] = judge(store.y[rows][keep], pred[keep], store.y_old[rows][keep], config["loss"],
                                  store.expert[rows][keep], store.ntracks[rows][keep])
        if raw is not None:  # the same rows on the hardware, beside the float network
            result["trigger"].update(judge_hardware(store.y[rows][keep], pred[keep], raw[keep] / 2.0**node_bits,
                                                    config["loss"]))
        write_json(expert_dir / f"result_{split}.json", result)
    write_json(expert_dir / "weights.json", weights_to_json(module.model.state_dict()))  # model. + net names
    if plots:
        for split in PLOT_SPLITS:
            if split in stores:
                write_expert_plots(expert_dir, config, stores[split], split)


def write_expert_plots(expert_dir: Path, config: dict[str, Any], store: ColumnStore, split: str,
                       report_figures: bool = True) -> None:
    """The figures of one expert on one split (the rows its filter keeps), from its saved predictions; the new
    and the old network in the same figures, each titled with the expert and the split. On a split of
    report.html's figures also those (unless `report_figures` is False: a local run draws them in a job of
    their own, `write_report_figures`)."""
    out = config["out_size"]
    part = np.load(expert_dir / f"prediction_{split}.npz", allow_pickle=False)
    rows, pred = part["rows"], part["pred"]
    keep = np.isin(rows, expert_rows(store, config)) if _is_filtered(config) else np.ones(len(rows), bool)
    y, y_old = store.y[rows, :out], store.y_old[rows, :out]
    figures = prediction_figures(y[keep], pred[keep], y_old[keep], out, expert=config.get("expert"), split=split)
    folder = expert_dir / "plots" / split
    save_figures(figures, folder)
    # into the expert's TensorBoard run too, at the best epoch's step: training sends only histograms and a few
    # key figures (TensorBoardPlots)
    pngs_to_tensorboard({name: folder / figure_file(name) for name in figures}, expert_dir / "tb", f"{split}/",
                        _best_epoch(expert_dir))
    if report_figures:
        write_report_figures(expert_dir, config, store, split)


def write_report_figures(expert_dir: Path, config: dict[str, Any], store: ColumnStore, split: str) -> None:
    """report.html's figures of a finished expert on `split`, if it is one of the report's figure splits: drawn
    now, while other experts may still train, rather than at the run's end."""
    from neuro_trigger.judge.run_report import FIGURE_SPLITS, save_expert_figures

    if split in FIGURE_SPLITS:
        save_expert_figures(expert_dir, config, store, split)


def _best_epoch(expert_dir: Path) -> int:
    """The epoch of the expert's best checkpoint (best-epoch=N.ckpt; the latest if several), 0 without one."""
    epochs = [int(m.group(1)) for path in (expert_dir / "ckpts").glob("best-epoch=*.ckpt")
              if (m := re.fullmatch(r"best-epoch=(\d+)\.ckpt", path.name))]
    return max(epochs, default=0)


def _is_filtered(config: dict[str, Any]) -> bool:
    """Whether the config's filter drops rows (decided from the parsed filter, not from its text)."""
    return not is_identity_filter(parse_filter(config["filter"]))
