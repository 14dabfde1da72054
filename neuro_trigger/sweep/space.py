"""A sweep's definition: read from the `sweeps` dict of configs/__init__.py, checked whole before anything trains.

    sweeps = {"lr_batch": {"config": "baseline_v2", "sampler": "grid",
                           "space": {"learning_rate": [1e-3, 3e-3], "batch_size": [512, 2048]}}}

A space maps config keys (dotted, per expert too: `expert_4.batch_size`, `dist.norm.std`) to a list of values
(choices; a grid takes only these) or a range: ("float", low, high), ("log", low, high), ("int", low, high[, step]),
("log_int", low, high). Each expert is its own optimisation, so a key of one expert (`expert_4.batch_size`) is a
parameter of that expert's study only. Every value a trial can get is checked as the config checks an override.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro_trigger.config import sources
from neuro_trigger.config.errors import ConfigError, suggest
from neuro_trigger.config.resolution import resolve_among
from neuro_trigger.errors import UserError, clip

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("percentile", "median", "successive_halving", "hyperband", "none")
# objective -> the direction it is optimised in (sweep/objective.py computes them)
OBJECTIVES = {"z_resolution": "minimize", "val_loss": "minimize", "rejection_at_efficiency": "maximize"}
RANGES = ("float", "log", "int", "log_int")
DEFAULT_TRIALS = 20  # per expert, for the samplers that are not a grid
DEBUG_TRIALS = 3  # a debug sweep (no -p): the first expert, at most this many trials, at most 10 epochs each
# keys a sweep may not vary: what every trial must share for their objectives to be compared
FIXED_KEYS = {
    "data": "every trial is judged on the same data",
    "experts": "the sweep's experts are the config's",
    "compare_to": "every trial is compared with the same earlier run",
    "in_size": "the inputs are the data's",
    "workers": "it sets how the sweep runs, not what a trial trains",
    "stall_warn_s": "it sets how the sweep runs, not what a trial trains",
    "stall_stop_s": "it sets how the sweep runs, not what a trial trains",
    "slurm": "it sets how the sweep runs, not what a trial trains",
    "version": "it names the config format",
    "description": "it describes, it sets nothing",
}
SWEEP_KEYS = {
    "config": "the config the trials start from",
    "description": "what the sweep is for",
    "space": "config key -> list of values, or a range (\"float\"|\"log\"|\"int\"|\"log_int\", low, high)",
    "sampler": f"one of {', '.join(SAMPLERS)} (default: grid when every key has a list of values, else tpe)",
    "trials": f"trials per expert (default: every grid point, else {DEFAULT_TRIALS})",
    "seed": "the samplers' seed (default 0): the same sweep with the same seed proposes the same trials",
    "objective": f"one of {', '.join(OBJECTIVES)} (default z_resolution: the expert's validation z resolution)",
    "target_efficiency": "for rejection_at_efficiency: the IP efficiency the rejection is read at (default 0.9)",
    "pruner": f"one of {', '.join(PRUNERS)} (default percentile: a trial stops when its validation loss is worse "
              "than three quarters of its expert's finished trials at the same epoch)",
    "pruner_startup_trials": "finished trials of an expert before its pruner stops any (default 3)",
    "pruner_warmup_epochs": "epochs of a trial before the pruner judges it (default 2)",
}


@dataclass(frozen=True)
class Param:
    """One key of a space: `kind` "choice" with its `values`, or a range kind with (low, high[, step])."""

    key: str  # as written in the space, e.g. "expert_4.batch_size"
    kind: str
    values: tuple

    @property
    def expert(self) -> int | None:
        """The expert a per-expert key belongs to; None for a key of every expert."""
        head = self.key.split(".", 1)[0]
        return int(head.removeprefix("expert_")) if head.startswith("expert_") else None

    @property
    def setting(self) -> str:
        """The key inside an expert's config, e.g. "batch_size"."""
        return self.key.split(".", 1)[1] if self.expert is not None else self.key

    def distribution(self):
        """The parameter's Optuna distribution."""
        from optuna import distributions

        if self.kind == "choice":
            return distributions.CategoricalDistribution(list(self.values))
        low, high, *step = self.values
        if self.kind in ("int", "log_int"):
            return distributions.IntDistribution(low, high, log=self.kind == "log_int", step=step[0] if step else 1)
        return distributions.FloatDistribution(low, high, log=self.kind == "log", step=step[0] if step else None)


