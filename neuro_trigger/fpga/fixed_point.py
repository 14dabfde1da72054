"""The FPGA's fixed-point forward pass, bit for bit as the Belle II trigger simulation computes it
(../shared/fpga_fixed_point.md, docs/hardware.md).

Per layer: inputs truncated to integers with `node` fractional bits, weights and biases rounded half away
from zero to integers with `weight` fractional bits, the bias a weight on an input of 1.0, the products
summed in 64-bit integers, the activation read from a lookup table of `lut` fractional bits, centred on its
bins and saturating at 1.0. The node integers feed the next layer; the last layer's are what the hardware
reports (`RawZ`, `RawTheta` for the old network).
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HARDWARE_ACTIVATIONS = ("tanh/2", "tanh")  # tanh(x/2): the trigger's; plain tanh: the newer 3D trigger's
BASF2_PRECISION = (12, 8, 8, 12, 10, 10)  # basf2's six fractional-bit widths; the last three are the network's
_ROWS_AT_ONCE = 4096
_EXACT_FLOAT_SUM = 2.0**53  # integer sums below this are exact in float64, in any order


@dataclass(frozen=True)
class Precision:
    """Fractional bits of node values (inputs included), of weights, and of the activation table."""

    node: int = 12
    weight: int = 10
    lut: int = 10

    @classmethod
    def from_basf2(cls, precision: Sequence[int]) -> Precision:
        """From basf2's six numbers (track phi, scaling, reference id, nodes, weights, table)."""
        return cls(node=int(precision[3]), weight=int(precision[4]), lut=int(precision[5]))


def round_half_away(values: np.ndarray) -> np.ndarray:
    """C's round(): halves go away from zero (numpy's own rounds them to even)."""
    return np.sign(values) * np.floor(np.abs(values) + 0.5)


def input_integers(x: np.ndarray, precision: Precision) -> np.ndarray:
    """The hardware's integer inputs: the 32-bit float input times 2^node (exact), truncated toward zero."""
    return np.trunc(np.asarray(x, dtype=np.float32).astype(np.float64) * 2.0**precision.node).astype(np.int64)


def weight_integers(w: np.ndarray, precision: Precision) -> np.ndarray:
    """Weights or biases as integers: the 32-bit float value times 2^weight, rounded half away from zero."""
    scaled = np.asarray(w, dtype=np.float32).astype(np.float64) * 2.0**precision.weight
    return round_half_away(scaled).astype(np.int64)


class ActivationTable:
    """The activation as the FPGA reads it: a table over |acc| >> (node + weight - lut), each entry taken at
    its bin's centre (less half a unit of the dropped bits, for symmetric rounding), saturating at 1.0 from
    the first bin where the activation rounds to 1; the sign of the accumulator is put back."""

    def __init__(self, precision: Precision, activation: str = "tanh/2") -> None:
        if activation not in HARDWARE_ACTIVATIONS:
            raise ValueError(f"activation {activation!r} has no hardware table ({', '.join(HARDWARE_ACTIVATIONS)})")
        self.precision = precision
        self.shift = precision.node + precision.weight - precision.lut
        if self.shift < 0:
            raise ValueError(f"{precision}: the table may not have more fractional bits than nodes and weights")
        half = activation == "tanh/2"
        edge = math.atanh(1 - 2.0 ** -(precision.node + 1))  # where the activation rounds to 1.0
        self.saturation = math.ceil(edge * 2.0 ** (precision.lut + (1 if half else 0)))
        bins = np.arange(self.saturation, dtype=np.float64)
        centres = ((bins + 0.5 - 2.0 ** -(self.shift + 1)) / 2.0**precision.lut).astype(np.float32)
        arguments = centres.astype(np.float64) / (2.0 if half else 1.0)
        table = round_half_away(np.tanh(arguments) * 2.0**precision.node).astype(np.int64)
        self.table = np.append(table, 1 << precision.node)  # every bin from `saturation` on reads 1.0

    def __call__(self, acc: np.ndarray) -> np.ndarray:
        """Node values for accumulators `acc`: int64, or float64 holding exact integers (the fast path)."""
        negative = acc < 0
        if acc.dtype.kind == "f":  # |acc| * 2^-shift, floored, is |acc| >> shift exactly (a power of two)
            scaled = np.abs(acc)
            scaled *= 2.0**-self.shift
            np.floor(scaled, out=scaled)
            np.minimum(scaled, self.saturation, out=scaled)
            bins = scaled.astype(np.intp)
        else:
            bins = np.minimum(np.abs(acc) >> self.shift, self.saturation)
        values = self.table[bins]
        np.negative(values, out=values, where=negative)
        return values


def accumulate(inputs: np.ndarray, weights: np.ndarray, biases: np.ndarray, precision: Precision) -> np.ndarray:
    """acc = sum(x_int * w_int) + 2^node * b_int, exactly, in int64."""
    return inputs @ weights.T + biases * (1 << precision.node)


def forward(layers: Sequence[tuple[np.ndarray, np.ndarray]], x: np.ndarray, precision: Precision = Precision(),
            activation: str = "tanh/2") -> np.ndarray:
    """The hardware's output integers for float inputs `x` (rows x inputs) through `layers`, each (weight
    [out x in], bias [out]) as the float network holds them, every layer followed by the activation.

    The sums go through float64 BLAS where no partial sum can reach 2^53 (then every order of summation is
    exact, and the result the same integers as 64-bit integer arithmetic), through int64 otherwise."""
    table = ActivationTable(precision, activation)
    one = 1 << precision.node
    x_int = input_integers(x, precision)
    largest = max(int(np.abs(x_int).max(initial=0)), one)  # node values after the first layer are at most 1.0
    plan = []
    for weight, bias in layers:
        w, b = weight_integers(weight, precision), weight_integers(bias, precision)
        exact = largest * float(np.abs(w).sum(axis=1).max(initial=0)) + one * float(np.abs(b).max(initial=0)) \
            < _EXACT_FLOAT_SUM
        plan.append((w.T.astype(np.float64), (b * one).astype(np.float64)) if exact else (w, b))
        largest = one
    out = np.empty((len(x_int), len(plan[-1][1]) if plan else x_int.shape[1]), dtype=np.int64)
    for start in range(0, len(x_int), _ROWS_AT_ONCE):  # slices whose node values stay in the CPU caches
        values = x_int[start:start + _ROWS_AT_ONCE]
        for w, b in plan:
            if w.dtype.kind == "f":
                values = table(values.astype(np.float64) @ w + b)
            else:
                values = table(accumulate(values, w, b, precision))
        out[start:start + _ROWS_AT_ONCE] = values
    return out


def hardware_layers(model, activation: str) -> list[tuple[np.ndarray, np.ndarray]] | None:
    """A network's (weight, bias) per layer where the hardware can run it: linear layers each followed by the
    activation, which the hardware has a table for; None for any other network (batch norm, a linear output,
    another activation)."""
    import torch

    if activation not in HARDWARE_ACTIVATIONS:
        return None
    modules = [m for _, m in model.named_modules(remove_duplicate=False) if not list(m.children())]
    if len(modules) < 2 or len(modules) % 2:
        return None
    layers = []
    for linear, act in zip(modules[::2], modules[1::2], strict=True):
        if not isinstance(linear, torch.nn.Linear) or getattr(act, "name", None) != activation \
                or linear.bias is None:
            return None
        layers.append((linear.weight.detach().cpu().float().numpy(), linear.bias.detach().cpu().float().numpy()))
    return layers
