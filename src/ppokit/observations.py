"""Observations as one tensor or a dict of named tensors, and the few operations on both.

A Box observation space gives a tensor; a Dict space gives a ``dict[str, Tensor]`` whose keys are
the space's (sorted, as Gymnasium orders them). Everything that moves observations around (the
vector env, the rollout buffer, the normalizer, checkpoints) goes through these helpers, so the
flat case pays one ``isinstance`` and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch

Obs = torch.Tensor | dict[str, torch.Tensor]


def obs_map(fn: Callable[[torch.Tensor], torch.Tensor], obs: Obs) -> Obs:
    """Apply `fn` to the tensor, or to every tensor of the dict."""
    if isinstance(obs, dict):
        return {k: fn(v) for k, v in obs.items()}
    return fn(obs)


def obs_map2(fn: Callable[[torch.Tensor, torch.Tensor], object], a: Obs, b: Obs) -> None:
    """Call `fn` on matching pairs of tensors of two observations of the same structure."""
    if isinstance(a, dict):
        assert isinstance(b, dict)
        for k, v in a.items():
            fn(v, b[k])
    else:
        fn(a, b)


def obs_batch_size(obs: Obs) -> int:
    """Size of the leading (batch) dimension."""
    if isinstance(obs, dict):
        return next(iter(obs.values())).shape[0]
    return obs.shape[0]


def storage_dtype(space: gym.Space) -> torch.dtype:
    """uint8 images stay uint8 (4x less memory in the rollout buffer); everything else float32."""
    if isinstance(space, gym.spaces.Box) and space.dtype == np.uint8:
        return torch.uint8
    return torch.float32


def numpy_storage_dtype(space: gym.Space) -> type:
    return np.uint8 if storage_dtype(space) == torch.uint8 else np.float32
