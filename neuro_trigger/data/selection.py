"""Which data a run trains on: the configured files per split, the splits loaded (with the old network's
predictions replaced by an earlier run's, for `compare_to`), and the rows of each expert."""
from __future__ import annotations

import logging
import stat
import time
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger import REPO_ROOT
from neuro_trigger.data import earlier_runs
from neuro_trigger.data.dataset import ColumnStore, load_split
from neuro_trigger.data.filter_parser import parse_filter
from neuro_trigger.data.filters import ExpertFilter
from neuro_trigger.errors import UserError

log = logging.getLogger("neuro_trigger")

SPLITS = ("train", "val", "test")


def data_paths(config: dict[str, Any]) -> dict[str, list[Path]]:
    """The configured files per split, absolute; the embedded toy data set is generated on first use."""
    paths = {}
    for split in SPLITS:
        entry = config["data"][split]
        items = [entry] if isinstance(entry, str) else entry
        paths[split] = [p if p.is_absolute() else REPO_ROOT / p for p in map(Path, items)]
    from neuro_trigger.data.toy import default_set

    toy_dir = default_set.DEFAULT_DIR.resolve()
    wanted = [p for ps in paths.values() for p in ps]
    if any(p.resolve().parent == toy_dir for p in wanted) and not default_set.default_dataset_current():
        began = time.time()
        log.info("generating the embedded default data set (the toy Monte Carlo) into %s: first use of this "
                 "version, about a minute", toy_dir)
        default_set.ensure_default_dataset()
        log.info("default data set generated in %.0f s", time.time() - began)
    return paths


def check_data_files(config: dict[str, Any]) -> None:
    """Every configured data file exists and is a file (one line naming the split otherwise)."""
    for split, ps in data_paths(config).items():
        for p in ps:
            if p.is_dir():
                raise UserError(f"data file for '{split}' is a directory: {p}")
            if p.exists() and not p.is_file():
                raise UserError(f"data file for '{split}' is {_file_kind(p)}, not a regular file: {p}; a data file "
                                "is read in parallel blocks and hashed for the parse cache, which a stream cannot "
                                "give: save it to a file first")
            if not p.is_file():
                raise UserError(f"data file for '{split}' not found: {p}")


def _file_kind(path: Path) -> str:
    mode = path.stat().st_mode
    return ("a named pipe (a FIFO, or a shell's <(...))" if stat.S_ISFIFO(mode) else
            "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else
            "not a file")


def load_data(config: dict[str, Any], log_root: Path | None = None) -> dict[str, ColumnStore]:
    """Each split read once (cached parse); `compare_to` (a run under `log_root`) replaces the old predictions."""
    stores = {split: load_split(paths) for split, paths in data_paths(config).items()}
    if config.get("compare_to"):
        apply_compare_to(stores, config["compare_to"], log_root or REPO_ROOT / "log")
    return stores


def apply_compare_to(stores: dict[str, ColumnStore], compare_to: str, log_root: Path | None) -> None:
    """Take the 'old' predictions from an earlier run (of this project or of the original trainer), which
    must have used the same data files. `compare_to` is relative to the production log root
    (earlier_runs.compare_to_root: `log_root`, or <repo>/log for the debug root). Rows the earlier run made
    no prediction for become NaN: the metrics leave them out of every comparison and count them."""
    run = earlier_runs.compare_to_root(log_root) / compare_to
    old = earlier_runs.read_run_predictions(run, stores, compare_to)
    for split, store in stores.items():
        store.y_old = old[split]


def expert_rows(store: ColumnStore, config: dict[str, Any], filtered: bool = True) -> np.ndarray:
    """Row indices of one expert in a split, after the config's filter (if `filtered`)."""
    mask = ExpertFilter(config["expert"]).mask(store)
    if filtered:
        mask &= parse_filter(config["filter"]).mask(store)
    return np.flatnonzero(mask)


def check_rows(stores: dict[str, ColumnStore], resolved: dict[str, Any]) -> dict[str, int]:
    """Training rows per expert; an expert left with no train or val rows is an error before any training."""
    counts = {}
    for key, config in resolved["experts"].items():
        for split in ("train", "val"):
            n = len(expert_rows(stores[split], config))
            if n == 0:
                raise UserError(
                    f"{key}: no {split} rows left after filter '{config['filter']}' "
                    f"({len(expert_rows(stores[split], config, filtered=False))} rows before filtering, "
                    f"files {[s['path'] for s in stores[split].sources]})"
                )
            if split == "train":
                counts[key] = n
    return counts
