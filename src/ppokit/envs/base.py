"""The VecEnv protocol every environment source is adapted to: batched torch tensors on a device."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import torch

from ppokit.observations import Obs


@dataclass
class StepResult:
    """One batched step. Observations are already reset where an episode ended.

    `final_obs` holds, in the rows of envs whose episode ended at this step, the observation the
    episode ended on (other rows repeat `obs`), so a truncated episode can bootstrap from
    V(final observation). It is None when no env ended (or the simulator cannot provide it). With
    a Dict observation space, `obs` and `final_obs` are dicts of tensors, one per key.

    `bootstrap_pre_step` says the simulator reports no final observations at all (many GPU
    simulators): a truncated episode then bootstraps from V(observation acted on at this step),
    as rsl_rl does, instead of V(final observation) (docs/gpu.md).
    """

    obs: Obs
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    final_obs: Obs | None = None
    infos: dict[str, Any] = field(default_factory=dict)
    bootstrap_pre_step: bool = False


@runtime_checkable
class VecEnv(Protocol):
    """N environments stepped together; single-env spaces describe one env's obs and action."""

    num_envs: int
    observation_space: gym.Space
    action_space: gym.Space
    device: torch.device

    def reset(self, seed: int | None = None) -> Obs:
        """Reset every env (env i seeded with seed + i) and return the first observations."""
        ...

    def step(self, actions: torch.Tensor) -> StepResult:
        """Apply actions in env units; auto-reset finished envs."""
        ...

    def close(self) -> None: ...
