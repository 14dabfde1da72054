"""Reading earlier runs: run folders of this project and of the original trainer
(juelg/belle2-pytorch-neuro-trigger), for `compare_to` and for later evaluate/compare commands.

`read_run_predictions(run_folder, stores)` gives, per split, the earlier run's predictions (N, 2)
(scaled z, theta) aligned with the split's rows, NaN where that run made none.

This project's run folder: `summary.json` records each split's data files with their sha256, and
`prediction_<split>.pt` is an (N, 2) tensor in row order (NaN for rows of experts not trained).

The original's run folder (what its `main.py` and `utils.py` write):
- `prediction_random{1,2,3}.pt` for train, val, test (the number is the split's position + 1, not a
  property of the data file): `torch.save` of a float tensor holding the predictions of the rows of
  the trained experts only, in row order. The latest version saves (M, 2) (the prediction columns;
  with out_size 1 the second column is the reco z, not theta); earlier versions saved (M, 1 + 2k)
  or (M, 1 + 3k) with the row index (as float) in column 0, then prediction, target (and old output).
- `pred_data_random{1,2,3}.csv`: every row of the split's data (42 columns, ints as `%i`, floats as
  `%f`) plus NewZ NewTheta (`%.16f`); rows of experts not trained get 0, not NaN.
- `summary.json`: the config's hyperparameters (`experts`, `out_size`, ...) and `data_path`
  ([train files, val files, test files], paths as given, no hashes).

Which of its files belongs to which of our splits is decided by content: a pred_data_randomK.csv
belongs to a split when its event and input columns equal the split's rows (same order, floats to
the csv's 6 decimals). Without the csv, by the recorded data paths: `data_path` of that split must
name the same files (an absolute path equal, a relative one a suffix of ours) and the row counts must
fit. Rows the original did not predict become NaN (which rows: the row index column where saved,
else all rows if the tensor has N rows, else the rows of `experts` from summary.json if their number
fits, else the experts whose csv predictions are not all exactly 0).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.data.neuroresults.format import COLUMNS, INPUT_COLUMNS, PREDICTION_COLUMNS, TARGET_COLUMNS
from neuro_trigger.errors import UserError

log = logging.getLogger("neuro_trigger")

SPLITS = ("train", "val", "test")
PRODUCTION_LOG_ROOT = REPO_ROOT / "log"
DEBUG_LOG_ROOT = Path("/tmp/nt_pytorch_debug_log")
ORIGINAL_PREDICTION = "prediction_random{}.pt"
ORIGINAL_TABLE = "pred_data_random{}.csv"
# the csv's floats have 6 decimals; ours are float32 of the data file's text
_CSV_ATOL = 2e-6


def compare_to_root(log_root: Path | str | None) -> Path:
    """Where `compare_to` names an earlier run: the log root of production runs.

    An explicit log root (tests, `--log-root`) is used as it is, in either mode; none, or the debug
    root (/tmp/nt_pytorch_debug_log, where debug runs live and never an earlier production run), means
    `<repo>/log`.
    """
    if log_root is None:
        return PRODUCTION_LOG_ROOT
    root = Path(log_root)
    if root.resolve() == DEBUG_LOG_ROOT.resolve():
        return PRODUCTION_LOG_ROOT
    return root


def run_kind(run_folder: Path) -> str:
    """"own" (summary.json with data hashes), "original" (prediction_random*.pt / pred_data_random*.csv),
    or "none"."""
    summary = _summary(run_folder)
    if isinstance(summary, dict) and isinstance(summary.get("data"), dict):
        return "own"
    if any((run_folder / ORIGINAL_PREDICTION.format(k)).is_file() or (run_folder / ORIGINAL_TABLE.format(k)).is_file()
           for k in (1, 2, 3)):
        return "original"
    return "none"


def read_run_predictions(run_folder: Path | str, stores: dict[str, ColumnStore],
                         name: str | None = None) -> dict[str, np.ndarray]:
    """The earlier run's predictions per split, (N, 2) float32 aligned with `stores`' rows, NaN where it
    made none. `name` is how the user named the run (for messages). UserError if the folder is no run
    folder or was made from other data."""
    run_folder = Path(run_folder)
    what = f"compare_to '{name}'" if name is not None else f"run folder {run_folder}"
    kind = run_kind(run_folder)
    if kind == "own":
        return _read_own(run_folder, stores, what)
    if kind == "original":
        return _read_original(run_folder, stores, what)
    if not run_folder.exists():
        raise UserError(f"{what}: not found: {run_folder} (no summary.json there)")
    raise UserError(f"{what}: {run_folder} is not a run folder (neither summary.json with data hashes nor "
                    f"prediction_random1.pt / pred_data_random1.csv of the original trainer)")


def _summary(run_folder: Path) -> Any:
    path = run_folder / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _load_tensor(path: Path, what: str) -> np.ndarray:
    """A tensor saved with torch.save, loaded with weights_only=True (nothing in it is executed)."""
    import pickle

    import torch

    try:
        value = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what}: {path} cannot be read as a tensor ({first})") from None
    if not isinstance(value, torch.Tensor):
        raise UserError(f"{what}: {path} holds a {type(value).__name__}, expected a tensor")
    return value.detach().cpu().numpy()


# ---------------------------------------------------------------------------------------------- this project
def _read_own(run_folder: Path, stores: dict[str, ColumnStore], what: str) -> dict[str, np.ndarray]:
    summary = _summary(run_folder)
    out = {}
    for split, store in stores.items():
        theirs = [s.get("sha256") for s in summary["data"].get(split, []) if isinstance(s, dict)]
        ours = [s["sha256"] for s in store.sources]
        if theirs != ours:
            raise UserError(f"{what}: it was trained on other {split} data "
                            f"(content hashes differ: {theirs} vs {ours})")
        pred_file = run_folder / f"prediction_{split}.pt"
        if not pred_file.is_file():
            raise UserError(f"{what}: {pred_file} is missing")
        pred = _load_tensor(pred_file, what).astype(np.float32)
        if pred.shape != (len(store), 2):
            raise UserError(f"{what}: {pred_file} has shape {list(pred.shape)}, expected {[len(store), 2]}")
        out[split] = pred
    return out


# ---------------------------------------------------------------------------------------------- the original
def read_original_table(path: Path, what: str) -> dict[str, np.ndarray]:
    """A pred_data_randomK.csv of the original: its 44 columns (whitespace separated, header, empty line)."""
    import pandas as pd

    try:
        table = pd.read_csv(path, sep=r"\s+", encoding="utf-8", header=0, skip_blank_lines=True, dtype=np.float64)
    except (ValueError, OSError, pd.errors.ParserError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{what}: {path} is not a prediction table of the original trainer ({first})") from None
    wanted = COLUMNS + PREDICTION_COLUMNS
    if list(table.columns) != wanted:
        raise UserError(f"{what}: {path} has columns {list(table.columns)[:3]}... ({len(table.columns)}), "
                        f"expected the 42 data columns and NewZ NewTheta")
    return {c: table[c].to_numpy() for c in wanted}


def _table_matches(table: dict[str, np.ndarray], store: ColumnStore) -> bool:
    """Whether the csv rows are the split's rows: event columns equal, inputs and targets to 6 decimals."""
    n = len(store)
    if len(table["Expert"]) != n:
        return False
    exact = [(table[c], store.event[:, i]) for i, c in enumerate(("Experiment", "Run", "Subrun", "Event"))]
    exact += [(table["Track"], store.track), (table["Expert"], store.expert)]
    if not all(np.array_equal(a, b) for a, b in exact):
        return False
    for columns, ours in ((INPUT_COLUMNS, store.x), (TARGET_COLUMNS, store.y)):
        theirs = np.stack([table[c] for c in columns], axis=1)
        if not np.allclose(theirs, ours, rtol=0, atol=_CSV_ATOL):
            return False
    return True


