"""Resolve a named config into one plain config per expert, and check every key.

Order: the schema's defaults, then the `extends` chain (root first, nested dicts merged key by key,
`dist` replaced whole), then `expert_N` blocks, then `-m key=value` overrides (command line wins).
Every error names the config file and line, or the `-m` argument, and the key, and suggests the
closest known name. The schema below is the one description of every key: docs/config_keys.md is
rendered from it (`python -m neuro_trigger.config --write-docs`).
"""
from __future__ import annotations

import ast
import copy
import difflib
import functools
import importlib.util
import logging
import math
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from neuro_trigger import REPO_ROOT, registry
from neuro_trigger.errors import QUOTE_LIMIT, UserError, clip  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

EXPERT_IDS = (0, 1, 2, 3, 4)
SOLO_EXPERT = -1
REPLACED_WHOLE = {"dist"}  # a child's value replaces the parent's instead of merging into it
MAX_SEED = 2**32 - 1  # what seed_everything accepts
MAX_BUCKETS = 1000  # more z buckets than this only cut the data into slivers of a few rows
class ConfigError(UserError):
    """A config or override that cannot be used."""


# ---------------------------------------------------------------------------------------------- schema
REQUIRED: Any = object()  # the default of a key that has none: it must be given


@dataclass(frozen=True)
class Bound:
    """A numeric range check: returns what is wrong, or None; str() is the range for the docs."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is not allowed

    def __call__(self, v: Any) -> str | None:
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return f"must be {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None and v > self.high:
            return f"must be <= {self.high}"
        return None

    def __str__(self) -> str:
        if self.low is not None and self.high is not None:
            return f"{self.low} .. {self.high}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {self.low}"
        return f"<= {self.high}"


@dataclass(frozen=True)
class Key:
    """What one config key may hold, its default and what it means."""

    types: tuple[type, ...]
    doc: str
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    choices: tuple[str, ...] | None = None
    nullable: bool = False
    children: Mapping[str, Key] | None = None
    default: Any = REQUIRED
    limits: str = ""  # the allowed values in words, for the docs (a Bound describes itself)

    def allowed(self) -> str:
        """What values are allowed, in words."""
        if self.choices is not None:
            return ", ".join(f"`{c}`" for c in self.choices)
        return self.limits or (str(self.check) if isinstance(self.check, Bound) else "")


def _experts(v: list) -> str | None:
    if not v:
        return "must name at least one expert"
    if not all(isinstance(e, int) and not isinstance(e, bool) for e in v):
        return "must be a list of integers"
    if v == [SOLO_EXPERT]:
        return None
    bad = [e for e in v if e not in EXPERT_IDS]
    if bad:
        return f"unknown expert(s) {clip(str(bad))}; experts are 0..4, or [-1] for one network on all data"
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
        return clip(str(e))
    return None


def _devices(v: int) -> str | None:
    if v < 1:
        return "must be >= 1"
    if v > 1:
        return ("must be 1: an expert trains on one device (a run's experts train in parallel, one device each; "
                "data-parallel training over several devices does not pay for networks this small)")
    return None


# Trainer(accelerator=...) values; `cuda` is read as `gpu` (_complete). Lightning's other names (mps, tpu, ...)
# are not offered: the expert's tensors are placed on the CPU or a CUDA GPU (training/hardware.py).
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
ACCELERATOR_ALIASES = {"cuda": "gpu"}
# Trainer(precision=...) values (Lightning 2.6's _PRECISION_INPUT less its discouraged aliases "16" and "bf16"
# and the transformer-engine ones); an integer (`-m precision=32`) is read as its string.
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true", "64")
OLD_PRECISIONS = {"16": "16-mixed", "bf16": "bf16-mixed"}  # Lightning still reads these, with a warning


def _precision(v: str) -> str | None:
    if v in PRECISIONS:
        return None
    if v in OLD_PRECISIONS:
        return f"'{v}' is Lightning's old name of '{OLD_PRECISIONS[v]}': write that"
    return f"unknown precision '{clip(v)}'{_suggest(v, PRECISIONS)}"
MONITORS = ("auto", "val_loss", "val_reweighted_loss")
NUMBER = (int, float)
POSITIVE = Bound(0, low_open=True)


def _sbatch_options(v: dict) -> str | None:
    for name, value in v.items():
        if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9-]*", name):
            return f"'{clip(str(name))}' is not an sbatch option name (e.g. 'qos', 'constraint')"
        if not isinstance(value, str | int):
            return f"the value of '{name}' must be a string or an integer"
    return None


# The SLURM launcher's settings (runner/slurm.py); `--slurm KEY=VALUE` overrides them for a run.
SLURM_KEYS: dict[str, Key] = {
    "partition": Key((str,), "partition the jobs go to; None: the cluster's default", nullable=True, default=None),
    "time_min": Key((int,), "time limit of an expert's job in minutes (it is requeued and continues from its "
                    "last checkpoint when it runs out)", Bound(1), default=60),
    "cpus_per_expert": Key((int,), "CPU cores per expert job (at most 4 are used for training)", Bound(1), default=2),
    "mem_gb": Key(NUMBER, "memory per expert job in GB", POSITIVE, default=4),
    "gpus_per_expert": Key((int,), "GPUs per expert job (`--gpus-per-node`); set with accelerator gpu", Bound(0),
                           default=0),
    "account": Key((str,), "account charged; None: the user's default", nullable=True, default=None),
    "array_parallelism": Key((int,), "expert jobs of a run running at once", Bound(1), default=32),
    "extra": Key((dict,), "more sbatch options, e.g. {'qos': 'short', 'constraint': 'a100'}", _sbatch_options,
                 default={}),
}
# The embedded default data set: the toy Monte Carlo, generated on first use (neuro_trigger/data/toy_mc.py).
DEFAULT_DATA = {
    "train": ["data_cache/toy/neuroresults_random1.gz"],
    "val": ["data_cache/toy/neuroresults_random2.gz"],
    "test": ["data_cache/toy/neuroresults_random3.gz"],
}
def _defaults_of(keys: Mapping[str, Key]) -> dict[str, Any]:
    return {name: key.default for name, key in keys.items()}


DIST_KEYS: dict[str, Key] = {
    "n_buckets": Key((int,), "number of equal z buckets on [-1, 1]", Bound(1, MAX_BUCKETS)),
    "inf_bounds": Key((bool,), "outermost buckets extend to -inf / +inf; False: probabilities normalised on [-1, 1]",
                      default=False),
    "norm": Key(
        (dict,),
        "normal distribution of bucket weights (give `norm` or `uniform`)",
        children={
            "mean": Key(NUMBER, "mean (scaled z)", limits="finite"),
            "std": Key(NUMBER, "standard deviation (scaled z)", POSITIVE),
        },
    ),
    "uniform": Key(
        (dict,),
        "uniform distribution of bucket weights (give `norm` or `uniform`)",
        children={"lower": Key(NUMBER, "lower bound (scaled z)", limits="finite, < upper"),
                  "upper": Key(NUMBER, "upper bound (scaled z)", limits="finite, > lower")},
    ),
}
DATA_KEYS = {split: Key((str, list), f"{split} file(s), absolute or relative to the repository", _paths,
                        default=DEFAULT_DATA[split], limits="a path or a non-empty list of paths")
             for split in ("train", "val", "test")}

SCHEMA: dict[str, Key] = {
    "version": Key((int, float, str), "config format version, for people", default=1),
    "description": Key((str,), "what this config is for", default=""),
    "learning_rate": Key(NUMBER, "optimiser learning rate", POSITIVE, default=1e-3),
    "batch_size": Key((int,), "training batch size", Bound(1), default=2048),
    "drop_last": Key((bool,), "leave out each epoch's last mini-batch when it has fewer than `batch_size` rows: "
                     "every optimiser step on `batch_size` rows, up to `batch_size` - 1 rows unused per epoch; False: "
                     "train on it too, its loss a mean over its rows, as the original trainer (a last batch of one row "
                     "joins the one before)", default=False),
    "weight_decay": Key(NUMBER, "L2 weight decay (Adam, AdamW, SGD)", Bound(0), default=1e-6),
    "in_size": Key((int,), "number of network inputs", lambda v: None if v == 27 else "must be 27", default=27,
                   limits="27"),
    "out_size": Key((int,), "1: z only; 2: z and theta", lambda v: None if v in (1, 2) else "must be 1 or 2",
                    default=2, limits="1, 2"),
    "workers": Key((int,), "processes run at once (expert trainings, plot jobs); on CPU at most one per core",
                   Bound(1), default=5),
    "epochs": Key((int,), "maximum number of epochs", Bound(1), default=10),
    "model": Key((str,), "network", choices=registry.MODELS, default="BaselineModel"),
    "loss": Key((str,), "loss function", choices=registry.LOSSES, default="MSELoss"),
    "optim": Key((str,), "optimiser (`Rprob`: the original's spelling of `Rprop`)",
                 choices=registry.OPTIMIZERS + tuple(registry.OPTIMIZER_ALIASES), default="Adam"),
    "act": Key((str,), "activation (`tanh/2`: tanh(x/2))", choices=registry.ACTIVATIONS, default="relu"),
    "experts": Key((list,), "experts to train, or [-1] for one network on all data", _experts,
                   default=[0, 1, 2, 3, 4], limits="distinct of 0..4, or [-1]"),
    "compare_to": Key((str,), "earlier run (relative to log/) whose predictions are 'old'", nullable=True,
                      default=None),
    "load_pre_trained_weights": Key((str,), "weights.json to start every expert from", nullable=True,
                                    default=None),
    "filter": Key((str,), "dataset filter expression (README: Filters)", _filter,
                  default="dataset_filters.IdentityFilter()", limits="a filter expression"),
    "dist": Key((dict,), "reweighted bucket sampling; None: a shuffled permutation each epoch", nullable=True,
                children=DIST_KEYS, default=None),
    "seed": Key((int,), "random seed for weights, sampling and shuffling", Bound(0, MAX_SEED), default=42),
    "early_stopping_patience": Key((int,), "epochs without improvement of the monitored loss before stopping",
                                   Bound(1), default=30),
    "monitor": Key((str,), "validation loss that early stopping and the best checkpoint follow: `val_loss`, "
                   "`val_reweighted_loss` (weighted by `dist`'s z distribution, as training draws batches; needs "
                   "`dist`), or `auto`: the reweighted one when `dist` is set", choices=MONITORS, default="auto"),
    "gradient_clip_val": Key(NUMBER, "gradient norm clipping; None: no clipping", POSITIVE, nullable=True,
                             default=None),
    "plot_every": Key((int,), "send plots to TensorBoard every N epochs", Bound(1), default=10),
    "adaptive_threads": Key((bool,), "experts still training try the CPU cores freed by finished ones and keep "
                            "them where faster; depends on timing, so not bit-reproducible", default=False),
    "data": Key((dict,), "data files per split; default: the embedded toy data set", children=DATA_KEYS,
                default=DEFAULT_DATA),
    "slurm": Key((dict,), "how `--launcher slurm` submits the experts' jobs", children=SLURM_KEYS,
                 default=_defaults_of(SLURM_KEYS)),
    "accelerator": Key((str,), "where an expert trains: `auto` takes the CUDA GPU if one is visible, else the CPU "
                       "(never Apple's MPS); `gpu` a CUDA GPU (an error before the run starts if there is none); "
                       "`cuda` is read as `gpu`", choices=ACCELERATORS, default="auto"),
    "devices": Key((int,), "devices one expert trains on; only 1: the experts of a run already train in parallel "
                   "processes, one device each, and data-parallel training of networks this small over several "
                   "devices costs more in synchronisation than it gains", _devices, default=1, limits="1"),
    "precision": Key((str,), "Lightning's numeric precision (`32` = `32-true`, `64` = `64-true`); `16-mixed` needs "
                     "a GPU (on the CPU Lightning would train in bf16-mixed instead), bf16 a GPU that supports it; "
                     "`16-true` not with optim Adam or AdamW (their eps is 0 in float16: NaN weights); checked "
                     "against the machine before a run folder is made",
                     _precision, default="32-true", limits=", ".join(f"`{p}`" for p in PRECISIONS)),
}
PER_EXPERT_FORBIDDEN = {"experts", "adaptive_threads"}
TOP_ONLY = {"extends": Key((str,), "parent config")}

# Keys the original project (belle2-pytorch-neuro-trigger) wrote into a run's hyper-parameters: a config
# copied from an old summary.json may hold them. They record a run, they set nothing: ignored, with a warning.
RUN_RECORD_KEYS = {
    "config": "the config's name (a run records it itself)",
    "git_id": "the code version of an old run (a run records its own)",
    "run_description": "an old run's description (give one with -d)",
}
# Filter names of the original project's first versions -> the same filter in today's syntax.
LEGACY_FILTERS = {
    "no_filter": "dataset_filters.IdentityFilter()",
    "filter_max_2_events": "dataset_filters.Max2EventsFilter()",
    "filter_duplicate_events": "dataset_filters.DuplicateEventsFilter()",
}
DIST_EXAMPLE = "{'n_buckets': 11, 'norm': {'mean': 0.0, 'std': 0.4}}"


def _defaults(schema: Mapping[str, Key]) -> dict[str, Any]:
    """The default of every key of `schema` that has one (children included), as a fresh dict."""
    out: dict[str, Any] = {}
    for name, key in schema.items():
        if key.default is not REQUIRED:
            out[name] = copy.deepcopy(key.default)
    return out


def defaults() -> dict[str, Any]:
    """Every key's default: what a config that sets nothing resolves to."""
    return _defaults(SCHEMA)


