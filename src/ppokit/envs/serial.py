"""A minimal in-process vector env: Gymnasium envs stepped in a loop, SAME_STEP autoreset.

Gymnasium's SyncVectorEnv merges every env's info dict into batched arrays on every step; for a
single fast MuJoCo env that bookkeeping costs as much as the physics. ppokit only needs the
observations, rewards, the two done flags and the final observation of ended episodes, so the
loop below produces exactly those (infos carry only `final_obs`/`final_info` of ended envs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np


class SerialVectorEnv:
    """N envs in this process. `step` returns (obs, rewards, terminated, truncated, infos) with
    the reset observation in the rows of envs that ended; their last observation is in
    ``infos["final_obs"][i]``, as Gymnasium's SAME_STEP mode reports it."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        for i, env in enumerate(self.envs[1:], start=1):
            if (
                env.observation_space != self.single_observation_space
                or env.action_space != self.single_action_space
            ):
                raise ValueError(f"env {i} has spaces different from env 0")
        self._obs_shape = self.single_observation_space.shape
        self._obs_dtype = self.single_observation_space.dtype or np.float32

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, dict]:
        obs = np.empty((self.num_envs, *self._obs_shape), dtype=self._obs_dtype)
        for i, env in enumerate(self.envs):
            obs[i], _ = env.reset(seed=None if seed is None else seed + i)
        return obs, {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        obs = np.empty((n, *self._obs_shape), dtype=self._obs_dtype)
        rewards = np.empty(n, dtype=np.float64)
        terminated = np.empty(n, dtype=bool)
        truncated = np.empty(n, dtype=bool)
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            o, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            if terminated[i] or truncated[i]:
                if not infos:
                    infos = {
                        "final_obs": np.full(n, None, dtype=object),
                        "final_info": np.full(n, None, dtype=object),
                        "_final_obs": np.zeros(n, dtype=bool),
                    }
                infos["final_obs"][i] = o
                infos["final_info"][i] = info
                infos["_final_obs"][i] = True
                o, _ = env.reset()
            obs[i] = o
        return obs, rewards, terminated, truncated, infos

    def render(self) -> tuple:
        return tuple(env.render() for env in self.envs)

    def close(self) -> None:
        for env in self.envs:
            env.close()
