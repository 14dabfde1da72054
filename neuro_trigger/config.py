"""Resolve a named config into one plain config per expert, and check every key.

Order: the `extends` chain (root first, nested dicts merged key by key, `dist` replaced whole),
then `expert_N` blocks, then `-m key=value` overrides (command line wins). Every error names the
config file and line, or the `-m` argument, and the key, and suggests the closest known name.
"""
from __future__ import annotations

import ast
import copy
import difflib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro_trigger import registry
from neuro_trigger.errors import UserError

EXPERT_IDS = (0, 1, 2, 3, 4)
SOLO_EXPERT = -1
REPLACED_WHOLE = {"dist"}  # a child's value replaces the parent's instead of merging into it


class ConfigError(UserError):
    """A config or override that cannot be used."""


# ---------------------------------------------------------------------------------------------- schema
@dataclass(frozen=True)
class Key:
    """What one config key may hold."""

    types: tuple[type, ...]
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    children: Mapping[str, Key] | None = None


def _positive(v: Any) -> str | None:
    return None if v > 0 else "must be > 0"


def _at_least(n: int) -> Callable[[Any], str | None]:
    return lambda v: None if v >= n else f"must be >= {n}"


def _experts(v: list) -> str | None:
    if not v:
        return "must name at least one expert"
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in v):
        return "must be a list of integers"
    if v == [SOLO_EXPERT]:
        return None
    bad = [e for e in v if e not in EXPERT_IDS]
    if bad:
        return f"unknown expert(s) {bad}; experts are 0..4, or [-1] for one network on all data"
    if len(set(v)) != len(v):
        return "names an expert twice"
    return None


def _paths(v: Any) -> str | None:
    items = [v] if isinstance(v, str) else v
    if not items or not all(isinstance(p, str) and p for p in items):
        return "must be a file path or a non-empty list of file paths"
    return None


def _filter(v: str) -> str | None:
    from neuro_trigger.data.filters import parse_filter

    try:
        parse_filter(v)
    except UserError as e:
        return str(e)
    return None


NUMBER = (int, float)
DIST_KEYS: dict[str, Key] = {
    "n_buckets": Key((int,), "number of equal z buckets on [-1, 1]", _at_least(1)),
    "inf_bounds": Key((bool,), "outermost buckets extend to -inf / +inf"),
    "norm": Key(
        (dict,),
        "normal distribution of bucket weights",
        children={
            "mean": Key(NUMBER, "mean (scaled z)"),
            "std": Key(NUMBER, "standard deviation (scaled z)", _positive),
        },
    ),
    "uniform": Key(
        (dict,),
        "uniform distribution of bucket weights",
        children={"lower": Key(NUMBER, "lower bound (scaled z)"), "upper": Key(NUMBER, "upper bound")},
    ),
}
DATA_KEYS = {split: Key((str, list), f"{split} file(s), absolute or relative to the repository", _paths)
             for split in ("train", "val", "test")}

SCHEMA: dict[str, Key] = {
    "version": Key((int, float, str), "config format version"),
    "description": Key((str,), "what this config is for"),
    "learning_rate": Key(NUMBER, "optimiser learning rate", _positive),
    "batch_size": Key((int,), "training batch size", _at_least(1)),
    "weight_decay": Key(NUMBER, "L2 weight decay (Adam, AdamW, SGD)", _at_least(0)),
    "in_size": Key((int,), "number of network inputs", lambda v: None if v == 27 else "must be 27"),
    "out_size": Key((int,), "1: z only; 2: z and theta", lambda v: None if v in (1, 2) else "must be 1 or 2"),
    "workers": Key((int,), "processes run at once (expert trainings, plot jobs)", _at_least(1)),
    "epochs": Key((int,), "maximum number of epochs", _at_least(1)),
    "model": Key((str,), "network", choices=tuple(registry.MODELS)),
    "loss": Key((str,), "loss function", choices=tuple(registry.LOSSES)),
    "optim": Key((str,), "optimiser", choices=registry.OPTIMIZERS + tuple(registry.OPTIMIZER_ALIASES)),
    "act": Key((str,), "activation", choices=tuple(registry.ACTIVATIONS)),
    "experts": Key((list,), "experts to train (0..4), or [-1]", _experts),
    "compare_to": Key((str,), "earlier run (relative to log/) whose predictions are 'old'", nullable=True),
    "load_pre_trained_weights": Key((str,), "weights.json to start every expert from", nullable=True),
    "filter": Key((str,), "dataset filter expression", _filter),
    "dist": Key((dict,), "reweighted bucket sampling; None: shuffle", nullable=True, children=DIST_KEYS),
    "seed": Key((int,), "random seed for weights, sampling and shuffling"),
    "early_stopping_patience": Key((int,), "epochs without val_loss improvement before stopping", _at_least(1)),
    "gradient_clip_val": Key(NUMBER, "gradient norm clipping", _positive, nullable=True),
    "plot_every": Key((int,), "send plots to TensorBoard every N epochs", _at_least(1)),
    "data": Key((dict,), "data files per split", children=DATA_KEYS),
}
PER_EXPERT_FORBIDDEN = {"experts"}
TOP_ONLY = {"extends": Key((str,), "parent config")}