def _paths_match(recorded: Any, store: ColumnStore) -> bool:
    """Whether the original's recorded data paths of a split name the split's files."""
    if isinstance(recorded, str):
        recorded = [recorded]
    if not isinstance(recorded, list) or len(recorded) != len(store.sources):
        return False
    for theirs, source in zip(recorded, store.sources, strict=True):
        if not isinstance(theirs, str):
            return False
        theirs_p, ours = Path(theirs), Path(source["path"]).resolve()
        if theirs_p.is_absolute():
            if theirs_p.resolve() != ours:
                return False
        elif ours.parts[-len(theirs_p.parts):] != theirs_p.parts:
            return False
    return True


def _trained_rows(tensor: np.ndarray | None, columns: int, table: dict[str, np.ndarray] | None,
                  store: ColumnStore, summary: dict, where: str) -> np.ndarray:
    """Row indices the original predicted on one split (see the module docstring for the order of rules)."""
    n = len(store)
    if tensor is not None and tensor.shape[1] != columns:  # a layout with the row index in column 0
        index = tensor[:, 0]
        rows = index.astype(np.int64)
        if not (np.array_equal(rows, index) and (rows >= 0).all() and (rows < n).all()
                and len(np.unique(rows)) == len(rows)):
            raise UserError(f"{where}: its row index column is not a set of row numbers below {n}")
        return rows
    m = len(tensor) if tensor is not None else None
    if m == n:
        return np.arange(n)
    experts = summary.get("experts")
    if isinstance(experts, list) and experts and all(isinstance(e, int) for e in experts):
        rows = np.arange(n) if -1 in experts else np.flatnonzero(np.isin(store.expert, experts))
        if m is None or len(rows) == m:
            return rows
    if table is not None:
        predicted = (table["NewZ"] != 0) | (table["NewTheta"] != 0)
        trained = np.unique(store.expert[predicted])
        rows = np.flatnonzero(np.isin(store.expert, trained))
        if m is None or len(rows) == m:
            return rows
    raise UserError(f"{where}: cannot tell which rows its {m} predictions belong to "
                    f"(the split has {n} rows; summary.json names experts {experts})")


