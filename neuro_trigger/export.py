"""Command line: a finished run's networks in the trigger hardware's format.

    python neuro_trigger/export.py RUN_FOLDER [--format basf2] [--out DIR]

Writes `weights_basf2.json` (every expert: the flat weight vector in the hardware simulation's order, the layer
sizes, the activation, the fixed-point precision, the output scaling and the stereo hit pattern; docs/hardware.md)
into a new folder RUN_FOLDER/exports/basf2_N/, or into DIR, which must not exist yet. A mistake a user can make
ends in one line on stderr and exit code 2, with nothing written.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuro_trigger.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="neuro_trigger/export.py",
                                     description="Write a run's networks in the trigger hardware's format.")
    parser.add_argument("run_folder", type=Path, metavar="RUN_FOLDER",
                        help="a run folder (log/<config>/version_N), or a folder with its config.json and "
                             "weights.json")
    parser.add_argument("--format", choices=("basf2",), default="basf2",
                        help="basf2: the weights in the order of the trigger's hardware simulation (ONNX: to come)")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="a folder to create for the export (default RUN_FOLDER/exports/basf2_N/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code (0 written, 2 a mistake in the command line or the run)."""
    args = parse_args(argv)
    try:
        from neuro_trigger.fpga.export import write_basf2
        from neuro_trigger.judge.networks import load_networks

        nets = load_networks(args.run_folder)
        experts = nets.config["experts"]
        written = write_basf2({f"expert_{n}": (model, experts[f"expert_{n}"]) for n, model in nets.networks.items()},
                              args.run_folder, args.out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
