"""Holding a merged config to the schema: every key known, every value of its type, in its range and
finite, a `dist` that gives the sampler weight on [-1, 1], and keys that are valid alone but not together.

Each error says where the wrong value was written (sources.Origins), the key, and the closest known name.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from neuro_trigger import registry
from neuro_trigger.config.errors import ConfigError, suggest
from neuro_trigger.config.schema import DIST_EXAMPLE, NUMBER, SCHEMA, Key
from neuro_trigger.config.sources import Origins
from neuro_trigger.errors import clip


def validate(cfg: Mapping, schema: Mapping[str, Key], origins: Origins, path: tuple[str, ...],
             context: str | None = None) -> None:
    """Raise ConfigError at the first key of `cfg` that `schema` does not know or whose value does not fit it.

    `context` (`expert_N`) names the expert whose config this is.
    """
    for key, value in cfg.items():
        here = (*path, key)
        dotted = ".".join(here)
        if key not in schema:
            shown = clip(f"{context}.{dotted}" if context else dotted)
            raise ConfigError(f"{origins.where(here)}: unknown key '{shown}'{suggest(str(key), list(schema))}")
        check_value(value, schema[key], dotted, origins, here, context)


# Optimisers whose eps (1e-8) is 0 in float16: with `16-true` their state is float16 and the first step
# divides by zero (weights NaN). bf16 holds 1e-8; 16-mixed keeps weights and state in float32.
FLOAT16_EPS_OPTIMIZERS = ("Adam", "AdamW")


def check_combinations(cfg: Mapping, origins: Origins, context: str | None = None) -> None:
    """Checks of keys that are each valid alone but not together (one config: global or one expert's)."""
    if cfg.get("monitor") == "val_reweighted_loss" and not cfg.get("dist"):
        raise ConfigError(f"{origins.where(('monitor',))}: {context + ': ' if context else ''}key 'monitor': "
                          "'val_reweighted_loss' needs reweighted sampling: set 'dist' (or monitor 'val_loss')")
    stop, warn = cfg.get("stall_stop_s"), cfg.get("stall_warn_s")
    if stop is not None and warn is not None and stop <= warn:
        raise ConfigError(f"{origins.where(('stall_stop_s',))}: {context + ': ' if context else ''}key "
                          f"'stall_stop_s': {stop} must be more than stall_warn_s ({warn}): an expert is warned "
                          "about before it is stopped")
    if cfg.get("precision") == "16-true" and cfg.get("optim") in FLOAT16_EPS_OPTIMIZERS:
        # where each was set (an optim left at its default has no place of its own)
        places = [w for w in dict.fromkeys(origins.where((k,)) for k in ("precision", "optim")) if w != "config"]
        places = places or ["config"]
        raise ConfigError(f"{' and '.join(places)}: {context + ': ' if context else ''}key 'precision': '16-true' "
                          f"with optim '{cfg['optim']}': its eps (1e-8) is 0 in float16 and the first step makes "
                          "the weights NaN; use 16-mixed or bf16-true, or optim SGD or Rprop")


def check_slurm_settings(settings: Mapping[str, Any], where: str) -> None:
    """SLURM settings given outside a config (`--slurm`), held to the `slurm` block's schema."""

    class _There:
        def where(self, path: tuple[str, ...]) -> str:
            return where

    check_value(dict(settings), SCHEMA["slurm"], "slurm", _There(), ("slurm",))  # type: ignore[arg-type]


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def check_value(value: Any, spec: Key, dotted: str, origins: Origins, here: tuple[str, ...],
                context: str | None = None) -> None:
    """Raise ConfigError when `value` (of the key path `here`, shown as `dotted`) does not fit `spec`, its
    children included."""
    def prefix() -> str:  # only when a value is wrong: finding its line reads the configs file
        return f"{origins.where(here)}: {context + ': ' if context else ''}key '{dotted}'"

    if value is None:
        if spec.nullable:
            return
        raise ConfigError(f"{prefix()}: must not be None")
    ok_types = spec.types + ((int,) if float in spec.types else ())
    if isinstance(value, bool) and bool not in spec.types or not isinstance(value, ok_types):
        names = " or ".join(t.__name__ for t in spec.types) + (" or None" if spec.nullable else "")
        hint = f"; e.g. {DIST_EXAMPLE}" if dotted.endswith("dist") else ""
        raise ConfigError(f"{prefix()}: expected {names}, got {type(value).__name__} {clip(repr(value))}{hint}")
    if float in spec.types and isinstance(value, NUMBER) and not _finite(value):
        raise ConfigError(f"{prefix()}: must be a finite number, got {clip(repr(value))}")
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"{prefix()}: unknown name '{clip(str(value))}'{suggest(str(value), spec.choices)}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"{prefix()}: {problem}")
    if spec.children is not None:
        for k, v in value.items():
            if k not in spec.children:
                shown = clip(f"{context}.{dotted}.{k}" if context else f"{dotted}.{k}")
                raise ConfigError(f"{origins.where((*here, k))}: unknown key '{shown}'"
                                  f"{suggest(str(k), list(spec.children))}")
            check_value(v, spec.children[k], f"{dotted}.{k}", origins, (*here, k), context)
        if dotted.endswith("dist"):
            _check_dist(value, prefix(), origins, here, context)


def _check_dist(dist: Mapping, prefix: str, origins: Origins, here: tuple[str, ...],
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
    from neuro_trigger.data.sampling import bucket_probabilities  # here: it imports scipy, most configs need none

    try:
        bucket_probabilities(dict(dist))
    except (ValueError, OverflowError, ArithmeticError):
        places = dict.fromkeys(origins.where((*here, named[0], p)) for p in need)
        shown = ", ".join(f"{p}={params[p]!r}" for p in need)
        raise ConfigError(f"{' and '.join(places)}: {context + ': ' if context else ''}key '{dotted}': "
                          f"{clip(shown)} puts no weight on scaled z in [-1, 1]; every bucket would have "
                          "probability ~0") from None
