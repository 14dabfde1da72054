"""docs/config_keys.md, rendered from the schema: every key with its type, default, meaning and allowed values.

`python -m neuro_trigger.config.docs --write-docs` writes it; a test compares the file with the schema.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from neuro_trigger import REPO_ROOT
from neuro_trigger.config.schema import (
    DIST_EXAMPLE,
    LEGACY_FILTERS,
    NUMBER,
    REQUIRED,
    RETIRED_KEYS,
    RUN_RECORD_KEYS,
    SCHEMA,
    Key,
)

DOCS_PATH = REPO_ROOT / "docs" / "config_keys.md"


def _type_name(spec: Key) -> str:
    names = ["float" if spec.types == NUMBER else " or ".join(t.__name__ for t in spec.types)]
    if spec.types == (str, list):
        names = ["str or list of str"]
    return names[0] + (" or None" if spec.nullable else "")


def _default_text(spec: Key) -> str:
    if spec.default is REQUIRED:
        return "required" if spec.children is None else "—"
    return f"`{spec.default!r}`"


def _doc_rows(schema: Mapping[str, Key], prefix: str = "") -> list[str]:
    rows = []
    for name, spec in schema.items():
        dotted = f"{prefix}{name}"
        default = _default_text(spec) if not (spec.children and spec.default not in (None, REQUIRED)) else "see below"
        cells = [f"`{dotted}`", _type_name(spec), default, spec.doc, spec.allowed()]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if spec.children:
            rows += _doc_rows(spec.children, dotted + ".")
    return rows


def render_config_docs() -> str:
    """docs/config_keys.md: every config key with its type, default, meaning and allowed values."""
    lines = [
        "# Config keys",
        "",
        "Generated from the schema in `neuro_trigger/config/schema.py` by",
        "`python -m neuro_trigger.config.docs --write-docs`; do not edit by hand (a test compares this file",
        "with the schema).",
        "",
        "A config sets any of these keys; a key that no config of its `extends` chain sets takes the",
        "default below. `extends` names the parent config; `expert_N` (N in 0..4, or -1 for a solo run)",
        "holds keys for expert N only (all but `experts`). Integers are accepted where floats are",
        "expected; every float must be finite.",
        "",
        "| key | type | default | meaning | allowed |",
        "|---|---|---|---|---|",
        "| `extends` | str | — | parent config (recursively) | a config name |",
        *_doc_rows(SCHEMA),
        "| `expert_N` | dict | — | keys for expert N only | N in 0..4, or -1; any key but `experts` |",
        "",
        "`dist` is replaced whole by a child config, e.g.",
        f"`{DIST_EXAMPLE}`. Inside `dist` give exactly one of `norm` and `uniform`; `n_buckets` is",
        "required. A distribution that puts (almost) no weight on scaled z in [-1, 1] is refused (e.g. `norm`",
        "with mean 100 and std 0.01), as is any value that is not finite.",
        "",
        "## Configs of the original project",
        "",
        "The `configs` dictionary of the original project (belle2-pytorch-neuro-trigger) can be pasted as it is,",
        "with data paths added under `data`:",
        "",
        "- every key it uses exists here with the same meaning; keys its `base` does not set take the defaults",
        "  above, and `dist.inf_bounds` defaults to False, as the original documents;",
        "- `version` may be a float (0.2), integers stand for floats (`\"lower\": -1`), `workers: 20` is",
        "  allowed (on CPU at most one process per core runs at once);",
        "- `optim: \"Rprob\"` is the original's spelling of `Rprop`; the filter names of its first versions",
        "  are read as filters: "
        + ", ".join(f"`{old}` = `{new}`" for old, new in LEGACY_FILTERS.items()) + ";",
        "- keys the original wrote into a run's record ("
        + ", ".join(f"`{k}`" for k in RUN_RECORD_KEYS)
        + ") set nothing here: they are ignored with a one-line warning;",
        "- `\"dist\": \"norm\"` (a bare name, from one early config) has no parameters: an error that shows",
        "  the dict to write instead;",
        "- any other key is an error that names the file, line and the closest known key (a misspelt key",
        "  must never be silently ignored).",
        "",
        "Keys this trainer once had and no longer has are ignored with a one-line warning in a config (an error",
        "in `-m`): "
        + "; ".join(f"`{k}`: {why}" for k, why in RETIRED_KEYS.items()) + ".",
        "",
    ]
    return "\n".join(lines)


def write_config_docs(path: Path = DOCS_PATH) -> Path:
    """Write `render_config_docs()` to `path` (docs/config_keys.md); returns the path."""
    path.write_text(render_config_docs(), encoding="utf-8")
    return path


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m neuro_trigger.config.docs",
                                     description="Render the table of config keys from the schema.")
    parser.add_argument("--write-docs", action="store_true", help=f"write {DOCS_PATH.relative_to(REPO_ROOT)}")
    args = parser.parse_args(argv)
    if args.write_docs:
        print(write_config_docs())
    else:
        sys.stdout.write(render_config_docs())
    return 0


if __name__ == "__main__":
    sys.exit(_main())
