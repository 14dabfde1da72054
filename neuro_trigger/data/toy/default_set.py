"""The embedded default data set: its train/val/test files under DEFAULT_DIR, written once by the
generator and rewritten when the generator's version (TOY_VERSION) changes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd

from neuro_trigger import REPO_ROOT
from neuro_trigger.data.neuroresults.writer import write_table
from neuro_trigger.data.toy.generator import TOY_VERSION, generate

DEFAULT_DIR = REPO_ROOT / "data_cache" / "toy"
SPLITS = ("train", "val", "test")
DEFAULT_FILES = {split: f"data_cache/toy/neuroresults_random{i + 1}.gz" for i, split in enumerate(SPLITS)}
DEFAULT_TRACKS = {"train": 200_000, "val": 50_000, "test": 50_000}
DEFAULT_SEED = 0


def split_seed(seed: int, split: str) -> int:
    """Seed of one split (train, val, test), distinct for each split and base seed."""
    return 1000 * seed + SPLITS.index(split) + 1


def write_atomic(table: pd.DataFrame, path: Path) -> Path:
    """Write a table with write_table under a temporary name, then os.replace: concurrent writers are safe."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp{path.suffix}")
    try:
        write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def default_dataset_current() -> bool:
    """Whether the default files exist and were written by this version of the generator."""
    stamp = DEFAULT_DIR / "VERSION"
    return (stamp.is_file() and stamp.read_text(encoding="utf-8").strip() == TOY_VERSION
            and all((REPO_ROOT / DEFAULT_FILES[split]).is_file() for split in SPLITS))


def ensure_default_dataset() -> dict[str, Path]:
    """Paths of the default train/val/test files under DEFAULT_DIR, generated on first use (and again when
    the generator's version changed) and reused."""
    paths = {split: REPO_ROOT / DEFAULT_FILES[split] for split in SPLITS}
    stamp = DEFAULT_DIR / "VERSION"
    if default_dataset_current():
        return paths
    for split, path in paths.items():
        write_atomic(generate(DEFAULT_TRACKS[split], split_seed(DEFAULT_SEED, split)), path)
    tmp = stamp.with_name(f".VERSION.{os.getpid()}.{uuid.uuid4().hex}")
    tmp.write_text(TOY_VERSION + "\n", encoding="utf-8")
    os.replace(tmp, stamp)
    return paths
