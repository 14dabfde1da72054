"""Resolve a named config into one plain config per expert.

Order: the schema's defaults, then the `extends` chain (root first, nested dicts merged key by key,
`dist` replaced whole), then `expert_N` blocks, then `-m key=value` overrides (command line wins).
Each resolved config is then held to the schema (validation.py).
"""
from __future__ import annotations

import ast
import copy
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neuro_trigger.config import sources
from neuro_trigger.config.errors import LIST_CONFIGS, ConfigError, suggest
from neuro_trigger.config.schema import (
    ACCELERATOR_ALIASES,
    DIST_KEYS,
    EXPERT_IDS,
    LEGACY_FILTERS,
    PER_EXPERT_FORBIDDEN,
    REQUIRED,
    RETIRED_KEYS,
    RUN_RECORD_KEYS,
    SCHEMA,
    SOLO_EXPERT,
    Key,
    defaults,
)
from neuro_trigger.config.validation import check_combinations, check_value, validate
from neuro_trigger.errors import clip

log = logging.getLogger(__name__)

IGNORED_KEYS = {**RUN_RECORD_KEYS, **RETIRED_KEYS}  # set nothing: ignored with a warning
REPLACED_WHOLE = {"dist"}  # a child's value replaces the parent's instead of merging into it


def config_chain(name: str, configs: Mapping[str, dict], source_file: Path | None = None) -> list[str]:
    """The `extends` chain of a config, root first. Errors name the `extends` line in `source_file`."""
    chain = [name]
    if name not in configs:
        raise ConfigError(f"unknown config '{clip(name)}'{suggest(name, list(configs), LIST_CONFIGS)}")
    while True:
        current = configs[chain[-1]]
        if not isinstance(current, Mapping):
            line = sources.line_of(source_file, chain[-1], ())
            place = f"{sources.display_path(source_file)}:{line}: " if line else ""
            raise ConfigError(f"{place}config '{clip(chain[-1])}' must be a dict of keys, "
                              f"got {type(current).__name__}")
        if "extends" not in current:
            break
        parent = current["extends"]
        line = sources.line_of(source_file, chain[-1], ("extends",))
        place = f"{sources.display_path(source_file)}:{line}: " if line else ""
        if not isinstance(parent, str) or parent not in configs:
            raise ConfigError(
                f"{place}config '{clip(chain[-1])}' extends unknown config '{clip(str(parent))}' "
                f"(chain: {clip(' -> '.join(chain))})"
                f"{suggest(str(parent), [c for c in configs if c not in chain], LIST_CONFIGS)}"
            )
        if parent in chain:
            raise ConfigError(f"{place}configs extend each other in a cycle: {clip(' -> '.join([*chain, parent]))}")
        chain.append(parent)
    return chain[::-1]