@dataclass(frozen=True)
class Sweep:
    """A checked sweep: what sweep.json records and what resuming reads back."""

    name: str
    config: str
    description: str
    sampler: str
    params: tuple[Param, ...]
    trials: int  # per expert
    seed: int
    objective: str
    target_efficiency: float
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int
    experts: tuple[int, ...]
    overrides: tuple[str, ...] = ()  # -m, applied to every trial before its parameters

    @property
    def direction(self) -> str:
        return OBJECTIVES[self.objective]

    def params_of(self, expert: int) -> list[Param]:
        """The parameters of one expert's study: the keys of every expert and this expert's own."""
        return [p for p in self.params if p.expert in (None, expert)]

    def budget(self, expert: int) -> int:
        """The expert's trials: `trials`, or fewer where its grid has fewer points."""
        if self.sampler != "grid":
            return self.trials
        return min(self.trials, math.prod(len(p.values) for p in self.params_of(expert)))

    def grid(self, expert: int) -> list[dict[str, Any]]:
        """A grid's points for one expert in a fixed order: the keys as written, each one's values as written,
        the last key varying fastest; at most `trials` of them."""
        params = self.params_of(expert)
        points = itertools.product(*(p.values for p in params))
        return [dict(zip((p.key for p in params), point, strict=True)) for point in itertools.islice(points,
                                                                                                     self.trials)]

    def trial_overrides(self, expert: int, values: Mapping[str, Any]) -> list[str]:
        """The `-m` overrides that make a trial's config: the sweep's own, then each parameter for its expert."""
        return [*self.overrides, *(f"expert_{expert}.{p.setting}={values[p.key]!r}"
                                   for p in self.params_of(expert) if p.key in values)]

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "params": [dataclasses.asdict(p) for p in self.params]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sweep:
        params = tuple(Param(p["key"], p["kind"], tuple(p["values"])) for p in data["params"])
        return cls(**{**data, "params": params, "experts": tuple(data["experts"]),
                      "overrides": tuple(data["overrides"])})


def sweep_names() -> list[tuple[str, str, str, str]]:
    """(name, config, description, what is wrong or '') of every sweep, for `main.py --list`."""
    sweeps, source_file = sources.load_sweeps()
    configs, _ = sources.load_configs()
    rows = []
    for name, entry in sweeps.items():
        entry = entry if isinstance(entry, Mapping) else {}
        problem = ""
        try:
            check_sweep(str(name), sweeps[name], configs, source_file)
        except UserError as error:
            problem = clip(str(error))
        rows.append((str(name), clip(str(entry.get("config", ""))), clip(str(entry.get("description", ""))), problem))
    return rows


def load_sweep(name: str, overrides: Sequence[str] = (), trials: int | None = None, debug: bool = False) -> Sweep:
    """The sweep `name` of configs/__init__.py, checked whole; `overrides` apply to every trial, `trials` caps the
    trials per expert (a grid's first points). A debug sweep: the config's first expert, at most DEBUG_TRIALS."""
    sweeps, source_file = sources.load_sweeps()
    if name not in sweeps:
        raise ConfigError(f"no sweep named '{clip(name)}' in {sources.display_path(source_file)}"
                          f"{suggest(name, list(sweeps), 'every sweep: python neuro_trigger/main.py --list')}")
    configs, _ = sources.load_configs()
    return check_sweep(name, sweeps[name], configs, source_file, overrides, trials, debug)


def check_sweep(name: str, entry: Any, configs: Mapping[str, dict], source_file: Path | None,
                overrides: Sequence[str] = (), trials: int | None = None, debug: bool = False) -> Sweep:
    """`entry` (one value of `sweeps`) checked against the configs; every mistake one ConfigError naming the line."""

    def where(*path: str) -> str:
        line = sources.line_of(source_file, name, path, variable="sweeps")
        place = f"{sources.display_path(source_file)}:{line}: " if line else ""
        return f"{place}sweep '{clip(name)}'" + (f", {'.'.join(path)}" if path else "")

    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where()}: must be a dict with at least `config` and `space`")
    for key in entry:
        if key not in SWEEP_KEYS:
            raise ConfigError(f"{where(str(key))}: unknown key{suggest(str(key), list(SWEEP_KEYS))}")
    config = entry.get("config")
    if not isinstance(config, str) or config not in configs:
        raise ConfigError(f"{where('config')}: names no config{suggest(str(config), list(configs))}")
    base = resolve_among(config, overrides, None, configs, source_file)  # the overrides' own mistakes first
    experts = tuple(base["global"]["experts"])[:1 if debug else None]
    space = entry.get("space")
    if not isinstance(space, Mapping) or not space:
        raise ConfigError(f"{where('space')}: must be a non-empty dict of config key -> values or range")
    params = tuple(_param(str(key), value, where) for key, value in space.items())
    for param in params:
        _check_values(param, config, overrides, experts, configs, source_file, where)
    settings = [(p.expert, p.setting) for p in params]
    for p in params:  # a key of every expert and the same key of one expert would both set it
        if p.expert is not None and (None, p.setting) in settings:
            raise ConfigError(f"{where('space', p.key)}: '{p.setting}' is in the space for every expert already")
    sampler = entry.get("sampler", "grid" if all(p.kind == "choice" for p in params) else "tpe")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{where('sampler')}: '{clip(str(sampler))}' is none of {', '.join(SAMPLERS)}")
    if sampler == "grid":
        ranged = [p.key for p in params if p.kind != "choice"]
        if ranged:
            raise ConfigError(f"{where('space', ranged[0])}: a grid needs a list of values, not a range")
        if any(not p.values for p in params):
            raise ConfigError(f"{where('space')}: the grid is empty (a key with no values)")
    elif any(not p.values for p in params):
        raise ConfigError(f"{where('space')}: a key with no values")
    most = math.prod(len(p.values) for p in params) if sampler == "grid" else DEFAULT_TRIALS
    count = _integer(entry.get("trials", most), 1, where("trials"))
    count = min(count, trials or count, DEBUG_TRIALS if debug else count)
    if sampler == "grid":
        count = min(count, max(math.prod(len(p.values) for p in params if p.expert in (None, e)) for e in experts))
    objective = entry.get("objective", "z_resolution")
    if objective not in OBJECTIVES:
        raise ConfigError(f"{where('objective')}: '{clip(str(objective))}' is none of {', '.join(OBJECTIVES)}")
    target = entry.get("target_efficiency", 0.9)
    if isinstance(target, bool) or not isinstance(target, int | float) or not 0 < target < 1:
        raise ConfigError(f"{where('target_efficiency')}: must be a number between 0 and 1")
    pruner = entry.get("pruner", "percentile")
    if pruner not in PRUNERS:
        raise ConfigError(f"{where('pruner')}: '{clip(str(pruner))}' is none of {', '.join(PRUNERS)}")
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where('description')}: must be text")
    return Sweep(name, config, description, sampler, params, count,
                 _integer(entry.get("seed", 0), 0, where("seed")), objective, float(target), pruner,
                 _integer(entry.get("pruner_startup_trials", 3), 0, where("pruner_startup_trials")),
                 _integer(entry.get("pruner_warmup_epochs", 2), 0, where("pruner_warmup_epochs")),
                 experts, tuple(overrides))


