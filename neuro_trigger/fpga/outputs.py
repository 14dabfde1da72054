"""A network's outputs as the trigger hardware computes them, with the widths and the activation its expert's
config gives (`act`, `fixed_point.precision`): the integers `fixed_point.forward` gives, or None for a network
the hardware cannot run (`hardware_layers`), with the reason in words (`no_hardware_reason`).

Evaluations, comparisons and a finishing expert all take a network's hardware outputs from here, so that the
widths are read from a config in one place.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from neuro_trigger.fpga.fixed_point import BASF2_PRECISION, Precision, forward, hardware_layers


def config_precision(config: Mapping[str, Any]) -> Precision:
    """The fixed-point widths of an expert's config (`fixed_point.precision`, basf2's six numbers; basf2's
    default where the config has none, as a run of the original trainer)."""
    return Precision.from_basf2((config.get("fixed_point") or {}).get("precision", BASF2_PRECISION))


def hardware_outputs(model, config: Mapping[str, Any], x: np.ndarray) -> np.ndarray | None:
    """The hardware's output integers (rows x outputs, int64) of `model` on the float inputs `x`; divided by
    2^`config_precision(config).node` they are in the scale of the float network's outputs. None where the
    network has no hardware equivalent."""
    activation = config.get("act")
    layers = hardware_layers(model, activation) if isinstance(activation, str) else None
    if layers is None:
        return None
    return forward(layers, np.asarray(x, dtype=np.float32), config_precision(config), activation)


def no_hardware_reason(config: Mapping[str, Any]) -> str:
    """Why an expert's network has no hardware outputs, in words: its model and activation."""
    return f"a {config.get('model', 'network')} with activation '{config.get('act')}' has no hardware equivalent"
