"""The run's prediction files: every finished expert's predictions merged in row order, as prediction_<split>.pt
and as pred_data_<split>.csv (the Belle II rows unchanged, plus NewZ NewTheta)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.neuroresults.writer import write_predictions
from neuro_trigger.errors import UserError
from neuro_trigger.run.files import disk_full_is_user_error, save_tensor
from neuro_trigger.run.status import summary_status


def merged_predictions(folder: Path, split: str, n: int, done: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The finished experts' predictions on one split in row order (NaN elsewhere), and their rows."""
    pred = np.full((n, 2), np.nan, dtype=np.float32)
    rows = []
    for key in done:
        part = np.load(folder / key / f"prediction_{split}.npz", allow_pickle=False)
        pred[part["rows"], : part["pred"].shape[1]] = part["pred"]
        rows.append(part["rows"])
    return pred, rows


def write_prediction_tables(folder: Path, stores: dict[str, ColumnStore]) -> None:
    """prediction_<split>.pt and pred_data_<split>.csv (the Belle II format) from the finished experts.
    The slowest part of assembling a run; a parallel run writes them while the last plots are drawn."""

    experts = json.loads((folder / "config.json").read_text(encoding="utf-8"))["experts"]
    done = [k for k in experts if summary_status(folder, k)["status"] == "finished"]
    for split, store in stores.items():
        pred, _ = merged_predictions(folder, split, len(store), done)
        save_tensor(folder / f"prediction_{split}.pt", pred)
        table = folder / f"pred_data_{split}.csv"
        try:
            with disk_full_is_user_error(table):
                _write_prediction_table(store, pred, table)
        except UserError:
            table.unlink(missing_ok=True)  # never leave half a table behind
            raise


def _write_prediction_table(store: ColumnStore, pred: np.ndarray, dst: Path) -> None:
    """The Belle II file(s) of the split, every row unchanged, plus NewZ NewTheta, through one writer: the
    header and the empty line once, the row counts checked per file and in total, written atomically."""
    write_predictions([s["path"] for s in store.sources], dst, pred, rows=[s["rows"] for s in store.sources])
