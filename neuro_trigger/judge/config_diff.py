"""The configs of compared runs, key by key: only the keys whose values differ (config_diff.json, and the
report's "Config differences")."""
from __future__ import annotations

import json
import re
from typing import Any

NOT_SET = "(not set)"


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of 'a.b' keys; lists and other values are kept whole."""
    if isinstance(value, dict) and (value or not prefix):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _differing(flat: list[dict[str, Any]]) -> dict[str, list[Any]]:
    keys = sorted(set().union(*flat))
    out = {}
    for key in keys:
        values = [f.get(key, NOT_SET) for f in flat]
        if any(json.dumps(v, sort_keys=True, default=str) != json.dumps(values[0], sort_keys=True, default=str)
               for v in values[1:]):
            out[key] = values
    return out


def config_diff(configs: list[dict], labels: list[str]) -> dict[str, Any]:
    """Only the config keys whose values differ between the runs, flattened ('dist.norm.std').

    `global`: the config name and the global keys. `experts`: per expert every run has, the keys that differ
    and are not explained by the global difference (an expert_N override in some run). `experts_only_in`:
    experts some runs lack, with the runs that have them. Values are listed in the order of `runs`.
    """
    flat_global = [flatten({"name": c.get("name"), **(c.get("global") or {})}) for c in configs]
    experts_of = [set((c.get("experts") or {}).keys()) for c in configs]
    common = set.intersection(*experts_of)
    per_expert: dict[str, dict[str, list[Any]]] = {}
    for key in sorted(common, key=_expert_order):
        flat = [flatten(c["experts"][key]) for c in configs]
        overridden = {k: v for k, v in _differing(flat).items()
                      if any(f.get(k, NOT_SET) != g.get(k, NOT_SET) for f, g in zip(flat, flat_global, strict=True))}
        if overridden:
            per_expert[key] = overridden
    only_in = {key: [label for label, keys in zip(labels, experts_of, strict=True) if key in keys]
               for key in sorted(set.union(*experts_of) - common, key=_expert_order)}
    return {"runs": list(labels), "global": _differing(flat_global), "experts": per_expert,
            "experts_only_in": only_in}


def _expert_order(key: str) -> tuple[int, str]:
    match = re.fullmatch(r"expert_(-?\d+)", key)
    return (int(match.group(1)), key) if match else (1 << 30, key)
