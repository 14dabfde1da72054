"""The schema: every config key, what it may hold, its default and what it means.

It is the one description of the keys: resolution fills defaults from it, validation holds values to it,
and docs/config_keys.md is rendered from it (`python -m neuro_trigger.config.docs --write-docs`).
Importing it imports neither torch nor numpy (`main.py --list`, `--slurm` checks): the tables are plain names
and numbers; the checks of a filter and of a `dist` import what they need when they run.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from neuro_trigger import registry
from neuro_trigger.config.errors import suggest
from neuro_trigger.errors import UserError, clip
from neuro_trigger.registry import MAX_BUCKETS

EXPERT_IDS = (0, 1, 2, 3, 4)
SOLO_EXPERT = -1
MAX_SEED = 2**32 - 1  # what seed_everything accepts
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
    from neuro_trigger.data.filter_parser import parse_filter

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


# Trainer(accelerator=...) values; `cuda` is read as `gpu` (resolution.py). Lightning's other names (mps, tpu, ...)
# are not offered: the expert's tensors are placed on the CPU or a CUDA GPU (training/devices.py).
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
    return f"unknown precision '{clip(v)}'{suggest(v, PRECISIONS)}"


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
    "partition": Key((str,), "partition every job of the run goes to; None: the cluster's default", nullable=True,
                     default=None),
    "time_min": Key((int,), "time limit of an expert's job in minutes (it is requeued and continues from its "
                    "last checkpoint when it runs out)", Bound(1), default=60),
    "cpus_per_expert": Key((int,), "CPU cores per expert job (at most 4 are used for training)", Bound(1), default=2),
    "mem_gb": Key(NUMBER, "memory per expert job in GB", POSITIVE, default=4),
    "gpus_per_expert": Key((int,), "GPUs per expert job (`--gpus-per-node`); set with accelerator gpu", Bound(0),
                           default=0),
    "account": Key((str,), "account every job of the run is charged to; None: the user's default", nullable=True,
                   default=None),
    "array_parallelism": Key((int,), "expert jobs of a run running at once", Bound(1), default=32),
    "extra": Key((dict,), "more sbatch options for every job of the run, e.g. {'qos': 'short', 'constraint': "
                 "'a100'}", _sbatch_options, default={}),
    "side_time_min": Key((int,), "time limit in minutes of each of the run's other jobs: an expert's figures, the "
                         "prediction tables, the assembling of the folder", Bound(1), default=60),
    "side_mem_gb": Key(NUMBER, "memory in GB of each of the run's other jobs; raise it for large data sets (the "
                       "tables and assemble jobs hold every split's rows and predictions)", POSITIVE, default=4),
}
def _fixed_point_precision(v: list) -> str | None:
    if len(v) != 6 or not all(isinstance(n, int) and not isinstance(n, bool) for n in v):
        return "must be six integers, fractional bits as basf2 gives them: track phi, scaling, reference id, " \
               "nodes, weights, activation table (e.g. [12, 8, 8, 12, 10, 10])"
    node, weight, lut = v[3:]
    if not (1 <= node <= 30 and 1 <= weight <= 30 and 1 <= lut <= 20):
        return "nodes and weights need 1..30 fractional bits, the activation table 1..20"
    if lut > node + weight:
        return f"the activation table ({lut} bits) may not have more fractional bits than nodes and weights " \
               f"together ({node + weight})"
    return None


# The trigger's fixed-point arithmetic (neuro_trigger/fpga/): its widths, and a bound on the weights.
FIXED_POINT_KEYS: dict[str, Key] = {
    "precision": Key((list,), "fractional bits as basf2 gives them (track phi, scaling, reference id, nodes, "
                     "weights, activation table); the network uses the last three", _fixed_point_precision,
                     default=[12, 8, 8, 12, 10, 10], limits="six integers; table bits <= nodes + weights"),
    "weight_max": Key(NUMBER, "every weight and bias clipped to +-weight_max after each optimiser step (the "
                      "original hardware trainer used 63); None: no clipping", POSITIVE, nullable=True,
                      default=None),
}
# The embedded default data set: the toy Monte Carlo, generated on first use (neuro_trigger/data/toy/).
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
    "threads": Key((int,), "CPU threads an expert trains on, for its whole training (local runs); None: the "
                   "run's thread plan decides before any expert starts, from each expert's rows x epochs and batch "
                   "size, the cores and `workers` (runner/plan.py, recorded in summary.json as `plan`). The weights "
                   "depend on the thread count: the same config, data, seed and threads give byte-identical weights. "
                   "A SLURM job trains on `slurm.cpus_per_expert` threads (at most 4)", Bound(1, 256), nullable=True,
                   default=None),
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
    "stall_warn_s": Key(NUMBER, "seconds an expert may go without a sign of progress (its start, a chunk of "
                        "batches, an epoch, its results) before the run warns, naming it and its pid", POSITIVE,
                        default=300),
    "stall_stop_s": Key(NUMBER, "seconds without a sign of progress after which the expert is stopped as failed "
                        "(`--resume` retries it); more than `stall_warn_s`; None: never stopped", POSITIVE,
                        nullable=True, default=1800),
    "data": Key((dict,), "data files per split; default: the embedded toy data set", children=DATA_KEYS,
                default=DEFAULT_DATA),
    "fixed_point": Key((dict,), "the trigger hardware's fixed-point arithmetic", children=FIXED_POINT_KEYS,
                       default=_defaults_of(FIXED_POINT_KEYS)),
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
PER_EXPERT_FORBIDDEN = {"experts", "stall_warn_s", "stall_stop_s"}
TOP_ONLY = {"extends": Key((str,), "parent config")}

# Keys the original project (belle2-pytorch-neuro-trigger) wrote into a run's hyper-parameters: a config
# copied from an old summary.json may hold them. They record a run, they set nothing: ignored, with a warning.
RUN_RECORD_KEYS = {
    "config": "the config's name (a run records it itself)",
    "git_id": "the code version of an old run (a run records its own)",
    "run_description": "an old run's description (give one with -d)",
}
# Keys this trainer once had and no longer has: a config that still sets one resolves, with a warning saying why.
RETIRED_KEYS = {
    "adaptive_threads": "retired: each expert's CPU threads are planned before any expert starts, never changed by "
                        "timing (key `threads` sets them)",
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
