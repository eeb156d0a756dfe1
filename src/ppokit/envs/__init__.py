"""Environments behind one protocol: `VecEnv` (batched torch tensors)."""

import gymnasium as gym

from ppokit.envs import masked, reference  # noqa: F401  (reference registers its tasks)
from ppokit.envs.base import StepResult, VecEnv
from ppokit.envs.gym_env import GymVecEnv, check_env_id
from ppokit.envs.torch_env import TorchVecEnv, is_torch_env, make_torch_env, register_torch_env

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
# The batched locomotion task (envs/locomotion_batched.py), also by name.
register_torch_env(
    "ppokit/AntLocomotionBatched-v0",
    "ppokit.envs.locomotion_batched:AntLocomotionBatched",
    max_episode_steps=1000,
)


def make_env(cfg, device="cpu") -> VecEnv:
    """Build the vectorized environment an EnvConfig describes: a batched torch task
    (ppokit/TorchPendulum-v0, ...) on `device`, else Gymnasium envs."""
    if is_torch_env(cfg.id):
        return make_torch_env(cfg.id, cfg.num_envs, device, cfg.max_episode_steps, cfg.kwargs)
    return GymVecEnv.from_config(cfg, device)


__all__ = ["GymVecEnv", "StepResult", "TorchVecEnv", "VecEnv", "check_env_id", "make_env"]
