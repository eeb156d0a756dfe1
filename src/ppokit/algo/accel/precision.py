"""Training precision: fp32, or bf16 autocast for the update with fp32 master weights.

With ``precision: bf16`` the loss's forward pass runs under ``torch.autocast(dtype=bfloat16)``
and the backward pass follows the dtypes autocast chose, so matrix multiplies and their
gradients run in bfloat16 while parameters, gradients, Adam's moments and the loss reductions
stay float32 (no loss scaling is needed: bfloat16 has float32's exponent range). It saves
activation memory and, on GPUs with bf16 tensor cores, time. The rollout's inference (actions,
log-probabilities, values) stays float32, so the stored log-probabilities and the GAE targets are
exact; the update's recomputed log-probabilities carry bf16 rounding (the ratio starts within
~1e-2 of 1 instead of exactly 1).
"""

from __future__ import annotations

import contextlib

import torch

from ppokit.errors import ConfigError

PRECISIONS = ("fp32", "bf16")


def check_precision(precision: str, device: torch.device) -> None:
    """Raise ConfigError when `device` cannot run `precision`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not one of {list(PRECISIONS)}")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            f"precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16 support;"
            " use --precision fp32"
        )
    if precision == "bf16" and device.type not in ("cuda", "cpu"):
        raise ConfigError(
            f"precision bf16 runs on CUDA and CPU devices, not {device.type}; use fp32"
        )


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """The context the update's forward pass runs in (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