# ---------------------------------------------------------------------------------------------- locations
def _configs_module() -> tuple[dict, Path | None]:
    import configs as configs_module

    return configs_module.configs, Path(configs_module.__file__)


def _line_of(source_file: Path | None, name: str, path: Sequence[str]) -> int | None:
    """The line where `configs[name][path...]` is written, found by reading (not running) the file."""
    if source_file is None or not source_file.exists():
        return None
    tree = ast.parse(source_file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "configs"
                                                for t in node.targets) and isinstance(node.value, ast.Dict):
            current: ast.AST = node.value
            line = None
            for part in (name, *path):
                if not isinstance(current, ast.Dict):
                    break
                for k, v in zip(current.keys, current.values, strict=True):
                    if isinstance(k, ast.Constant) and k.value == part:
                        line, current = k.lineno, v
                        break
                else:
                    break
            return line
    return None


@dataclass
class _Origins:
    """Where each key path got its value: ('config', name[, block]) or ('override', text).

    `block` is the `expert_N` key when the value was written inside that block of the config.
    """

    source_file: Path | None
    by_path: dict[tuple[str, ...], tuple[str, ...]]

    def where(self, path: tuple[str, ...]) -> str:
        for n in range(len(path), 0, -1):
            origin = self.by_path.get(path[:n])
            if origin is None:
                continue
            kind, label, *block = origin
            if kind == "override":
                return f"-m {label}"
            line = _line_of(self.source_file, label, (*block, *path))  # the deepest key written there
            place = f"{_display(self.source_file)}:{line}: " if line else ""
            return f"{place}config '{label}'"
        return "config"


def _display(path: Path | None) -> str:
    if path is None:
        return "<dict>"
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; known: {', '.join(sorted(map(str, options)))}"


# ---------------------------------------------------------------------------------------------- resolution
def config_chain(name: str, configs: Mapping[str, dict], source_file: Path | None = None) -> list[str]:
    """The `extends` chain of a config, root first. Errors name the `extends` line in `source_file`."""
    chain = [name]
    if name not in configs:
        raise ConfigError(f"unknown config '{name}'{_suggest(name, list(configs))}")
    while "extends" in configs[chain[-1]]:
        parent = configs[chain[-1]]["extends"]
        line = _line_of(source_file, chain[-1], ("extends",))
        place = f"{_display(source_file)}:{line}: " if line else ""
        if not isinstance(parent, str) or parent not in configs:
            raise ConfigError(
                f"{place}config '{chain[-1]}' extends unknown config '{parent}' (chain: {' -> '.join(chain)})"
                f"{_suggest(str(parent), list(configs))}"
            )
        if parent in chain:
            raise ConfigError(f"{place}configs extend each other in a cycle: {' -> '.join([*chain, parent])}")
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
        raise ConfigError(f"-m {text}: expected KEY=VALUE, e.g. -m expert_2.batch_size=16")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"-m {text}: empty key")
    raw = raw.strip()
    spec = _check_key_path(parts, text)
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        takes_text = spec is not None and spec.types == (str,)
        if not takes_text and (not raw or raw[0] in "[{(\"'" or any(c in raw for c in " ,()[]{}")):
            raise ConfigError(f"-m {text}: cannot read the value '{raw}' (expected a Python literal)") from None
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
        _expert_id(parts[0], f"-m {text}")
        rest = parts[1:]
        if not rest:
            raise ConfigError(f"-m {text}: name a key inside {parts[0]}, e.g. {parts[0]}.batch_size=16")
        if rest[0] in PER_EXPERT_FORBIDDEN:
            raise ConfigError(f"-m {text}: '{rest[0]}' cannot be set per expert")
    for i, part in enumerate(rest):
        if part not in schema:
            where = ".".join(parts[:len(parts) - len(rest) + i]) or "the config"
            raise ConfigError(f"-m {text}: unknown key '{part}' in {where}{_suggest(part, list(schema))}")
        children = schema[part].children
        if children is None:
            if i != len(rest) - 1:
                raise ConfigError(f"-m {text}: '{part}' has no sub-keys")
            return schema[part]
        schema = children
    return None


def _expert_id(key: str, where: str) -> int:
    suffix = key.removeprefix("expert_")
    if suffix.lstrip("-").isdigit() and int(suffix) in (*EXPERT_IDS, SOLO_EXPERT):
        return int(suffix)
    raise ConfigError(f"{where}: '{key}': no such expert; experts are expert_0 .. expert_4 (and expert_-1)")


