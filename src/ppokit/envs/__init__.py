"""Environments behind one protocol: `VecEnv` (batched torch tensors)."""

from ppokit.envs import masked
from ppokit.envs.base import StepResult, VecEnv
from ppokit.envs.gym_env import GymVecEnv, check_env_id

masked.register()  # ppokit/CartPoleNoVel-v1, ppokit/PendulumNoVel-v1


def make_env(cfg, device="cpu") -> VecEnv:
    """Build the vectorized environment an EnvConfig describes."""
    return GymVecEnv(cfg, device=device)


__all__ = ["GymVecEnv", "StepResult", "VecEnv", "check_env_id", "make_env"]
