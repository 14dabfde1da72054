"""The FPGA's fixed-point forward pass (neuro_trigger/fpga/fixed_point.py): hand-computed cases of each rule, and
agreement with a second implementation written here in plain Python integers, on random networks and inputs."""
from __future__ import annotations

import math
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pytest

from neuro_trigger.fpga.fixed_point import (
    ActivationTable,
    Precision,
    forward,
    hardware_layers,
    input_integers,
    weight_integers,
)
from neuro_trigger.registry import build_model

P = Precision()  # basf2's default: nodes 12, weights 10, table 10 fractional bits


def test_precision_from_basf2_takes_the_networks_three_numbers():
    assert Precision.from_basf2([12, 8, 8, 12, 10, 10]) == P
    assert Precision.from_basf2([1, 2, 3, 9, 6, 5]) == Precision(node=9, weight=6, lut=5)


def test_a_half_way_weight_rounds_away_from_zero():
    w = np.array([2.5, -2.5, 1.5, 0.49, -0.51]) / 1024  # exact in float32: 2.5 units of 2^-10, ...
    assert weight_integers(w, P).tolist() == [3, -3, 2, 0, -1]  # numpy's own rounding gives 2, -2 for +-2.5


def test_a_negative_input_truncates_toward_zero():
    x = np.array([-0.0003, 0.0003, -1.0, 0.99999])  # x * 4096: -1.23, 1.23, -4096, 4095.96
    assert input_integers(x, P).tolist() == [-1, 1, -4096, 4095]


def test_the_table_at_zero_and_at_its_saturation_bound():
    table = ActivationTable(P)
    edge = math.ceil(math.atanh(1 - 2.0**-13) * 2.0**11)  # first bin where tanh(x/2) rounds to 1.0
    assert table.saturation == edge == 9937  # 0.5 * ln(16383) * 2048 = 9936.9
    shift = 12 + 10 - 10
    acc = np.array([0, 1, -1, edge << shift, (edge << shift) - 1, -(edge << shift), -((edge << shift) - 1)])
    out = table(acc)
    assert out[0] == 1 and out[1] == 1 and out[2] == -1  # bin 0's centre lies just above 0: round(0.9998) = 1
    assert out[3] == 4096 and out[5] == -4096  # saturated at 1.0
    centre = np.float32((edge - 1 + 0.5 - 2.0**-13) / 2**10)
    assert out[4] == round(math.tanh(float(centre) / 2) * 4096) == -out[6] < 4096


def test_the_bias_is_a_weight_on_an_input_of_one():
    w = np.zeros((1, 2), dtype=np.float32)
    b = np.array([0.5], dtype=np.float32)  # b_int 512, acc = 4096 * 512, bin 512: read at its centre, not at 0.5
    out = forward([(w, b)], np.zeros((1, 2), dtype=np.float32))
    assert out.tolist() == [[round(math.tanh((512 + 0.5 - 2**-13) / 1024 / 2) * 4096)]] == [[1004]]


# ---------------------------------------------------------------------------------------------- a second implementation
def _half_up(value: float) -> int:
    return int(Decimal(value).to_integral_value(rounding=ROUND_HALF_UP))  # ties away from zero, both signs


def _lookup(acc: int, p: Precision, half: bool) -> int:
    shift = p.node + p.weight - p.lut
    scale = 2 if half else 1
    limit = math.ceil(math.atanh(1 - 2.0 ** -(p.node + 1)) * 2.0**p.lut * scale)
    b = abs(acc) >> shift
    if b >= limit:
        value = 1 << p.node
    else:
        centre = float(np.float32((b + 0.5 - 2.0 ** -(shift + 1)) / 2.0**p.lut))
        value = _half_up(math.tanh(centre / scale) * 2.0**p.node)
    return -value if acc < 0 else value


def _node_sum(values: list[int], weights, bias, p: Precision) -> int:
    products = sum(v * _half_up(float(np.float32(w)) * 2**p.weight) for v, w in zip(values, weights, strict=True))
    return products + _half_up(float(np.float32(bias)) * 2**p.weight) * 2**p.node


def _reference(layers, x, p: Precision, half: bool) -> list[list[int]]:
    rows = []
    for row in x:
        values = [int(float(np.float32(v)) * 2**p.node) for v in row]  # int() truncates toward zero
        for weight, bias in layers:
            values = [_lookup(_node_sum(values, ws, b, p), p, half) for ws, b in zip(weight, bias, strict=True)]
        rows.append(values)
    return rows


