"""Environments behind one protocol: `VecEnv` (batched torch tensors)."""

import gymnasium as gym

from ppokit.envs import masked
from ppokit.envs.base import StepResult, VecEnv
from ppokit.envs.gym_env import GymVecEnv, check_env_id

masked.register()  # ppokit/CartPoleNoVel-v1, ppokit/PendulumNoVel-v1

# The locomotion task, registered by name so that importing ppokit does not import MuJoCo.
for _id, _kwargs in (
    ("ppokit/AntLocomotion-v0", {}),
    ("ppokit/AntLocomotionDepth-v0", {"perception": "depth"}),
):
    if _id not in gym.registry:
        gym.register(
            _id,
            entry_point="ppokit.envs.locomotion:AntLocomotionEnv",
            max_episode_steps=1000,
            kwargs=_kwargs,
        )


def make_env(cfg, device="cpu") -> VecEnv:
    """Build the vectorized environment an EnvConfig describes."""
    return GymVecEnv(cfg, device=device)


__all__ = ["GymVecEnv", "StepResult", "VecEnv", "check_env_id", "make_env"]
