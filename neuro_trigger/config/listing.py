"""`main.py --list`: every config with its parent and description, and what is wrong with the broken ones."""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from neuro_trigger.config import sources
from neuro_trigger.config.resolution import resolve_among
from neuro_trigger.errors import UserError, clip


class ConfigRow(NamedTuple):
    """One line of `main.py --list`: `problem` is what is wrong with the config, or ''."""

    name: str
    parent: str
    description: str
    problem: str


def list_configs(configs: Mapping[str, dict] | None = None) -> list[ConfigRow]:
    """Every config with its parent and description, each resolved: a broken one is listed with its problem.

    Only a configs file that cannot be imported at all raises (ConfigError).
    """
    source_file: Path | None = None
    if configs is None:
        configs, source_file = sources.load_configs()
    rows = []
    for name, own in configs.items():
        own = own if isinstance(own, Mapping) else {}
        parent = own.get("extends", "")
        problem = ""
        try:
            resolve_among(str(name), (), None, configs, source_file)
        except UserError as e:
            problem = clip(str(e))
        rows.append(ConfigRow(str(name), clip(str(parent)), _description(str(name), configs), problem))
    return rows


def _description(name: str, configs: Mapping[str, Any]) -> str:
    """The nearest description along the `extends` chain, as far as the chain can be followed."""
    seen: set[str] = set()
    current: Any = name
    while isinstance(current, str) and current in configs and current not in seen:
        seen.add(current)
        own = configs[current]
        if not isinstance(own, Mapping):
            break
        if isinstance(own.get("description"), str):
            return clip(own["description"])
        current = own.get("extends")
    return ""


def describe_configs(configs: Mapping[str, dict] | None = None) -> list[tuple[str, str, str]]:
    """(name, parent, description) of every config, for `main.py --list` (broken ones included)."""
    return [(row.name, row.parent, row.description) for row in list_configs(configs)]