def resolve_config(
    config: str | Mapping[str, Any],
    overrides: Sequence[str] = (),
    *,
    experts: Sequence[int] | None = None,
    configs: Mapping[str, dict] | None = None,
) -> dict[str, Any]:
    """Resolve a config name (or a handcrafted dict) into a plain, JSON-serialisable dict.

    Returns {"name", "chain", "global": {...}, "experts": {"expert_N": {..., "expert": N}}}.
    `experts` (e.g. [-1] for a solo run, or the first expert for a debug run) replaces the
    config's own list; `expert_N` blocks and overrides for experts not trained are unused.
    """
    source_file: Path | None = None
    if configs is None:
        configs, source_file = _configs_module()
    if isinstance(config, Mapping):
        name = "custom"
        chain_configs = {**configs, name: dict(config)}
        source_file = None
    else:
        name, chain_configs = config, configs
    chain = config_chain(name, chain_configs, source_file)

    merged: dict[str, Any] = {}
    by_path: dict[tuple[str, ...], tuple[str, ...]] = {}
    for link in chain:
        _merge(merged, {k: v for k, v in chain_configs[link].items() if k != "extends"},
               ("config", link), by_path)
    origins = _Origins(source_file, by_path)

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
    _validate(merged, SCHEMA, origins, ())

    trained = list(experts) if experts is not None else list(merged["experts"])
    _check_value(merged["experts"] if experts is None else trained, SCHEMA["experts"], "experts", origins,
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
                raise ConfigError(f"{_Origins(source_file, expert_origins).where((k,))}: "
                                  f"'{key}.{k}' cannot be set per expert")
        _validate({k: v for k, v in cfg.items() if k != "expert"}, SCHEMA,
                  _Origins(source_file, expert_origins), (), context=key)
        if expert in trained:
            per_expert[key] = cfg

    merged["experts"] = trained
    return {"name": name, "chain": chain, "global": merged, "experts": per_expert}


def _validate(cfg: Mapping, schema: Mapping[str, Key], origins: _Origins, path: tuple[str, ...],
              context: str | None = None) -> None:
    for key, value in cfg.items():
        here = (*path, key)
        dotted = ".".join(here)
        if key not in schema:
            shown = f"{context}.{dotted}" if context else dotted
            raise ConfigError(f"{origins.where(here)}: unknown key '{shown}'{_suggest(key, list(schema))}")
        _check_value(value, schema[key], dotted, origins, here, context)
    if path == ():
        missing = [k for k in schema if k not in cfg]
        if missing:
            raise ConfigError(f"config lacks key(s) {missing} (every config must extend 'base')")


def _check_value(value: Any, spec: Key, dotted: str, origins: _Origins, here: tuple[str, ...],
                 context: str | None = None) -> None:
    prefix = f"{origins.where(here)}: {context + ': ' if context else ''}key '{dotted}'"
    if value is None:
        if spec.nullable:
            return
        raise ConfigError(f"{prefix}: must not be None")
    ok_types = spec.types + ((int,) if float in spec.types else ())
    if isinstance(value, bool) and bool not in spec.types or not isinstance(value, ok_types):
        names = " or ".join(t.__name__ for t in spec.types)
        raise ConfigError(f"{prefix}: expected {names}, got {type(value).__name__} {value!r}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{prefix}: unknown name '{value}'{_suggest(value, spec.choices)}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"{prefix}: {problem}")
    if spec.children is not None:
        for k, v in value.items():
            if k not in spec.children:
                shown = f"{context}.{dotted}.{k}" if context else f"{dotted}.{k}"
                raise ConfigError(f"{origins.where((*here, k))}: unknown key '{shown}'"
                                  f"{_suggest(k, list(spec.children))}")
            _check_value(v, spec.children[k], f"{dotted}.{k}", origins, (*here, k), context)
        if dotted.endswith("dist"):
            _check_dist(value, prefix, origins, here, context)


def _check_dist(dist: Mapping, prefix: str, origins: _Origins, here: tuple[str, ...],
                context: str | None = None) -> None:
    named = [d for d in registry.DISTRIBUTIONS if d in dist]
    if len(named) != 1:
        raise ConfigError(f"{prefix}: must name exactly one distribution of {list(registry.DISTRIBUTIONS)}, "
                          f"got {named or 'none'}")
    for needed in ("n_buckets", "inf_bounds"):
        if needed not in dist:
            raise ConfigError(f"{prefix}: lacks '{needed}'")
    params = dist[named[0]]
    need = ("mean", "std") if named[0] == "norm" else ("lower", "upper")
    dotted = ".".join((*here, named[0]))
    lacking = [p for p in need if p not in params]
    if lacking:
        raise ConfigError(f"{origins.where((*here, named[0]))}: {context + ': ' if context else ''}"
                          f"key '{dotted}': lacks {lacking}")
    if named[0] == "uniform" and params["lower"] >= params["upper"]:
        # name where each bound was set: one of them may come from -m, the other from a config
        places = dict.fromkeys(origins.where((*here, "uniform", bound)) for bound in ("lower", "upper"))
        raise ConfigError(f"{' and '.join(places)}: {context + ': ' if context else ''}key '{dotted}': "
                          f"lower ({params['lower']}) must be below upper ({params['upper']})")


def describe_configs(configs: Mapping[str, dict] | None = None) -> list[tuple[str, str, str]]:
    """(name, parent, description) of every config, for `main.py --list`."""
    if configs is None:
        configs, _ = _configs_module()
    rows = []
    for name in configs:
        chain = config_chain(name, configs)
        description = next((configs[c]["description"] for c in reversed(chain) if "description" in configs[c]), "")
        rows.append((name, configs[name].get("extends", ""), description))
    return rows
