"""The toy's command line: write toy files in the neuroresults format and compare them with real data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from neuro_trigger.data.toy.default_set import (
    DEFAULT_FILES,
    DEFAULT_SEED,
    DEFAULT_TRACKS,
    SPLITS,
    split_seed,
    write_atomic,
)
from neuro_trigger.data.toy.generator import generate
from neuro_trigger.data.toy.stats import format_comparison, format_resolution, summarize


def main(argv: list[str] | None = None) -> int:
    """CLI: write toy files in the neuroresults format, and/or compare their statistics with real data."""
    parser = argparse.ArgumentParser(prog="python -m neuro_trigger.data.toy.cli", description=main.__doc__)
    parser.add_argument("--out", type=Path, help="directory for neuroresults_random{1,2,3}.gz")
    parser.add_argument("--tracks", type=int, default=DEFAULT_TRACKS["train"], help="tracks per file")
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help="base seed (each split derives its own)"
    )
    parser.add_argument("--splits", default=",".join(SPLITS), help="comma-separated subset of train,val,test")
    parser.add_argument("--compare", action="store_true", help="print toy vs real statistics (first split)")
    args = parser.parse_args(argv)
    splits = [s.strip() for s in args.splits.split(",") if s.strip()]
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        parser.error(f"--splits: unknown split(s) {bad}; choose from {','.join(SPLITS)}")
    if args.tracks < 1:
        parser.error("--tracks must be >= 1")
    if args.out is None and not args.compare:
        parser.error("give --out DIR and/or --compare")
    first: pd.DataFrame | None = None
    for split in splits:
        seed = split_seed(args.seed, split)
        if args.out is None:  # --compare only: the first split, in memory
            first = generate(args.tracks, seed)
            break
        table = generate(args.tracks, seed)
        path = write_atomic(table, args.out / Path(DEFAULT_FILES[split]).name)
        print(f"{split}: {path} ({args.tracks} tracks, seed {seed})")
        first = table if first is None else first
    if args.compare and first is not None:
        stats = summarize(first, reference=True)
        print(f"\nToy ({splits[0]} split) vs real data:\n{format_comparison(stats)}")
        print(f"\nResolution of the old network and of the reference fit (toy):\n{format_resolution(stats)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
