"""Command line: train the experts of a named config.

    python neuro_trigger/main.py CONFIG [-p] [-s] [-d DESCRIPTION] [-m KEY=VALUE ...]
    python neuro_trigger/main.py --sweep NAME [-p] [--trials N] [-m KEY=VALUE ...]

Parses the arguments and calls `neuro_trigger.runner.api.train`; a mistake a user can make
ends in one line on stderr and exit code 2, a failed expert in exit code 1.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable without PYTHONPATH
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from neuro_trigger.errors import UserError  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="neuro_trigger/main.py",
        description="Train the NeuroTrigger experts of a config (see configs/__init__.py, --list).",
    )
    parser.add_argument("config", nargs="?", help="name of the config to train, e.g. baseline_v2, or a JSON file "
                        "holding one (a sweep's best/winners_config.json)")
    parser.add_argument("--sweep", metavar="NAME", help="run the sweep NAME of configs/__init__.py (see --list): "
                        "each expert's best network over the sweep's space, into log/sweeps/NAME/version_N")
    parser.add_argument("--trials", type=int, metavar="N", help="with --sweep: at most N trials per expert (a "
                        "grid's first N points)")
    parser.add_argument("-p", "--production", action="store_true",
                        help="production run: every expert in parallel into log/<config>/version_N; "
                             "without it a debug run: first expert only, in-process, at most 10 epochs, "
                             "into /tmp/nt_pytorch_debug_log")
    parser.add_argument("-s", "--solo", action="store_true",
                        help="one network on the data of all experts (expert -1)")
    parser.add_argument("-d", "--description", default=None,
                        help="short description of the run (asked for on a terminal with -p if not given)")
    parser.add_argument("-m", "--modify", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override config keys, dotted for nested and per-expert keys, e.g. "
                             "-m expert_2.batch_size=16 act=softsign dist.norm.std=0.3")
    parser.add_argument("--list", action="store_true", help="list the configs with their parents and descriptions, "
                        "and the sweeps")
    parser.add_argument("--resume", type=Path, metavar="RUN_FOLDER",
                        help="continue an interrupted or failed run, e.g. log/baseline_v2/version_3: experts "
                             "not finished go on from their last checkpoint, then the folder is completed")
    parser.add_argument("--launcher", default=None, metavar="local|slurm",
                        help="where the experts of a production run train: local (processes of this machine, the "
                             "default) or slurm (jobs of a SLURM cluster, see README: On a cluster)")
    parser.add_argument("--slurm", nargs="+", default=[], metavar="KEY=VALUE",
                        help="SLURM settings over the config's `slurm` block, e.g. --slurm partition=gpu "
                             "time_min=120 gpus_per_expert=1 extra.qos=short")
    parser.add_argument("--detach", action="store_true",
                        help="with --launcher slurm: print the job ids and return once submitted")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="let Lightning's banners, tips and routine warnings into the console and expert logs")
    parser.add_argument("--log-root", type=Path, default=None, metavar="FOLDER",
                        help="where the run folders and the journal log.txt go, instead of log/ of this checkout "
                             "(or /tmp/nt_pytorch_debug_log for a debug run); with --launcher slurm, a folder the "
                             "nodes see")
    return parser.parse_args(argv)


def ask_description(args: argparse.Namespace) -> str:
    if args.description is not None:
        return as_typed(args.description)
    if not args.production:
        return ""
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return as_typed(input("Short description of this run: ").strip())
        except EOFError:
            return ""
    return ""


def as_typed(text: str) -> str:
    """Text from the command line or the terminal as the user typed it. Python decodes both in the locale's
    encoding and keeps the bytes it cannot decode as lone surrogates: under an ASCII locale (LANG=C) every
    non-ASCII character. Those bytes are read as UTF-8 here, the encoding of every file a run writes; bytes that
    are no UTF-8 either stay as they came (and are written back as those bytes)."""
    try:
        return os.fsencode(text).decode("utf-8")
    except UnicodeError:
        return text


def _no_description_note(args: argparse.Namespace) -> str | None:
    """Said after the run (not before it, so that a mistake found on the way stays a one-line error)."""
    if args.production and args.description is None and not (sys.stdin is not None and sys.stdin.isatty()):
        return "no terminal and no -d: the run went on with an empty run description"
    return None


def main(argv: list[str] | None = None) -> int:
    """The CLI; returns the exit code. SIGTERM and SIGHUP stop it as Ctrl-C does (training/stopping.py)."""
    from neuro_trigger.training.stopping import stop_on_signals

    with stop_on_signals():
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    args = parse_args(argv)
    try:
        if args.list:
            from neuro_trigger.config.listing import list_configs

            for row in list_configs():  # a broken config is listed with what is wrong, the others still are
                note = f"  [BROKEN: {row.problem}]" if row.problem else ""
                print(f"{row.name:<34} {('<- ' + row.parent) if row.parent else '':<24} {row.description}{note}")
            from neuro_trigger.sweep.space import sweep_names

            sweeps = sweep_names()
            if sweeps:
                print("\nsweeps (--sweep NAME):")
            for name, config, description, problem in sweeps:
                note = f"  [BROKEN: {problem}]" if problem else ""
                print(f"{name:<34} {('on ' + config) if config else '':<24} {description}{note}")
            return 0
        if args.resume:
            if args.config or args.modify or args.solo or args.production:
                raise UserError("--resume continues a run as it was configured: give it no config, -p, -s or -m")
            from neuro_trigger.sweep.api import is_sweep_folder

            if is_sweep_folder(args.resume):
                return _resume_sweep(args)
            from neuro_trigger.runner.api import resume

            result = resume(args.resume, verbose=args.verbose, launcher=args.launcher, slurm=args.slurm,
                            detach=args.detach)
            print(result.folder)
            return 0 if result.ok else 1
        if args.sweep or args.trials is not None:
            return _sweep(args)
        if not args.config:
            raise UserError("name a config to train (see --list)")
        if args.production and args.launcher in (None, "local"):
            from neuro_trigger.runner.processes import start_process_server

            start_process_server()  # first: its imports of torch and lightning are most of a run's start-up
        from neuro_trigger.config.resolution import resolve_config
        from neuro_trigger.runner.options import check_launcher

        # the mistakes these find end the command before torch is imported, and before the prompt
        check_launcher(args.launcher or "local", args.slurm, args.detach, args.production)
        config = config_argument(args.config)
        resolve_config(config, args.modify, experts=[-1] if args.solo else None)
        description = ask_description(args)
        from neuro_trigger.runner.api import train

        result = train(config, args.modify, production=args.production, solo=args.solo,
                       description=description, log_root=args.log_root, verbose=args.verbose,
                       launcher=args.launcher or "local", slurm=args.slurm, detach=args.detach)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as stop:
        from neuro_trigger.training.stopping import exit_code

        print(f"interrupted ({stop.args[0] if stop.args else 'SIGINT'})", file=sys.stderr)
        return exit_code(stop)
    note = _no_description_note(args)
    if note:
        print(note, file=sys.stderr)
    print(result.folder)
    return 0 if result.ok else 1


def config_argument(text: str) -> str | dict:
    """A config's name, or the config a JSON file holds (read as data, never run)."""
    if not text.endswith(".json"):
        return text
    import json

    path = Path(text)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise UserError(f"{text}: cannot read the config file: {error.strerror or error}") from None
    except ValueError as error:
        raise UserError(f"{text}: not a JSON config: {error}") from None
    if not isinstance(config, dict):
        raise UserError(f"{text}: a JSON config must be an object of config keys")
    return config


