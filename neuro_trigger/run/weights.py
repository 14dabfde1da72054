"""weights.json: every expert's network, in the original trainer's layout, and starting a network from it."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from neuro_trigger import REPO_ROOT
from neuro_trigger.errors import UserError
from neuro_trigger.run.files import read_json

# weights.json, in the original trainer's layout (which downstream scripts read):
#   {"expert_N": {"shapes": {"model.net.0.weight": [81, 27], ...}, "weights": {"model.net.0.weight": [[...]], ...}}}
# with the LightningModule's state_dict names: the module holds the network as `model`. Reading also
# accepts this project's earlier layout {"expert_N": {"net.0.weight": {"shape": [...], "values": [...]}}}.
MODULE_PREFIX = "model."


def weights_to_json(state: dict[str, Any], prefix: str = MODULE_PREFIX) -> dict[str, Any]:
    """One expert's entry of weights.json from its network's state_dict: every tensor's shape and values
    (nested lists) under its LightningModule name (`prefix` + the network's name)."""
    return {
        "shapes": {prefix + name: list(t.shape) for name, t in state.items()},
        "weights": {prefix + name: t.detach().cpu().tolist() for name, t in state.items()},
    }


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else REPO_ROOT / p


def _read_weights(path: str) -> dict[str, Any]:
    weights = read_json(_resolve(path), "load_pre_trained_weights")
    if not isinstance(weights, dict):
        raise UserError(f"load_pre_trained_weights: {path} is not a weights file (expected an object of experts)")
    return weights


def expert_tensors(entry: Any, path: str, key: str) -> dict[str, tuple[list[int] | None, Any]]:
    """The tensors of one expert's entry, either layout, by the network's own state_dict names:
    name -> (declared shape or None, values)."""
    where = f"load_pre_trained_weights: {path}: {key}"
    if not isinstance(entry, dict):
        raise UserError(f"{where} is not an object of tensors")
    if isinstance(entry.get("weights"), dict):  # the original's layout (and this project's since)
        shapes = entry.get("shapes") if isinstance(entry.get("shapes"), dict) else {}
        out = {}
        for name, values in entry["weights"].items():
            short = name[len(MODULE_PREFIX):] if name.startswith(MODULE_PREFIX) else name
            out[short] = (shapes.get(name), values)
        return out
    out = {}
    for name, item in entry.items():  # this project's earlier layout
        if not (isinstance(item, dict) and "values" in item):
            raise UserError(f"{where}: '{name}' is neither the original layout ({{'shapes', 'weights'}}) nor "
                            f"{{'shape', 'values'}}")
        out[name] = (item.get("shape"), item["values"])
    return out


class TensorMisfit(Exception):
    """A tensor of a weights.json entry that does not fit the network, for the caller to word: `problem` is
    "missing", "declared shape", "not numeric", "shape", "not finite" or "extra"; `name` the network's
    state_dict name; `found` and `need` the shapes (for the shape problems); `error` why the values are not
    numeric."""

    def __init__(self, problem: str, name: str, found: list[int] | None = None, need: list[int] | None = None,
                 error: Exception | None = None) -> None:
        super().__init__(problem, name)
        self.problem, self.name, self.found, self.need, self.error = problem, name, found, need, error


def fitted_state(state: dict[str, Any], tensors: dict[str, tuple[list[int] | None, Any]],
                 finite: bool = False) -> dict[str, Any]:
    """The entry's `tensors` (as `expert_tensors` gives them) as a state_dict for a network whose own is `state`:
    every tensor present, of the declared and the actual shape the network needs, numeric (and, with `finite`,
    free of NaN and infinities), none left over. The first misfit raises TensorMisfit."""
    import torch

    new = {}
    for name, tensor in state.items():
        if name not in tensors:
            raise TensorMisfit("missing", name)
        declared, values = tensors[name]
        need = list(tensor.shape)
        if declared is not None and list(declared) != need:
            raise TensorMisfit("declared shape", name, list(declared), need)
        try:
            value = torch.tensor(values, dtype=tensor.dtype)
        except (TypeError, ValueError, RuntimeError) as e:
            raise TensorMisfit("not numeric", name, error=e) from None
        if list(value.shape) != need:
            raise TensorMisfit("shape", name, list(value.shape), need)
        if finite and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise TensorMisfit("not finite", name)
        new[name] = value
    extra = sorted(set(tensors) - set(state))
    if extra:
        raise TensorMisfit("extra", extra[0])
    return new


def _load_state(model, entry: Any, path: str, key: str) -> None:
    """Check every tensor of the entry against the network and load them; each misfit is one line."""
    tensors = expert_tensors(entry, path, key)
    where = f"load_pre_trained_weights: {path}: {key}"
    try:
        new = fitted_state(model.state_dict(), tensors)
    except TensorMisfit as m:
        raise UserError(_misfit_message(m, where, tensors)) from None
    model.load_state_dict(new)


def _misfit_message(m: TensorMisfit, where: str, tensors: dict[str, Any]) -> str:
    full = f"{where}.{MODULE_PREFIX}{m.name}"
    match m.problem:
        case "missing":
            return f"{where} lacks tensor '{MODULE_PREFIX}{m.name}' (it has {sorted(tensors)[:6]})"
        case "declared shape" | "shape":
            return f"{full} has shape {m.found}, the network needs {m.need}"
        case "not numeric":
            return f"{full}: values are not a numeric array ({m.error})"
        case "extra":
            return f"{where} has tensor '{MODULE_PREFIX}{m.name}' the network lacks (another model or config?)"
    return f"{full}: {m.problem}"


def check_weights_file(path: str, keys: list[str], configs: dict[str, dict] | None = None) -> None:
    """Fail before training if a pre-trained weights file lacks an expert or does not fit the networks."""
    from neuro_trigger import registry

    weights = _read_weights(path)
    for key in keys:
        if key not in weights:
            raise UserError(f"load_pre_trained_weights: {path} has no weights for {key} "
                            f"(it has {sorted(weights)})")
        if configs is not None:
            c = configs[key]
            model = registry.build_model(c["model"], c["in_size"], c["out_size"], c["act"])
            _load_state(model, weights[key], path, key)


def load_weights_into(model, path: str, key: str) -> None:
    """Start a network from the weights of one expert in a weights.json (either layout)."""
    weights = _read_weights(path)
    if key not in weights:
        raise UserError(f"load_pre_trained_weights: {path} has no weights for {key} (it has {sorted(weights)})")
    _load_state(model, weights[key], path, key)