def _read_original(run_folder: Path, stores: dict[str, ColumnStore], what: str) -> dict[str, np.ndarray]:
    summary = _summary(run_folder)
    summary = summary if isinstance(summary, dict) else {}
    out_size = summary.get("out_size", 2)
    out_size = out_size if out_size in (1, 2) else 2
    data_paths = summary.get("data_path")
    tables: dict[int, dict[str, np.ndarray] | None] = {}

    def table(k: int) -> dict[str, np.ndarray] | None:
        if k not in tables:
            path = run_folder / ORIGINAL_TABLE.format(k)
            tables[k] = read_original_table(path, what) if path.is_file() else None
        return tables[k]

    result = {}
    for split, store in stores.items():
        own_k = SPLITS.index(split) + 1 if split in SPLITS else 1
        candidates = [own_k] + [k for k in (1, 2, 3) if k != own_k]
        chosen = None
        for k in candidates:
            t = table(k)
            if t is not None:
                if _table_matches(t, store):
                    chosen = k
                    break
            elif (run_folder / ORIGINAL_PREDICTION.format(k)).is_file() and isinstance(data_paths, list) \
                    and len(data_paths) >= k and _paths_match(data_paths[k - 1], store):
                chosen = k
                break
        if chosen is None:
            raise UserError(f"{what}: no prediction file of the original run {run_folder} was made from the "
                            f"{split} data ({', '.join(s['path'] for s in store.sources)}): it was trained on "
                            f"other {split} data")
        result[split] = _original_split(run_folder, chosen, table(chosen), store, summary, out_size, what)
    return result


def _original_split(run_folder: Path, k: int, table: dict[str, np.ndarray] | None, store: ColumnStore,
                    summary: dict, out_size: int, what: str) -> np.ndarray:
    """The old predictions of one split from prediction_randomK.pt (or, failing that, the csv)."""
    pt = run_folder / ORIGINAL_PREDICTION.format(k)
    where = f"{what}: {pt}"
    tensor = None
    if pt.is_file():
        try:
            tensor = _load_tensor(pt, what).astype(np.float64)
        except UserError as e:
            if table is None:
                raise
            log.warning("%s; taking the predictions from %s instead", e, ORIGINAL_TABLE.format(k))
    if tensor is not None:
        if tensor.ndim == 1:
            tensor = tensor[:, None]
        with_index = {1 + 2 * out_size, 1 + 3 * out_size}
        if tensor.ndim != 2 or (tensor.shape[1] != 2 and tensor.shape[1] not in with_index):
            raise UserError(f"{where} has shape {list(tensor.shape)}, expected (rows, 2) or a row index column "
                            f"plus {out_size}-column blocks")
    rows = _trained_rows(tensor, 2, table, store, summary, where)
    pred = np.full((len(store), 2), np.nan, dtype=np.float32)
    if tensor is not None:
        values = tensor[:, :out_size] if tensor.shape[1] == 2 else tensor[:, 1:1 + out_size]
        if len(values) != len(rows):
            raise UserError(f"{where} has {len(values)} rows, expected {len(rows)}")
        pred[rows, :out_size] = values
    else:
        both = np.stack([table["NewZ"], table["NewTheta"]], axis=1)
        pred[rows, :out_size] = both[rows, :out_size]
    if not np.isfinite(pred[rows, :out_size]).all():
        log.warning("%s: some of its predictions are NaN; those rows are left out of every comparison", where)
    return pred
