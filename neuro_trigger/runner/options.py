"""The launcher options of the command line (`--launcher`, `--slurm`, `--detach`), checked before anything
heavy is imported: a mistake in them is a one-line error within a second, not after torch has loaded."""
from __future__ import annotations

from typing import Any

from neuro_trigger.config.resolution import parse_override
from neuro_trigger.config.validation import check_slurm_settings
from neuro_trigger.errors import UserError

LAUNCHERS = ("local", "slurm")


def check_launcher(launcher: str, slurm: list[str] | tuple[str, ...], detach: bool,
                   production: bool) -> dict[str, Any]:
    """The launcher and its settings from the command line; returns the parsed `--slurm` settings."""
    if launcher not in LAUNCHERS:
        raise UserError(f"--launcher {launcher}: unknown launcher (choose from {', '.join(LAUNCHERS)})")
    if launcher != "slurm" and (slurm or detach):
        raise UserError("--slurm and --detach go with --launcher slurm")
    if launcher == "slurm" and not production:
        raise UserError("--launcher slurm runs production runs: add -p (a debug run trains in this process)")
    return parse_slurm_settings(list(slurm)) if launcher == "slurm" else {}


def parse_slurm_settings(items: list[str]) -> dict[str, Any]:
    """`--slurm KEY=VALUE` items, held to the config's `slurm` block: values are read like `-m` values
    (`120`, `None`, bare words as strings); `extra.NAME=VALUE` adds an sbatch option."""
    settings: dict[str, Any] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise UserError(f"--slurm {item}: expected KEY=VALUE, e.g. --slurm partition=gpu time_min=120")
        if name.startswith("extra."):  # an sbatch option: its value is sbatch's to read
            settings.setdefault("extra", {})[name[len("extra."):]] = text
            continue
        try:
            _, settings[name] = parse_override(f"slurm.{name}={text}")
        except UserError as error:  # told as what the user typed
            raise UserError(str(error).replace(f"-m slurm.{name}={text}", f"--slurm {item}")) from None
    check_slurm_settings(settings, "--slurm " + " ".join(items))
    return settings
