"""Running statistics that are part of the model: observation normalization.

Statistics are kept in float64 so that merging a small batch into millions of samples does not
lose the update to rounding; the forward pass uses float32 copies refreshed after each update.
Dict observations get one normalizer per vector key; image keys are scaled, not normalized.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import gymnasium as gym
import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ppokit.distributed import LocalSync


class RunningMeanStd(nn.Module):
    """Mean and (population) variance over every sample seen, merged batch by batch exactly.

    The merge is the parallel algorithm of Chan et al.: for batches A and B,
    mean = mean_A + delta * n_B / n, M2 = M2_A + M2_B + delta^2 * n_A * n_B / n.
    """

    def __init__(self, shape: tuple[int, ...] | torch.Size = ()) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, sync: LocalSync | None = None) -> None:
        """Merge a batch `x` of shape [B, *shape]; with `sync`, every rank's batch, in rank order
        (so every rank ends with bit-identical statistics)."""
        x = x.reshape(-1, *self.mean.shape).to(torch.float64)
        local = sync is None or not sync.distributed
        if x.shape[0] == 0 and local:
            return
        batch_mean = x.mean(dim=0)
        batch_var = x.var(dim=0, unbiased=False)
        count = torch.tensor(float(x.shape[0]), dtype=torch.float64, device=x.device)
        if local:
            self.merge(batch_mean, batch_var, count)
            return
        for mean, var, n in sync.gather_moments(batch_mean, batch_var, count):
            if n > 0:
                self.merge(mean, var, n)

    @torch.no_grad()
    def merge(
        self, batch_mean: torch.Tensor, batch_var: torch.Tensor, batch_count: torch.Tensor
    ) -> None:
        """Merge statistics (mean, population var, count) of another set of samples."""
        total = self.count + batch_count
        delta = batch_mean - self.mean
        new_mean = self.mean + delta * (batch_count / total)
        m2 = (
            self.var * self.count
            + batch_var * batch_count
            + delta.square() * (self.count * batch_count / total)
        )
        self.mean.copy_(new_mean)
        self.var.copy_(m2 / total)
        self.count.copy_(total)


class ObservationNormalizer(nn.Module):
    """(x - mean) / std, clipped; statistics updated explicitly (never inside forward)."""

    def __init__(
        self, shape: tuple[int, ...], clip: float = 10.0, enabled: bool = True, eps: float = 1e-8
    ) -> None:
        super().__init__()
        self.enabled = enabled
        self.clip = clip
        self.eps = eps
        self.rms = RunningMeanStd(shape)
        # float32 copies used by forward (and by exported graphs); derived, so not saved.
        self.register_buffer("_mean32", torch.zeros(shape), persistent=False)
        self.register_buffer("_inv_std32", torch.ones(shape), persistent=False)
        self.register_load_state_dict_post_hook(_refresh_after_load)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        return ((x - self._mean32) * self._inv_std32).clamp(-self.clip, self.clip)

    @torch.no_grad()
    def update(self, x: torch.Tensor, sync: LocalSync | None = None) -> None:
        if self.enabled:
            self.rms.update(x, sync)
            self._refresh()

    def as_numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies of the float32 (mean, 1 / std) that `forward` computes (x - mean) * inv_std
        with, then clips to +-clip (for a NumPy copy of the forward pass: algo/accel)."""
        return (
            self._mean32.detach().cpu().numpy().astype(np.float32, copy=True),
            self._inv_std32.detach().cpu().numpy().astype(np.float32, copy=True),
        )

    @torch.no_grad()
    def _refresh(self) -> None:
        self._mean32.copy_(self.rms.mean)
        self._inv_std32.copy_(torch.rsqrt(self.rms.var + self.eps))


def _refresh_after_load(module: ObservationNormalizer, incompatible_keys: object) -> None:
    module._refresh()


class ImageScaler(nn.Module):
    """Images are scaled to [0, 1] from their Box bounds (uint8: / 255), not normalized: per-pixel
    running statistics would cost memory and make an image's meaning drift during training."""

    def __init__(self, low: float, high: float) -> None:
        super().__init__()
        self.low = float(low)
        self.scale = 1.0 / (float(high) - float(low))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.low) * self.scale


class DictObservationNormalizer(nn.Module):
    """Per-key normalization of dict observations: vectors get an `ObservationNormalizer`
    (running mean/std over the key's flattened features), images an `ImageScaler`."""

    def __init__(self, space: gym.spaces.Dict, clip: float = 10.0, enabled: bool = True) -> None:
        super().__init__()
        self.enabled = enabled
        parts: dict[str, nn.Module] = {}
        for key, sub in space.spaces.items():
            if len(sub.shape) == 3:
                low, high = image_bounds(sub)
                parts[key] = ImageScaler(low, high)
            else:
                dim = int(math.prod(sub.shape))
                parts[key] = ObservationNormalizer((dim,), clip=clip, enabled=enabled)
        self.keys = list(parts)
        self.parts = nn.ModuleDict(parts)

    def forward(self, obs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for key, part in self.parts.items():
            x = obs[key]
            out[key] = part(x if isinstance(part, ImageScaler) else x.reshape(x.shape[0], -1))
        return out

    @torch.no_grad()
    def update(self, obs: dict[str, torch.Tensor], sync: LocalSync | None = None) -> None:
        for key, part in self.parts.items():
            if not isinstance(part, ImageScaler):
                part.update(obs[key].reshape(obs[key].shape[0], -1), sync)


def image_bounds(space: gym.spaces.Box) -> tuple[float, float]:
    """The value range images of `space` are scaled from: uint8 0-255, else the Box bounds when
    finite, else [0, 1] (left as is)."""
    if space.dtype == np.uint8:
        return 0.0, 255.0
    low, high = float(np.min(space.low)), float(np.max(space.high))
    if np.isfinite(low) and np.isfinite(high) and high > low:
        return low, high
    return 0.0, 1.0
