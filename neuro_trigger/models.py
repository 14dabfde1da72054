"""The expert networks. Small on purpose: the FPGA holds one hidden layer of 81 neurons."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class Activation(nn.Module):
    """Wraps an activation function so it can sit in nn.Sequential and print its name."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], name: str) -> None:
        super().__init__()
        self.fn = fn
        self.name = name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return self.name


class BaselineModel(nn.Module):
    """in_size -> 81 -> out_size, the activation after both layers (as on the FPGA)."""

    def __init__(self, in_size: int, out_size: int, act: nn.Module, hidden: int = 81) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_size, hidden), act, nn.Linear(hidden, out_size), act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class BaselineModelBN(nn.Module):
    """The baseline with batch norm after the hidden layer."""

    def __init__(self, in_size: int, out_size: int, act: nn.Module, hidden: int = 81) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_size, hidden), nn.BatchNorm1d(hidden), act, nn.Linear(hidden, out_size), act
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SimpleModel(nn.Module):
    """A deeper network, in-50-100-50-10-out, batch norm after each hidden layer; linear output."""

    def __init__(self, in_size: int, out_size: int, act: nn.Module) -> None:
        super().__init__()
        sizes = [in_size, 50, 100, 50, 10]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.BatchNorm1d(b), act]
        layers.append(nn.Linear(sizes[-1], out_size))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
