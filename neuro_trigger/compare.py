"""Command line: compare finished runs side by side on one common data set.

    python neuro_trigger/compare.py RUN_A RUN_B [...] [--split test] [--data FILE ...] [--cut CM]

Parses the arguments and calls `neuro_trigger.judge.comparison.compare`, then prints the table and the folder
it wrote (log/comparisons/<name>_N/). A mistake a user can make ends in one line on stderr and exit code 2,
with nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuro_trigger import REPO_ROOT  # noqa: E402
from neuro_trigger.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neuro_trigger/compare.py",
        description="Compare runs (of this project or of the original trainer) on one common data set: one table "
                    "per expert and over all experts, the config differences, overlaid figures and report.html, "
                    "written into a new folder log/comparisons/<name>_N/.",
    )
    parser.add_argument("runs", nargs="*", type=Path, metavar="RUN",
                        help="run folders, e.g. log/baseline_v2/version_3 or baseline_v2/version_3 (under log/)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"],
                        help="without --data: evaluate every run on this split of the first run (default: test)")
    parser.add_argument("--data", nargs="+", default=None, metavar="FILE",
                        help="neuroresults files (.gz or plain) to evaluate every run on")
    parser.add_argument("--cut", type=float, default=None, metavar="CM",
                        help="the trigger keeps a track when |z| < CM (default 15)")
    parser.add_argument("--log-root", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def find_run(name: Path, log_root: Path) -> Path:
    """A run folder as given, or under the log root when it is not found as given."""
    if name.exists() or name.is_absolute():
        return name
    under = log_root / name
    return under if under.exists() else name


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code."""
    args = parse_args(argv)
    log_root = args.log_root if args.log_root is not None else REPO_ROOT / "log"
    try:
        if len(args.runs) < 2:
            raise UserError(f"compare needs at least two runs, got {len(args.runs)}")
        from neuro_trigger.judge.comparison import compare, format_table
        from neuro_trigger.judge.trigger import TRIGGER_CUT_CM

        data = [Path(p).absolute() for p in args.data] if args.data else None
        result = compare([find_run(r, log_root) for r in args.runs], split=args.split, data=data,
                         cut_cm=TRIGGER_CUT_CM if args.cut is None else args.cut, out_root=log_root)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(format_table(result.table))
    for note in result.notes:
        print(f"note: {note}")
    print(result.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
