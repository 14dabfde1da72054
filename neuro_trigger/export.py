"""Command line: a finished run's networks in the trigger hardware's format, or as ONNX models.

    python neuro_trigger/export.py RUN_FOLDER [--format basf2|onnx] [--out DIR]

basf2 writes `weights_basf2.json` (every expert: the flat weight vector in the hardware simulation's order, the
layer sizes, the activation, the fixed-point precision, the output scaling and the stereo hit pattern); onnx
writes one `expert_N.onnx` per expert (the float network, its input names, scaling and facts in the metadata,
checked with onnxruntime against PyTorch on the expert's validation rows); docs/hardware.md, Export. Either goes
into a new folder RUN_FOLDER/exports/<format>_N/, or into DIR, which must not exist yet. A mistake a user can make
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
    parser.add_argument("--format", choices=("basf2", "onnx"), default="basf2",
                        help="basf2: the weights in the order of the trigger's hardware simulation; onnx: each "
                             "expert's float network as expert_N.onnx, checked with onnxruntime")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="a folder to create for the export (default RUN_FOLDER/exports/<format>_N/)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code (0 written, 2 a mistake in the command line or the run)."""
    args = parse_args(argv)
    try:
        from neuro_trigger.fpga.export import write_basf2
        from neuro_trigger.judge.networks import load_networks

        nets = load_networks(args.run_folder)
        experts = nets.config["experts"]
        networks = {f"expert_{n}": (model, experts[f"expert_{n}"]) for n, model in nets.networks.items()}
        if args.format == "onnx":
            return _onnx(args, nets, networks)
        written = write_basf2(networks, args.run_folder, args.out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(written)
    return 0


def _onnx(args: argparse.Namespace, nets, networks: dict) -> int:
    """The ONNX export: every configured expert must have its network (a partial set would pass for the run)."""
    from neuro_trigger.fpga.onnx_export import check_inputs, write_onnx

    if nets.left_out:
        missing = ", ".join(f"{key} ({why})" for key, why in sorted(nets.left_out.items()))
        raise UserError(f"run folder {args.run_folder}: no network for {missing}; an ONNX export takes every "
                        f"configured expert, nothing exported")
    if args.out is not None and (args.out.exists() or args.out.is_symlink()):  # before loading any data
        raise UserError(f"--out {args.out}: exists already; an export goes into a new folder (nothing is "
                        f"overwritten)")
    inputs, why = check_inputs(nets.config)
    if why is not None:
        print(f"warning: the run's validation data cannot be loaded ({why}); each model is checked on "
              f"random inputs in [-1, 1] instead", file=sys.stderr)
    folder, done = write_onnx(networks, str(nets.config.get("name", "run")), args.run_folder, inputs, args.out)
    for expert in done:
        print(f"{expert.key}.onnx: onnxruntime = PyTorch within {expert.max_diff:.1g} on {expert.rows:,} "
              f"{expert.what}")
    print(folder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
