"""Feature encoders. The MLP carries the orthogonal initialisation every PPO detail list asks for."""

from __future__ import annotations

import math

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
}

HIDDEN_GAIN = math.sqrt(2)


def orthogonal_linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    """A Linear layer with orthogonal weights of the given gain and zero bias."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def mlp(
    in_dim: int, hidden: list[int], out_dim: int, activation: str, out_gain: float
) -> nn.Sequential:
    """in -> hidden... -> out; hidden layers get gain sqrt(2), the output layer `out_gain`."""
    layers: list[nn.Module] = []
    last = in_dim
    for size in hidden:
        layers += [orthogonal_linear(last, size, HIDDEN_GAIN), ACTIVATIONS[activation]()]
        last = size
    layers.append(orthogonal_linear(last, out_dim, out_gain))
    return nn.Sequential(*layers)