def _sweep(args: argparse.Namespace) -> int:
    """--sweep NAME: the sweep's checks end the command before anything trains; its exit code 1 when an expert
    has no finished trial."""
    if not args.sweep:
        raise UserError("--trials goes with --sweep NAME")
    if args.config or args.solo:
        raise UserError("--sweep NAME trains the sweep's own config: give it no config and no -s")
    if args.trials is not None and args.trials < 1:
        raise UserError(f"--trials {args.trials}: give at least 1")
    launcher = args.launcher or "local"
    if args.production and launcher == "local":
        from neuro_trigger.runner.processes import start_process_server

        start_process_server(("optuna", "neuro_trigger.sweep.trial"))  # sweep.local.PRELOAD, without importing it
    from neuro_trigger.runner.options import check_launcher
    from neuro_trigger.sweep.space import load_sweep

    check_launcher(launcher, args.slurm, args.detach, args.production)
    load_sweep(args.sweep, args.modify, args.trials, debug=not args.production)
    description = ask_description(args)
    from neuro_trigger.sweep.api import sweep

    result = sweep(args.sweep, args.modify, production=args.production, trials=args.trials,
                   description=description, log_root=args.log_root, verbose=args.verbose, launcher=launcher,
                   slurm=args.slurm, detach=args.detach)
    print(result.folder)
    return 0 if result.ok else 1


def _resume_sweep(args: argparse.Namespace) -> int:
    if args.config or args.modify or args.solo or args.production or args.sweep:
        raise UserError("--resume continues a sweep as it was defined: give it no config, --sweep, -p, -s or -m")
    from neuro_trigger.sweep.api import resume_sweep

    result = resume_sweep(args.resume, verbose=args.verbose, launcher=args.launcher, slurm=args.slurm,
                          detach=args.detach)
    print(result.folder)
    return 0 if result.ok else 1


def cli() -> None:
    """The command: run main() and leave at once. The interpreter's own teardown of torch and the other
    libraries took seconds after the run folder was printed; everything of the run is closed by then."""
    code = main()
    if "neuro_trigger.runner.processes" in sys.modules:
        from neuro_trigger.runner.processes import stop_process_server

        stop_process_server()
        # os._exit skips multiprocessing's own removal of its temporary folder (the fork server's socket)
        from multiprocessing import util

        shutil.rmtree(util.get_temp_dir(), ignore_errors=True)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    cli()