# ---------------------------------------------------------------------------------------------- locations
def _configs_module() -> tuple[dict, Path | None]:
    """The `configs` dict of configs/__init__.py and the file. Anything that goes wrong on importing it
    (a syntax error, a name error, ...) is one ConfigError naming the file and line."""
    try:
        import configs as configs_module
    except SyntaxError as e:
        where = f"{_display(Path(e.filename))}:{e.lineno}" if e.filename else _configs_file_shown()
        raise ConfigError(f"{where}: syntax error in the configs file: {clip(e.msg)}") from None
    except Exception as e:  # the configs file is the user's Python: any exception is theirs
        raise ConfigError(f"{_failing_line(e)}: the configs file fails on import: "
                          f"{clip(str(e) or 'no message')} ({type(e).__name__})") from None
    path = Path(configs_module.__file__) if getattr(configs_module, "__file__", None) else None
    configs = getattr(configs_module, "configs", None)
    if not isinstance(configs, Mapping):
        raise ConfigError(f"{_display(path)}: the configs file must define a dict `configs`, "
                          f"got {type(configs).__name__}")
    return dict(configs), path


def _configs_file() -> Path | None:
    try:
        spec = importlib.util.find_spec("configs")
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def _configs_file_shown() -> str:
    path = _configs_file()
    return _display(path) if path else "configs/__init__.py"


