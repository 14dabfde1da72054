"""Configs: a named config of configs/__init__.py resolved into one checked config per expert.

`schema` describes every key; `sources` finds where a value was written (file and line, or `-m`);
`validation` holds values to the schema; `resolution` merges the `extends` chain, `expert_N` blocks and
overrides (`resolve_config`); `listing` is `main.py --list`; `docs` renders docs/config_keys.md.
Every error is a `errors.ConfigError` that names the place, the key and the closest known name.
"""
