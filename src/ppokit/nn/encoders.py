"""Feature encoders: the MLP (with the orthogonal initialisation every PPO detail list asks for),
and for dict observations one encoder per key (identity, MLP or CNN) concatenated by
`MultiModalEncoder`."""

from __future__ import annotations

import math

import gymnasium as gym
import torch
import torch.nn.functional as F
from torch import nn

from ppokit.errors import ConfigError

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


# ----------------------------------------------------------------------------------------------
# Per-key encoders for dict observations
# ----------------------------------------------------------------------------------------------

DEFAULT_VECTOR_ENCODER = {"type": "mlp", "hidden": [64]}
DEFAULT_IMAGE_ENCODER = {
    "type": "cnn",
    "channels": [16, 32],
    "kernels": [5, 3],
    "strides": [2, 2],
    "out": 64,
}
ENCODER_FIELDS = {
    "identity": set(),
    "mlp": {"hidden"},
    "cnn": {"channels", "kernels", "strides", "out"},
}


class Identity(nn.Module):
    """A vector key passed on as it is (flattened)."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.out_dim = int(math.prod(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)


class VectorMLP(nn.Module):
    """A vector key through hidden layers, each followed by the activation (a feature, not a head)."""

    def __init__(self, shape: tuple[int, ...], hidden: list[int], activation: str) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("an mlp encoder needs at least one hidden size")
        sizes = [int(math.prod(shape)), *hidden]
        self.layers = nn.ModuleList(
            orthogonal_linear(a, b, HIDDEN_GAIN) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self._activation = ACTIVATION_FNS[activation]
        self.out_dim = sizes[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        for layer in self.layers:
            x = self._activation(F.linear(x, layer.weight, layer.bias))
        return x


class CNN(nn.Module):
    """Conv layers (no padding) -> flatten -> linear `out`, activations after each layer.

    Takes images channels first, [B, C, H, W]; `channels_last` images are permuted here.
    """

    def __init__(
        self,
        shape: tuple[int, int, int],
        channels: list[int],
        kernels: list[int],
        strides: list[int],
        out: int,
        activation: str,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        if not (len(channels) == len(kernels) == len(strides)) or not channels:
            raise ValueError("cnn encoder: channels, kernels and strides need one entry per layer")
        self.channels_last = channels_last
        c, h, w = (shape[2], shape[0], shape[1]) if channels_last else shape
        convs = []
        for out_c, k, s in zip(channels, kernels, strides):
            conv = nn.Conv2d(c, out_c, k, s)
            nn.init.orthogonal_(conv.weight, HIDDEN_GAIN)
            nn.init.zeros_(conv.bias)
            convs.append(conv)
            h, w, c = (h - k) // s + 1, (w - k) // s + 1, out_c
            if h < 1 or w < 1:
                raise ValueError(
                    f"image of shape {tuple(shape)} is too small for the cnn encoder's kernels"
                    f" {kernels} / strides {strides}"
                )
        self.convs = nn.ModuleList(convs)
        self.linear = orthogonal_linear(c * h * w, out, HIDDEN_GAIN)
        self._activation = ACTIVATION_FNS[activation]
        self.out_dim = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.permute(0, 3, 1, 2)
        for conv in self.convs:
            x = self._activation(conv(x))
        return self._activation(self.linear(x.flatten(1)))


def image_layout(shape: tuple[int, ...]) -> tuple[tuple[int, int, int], bool] | None:
    """((C, H, W) or (H, W, C), channels_last) of an image shape, or None if it is not one.

    3-D shapes whose first axis is 1-4 are channels first; else whose last axis is 1-4, channels
    last. Other shapes are not images (2-D grids such as height maps are read as vectors).
    """
    if len(shape) == 3:
        if 1 <= shape[0] <= 4:
            return (shape[0], shape[1], shape[2]), False
        if 1 <= shape[-1] <= 4:
            return (shape[0], shape[1], shape[2]), True
    return None


class MultiModalEncoder(nn.Module):
    """One encoder per observation key, outputs concatenated in key order.

    `specs` maps keys to an encoder description ({type: identity | mlp | cnn, ...}); keys not
    named get a CNN for images (3-D Box) and an MLP for vectors.
    """

    def __init__(
        self, space: gym.spaces.Dict, keys: list[str], specs: dict, activation: str
    ) -> None:
        super().__init__()
        self.keys = list(keys)
        encoders = {}
        for key in self.keys:
            sub = space.spaces[key]
            spec = specs.get(key) or (
                DEFAULT_IMAGE_ENCODER if len(sub.shape) == 3 else DEFAULT_VECTOR_ENCODER
            )
            encoders[key] = build_key_encoder(key, sub, spec, activation)
        self.encoders = nn.ModuleDict(encoders)
        self.out_dim = sum(e.out_dim for e in self.encoders.values())

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.encoders[k](obs[k]) for k in self.keys]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def build_key_encoder(key: str, space: gym.Space, spec: dict, activation: str) -> nn.Module:
    """The encoder `spec` describes for observation `key`; ConfigError on a bad description."""
    if not isinstance(space, gym.spaces.Box):
        raise ConfigError(
            f"observation key {key!r} is a {type(space).__name__}; only Box keys are supported"
        )
    shape = tuple(space.shape)
    if not isinstance(spec, dict) or spec.get("type") not in ENCODER_FIELDS:
        raise ConfigError(
            f"policy.encoders.{key}: expected a mapping with type identity, mlp or cnn, got {spec!r}"
        )
    kind = spec["type"]
    unknown = set(spec) - ENCODER_FIELDS[kind] - {"type"}
    if unknown:
        raise ConfigError(
            f"policy.encoders.{key}: unknown field(s) {sorted(unknown)} for type {kind}"
            f" (valid: {sorted(ENCODER_FIELDS[kind]) or 'none'})"
        )
    if len(shape) == 3 and kind != "cnn":
        raise ConfigError(
            f"observation key {key!r} is an image of shape {shape}; use a cnn encoder for it"
        )
    try:
        if kind == "identity":
            return Identity(shape)
        if kind == "mlp":
            return VectorMLP(
                shape, list(spec.get("hidden", DEFAULT_VECTOR_ENCODER["hidden"])), activation
            )
        layout = image_layout(shape)
        if layout is None:
            raise ConfigError(
                f"observation key {key!r} has shape {shape}, which the cnn encoder cannot read:"
                " it takes images (C, H, W) or (H, W, C) with 1-4 channels"
            )
        image_shape, channels_last = layout
        cnn = {**DEFAULT_IMAGE_ENCODER, **spec}
        return CNN(
            image_shape,
            list(cnn["channels"]),
            list(cnn["kernels"]),
            list(cnn["strides"]),
            int(cnn["out"]),
            activation,
            channels_last,
        )
    except (ValueError, TypeError) as e:
        raise ConfigError(f"policy.encoders.{key}: {e}") from None
