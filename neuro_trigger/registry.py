"""Names in configs -> the models, losses, optimisers and activations they stand for.

Configs name things by string; this is the one place those strings are looked up, so the config
validator can list what exists and suggest the closest name.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from neuro_trigger.models import Activation, BaselineModel, BaselineModelBN, SimpleModel

MODELS = {"BaselineModel": BaselineModel, "BaselineModelBN": BaselineModelBN, "SimpleModel": SimpleModel}

LOSSES = {"MSELoss": nn.MSELoss, "L1Loss": nn.L1Loss, "HuberLoss": nn.HuberLoss}

ACTIVATIONS = {
    "tanh": torch.tanh,
    "tanh/2": lambda x: torch.tanh(x / 2),
    "softsign": nn.functional.softsign,
    "relu": torch.relu,
    "sigmoid": torch.sigmoid,
    "leaky_relu": nn.functional.leaky_relu,
    "selu": torch.selu,
}

OPTIMIZERS = ("Adam", "AdamW", "SGD", "Rprop")
OPTIMIZER_ALIASES = {"Rprob": "Rprop"}  # the spelling older configs used

DISTRIBUTIONS = ("norm", "uniform")


def build_model(name: str, in_size: int, out_size: int, act: str) -> nn.Module:
    """The network a config names, with its activation."""
    return MODELS[name](in_size, out_size, Activation(ACTIVATIONS[act], act))


def build_loss(name: str) -> nn.Module:
    return LOSSES[name]()


def build_optimizer(
    name: str, params: Iterable[nn.Parameter], learning_rate: float, weight_decay: float
) -> torch.optim.Optimizer:
    """The optimiser a config names. Rprop takes no weight decay."""
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
