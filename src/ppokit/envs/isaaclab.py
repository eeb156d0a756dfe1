"""Isaac Lab's vector env (ManagerBasedRLEnv / DirectRLEnv) as a ppokit `VecEnv`.

A thin layer over `TorchVecEnv`: Isaac Lab already steps every env on the GPU and returns torch
tensors (obs groups, rewards, terminated, truncated = time-outs, extras), so nothing is copied
and nothing is read on the host. Isaac Lab is not imported here (it needs its own Python and a
running simulation app); tests use a fake with Isaac Lab's shapes. Usage, inside Isaac Lab's
Python:

    from isaaclab.app import AppLauncher
    app = AppLauncher(headless=True).app            # before importing anything else of Isaac Lab
    import gymnasium as gym
    import isaaclab_tasks  # noqa: F401             (registers the Isaac-* ids)
    from isaaclab_tasks.utils import parse_env_cfg

    import ppokit
    from ppokit.envs.isaaclab import IsaacLabVecEnv

    task = "Isaac-Velocity-Flat-Anymal-C-v0"
    env = gym.make(task, cfg=parse_env_cfg(task, num_envs=4096))
    vec = IsaacLabVecEnv(env)                     # the "policy" group as a flat observation
    cfg = ppokit.load_config("pointmass-4096", overrides={
        "env.id": task, "env.num_envs": vec.num_envs, "device": str(vec.device),
        "env.finite_horizon": vec.finite_horizon, "policy.noise_std_relative": False,
        "policy.init_noise_std": 1.0, "policy.actor_hidden": [512, 256, 128],
        "policy.critic_hidden": [512, 256, 128], "eval.episodes": 0})
    ppokit.train(cfg, env=vec)

Differences from Gymnasium envs a user should know:
- Isaac Lab reports no final observations: truncated episodes bootstrap from V(observation the
  action was taken in), rsl_rl's approximation (`StepResult.bootstrap_pre_step`, docs/gpu.md).
- Its action space is unbounded (Box(-inf, inf)), so actions are not rescaled and
  `policy.noise_std_relative` does not apply; `clip_actions=c` bounds it to [-c, c] (as
  isaaclab_rl's rsl_rl wrapper does), after which actions are rescaled and clipped like any Box.
- A task with ``cfg.is_finite_horizon`` must be trained with ``env.finite_horizon: true`` (the
  trainer refuses the mismatch).
- Privileged critics: ``obs_groups=["policy", "critic"]`` gives a dict observation; set
  ``policy.actor_keys: [policy]`` and ``policy.critic_keys: [policy, critic]`` with identity
  encoders (``policy.encoders: {policy: {type: identity}, critic: {type: identity}}``).
- The final evaluation of `ppokit train` is skipped (the trainer cannot build a second Isaac Lab
  env); evaluate with Isaac Lab's play scripts or an exported policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit.envs.torch_env import TorchVecEnv
from ppokit.errors import EnvError

REQUIRED = ("num_envs", "device", "single_observation_space", "single_action_space")


class _IsaacLabSim:
    """Isaac Lab's env in the `TensorSim` shape (it nearly is one already)."""

    def __init__(self, env: Any, clip_actions: float | None) -> None:
        self.env = env
        base = env.unwrapped
        missing = [name for name in REQUIRED if not hasattr(base, name)]
        if missing:
            raise EnvError(
                f"{type(base).__name__} is not an Isaac Lab vector env (it has no"
                f" {', '.join(missing)}); pass the env gym.make returns for an Isaac-* task"
            )
        self.num_envs = int(base.num_envs)
        self.device = torch.device(base.device)
        self.single_observation_space = base.single_observation_space
        action_space = base.single_action_space
        if clip_actions is not None:
            if not isinstance(action_space, gym.spaces.Box):
                raise EnvError(f"clip_actions needs a Box action space, not {action_space}")
            action_space = gym.spaces.Box(
                -clip_actions, clip_actions, action_space.shape, np.float32
            )
        self.single_action_space = action_space
        self.finite_horizon = bool(getattr(getattr(base, "cfg", None), "is_finite_horizon", False))

    def reset(self, seed: int | None = None) -> Any:
        return self.env.reset(seed=seed)

    def step(self, actions: torch.Tensor) -> tuple:
        return self.env.step(actions)

    def close(self) -> None:
        self.env.close()


class IsaacLabVecEnv(TorchVecEnv):
    """An Isaac Lab env (what ``gym.make("Isaac-...")`` returns) behind the `VecEnv` protocol.

    Args:
        env: the Isaac Lab env (wrappers allowed; `env.unwrapped` is the ManagerBasedRLEnv or
            DirectRLEnv).
        obs_groups: observation group(s) the policy sees: "policy" (default) as a flat tensor,
            or a list of groups as a dict observation.
        clip_actions: bound the (otherwise unbounded) action space to [-c, c].
    """

    def __init__(
        self,
        env: Any,
        obs_groups: str | Sequence[str] | None = "policy",
        clip_actions: float | None = None,
    ) -> None:
        sim = _IsaacLabSim(env, clip_actions)
        spec = getattr(env, "spec", None)
        name = getattr(spec, "id", None) or type(env.unwrapped).__name__
        super().__init__(sim, obs_groups=obs_groups, name=name)
        self.finite_horizon = sim.finite_horizon
