"""A finished (or partly finished) run's networks, ready to predict on any data.

The networks come from the run's `weights.json` (one entry per finished expert; before the run's files are
assembled, with an expert still training, failed or interrupted, from each finished expert's own
`expert_N/weights.json`) and the hyperparameters that build them: `config.json` of this project (a folder
holding only config.json and weights.json is enough; without config.json, the config recorded in
summary.json), or the `summary.json` of the original trainer (juelg/belle2-pytorch-neuro-trigger), whose
hyperparameters (`in_size`, `out_size`, `act`, `model`, and `expert_N` blocks overriding them) are flat keys
there. The configured experts without a network are `left_out`, each with its status.

    nets = load_networks(run_folder)        # RunNetworks: .networks {expert: nn.Module}, .config, .left_out, ...
    pred = predict(nets, store)             # (N, 2) scaled, NaN for rows of experts without a network

A folder that is no run, no finished expert, a missing or corrupt weights.json or a tensor of the wrong
shape raises UserError (one line). Evaluating them (`judge/evaluation.py`) and comparing runs
(`judge/comparison.py`) start from here.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neuro_trigger import registry
from neuro_trigger.data.dataset import ColumnStore
from neuro_trigger.errors import UserError, clip
from neuro_trigger.run.files import read_json
from neuro_trigger.run.status import read_status
from neuro_trigger.run.weights import MODULE_PREFIX, TensorMisfit, expert_tensors, fitted_state

if TYPE_CHECKING:
    from torch import nn

SPLITS = ("train", "val", "test")
PREDICT_SLICE_ROWS = 1 << 16  # rows per forward pass: bounds the memory of one slice's copies
_EXPERT_KEY = re.compile(r"^expert_(-1|\d+)$")
_NETWORK_KEYS = ("model", "in_size", "out_size", "act")


@dataclass
class RunNetworks:
    """The networks of one run, ready to predict.

    config: resolved like config.json ({"name", "global", "experts": {"expert_N": {...}}}); for an original
    run built from its summary.json (the schema's defaults where it sets nothing). networks: expert -> the
    network (eval mode, CPU), only for experts with weights (finished). out_size: the smallest of the
    networks' (what every one of them predicts). summary: summary.json ({} where there is none).
    kind: "own" or "original". out_sizes and losses: per expert. left_out: the configured experts without a
    network, each with why (its status: "failed", "interrupted", "running", ...; "no weights" where it has none).
    """

    folder: Path
    config: dict[str, Any]
    networks: dict[int, nn.Module]
    out_size: int
    summary: dict[str, Any] = field(default_factory=dict)
    kind: str = "own"
    out_sizes: dict[int, int] = field(default_factory=dict)
    losses: dict[int, str] = field(default_factory=dict)
    left_out: dict[str, str] = field(default_factory=dict)

    @property
    def loss(self) -> str:
        """The run's loss (its global config's), for the metrics over all experts."""
        name = self.config.get("global", {}).get("loss")
        return name if name in registry.LOSSES else next(iter(self.losses.values()), "MSELoss")


def load_networks(run_folder: Path | str) -> RunNetworks:
    """The networks of a run folder of this project (config.json + weights.json suffice; a run not yet assembled:
    its finished experts' expert_N/weights.json) or of the original trainer (summary.json + weights.json), on
    the CPU in eval mode. UserError (one line) for a folder that is no run, a run without a finished expert, a
    missing or corrupt weights.json, or a tensor that does not fit its network."""
    folder = Path(run_folder)
    if not folder.exists():
        raise UserError(f"run folder {folder}: not found")
    if not folder.is_dir():
        raise UserError(f"run folder {folder}: is not a folder")
    summary = _read_optional_json(folder / "summary.json")
    if (folder / "config.json").exists():
        config = read_json(folder / "config.json", "evaluate")
        kind = "own"
    elif isinstance(summary, dict) and _own_config(summary) is not None:
        config, kind = _own_config(summary), "own"  # config.json lost: the copy in summary.json
    elif isinstance(summary, dict) and any(k in summary for k in (*_NETWORK_KEYS, "experts")):
        config, kind = _original_config(folder, summary), "original"
    else:
        raise UserError(f"run folder {folder}: is not a run folder (no config.json, and no summary.json "
                        f"of this project or of the original trainer)")
    experts = _expert_configs(folder, config, kind)
    weights, sources = _weights(folder, experts, kind)
    networks: dict[int, nn.Module] = {}
    out_sizes: dict[int, int] = {}
    losses: dict[int, str] = {}
    for key, entry in weights.items():
        weights_path = sources[key]
        match = _EXPERT_KEY.match(str(key))
        if match is None:
            raise UserError(f"{weights_path}: key '{clip(key)}' is not an expert (expected expert_N)")
        if key not in experts:
            raise UserError(f"{weights_path}: has weights for {key}, which the run's config does not configure "
                            f"(it configures {sorted(experts)})")
        cfg = experts[key]
        expert = int(match.group(1))
        networks[expert] = _network(cfg, entry, weights_path, key)
        out_sizes[expert] = int(cfg["out_size"])
        loss = cfg.get("loss")
        losses[expert] = loss if loss in registry.LOSSES else "MSELoss"
    summary = summary if isinstance(summary, dict) else {}
    left_out = {key: read_status(folder, key).get("status") or "no weights" for key in experts if key not in weights}
    return RunNetworks(folder=folder, config=config, networks=dict(sorted(networks.items())),
                       out_size=min(out_sizes.values()), summary=summary, kind=kind, out_sizes=out_sizes,
                       losses=losses, left_out=left_out)


def _weights(folder: Path, experts: dict[str, dict[str, Any]], kind: str) -> tuple[dict[str, Any], dict[str, Path]]:
    """Every finished expert's weights entry and the file it comes from: the run's weights.json, or where the run's
    files were not assembled (yet), each finished expert's own expert_N/weights.json (run_expert writes it, and
    then its status "finished")."""
    path = folder / "weights.json"
    if path.exists():
        weights = read_json(path, "evaluate")
        if not isinstance(weights, dict):
            raise UserError(f"{path}: is not a weights file (expected an object of experts, "
                            f"found {type(weights).__name__})")
        if not weights:
            raise UserError(f"run folder {folder}: no expert has finished (weights.json holds no network)")
        return weights, {key: path for key in weights}
    own = {key: folder / key / "weights.json" for key in experts
           if kind == "own" and read_status(folder, key).get("status") == "finished"}
    own = {key: file for key, file in own.items() if file.is_file()}
    if not own:
        raise UserError(f"run folder {folder}: weights.json is missing, and no expert_N/ holds a finished expert's "
                        f"weights (has any expert finished?)")
    return {key: read_json(file, "evaluate") for key, file in own.items()}, own


def _read_optional_json(path: Path) -> Any:
    """A JSON file's content, or None where it is absent or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _own_config(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The resolved config a summary.json of this project records, or None (not such a summary)."""
    recorded = summary.get("config")
    if isinstance(recorded, dict) and isinstance(recorded.get("global"), dict) \
            and isinstance(recorded.get("experts"), dict):
        return {"name": summary.get("config_name", "run"), "global": recorded["global"],
                "experts": recorded["experts"]}
    return None


