"""Names in configs -> the models, losses, optimisers and activations they stand for.

Configs name things by string; this is the one place those strings are looked up, so the config
validator can list what exists and suggest the closest name. The name tables are plain strings, so
that checking a config (and `main.py --list`) never imports torch; the `build_*` functions import it
when a network is actually built. `dist`'s distributions and its bucket limit are here too, since the
config validator and the sampler (data/sampling.py) both hold a `dist` to them.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

MODELS = ("BaselineModel", "BaselineModelBN", "SimpleModel")
LOSSES = ("MSELoss", "L1Loss", "HuberLoss")
ACTIVATIONS = ("tanh", "tanh/2", "softsign", "relu", "sigmoid", "leaky_relu", "selu")
OPTIMIZERS = ("Adam", "AdamW", "SGD", "Rprop")
OPTIMIZER_ALIASES = {"Rprob": "Rprop"}  # the spelling older configs used

DISTRIBUTIONS = ("norm", "uniform")
MAX_BUCKETS = 1000  # more z buckets than this only cut the data into slivers of a few rows


def _tanh_half(x: torch.Tensor) -> torch.Tensor:
    """tanh(x / 2), the activation the FPGA implements."""
    return (x / 2).tanh()


def activation_function(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function an activation name stands for."""
    import torch
    from torch import nn

    table: dict[str, Callable[[Any], Any]] = {
        "tanh": torch.tanh,
        "tanh/2": _tanh_half,
        "softsign": nn.functional.softsign,
        "relu": torch.relu,
        "sigmoid": torch.sigmoid,
        "leaky_relu": nn.functional.leaky_relu,
        "selu": torch.selu,
    }
    return table[name]


def build_model(name: str, in_size: int, out_size: int, act: str) -> nn.Module:
    """The network a config names, with its activation."""
    from neuro_trigger import models

    if name not in MODELS:
        raise KeyError(name)
    return getattr(models, name)(in_size, out_size, models.Activation(activation_function(act), act))


def build_loss(name: str, reduction: str = "mean") -> nn.Module:
    """The loss module a config names (`reduction="none"`: one loss per element)."""
    from torch import nn

    if name not in LOSSES:
        raise KeyError(name)
    return getattr(nn, name)(reduction=reduction)


def build_optimizer(
    name: str, params: Iterable[nn.Parameter], learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The optimiser a config names. Rprop takes no weight decay."""
    import torch

    name = OPTIMIZER_ALIASES.get(name, name)
    if name == "Adam":
        return torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    if name == "AdamW":
        return torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    if name == "SGD":
        return torch.optim.SGD(params, lr=learning_rate, momentum=0.9, weight_decay=weight_decay)
    if name == "Rprop":
        return torch.optim.Rprop(params, lr=learning_rate)
    raise KeyError(name)