def _failing_line(error: BaseException) -> str:
    """`file:line` of the configs file's line where `error` was raised (or the import that raised it)."""
    path = _configs_file()
    line = None
    tb = error.__traceback__
    while tb is not None:
        if path is not None and Path(tb.tb_frame.f_code.co_filename).resolve() == path.resolve():
            line = tb.tb_lineno
        tb = tb.tb_next
    shown = _display(path) if path else "configs/__init__.py"
    return f"{shown}:{line}" if line else shown


def _line_of(source_file: Path | None, name: str, path: Sequence[str]) -> int | None:
    """The line where `configs[name][path...]` is written (of the deepest of those keys written there), found by
    reading (not running) the file."""
    if source_file is None:
        return None
    try:
        stat = source_file.stat()
    except OSError:
        return None
    lines = _key_lines(str(source_file), stat.st_mtime_ns, stat.st_size)
    keys = (name, *path)
    return next((lines[keys[:n]] for n in range(len(keys), 0, -1) if keys[:n] in lines), None)


@functools.lru_cache(maxsize=4)
def _key_lines(source_file: str, mtime_ns: int, size: int) -> dict[tuple[str, ...], int]:
    """Each key path of the file's `configs = {...}` and the line its key is on; parsed once per version of the
    file (its mtime and size are part of the cache key): every checked value of a config asks for its line."""
    lines: dict[tuple[str, ...], int] = {}

    def index(node: ast.AST, prefix: tuple[str, ...]) -> None:
        if isinstance(node, ast.Dict):
            for k, v in zip(node.keys, node.values, strict=True):
                if isinstance(k, ast.Constant) and isinstance(k.value, str) and (*prefix, k.value) not in lines:
                    lines[(*prefix, k.value)] = k.lineno
                    index(v, (*prefix, k.value))

    for node in ast.walk(ast.parse(Path(source_file).read_text())):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "configs"
                                                for t in node.targets) and isinstance(node.value, ast.Dict):
            index(node.value, ())
            break
    return lines


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
                return f"-m {clip(label)}"
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
    close = difflib.get_close_matches(word[:QUOTE_LIMIT], [str(o) for o in options], n=1, cutoff=0.5)
    if close:
        return f"; did you mean '{clip(close[0])}'?"
    return f"; known: {clip(', '.join(sorted(map(str, options))))}"


