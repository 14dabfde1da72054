"""The runs of a comparison, before anything is judged: the arguments checked, each run's label, the common
data every run is evaluated on, what those data are to each run (its own split, new data, other training
files), and the facts read from a run's folder (best epoch, training time, git id, loss, experts).

Everything a user can get wrong here is a UserError raised before anything is written.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger import REPO_ROOT
from neuro_trigger.errors import UserError, clip

SPLITS = ("train", "val", "test")
OTHER_DATA = "trained on other data"
UNKNOWN_DATA = "not recorded"


# ---------------------------------------------------------------------------------------------- inputs
def check_arguments(runs: list[Path], split: str, cut_cm: float) -> None:
    """A UserError for too few runs, an unknown split, a cut that is no number above 0, a run that is no folder."""
    if len(runs) < 2:
        raise UserError(f"compare needs at least two runs, got {len(runs)}")
    if split not in SPLITS:
        raise UserError(f"unknown split {clip(split)!r}; one of {', '.join(SPLITS)}")
    if isinstance(cut_cm, bool) or not isinstance(cut_cm, int | float):
        raise UserError(f"the cut must be a number of cm, got {clip(repr(cut_cm))}")
    if not math.isfinite(cut_cm) or cut_cm <= 0:
        raise UserError(f"the cut must be a finite number of cm above 0 (the trigger keeps |z| < cut), "
                        f"got {cut_cm:g}")
    for run in runs:
        if not Path(run).is_dir():
            raise UserError(f"run folder {clip(str(run))} not found (or not a folder)")


def run_labels(runs: list[Path], configs: list[dict]) -> list[str]:
    """'<config name>/<folder name>' per run (e.g. baseline_v2/version_3), made unique with ' (2)' etc."""
    labels: list[str] = []
    for run, config in zip(runs, configs, strict=True):
        name = config.get("name") or run.parent.name
        base = f"{name}/{run.name}"
        label, k = base, 2
        while label in labels:
            label, k = f"{base} ({k})", k + 1
        labels.append(label)
    return labels


def out_size(nets: Any) -> int:
    """How many outputs a run's networks give (1: z, 2: z and theta)."""
    return int(nets.out_size)


def common_paths(first: Path, first_label: str, split: str, data: list[str | Path] | None) -> list[Path]:
    """The files every run is evaluated on: `data`, else the first run's `split` files from its config.json."""
    if data:
        return [Path(p) for p in data]
    config_file = first / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        entry = config["global"]["data"][split]
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"no common data: the first run {first_label} has no config.json naming its {split} files "
                        f"(a run of the original trainer?); give the data with --data FILE ...") from None
    items = [entry] if isinstance(entry, str) else entry
    if not isinstance(items, list) or not items or not all(isinstance(p, str) for p in items):
        raise UserError(f"no common data: the first run {first_label} names no {split} files in its config.json; "
                        f"give the data with --data FILE ...")
    paths = [p if p.is_absolute() else REPO_ROOT / p for p in map(Path, items)]
    from neuro_trigger.data.toy import default_set

    toy_dir = default_set.DEFAULT_DIR.resolve()
    if any(p.resolve().parent == toy_dir for p in paths) and not default_set.default_dataset_current():
        default_set.ensure_default_dataset()  # the embedded default data set, generated on first use as training does
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise UserError(f"no common data: the {split} files of the first run {first_label} are missing "
                        f"({clip(', '.join(missing))}); give the data with --data FILE ...")
    return paths


def _recorded_hashes(summary: dict) -> dict[str, list[str]] | None:
    """The content hashes of the run's data files per split, from summary.json; None where not recorded."""
    recorded = summary.get("data") if isinstance(summary, dict) else None
    if not isinstance(recorded, dict):
        return None
    return {split: [f.get("sha256") for f in files if isinstance(f, dict)]
            for split, files in recorded.items() if isinstance(files, list)}


def training_data_id(summary: dict) -> str:
    """A short id of the files a run was trained on (train and val, which picks the best epoch): the first 8 hex
    digits of the sha256 of their content hashes; '' where summary.json records none (the original's runs)."""
    hashes = _recorded_hashes(summary)
    if hashes is None or "train" not in hashes:
        return ""
    text = "\n".join(["train", *hashes["train"], "val", *hashes.get("val", [])])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def data_relation(summary: dict, common: list[str], reference_id: str) -> str:
    """What the table's `data` column says of a run: the common data are its own '<split> split' or 'new data'
    to it, prefixed with OTHER_DATA where its training files differ from the first run's (`reference_id`);
    UNKNOWN_DATA where summary.json records no content hashes."""
    hashes = _recorded_hashes(summary)
    if hashes is None:
        return UNKNOWN_DATA
    own = next((f"own {split} split" for split in ("test", "val", "train") if hashes.get(split) == common),
               "new data")
    if reference_id and training_data_id(summary) != reference_id:
        return f"{OTHER_DATA}; {own}"
    return own


# ---------------------------------------------------------------------------------------------- run facts
def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def seconds_between(start: Any, end: Any) -> float:
    """Seconds from one ISO time to another, NaN where either is missing or no time."""
    try:
        return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()
    except (TypeError, ValueError):
        return math.nan


def expert_facts(run: Path, summary: dict, key: str) -> tuple[int | None, float]:
    """Best epoch (from best_checkpoint 'best-epoch=E.ckpt') and training seconds of one expert of this project's
    run; (None, NaN) where not recorded (the original's runs)."""
    status = _read_json(run / key / "status.json")
    if not status:
        experts = summary.get("experts") if isinstance(summary, dict) else None
        status = experts.get(key, {}) if isinstance(experts, dict) and isinstance(experts.get(key), dict) else {}
    match = re.search(r"epoch=(\d+)", str(status.get("best_checkpoint", "")))
    return (int(match.group(1)) if match else None), seconds_between(status.get("started"), status.get("ended"))


def git_id(run: Path, summary: dict) -> str:
    """The git id a run was made at: git_id.txt's first line, else summary.json's, else UNKNOWN_DATA."""
    try:
        text = (run / "git_id.txt").read_text(encoding="utf-8").strip()
    except OSError:
        text = ""
    if text:
        return text.splitlines()[0]
    value = summary.get("git_id") if isinstance(summary, dict) else None
    return str(value) if value else UNKNOWN_DATA


def loss_name(nets: Any, expert: int | None) -> str:
    """The loss an expert's network was trained with (None: the run's global loss), for its loss ratio."""
    if expert is None:
        return nets.loss
    losses = nets.losses
    return losses.get(expert) or losses.get(-1) or nets.loss


def experts_of_run(nets: Any, store: Any) -> list[int]:
    """The experts a run has networks for; for a single network on all data (-1): the experts in the data."""
    experts = sorted(int(e) for e in nets.networks)
    if -1 in experts:
        return sorted(int(e) for e in np.unique(store.expert) if e >= 0)
    return experts
