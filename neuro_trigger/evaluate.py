"""Command line: run the networks of a finished run on any data and judge them as the trigger is judged.

    python neuro_trigger/evaluate.py RUN_FOLDER [--data FILE ...] [--split val|test] [--cut CM]
    python neuro_trigger/evaluate.py RUN_FOLDER --precision-scan [--data FILE ... | --split val|test] [--cut CM]

Parses the arguments and calls `neuro_trigger.judge.evaluation.evaluate`, which writes a new folder
RUN_FOLDER/evaluations/<name>_N/ (metrics.json, the prediction table, the figures, report.html); prints a
short verdict table and that folder. With --precision-scan, `neuro_trigger.judge.precision_scan` instead: the
networks emulated on the hardware at a range of fixed-point widths (default on the val split), into
RUN_FOLDER/precision_scans/<name>_N/; prints the folder and one line per network, its smallest widths. A
mistake a user can make ends in one line on stderr and exit code 2, with nothing written.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuro_trigger.errors import UserError  # noqa: E402

DEFAULT_CUT_CM = 15.0  # the trigger's cut (neuro_trigger.judge.trigger.TRIGGER_CUT_CM, without importing numpy here)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neuro_trigger/evaluate.py",
        description="Run the networks of a finished (or partly finished) run on data, with no retraining, and "
                    "write metrics, the prediction table, figures and report.html into a new folder "
                    "RUN_FOLDER/evaluations/<name>_N/.",
    )
    parser.add_argument("run_folder", type=Path, metavar="RUN_FOLDER",
                        help="a run folder (log/<config>/version_N), a folder with only its config.json and "
                             "weights.json, or a run folder of the original trainer")
    parser.add_argument("--data", nargs="+", type=Path, default=None, metavar="FILE",
                        help="neuroresults files (.gz or plain), read in order as one data set "
                             "(default: the run's own split, see --split)")
    parser.add_argument("--split", choices=("val", "test"), default=None,
                        help="the run's own split to evaluate on when no --data is given (default test; val "
                             "with --precision-scan)")
    parser.add_argument("--cut", type=float, default=DEFAULT_CUT_CM, metavar="CM",
                        help=f"the trigger keeps a track when |z_pred| < CM (default {DEFAULT_CUT_CM:g})")
    parser.add_argument("--precision-scan", action="store_true",
                        help="instead: emulate the networks on the trigger hardware at a range of node, weight and "
                             "table widths (fractional bits), find the smallest within 1%% of the float network, "
                             "and write a table and a figure into RUN_FOLDER/precision_scans/<name>_N/ "
                             "(docs/hardware.md)")
    return parser.parse_args(argv)


def _number(value: Any, digits: int = 2) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return "-"
    return f"{value:.{digits}f}"


def verdict_lines(metrics: dict[str, Any]) -> list[str]:
    """The short verdict table on the terminal: per expert and over all, new vs old network, on the rows with a
    prediction; then how many rows had none (experts the run has no network for)."""
    header = (f"{'':<10} {'rows':>9} {'z std cm':>15} {'z 68% cm':>15} {'efficiency':>13} {'rejection':>13} "
              f"{'loss/old':>8}")
    lines = [header, f"{'':<10} {'':>9} {'new / old':>15} {'new / old':>15} {'new / old':>13} {'new / old':>13}"]
    entries = [*metrics.get("experts", {}).items(), ("all", metrics.get("all", {}))]
    for name, judged in entries:
        new, old = judged.get("new", {}), judged.get("old", {})

        def pair(get, digits: int = 2, new=new, old=old) -> str:
            return f"{_number(get(new), digits)} / {_number(get(old), digits)}"

        predicted = new.get("z", {}).get("count", 0)  # the rows with a prediction (those without are told below)
        lines.append(
            f"{name:<10} {predicted:>9} "
            f"{pair(lambda n: n.get('z', {}).get('std')):>15} "
            f"{pair(lambda n: n.get('z', {}).get('half_width_68')):>15} "
            f"{pair(lambda n: n.get('trigger', {}).get('efficiency'), 3):>13} "
            f"{pair(lambda n: n.get('trigger', {}).get('rejection'), 3):>13} "
            f"{_number(judged.get('vs_old', {}).get('loss'), 3):>8}")
    lines += hardware_lines(metrics, entries)
    rows = metrics.get("rows", {})
    if rows.get("without_network"):
        by = ", ".join(f"{k}: {n}" for k, n in rows.get("without_network_by_expert", {}).items())
        lines.append(f"{rows['without_network']} rows of experts without a network (NaN predictions; {by})")
    left_out = metrics.get("left_out") or {}
    if left_out:  # a partly finished run: its finished experts' networks only
        lines.append("experts left out, no finished network: "
                     + ", ".join(f"{key} ({why})" for key, why in left_out.items()))
    return lines


def hardware_lines(metrics: dict[str, Any], entries: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """The new networks on the trigger hardware beside their float selves, where they have a hardware equivalent;
    then, once, which networks have none."""
    lines = []
    on_hardware = [(name, judged) for name, judged in entries if "hardware" in judged]
    if on_hardware:
        lines += [f"{'hardware':<10} {'rows':>9} {'z std cm':>15} {'efficiency':>13} {'rejection':>13} "
                  f"{'max |dz| cm':>11} {'mean |dz| cm':>12} {'flipped':>7}",
                  f"{'':<10} {'':>9} {'hw / float':>15} {'hw / float':>13} {'hw / float':>13}"]
    for name, judged in on_hardware:
        hw, new, differ = judged["hardware"], judged.get("new", {}), judged["hardware_vs_float"]

        def pair(get, digits: int = 2, hw=hw, new=new) -> str:
            return f"{_number(get(hw), digits)} / {_number(get(new), digits)}"

        lines.append(f"{name:<10} {differ.get('rows', 0):>9} {pair(lambda n: n.get('z', {}).get('std')):>15} "
                     f"{pair(lambda n: n.get('trigger', {}).get('efficiency'), 3):>13} "
                     f"{pair(lambda n: n.get('trigger', {}).get('rejection'), 3):>13} "
                     f"{_number(differ.get('z_abs_diff_max_cm'), 3):>11} "
                     f"{_number(differ.get('z_abs_diff_mean_cm'), 4):>12} {differ.get('flipped', 0):>7}")
    without = (metrics.get("hardware") or {}).get("without")
    if without:
        from neuro_trigger.judge.hardware import no_hardware_line

        lines.append(no_hardware_line(without))
    return lines


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code (0 done, 2 a mistake in the command line, the run or the data)."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    try:
        if args.data and args.split:
            raise UserError("give --data or --split, not both (--split names the run's own data)")
        if args.precision_scan:
            from neuro_trigger.judge.precision_scan import precision_scan

            scanned = precision_scan(args.run_folder, data=args.data, split=args.split or "val", cut_cm=args.cut)
        else:
            from neuro_trigger.judge.evaluation import evaluate

            result = evaluate(args.run_folder, data=args.data, split=args.split or "test", cut_cm=args.cut)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    if args.precision_scan:
        for line in scanned.lines():
            print(line)
        return 0
    for line in verdict_lines(result.metrics):
        print(line)
    print(result.folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