def _original_config(folder: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """A config like config.json from the original trainer's summary.json: its known keys over the schema's
    defaults, and its `expert_N` blocks over those per expert (the experts: the `expert_N` keys of
    weights.json, checked later, and its `experts` list)."""
    from neuro_trigger.config.schema import defaults

    base = defaults()
    known = {k: v for k, v in summary.items() if k in base and k != "data"}
    if not isinstance(known.get("loss"), str):  # the original overwrote `loss` with its loss values
        known.pop("loss", None)
    glob = {**base, **known}
    glob.pop("data", None)
    data_path = summary.get("data_path")
    if isinstance(data_path, list) and len(data_path) == 3:
        glob["data"] = dict(zip(SPLITS, data_path, strict=True))
    listed = summary.get("experts") if isinstance(summary.get("experts"), list) else []
    keys = {f"expert_{e}" for e in listed if isinstance(e, int) and not isinstance(e, bool)}
    keys |= {k for k in summary if isinstance(k, str) and _EXPERT_KEY.match(k)}
    weights = _read_optional_json(folder / "weights.json")
    if isinstance(weights, dict):
        keys |= {k for k in weights if isinstance(k, str) and _EXPERT_KEY.match(k)}
    experts = {}
    for key in sorted(keys):
        block = summary.get(key) if isinstance(summary.get(key), dict) else {}
        experts[key] = {**glob, **{k: v for k, v in block.items() if k in base},
                        "expert": int(key.removeprefix("expert_"))}
    name = summary.get("config") if isinstance(summary.get("config"), str) else folder.parent.name
    return {"name": name, "global": glob, "experts": experts}


def _expert_configs(folder: Path, config: Any, kind: str) -> dict[str, dict[str, Any]]:
    """The per-expert configs, each checked for what building its network needs."""
    where = f"run folder {folder}: " + ("config.json" if kind == "own" else "summary.json")
    if not (isinstance(config, dict) and isinstance(config.get("experts"), dict)):
        raise UserError(f"{where} is not a run's config (no 'experts' object of per-expert configs)")
    if not isinstance(config.get("global"), dict):
        config["global"] = {}
    out = {}
    for key, cfg in config["experts"].items():
        if not isinstance(cfg, dict):
            raise UserError(f"{where}: '{clip(key)}' is not an object of config keys")
        checks = {"model": lambda v: v in registry.MODELS, "act": lambda v: v in registry.ACTIVATIONS,
                  "in_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  "out_size": lambda v: v in (1, 2) and not isinstance(v, bool)}
        for name, ok in checks.items():
            if name not in cfg:
                raise UserError(f"{where}: {key} lacks '{name}'")
            if not ok(cfg[name]):
                raise UserError(f"{where}: {key}.{name} = {clip(repr(cfg[name]))} cannot build a network")
        out[str(key)] = cfg
    return out


def _network(cfg: dict[str, Any], entry: Any, path: Path, key: str) -> nn.Module:
    """Build an expert's network from its config and load its weights.json entry (either layout), checking
    every tensor's declared and actual shape against the network (`run/weights.fitted_state`) and its values
    for NaN and infinities."""
    model = registry.build_model(cfg["model"], cfg["in_size"], cfg["out_size"], cfg["act"])
    where = f"{path}: {key}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} is not an object of tensors")
    try:
        tensors = expert_tensors(entry, str(path), key)
    except UserError:  # its message names the pre-training key; say it in our words
        raise UserError(f"{where}: neither the original layout {{'shapes', 'weights'}} nor "
                        f"{{name: {{'shape', 'values'}}}}") from None
    try:
        state = fitted_state(model.state_dict(), tensors, finite=True)
    except TensorMisfit as m:
        raise UserError(_misfit_message(m, where, cfg, tensors)) from None
    model.load_state_dict(state)
    return model.eval()


def _misfit_message(m: TensorMisfit, where: str, cfg: dict[str, Any], tensors: dict[str, Any]) -> str:
    full = MODULE_PREFIX + m.name
    match m.problem:
        case "missing":
            return (f"{where} lacks tensor '{full}' ({cfg['model']}, out_size {cfg['out_size']}; "
                    f"it has {clip(sorted(MODULE_PREFIX + n for n in tensors))})")
        case "declared shape":
            return (f"{where}.{full} has shape {clip(m.found)}, the network needs {m.need} "
                    f"({cfg['model']}, in_size {cfg['in_size']}, out_size {cfg['out_size']})")
        case "not numeric":
            return f"{where}.{full}: values are not a numeric array ({clip(m.error)})"
        case "shape":
            return f"{where}.{full} has values of shape {m.found}, the network needs {m.need}"
        case "not finite":
            return f"{where}.{full} holds NaN or infinite values"
        case "extra":
            return f"{where} has tensor '{full}' that a {cfg['model']} lacks (another model in its config?)"
    return f"{where}.{full}: {m.problem}"


def predict(nets: RunNetworks, store: ColumnStore, device: str = "cpu",
            slice_rows: int = PREDICT_SLICE_ROWS) -> np.ndarray:
    """Every network on its expert's rows (a solo network, expert -1, on every row some expert takes),
    (N, 2) float32 scaled in row order: NaN for rows of experts without a network (and Expert -1 rows), and
    in the theta column where a network has out_size 1. In slices, without gradients, on `device`."""
    import torch

    pred = np.full((len(store), 2), np.nan, dtype=np.float32)
    with torch.no_grad():
        for expert, net in nets.networks.items():
            rows = store.expert_rows(expert)
            if not len(rows):
                continue
            net = net.to(device).eval()
            k = nets.out_sizes.get(expert, nets.out_size)
            for a in range(0, len(rows), slice_rows):
                part = rows[a:a + slice_rows]
                x = torch.from_numpy(np.ascontiguousarray(store.x[part], dtype=np.float32)).to(device)
                pred[part, :k] = net(x)[:, :k].cpu().numpy()
            if device != "cpu":
                net.to("cpu")
    return pred


def covered_rows(nets: RunNetworks, store: ColumnStore) -> np.ndarray:
    """Boolean (N,): the rows some network of the run predicts."""
    if -1 in nets.networks:
        return np.asarray(store.expert) >= 0
    return np.isin(store.expert, list(nets.networks))