# ---------------------------------------------------------------------------------------------- resolution
def config_chain(name: str, configs: Mapping[str, dict], source_file: Path | None = None) -> list[str]:
    """The `extends` chain of a config, root first. Errors name the `extends` line in `source_file`."""
    chain = [name]
    if name not in configs:
        raise ConfigError(f"unknown config '{clip(name)}'{_suggest(name, list(configs))}")
    while True:
        current = configs[chain[-1]]
        if not isinstance(current, Mapping):
            line = _line_of(source_file, chain[-1], ())
            place = f"{_display(source_file)}:{line}: " if line else ""
            raise ConfigError(f"{place}config '{clip(chain[-1])}' must be a dict of keys, "
                              f"got {type(current).__name__}")
        if "extends" not in current:
            break
        parent = current["extends"]
        line = _line_of(source_file, chain[-1], ("extends",))
        place = f"{_display(source_file)}:{line}: " if line else ""
        if not isinstance(parent, str) or parent not in configs:
            raise ConfigError(
                f"{place}config '{clip(chain[-1])}' extends unknown config '{clip(str(parent))}' "
                f"(chain: {clip(' -> '.join(chain))}){_suggest(str(parent), list(configs))}"
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
    for i, part in enumerate(rest):
        if part not in schema:
            where = clip(".".join(parts[:len(parts) - len(rest) + i])) or "the config"
            raise ConfigError(f"-m {clip(text)}: unknown key '{clip(part)}' in {where}"
                              f"{_suggest(part, list(schema))}")
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
        configs, source_file = _configs_module()
    return _resolve(config, overrides, experts, configs, source_file)


def _resolve(config: str | Mapping[str, Any], overrides: Sequence[str], experts: Sequence[int] | None,
             configs: Mapping[str, dict], source_file: Path | None) -> dict[str, Any]:
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
        for key in [k for k in own if k in RUN_RECORD_KEYS]:
            line = _line_of(source_file, link, (key,))
            place = f"{_display(source_file)}:{line}: " if line else ""
            log.warning("%sconfig '%s': key '%s' is ignored: %s", place, clip(link), key, RUN_RECORD_KEYS[key])
            del own[key]
        _merge(merged, own, ("config", link), by_path)
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
    _complete(merged)
    _validate(merged, SCHEMA, origins, ())
    _check_combinations(merged, origins)

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
        _complete(cfg)
        _validate({k: v for k, v in cfg.items() if k != "expert"}, SCHEMA,
                  _Origins(source_file, expert_origins), (), context=key)
        _check_combinations(cfg, _Origins(source_file, expert_origins), context=key)
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


def _validate(cfg: Mapping, schema: Mapping[str, Key], origins: _Origins, path: tuple[str, ...],
              context: str | None = None) -> None:
    for key, value in cfg.items():
        here = (*path, key)
        dotted = ".".join(here)
        if key not in schema:
            shown = clip(f"{context}.{dotted}" if context else dotted)
            raise ConfigError(f"{origins.where(here)}: unknown key '{shown}'{_suggest(str(key), list(schema))}")
        _check_value(value, schema[key], dotted, origins, here, context)


# Optimisers whose eps (1e-8) is 0 in float16: with `16-true` their state is float16 and the first step
# divides by zero (weights NaN). bf16 holds 1e-8; 16-mixed keeps weights and state in float32.
FLOAT16_EPS_OPTIMIZERS = ("Adam", "AdamW")


def _check_combinations(cfg: Mapping, origins: _Origins, context: str | None = None) -> None:
    """Checks of keys that are each valid alone but not together (one config: global or one expert's)."""
    if cfg.get("monitor") == "val_reweighted_loss" and not cfg.get("dist"):
        raise ConfigError(f"{origins.where(('monitor',))}: {context + ': ' if context else ''}key 'monitor': "
                          "'val_reweighted_loss' needs reweighted sampling: set 'dist' (or monitor 'val_loss')")
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

    _check_value(dict(settings), SCHEMA["slurm"], "slurm", _There(), ("slurm",))  # type: ignore[arg-type]


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def _check_value(value: Any, spec: Key, dotted: str, origins: _Origins, here: tuple[str, ...],
                 context: str | None = None) -> None:
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
        raise ConfigError(f"{prefix()}: unknown name '{clip(str(value))}'{_suggest(str(value), spec.choices)}")
    if spec.check is not None:
        problem = spec.check(value)
        if problem:
            raise ConfigError(f"{prefix()}: {problem}")
    if spec.children is not None:
        for k, v in value.items():
            if k not in spec.children:
                shown = clip(f"{context}.{dotted}.{k}" if context else f"{dotted}.{k}")
                raise ConfigError(f"{origins.where((*here, k))}: unknown key '{shown}'"
                                  f"{_suggest(str(k), list(spec.children))}")
            _check_value(v, spec.children[k], f"{dotted}.{k}", origins, (*here, k), context)
        if dotted.endswith("dist"):
            _check_dist(value, prefix(), origins, here, context)


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
    from neuro_trigger.data.sampling import bucket_probabilities

    try:
        bucket_probabilities(dict(dist))
    except (ValueError, OverflowError, ArithmeticError):
        places = dict.fromkeys(origins.where((*here, named[0], p)) for p in need)
        shown = ", ".join(f"{p}={params[p]!r}" for p in need)
        raise ConfigError(f"{' and '.join(places)}: {context + ': ' if context else ''}key '{dotted}': "
                          f"{clip(shown)} puts no weight on scaled z in [-1, 1]; every bucket would have "
                          "probability ~0") from None


# ---------------------------------------------------------------------------------------------- listing
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
        configs, source_file = _configs_module()
    rows = []
    for name, own in configs.items():
        own = own if isinstance(own, Mapping) else {}
        parent = own.get("extends", "")
        problem = ""
        try:
            _resolve(str(name), (), None, configs, source_file)
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


# ---------------------------------------------------------------------------------------------- docs
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
        "Generated from the schema in `neuro_trigger/config.py` by `python -m neuro_trigger.config --write-docs`;",
        "do not edit by hand (a test compares this file with the schema).",
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
    ]
    return "\n".join(lines)


def write_config_docs(path: Path = DOCS_PATH) -> Path:
    """Write `render_config_docs()` to `path` (docs/config_keys.md); returns the path."""
    path.write_text(render_config_docs())
    return path


def _main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m neuro_trigger.config",
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