@pytest.mark.parametrize(("activation", "precision", "sizes", "scale"), [
    ("tanh/2", Precision(), (27, 81, 2), 1.0),
    ("tanh", Precision(), (27, 81, 2), 1.0),
    ("tanh/2", Precision(node=8, weight=5, lut=4), (27, 20, 10, 2), 3.0),
    ("tanh/2", Precision(node=20, weight=30, lut=10), (5, 4, 1), 60.0),  # sums past 2^53: the int64 path
])
def test_forward_equals_a_separate_integer_implementation(activation, precision, sizes, scale):
    rng = np.random.default_rng(sum(sizes) + precision.node)
    layers = [((rng.standard_normal((b, a)) * scale).astype(np.float32), rng.standard_normal(b).astype(np.float32))
              for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    x = rng.uniform(-1, 1, (64, sizes[0])).astype(np.float32)
    x[0] = 0.0
    got = forward(layers, x, precision, activation)
    assert got.dtype == np.int64
    assert got.tolist() == _reference(layers, x, precision, activation == "tanh/2")


def test_only_networks_the_hardware_can_run_have_hardware_layers():
    model = build_model("BaselineModel", 27, 2, "tanh/2")
    layers = hardware_layers(model, "tanh/2")
    assert [w.shape for w, _ in layers] == [(81, 27), (2, 81)]
    assert np.array_equal(layers[0][0], model.net[0].weight.detach().numpy())
    assert hardware_layers(build_model("BaselineModel", 27, 2, "relu"), "relu") is None
    assert hardware_layers(build_model("BaselineModelBN", 27, 2, "tanh/2"), "tanh/2") is None
    assert hardware_layers(build_model("SimpleModel", 27, 2, "tanh"), "tanh") is None


def test_the_hardware_follows_the_float_network():
    """Sanity of the whole: at the default widths the hardware's outputs stay within a few units of 2^-12 of the
    float network's tanh/2 outputs."""
    import torch

    torch.manual_seed(5)
    model = build_model("BaselineModel", 27, 2, "tanh/2")
    x = torch.rand(2000, 27) * 2 - 1
    with torch.no_grad():
        float_out = model(x).numpy()
    hw = forward(hardware_layers(model, "tanh/2"), x.numpy()) / 4096
    assert np.abs(hw - float_out).max() < 3e-3


# ---------------------------------------------------------------------------------------------- the config keys
def test_fixed_point_keys_are_checked_and_set_per_expert():
    from neuro_trigger.config.errors import ConfigError
    from neuro_trigger.config.resolution import resolve_config

    resolved = resolve_config("baseline_v2", ["expert_3.fixed_point.weight_max=63"])
    assert resolved["experts"]["expert_3"]["fixed_point"] == {"precision": [12, 8, 8, 12, 10, 10], "weight_max": 63}
    assert resolved["experts"]["expert_0"]["fixed_point"]["weight_max"] is None
    for bad, words in (("fixed_point.precision=[12, 10, 10]", "six integers"),
                       ("fixed_point.precision=[12, 8, 8, 4, 4, 10]", "more fractional bits"),
                       ("fixed_point.weight_max=0", "> 0")):
        with pytest.raises(ConfigError, match=words):
            resolve_config("baseline_v2", [bad])


def test_weight_max_clips_every_weight_after_each_step():
    """A network trained with a large learning rate: without the key its weights leave [-0.0625, 0.0625] (a
    bound exact in float32), with it none does, after every step."""
    import lightning as L
    import torch

    from neuro_trigger.config.resolution import resolve_config
    from neuro_trigger.training.batches import EvalBatches, TrainBatches
    from neuro_trigger.training.expert import build_trainer, fit_expert
    from neuro_trigger.training.module import ExpertModule

    def largest_weight(tmp: str, *keys: str) -> float:
        config = resolve_config("baseline_v2", ["epochs=2", "batch_size=32", "learning_rate=0.05", *keys]
                                )["experts"]["expert_0"]
        g = torch.Generator().manual_seed(1)
        x = torch.rand(256, 27, generator=g) * 2 - 1
        y = torch.tanh(x[:, :2] * 3)
        L.seed_everything(1, verbose=False)
        module = ExpertModule(config)
        trainer, _ = build_trainer(config, __import__("pathlib").Path(tmp))
        rows, cpu = torch.arange(256).numpy(), torch.device("cpu")
        fit_expert(trainer, module, TrainBatches(x, y, rows, 32, 1, None, cpu), EvalBatches(x, y, y, rows, cpu))
        return max(p.detach().abs().max().item() for p in module.model.parameters())

    import tempfile

    with tempfile.TemporaryDirectory() as free, tempfile.TemporaryDirectory() as clipped:
        assert largest_weight(free) > 0.0625
        assert largest_weight(clipped, "fixed_point.weight_max=0.0625") <= 0.0625
