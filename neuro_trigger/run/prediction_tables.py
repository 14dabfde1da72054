"""The run's prediction files: every finished expert's predictions merged in row order, as prediction_<split>.pt
and as pred_data_<split>.csv (the Belle II rows unchanged, plus NewZ NewTheta, and where the experts' networks
have a hardware equivalent the hardware's HwRawZ HwRawTheta HwZ HwTheta)."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.neuroresults.format import HARDWARE_COLUMNS
from neuro_trigger.data.neuroresults.writer import write_predictions
from neuro_trigger.errors import UserError
from neuro_trigger.run.files import disk_full_is_user_error, save_tensor
from neuro_trigger.run.status import summary_status

# what an expert's prediction_<split>.npz holds beside rows and pred where its network has a hardware equivalent:
# the output integers (rows x outputs) and the node bits they carry; where it has none, why (a text)
HW_RAW, HW_NODE_BITS, NO_HARDWARE = "hw_raw", "hw_node_bits", "no_hardware"
NOT_SAVED = "its predictions were saved without hardware outputs (before there were any)"


@dataclass
class HardwareColumns:
    """The hardware's outputs on a split's rows: `raw` the output integers (N, 2), 0 where there are none;
    `scaled` the same divided by 2^(node bits of the expert's precision), in the scale of NewZ NewTheta, float64,
    NaN where there are none. `experts`: the experts whose networks gave them; `without`: the others (finished
    experts whose network has no hardware equivalent), each with why."""

    raw: np.ndarray
    scaled: np.ndarray
    experts: list[str] = field(default_factory=list)
    without: dict[str, str] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int) -> HardwareColumns:
        return cls(np.zeros((n, 2), np.int64), np.full((n, 2), np.nan))

    def put(self, key: str, rows: np.ndarray, raw: np.ndarray, node_bits: int) -> None:
        """One expert's output integers (rows x 1 or 2) on `rows`."""
        k = raw.shape[1]
        self.raw[rows, :k] = raw
        self.scaled[rows, :k] = raw / 2.0**node_bits  # exact: an integer over a power of two
        self.experts.append(key)

    @property
    def complete(self) -> bool:
        """Whether every network has hardware outputs (and there is one): then they are judged over all experts."""
        return bool(self.experts) and not self.without

    def table_columns(self) -> dict[str, np.ndarray]:
        """HwRawZ HwRawTheta (integers, masked where none) and HwZ HwTheta (NaN where none) for the table; none at
        all where no network has hardware outputs (the columns are left out, not left empty)."""
        if not self.experts:
            return {}
        missing = np.isnan(self.scaled)
        return dict(zip(HARDWARE_COLUMNS, [np.ma.masked_array(self.raw[:, 0], missing[:, 0]),
                                           np.ma.masked_array(self.raw[:, 1], missing[:, 1]),
                                           self.scaled[:, 0], self.scaled[:, 1]], strict=True))


def merged_predictions(folder: Path, split: str, n: int, done: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
    """The finished experts' predictions on one split in row order (NaN elsewhere), and their rows."""
    pred = np.full((n, 2), np.nan, dtype=np.float32)
    rows = []
    for key in done:
        part = np.load(folder / key / f"prediction_{split}.npz", allow_pickle=False)
        pred[part["rows"], : part["pred"].shape[1]] = part["pred"]
        rows.append(part["rows"])
    return pred, rows


def merged_hardware(folder: Path, split: str, n: int, done: list[str]) -> HardwareColumns:
    """The finished experts' hardware outputs on one split in row order (`HardwareColumns`; its `experts` empty
    where no network has a hardware equivalent)."""
    hardware = HardwareColumns.empty(n)
    for key in done:
        with np.load(folder / key / f"prediction_{split}.npz", allow_pickle=False) as part:
            if HW_RAW in part:
                hardware.put(key, part["rows"], part[HW_RAW], int(part[HW_NODE_BITS]))
            else:
                hardware.without[key] = str(part[NO_HARDWARE]) if NO_HARDWARE in part else NOT_SAVED
    return hardware


def write_prediction_tables(folder: Path, stores: dict[str, ColumnStore]) -> None:
    """prediction_<split>.pt and pred_data_<split>.csv (the Belle II format) from the finished experts.
    The slowest part of assembling a run; a parallel run writes them while the last plots are drawn."""

    experts = json.loads((folder / "config.json").read_text(encoding="utf-8"))["experts"]
    done = [k for k in experts if summary_status(folder, k)["status"] == "finished"]
    for split, store in stores.items():
        pred, _ = merged_predictions(folder, split, len(store), done)
        hardware = merged_hardware(folder, split, len(store), done)
        save_tensor(folder / f"prediction_{split}.pt", pred)
        table = folder / f"pred_data_{split}.csv"
        try:
            with disk_full_is_user_error(table):
                _write_prediction_table(store, pred, table, hardware)
        except UserError:
            table.unlink(missing_ok=True)  # never leave half a table behind
            raise


def _write_prediction_table(store: ColumnStore, pred: np.ndarray, dst: Path,
                            hardware: HardwareColumns | None = None) -> None:
    """The Belle II file(s) of the split, every row unchanged, plus NewZ NewTheta (and the hardware's columns
    where some network has them: absent, not empty, where none has), through one writer: the header and the
    empty line once, the row counts checked per file and in total, written atomically."""
    write_predictions([s["path"] for s in store.sources], dst, pred, rows=[s["rows"] for s in store.sources],
                      extra=hardware.table_columns() if hardware is not None else None)