def _integer(value: Any, low: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{where}: must be a whole number >= {low}, got {clip(repr(value))}")
    return value


def _param(key: str, value: Any, where) -> Param:
    """One key of the space, its form checked (its values are checked against the config afterwards)."""
    setting = key.split(".", 1)[1] if key.startswith("expert_") and "." in key else key
    head = setting.split(".", 1)[0]
    if head in FIXED_KEYS:
        raise ConfigError(f"{where('space', key)}: '{head}' cannot vary in a sweep: {FIXED_KEYS[head]}")
    if isinstance(value, list):
        for choice in value:
            if not (choice is None or isinstance(choice, bool | int | float | str)):
                raise ConfigError(f"{where('space', key)}: a value of a list must be a number, text, True/False "
                                  f"or None, got {clip(repr(choice))}")
        if len(set(map(repr, value))) != len(value):
            raise ConfigError(f"{where('space', key)}: a value is listed twice")
        return Param(key, "choice", tuple(value))
    if isinstance(value, tuple) and value and value[0] in RANGES:
        kind, *bounds = value
        integer = kind in ("int", "log_int")
        number = int if integer else (int, float)
        if len(bounds) not in (2, 3) or (kind.startswith("log") and len(bounds) == 3) or any(
                isinstance(b, bool) or not isinstance(b, number) or not math.isfinite(b) for b in bounds):
            raise ConfigError(f"{where('space', key)}: a range is ({kind!r}, low, high"
                              f"{'' if kind.startswith('log') else ', step'}) with {'whole ' if integer else ''}"
                              f"numbers, got {clip(repr(value))}")
        if bounds[0] >= bounds[1] or (kind.startswith("log") and bounds[0] <= 0) or (
                len(bounds) == 3 and bounds[2] <= 0):
            needs = "low < high" + (" and low > 0" if kind.startswith("log") else "") + (
                " and step > 0" if len(bounds) == 3 else "")
            raise ConfigError(f"{where('space', key)}: needs {needs}, got {clip(repr(value))}")
        return Param(key, kind, tuple(bounds))
    raise ConfigError(f"{where('space', key)}: give a list of values or a range tuple "
                      f"({', '.join(RANGES)}, low, high), got {clip(repr(value))}")


def _check_values(param: Param, config: str, overrides: Sequence[str], experts: Sequence[int],
                  configs: Mapping[str, dict], source_file: Path | None, where) -> None:
    """Every value the parameter can take (each choice; a range's ends) resolved as an override of the config."""
    if param.expert is not None and param.expert not in experts:
        raise ConfigError(f"{where('space', param.key)}: expert_{param.expert} is not trained by config "
                          f"'{config}' (experts {list(experts)})")
    values = param.values if param.kind == "choice" else param.values[:2]
    for value in values:
        for expert in [param.expert] if param.expert is not None else experts[:1]:
            try:
                resolve_among(config, [*overrides, f"expert_{expert}.{param.setting}={value!r}"], [expert],
                              configs, source_file)
            except UserError as error:
                message = str(error).split(": ", 1)[-1]
                raise ConfigError(f"{where('space', param.key)}: the value {clip(repr(value))}: {message}") from None