def _merge(base: dict, top: Mapping, label: tuple[str, ...], origins: dict, path: tuple = ()) -> None:
    """Merge `top` into `base` in place, key by key, recording where each value came from."""
    for key, value in top.items():
        here = (*path, key)
        if isinstance(value, Mapping) and isinstance(base.get(key), dict) and key not in REPLACED_WHOLE:
            origins.setdefault(here, label)
            _merge(base[key], value, label, origins, here)
        else:
            base[key] = copy.deepcopy(value)
            for p in [p for p in origins if p[: len(here)] == here]:
                del origins[p]
            origins[here] = label


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (['a', 'b'], value). Values are Python literals; bare words are strings.

    For keys that hold text (filter, paths) anything that is not a literal is taken as the text.
    """
    if "=" not in text:
        raise ConfigError(f"-m {clip(text)}: expected KEY=VALUE, e.g. -m expert_2.batch_size=16")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"-m {clip(text)}: empty key")
    raw = raw.strip()
    spec = _check_key_path(parts, text)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        takes_text = spec is not None and spec.types == (str,)
        if not takes_text and (not raw or raw[0] in "[{(\"'" or any(c in raw for c in " ,()[]{}")):
            raise ConfigError(f"-m {clip(text)}: cannot read the value '{clip(raw)}' "
                              "(expected a Python literal)") from None
        value = raw
    return parts, value


def _set_path(target: dict, parts: Sequence[str], value: Any) -> None:
    for part in parts[:-1]:
        if not isinstance(target.get(part), dict):
            target[part] = {}
        target = target[part]
    target[parts[-1]] = copy.deepcopy(value)


def _check_key_path(parts: list[str], text: str) -> Key | None:
    """Fail early on `-m` keys that no config can have; return what the key may hold."""
    schema: Mapping[str, Key] = SCHEMA
    rest = parts
    if parts[0].startswith("expert_"):
        _expert_id(parts[0], f"-m {clip(text)}")
        rest = parts[1:]
        if not rest:
            raise ConfigError(f"-m {clip(text)}: name a key inside {parts[0]}, e.g. {parts[0]}.batch_size=16")
        if rest[0] in PER_EXPERT_FORBIDDEN:
            raise ConfigError(f"-m {clip(text)}: '{rest[0]}' cannot be set per expert")
    if rest[0] in RETIRED_KEYS:
        raise ConfigError(f"-m {clip(text)}: '{rest[0]}' is {RETIRED_KEYS[rest[0]]}")
    for i, part in enumerate(rest):
        if part not in schema:
            where = clip(".".join(parts[:len(parts) - len(rest) + i])) or "the config"
            raise ConfigError(f"-m {clip(text)}: unknown key '{clip(part)}' in {where}"
                              f"{suggest(part, list(schema))}")
        children = schema[part].children
        if children is None:
            if i != len(rest) - 1:
                raise ConfigError(f"-m {clip(text)}: '{part}' has no sub-keys")
            return schema[part]
        schema = children
    return None


def _expert_id(key: str, where: str) -> int:
    suffix = key.removeprefix("expert_")
    if suffix.lstrip("-").isdigit() and int(suffix) in (*EXPERT_IDS, SOLO_EXPERT):
        return int(suffix)
    raise ConfigError(f"{where}: '{clip(key)}': no such expert; experts are expert_0 .. expert_4 (and expert_-1)")


def resolve_config(
    config: str | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    experts: Sequence[int] | None = None,
    configs: Mapping[str, dict] | None = None,
) -> dict[str, Any]:
    """Resolve a config name (or a handcrafted dict) into a plain, JSON-serialisable dict.

    Returns {"name", "chain", "global": {...}, "experts": {"expert_N": {..., "expert": N}}}.
    Keys no config of the chain sets take the schema's defaults (see `defaults()`).
    `experts` (e.g. [-1] for a solo run, or the first expert for a debug run) replaces the
    config's own list; `expert_N` blocks and overrides for experts not trained are unused.
    """
    source_file: Path | None = None
    if configs is None:
        configs, source_file = sources.load_configs()
    return resolve_among(config, overrides, experts, configs, source_file)


def resolve_among(config: str | Mapping[str, Any], overrides: Sequence[str], experts: Sequence[int] | None,
                  configs: Mapping[str, dict], source_file: Path | None) -> dict[str, Any]:
    """`resolve_config` among configs already loaded; `source_file` (the file they were read from, or None)
    gives messages their lines. For callers that resolve many configs of one file (`--list`)."""
    if isinstance(config, Mapping):
        name = "custom"
        chain_configs = {**configs, name: dict(config)}
        source_file = None
    else:
        name, chain_configs = config, configs
    chain = config_chain(name, chain_configs, source_file)

    merged: dict[str, Any] = defaults()
    by_path: dict[tuple[str, ...], tuple[str, ...]] = {}
    for link in chain:
        own = {k: v for k, v in chain_configs[link].items() if k != "extends"}
        for key in [k for k in own if k in IGNORED_KEYS]:
            line = sources.line_of(source_file, link, (key,))
            place = f"{sources.display_path(source_file)}:{line}: " if line else ""
            log.warning("%sconfig '%s': key '%s' is ignored: %s", place, clip(link), key, IGNORED_KEYS[key])
            del own[key]
        _merge(merged, own, ("config", link), by_path)
    origins = sources.Origins(source_file, by_path)

    parsed = []
    for text in overrides:
        parts, value = parse_override(text)
        parsed.append((parts, value, text))
    global_overrides = [(p, v, t) for p, v, t in parsed if not p[0].startswith("expert_")]
    for parts, value, text in global_overrides:
        node: Any = merged
        for n in range(1, len(parts) + 1):  # the override also owns any parent it has to create
            node = node.get(parts[n - 1]) if isinstance(node, dict) else None
            if n == len(parts) or not isinstance(node, dict):
                by_path[tuple(parts[:n])] = ("override", text)
        _set_path(merged, parts, value)

    expert_blocks = {k: merged.pop(k) for k in list(merged) if k.startswith("expert_")}
    for key, block in expert_blocks.items():
        _expert_id(key, origins.where((key,)))
        if not isinstance(block, dict):
            raise ConfigError(f"{origins.where((key,))}: '{key}' must be a dict of keys for that expert")
    _complete(merged)
    validate(merged, SCHEMA, origins, ())
    check_combinations(merged, origins)

    trained = list(experts) if experts is not None else list(merged["experts"])
    check_value(merged["experts"] if experts is None else trained, SCHEMA["experts"], "experts", origins,
                ("experts",))
    per_expert: dict[str, dict[str, Any]] = {}
    # blocks of experts not trained this time (a solo or a debug run) are checked whole all the same
    untrained = [e for e in (int(k.removeprefix("expert_")) for k in expert_blocks) if e not in trained]
    for expert in [*trained, *untrained]:
        key = f"expert_{expert}"
        cfg = copy.deepcopy(merged)
        block = expert_blocks.get(key, {})
        expert_origins = dict(by_path)
        _merge(cfg, block, ("config", name), expert_origins)
        for k in block:
            config_name = by_path.get((key, k), ("config", name))[1]
            expert_origins[(k,)] = ("config", config_name, key)
        for parts, value, text in parsed:
            if parts[0] == key:
                _set_path(cfg, parts[1:], value)
                expert_origins[tuple(parts[1:])] = ("override", text)
            elif not parts[0].startswith("expert_"):
                _set_path(cfg, parts, value)
                expert_origins[tuple(parts)] = ("override", text)
        cfg["experts"] = trained
        cfg["expert"] = expert
        for k in block:
            if k in PER_EXPERT_FORBIDDEN:
                raise ConfigError(f"{sources.Origins(source_file, expert_origins).where((k,))}: "
                                  f"'{key}.{k}' cannot be set per expert")
        _complete(cfg)
        validate({k: v for k, v in cfg.items() if k != "expert"}, SCHEMA,
                 sources.Origins(source_file, expert_origins), (), context=key)
        check_combinations(cfg, sources.Origins(source_file, expert_origins), context=key)
        if expert in trained:
            per_expert[key] = cfg

    merged["experts"] = trained
    return {"name": name, "chain": chain, "global": merged, "experts": per_expert}


def _complete(cfg: dict[str, Any]) -> None:
    """Fill what the original project left implicit (`dist.inf_bounds`: False, its filter names) and read
    the other spellings of a value as the one the code knows (`accelerator: cuda` is `gpu`, `precision: 32`
    is `"32"`)."""
    dist = cfg.get("dist")
    if isinstance(dist, dict):
        for k, spec in DIST_KEYS.items():
            if k not in dist and spec.default is not REQUIRED:
                dist[k] = copy.deepcopy(spec.default)
    if isinstance(cfg.get("filter"), str) and cfg["filter"].strip() in LEGACY_FILTERS:
        cfg["filter"] = LEGACY_FILTERS[cfg["filter"].strip()]
    if isinstance(cfg.get("accelerator"), str) and cfg["accelerator"] in ACCELERATOR_ALIASES:
        cfg["accelerator"] = ACCELERATOR_ALIASES[cfg["accelerator"]]
    precision = cfg.get("precision")
    if isinstance(precision, int) and not isinstance(precision, bool):
        cfg["precision"] = str(precision)


