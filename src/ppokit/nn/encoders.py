"""Feature encoders. The MLP carries the orthogonal initialisation every PPO detail list asks for."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}

ACTIVATION_FNS = {
    "tanh": torch.tanh,
    "elu": F.elu,
    "relu": F.relu,
    "silu": F.silu,
    "gelu": F.gelu,
}

HIDDEN_GAIN = math.sqrt(2)


def orthogonal_linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    """A Linear layer with orthogonal weights of the given gain and zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class MLP(nn.Module):
    """in -> hidden... -> out; hidden layers get gain sqrt(2), the output layer `out_gain`.

    The forward calls F.linear directly: on the rollout path (batch of a few envs) the per-module
    call overhead of an nn.Sequential costs more than the arithmetic.
    """

    def __init__(
        self, in_dim: int, hidden: list[int], out_dim: int, activation: str, out_gain: float
    ) -> None:
        super().__init__()
        sizes = [in_dim, *hidden]
        layers = [orthogonal_linear(a, b, HIDDEN_GAIN) for a, b in zip(sizes[:-1], sizes[1:])]
        layers.append(orthogonal_linear(sizes[-1], out_dim, out_gain))
        self.layers = nn.ModuleList(layers)
        self.activation = activation
        self._activation = ACTIVATION_FNS[activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        *hidden, last = self.layers
        for layer in hidden:
            x = self._activation(F.linear(x, layer.weight, layer.bias))
        return F.linear(x, last.weight, last.bias)


def mlp(in_dim: int, hidden: list[int], out_dim: int, activation: str, out_gain: float) -> MLP:
    """An orthogonally initialised MLP (see MLP)."""
    return MLP(in_dim, hidden, out_dim, activation, out_gain)
