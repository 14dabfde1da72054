"""A run's networks in the hardware's format: per expert the weights as one flat vector in the order the trigger
simulation stores them (layer by layer, node by node, its inputs in order and the bias last), with the layer
sizes, the activation, the fixed-point precision, the output scaling and the expert's stereo hit pattern.

Read back (`layers_of`) and emulated (`fixed_point.forward`), an exported expert gives exactly the integers
the run's own network gives in the emulation: the export is checked that way before it is written.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neuro_trigger.data.dataset import THETA_RANGE_DEG, Z_RANGE_CM
from neuro_trigger.errors import UserError
from neuro_trigger.fpga.fixed_point import BASF2_PRECISION, Precision, forward, hardware_layers
from neuro_trigger.run.files import write_json
from neuro_trigger.run.folder import write_new_folder

FILE_NAME = "weights_basf2.json"
FORMAT = "neuro_trigger basf2 weights"
FORMAT_VERSION = 1
# which stereo superlayers an expert's tracks have (docs/data.md)
STEREO_PATTERN = {0: "SL1, SL3, SL5, SL7 all present", 1: "SL7 missing", 2: "SL5 missing", 3: "SL3 missing",
                  4: "SL1 missing", -1: "any (one network on the data of all experts)"}


def flat_weights(layers: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Layer by layer, output node by output node, the node's input weights in order, then its bias."""
    flat: list[float] = []
    for weight, bias in layers:
        for node_weights, node_bias in zip(weight, bias, strict=True):
            flat += [float(w) for w in node_weights] + [float(node_bias)]
    return flat


def layers_of(sizes: Sequence[int], flat: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (weight, bias) of each layer from the flat vector (float32, as the network held them)."""
    expected = sum((n_in + 1) * n_out for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True))
    if len(flat) != expected:
        raise ValueError(f"{len(flat)} weights for layers {list(sizes)}, which need {expected}")
    values = np.asarray(flat, dtype=np.float32)
    layers, start = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        block = values[start:start + (n_in + 1) * n_out].reshape(n_out, n_in + 1)
        layers.append((block[:, :n_in].copy(), block[:, n_in].copy()))
        start += (n_in + 1) * n_out
    return layers


def expert_entry(key: str, model, config: Mapping[str, Any], check_rows: np.ndarray) -> dict[str, Any]:
    """One expert in the hardware's format; UserError for a network the hardware cannot run. The entry read
    back must give the network's own emulated outputs on `check_rows` (bit for bit), or nothing is exported."""
    activation = config["act"]
    layers = hardware_layers(model, activation)
    if layers is None:
        raise UserError(f"{key}: a {config['model']} with activation '{activation}' has no hardware equivalent (the "
                        f"trigger runs linear layers each followed by tanh/2 or tanh); nothing exported")
    six = list(config.get("fixed_point", {}).get("precision", BASF2_PRECISION))
    sizes = [layers[0][0].shape[1], *(w.shape[0] for w, _ in layers)]
    scaling = {"z_cm": list(Z_RANGE_CM), "theta_deg": list(THETA_RANGE_DEG)}  # output -1..1 onto these ranges
    entry = {"expert": config.get("expert"), "stereo_hit_pattern": STEREO_PATTERN.get(config.get("expert"), "?"),
             "layers": sizes, "activation": activation, "precision": six,
             "output_scaling": dict(list(scaling.items())[: sizes[-1]]), "weights": flat_weights(layers)}
    precision = Precision.from_basf2(six)
    if not np.array_equal(forward(layers_of(sizes, entry["weights"]), check_rows, precision, activation),
                          forward(layers, check_rows, precision, activation)):
        raise RuntimeError(f"{key}: the exported weights do not reproduce the network's emulated outputs")
    return entry


def basf2_export(networks: Mapping[str, tuple[Any, Mapping[str, Any]]], seed: int = 0) -> dict[str, Any]:
    """The whole file: every expert (`networks`: key -> (network, its config)) in the hardware's format."""
    check_rows = np.random.default_rng(seed).uniform(-1, 1, (4096, 27)).astype(np.float32)
    experts = {key: expert_entry(key, model, config, check_rows[:, : config["in_size"]])
               for key, (model, config) in sorted(networks.items())}
    return {"format": FORMAT, "version": FORMAT_VERSION,
            "weight_order": "layer by layer; within a layer output node by output node; within a node its inputs "
                            "in order, then the bias", "experts": experts}


def write_basf2(networks: Mapping[str, tuple[Any, Mapping[str, Any]]], run_folder: Path, out: Path | None = None
                ) -> Path:
    """`FILE_NAME` with every expert of `networks` in a new folder: `out` (which must not exist yet) or
    `run_folder`/exports/basf2_N/. Every expert is converted and checked before anything is written, and the
    folder appears whole or not at all (`write_new_folder`)."""
    export = basf2_export(networks)
    folder = write_new_folder(lambda staging: write_json(staging / FILE_NAME, export), run_folder / "exports",
                              "basf2", out)
    return folder / FILE_NAME
