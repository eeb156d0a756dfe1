"""Where and how reproducibly a process computes: the torch device, the seeds, the threads.

The low-level helpers every entry point shares (training, evaluation, graphs, verify), so none
of them imports another to reach them.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from ppokit.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """`auto` (CUDA when present, else CPU), `cpu`, `cuda` or `cuda:N`; a one-line ConfigError
    when CUDA is asked for and not available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available; use --device cpu or auto"
        )
    return device


def seed_everything(seed: int) -> None:
    """Python's, NumPy's and torch's global generators (every device's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int | None) -> None:
    """torch's intra-op threads (None leaves torch's default)."""
    if threads:
        torch.set_num_threads(threads)
