"""A minimal in-process vector env: Gymnasium envs stepped in a loop, SAME_STEP autoreset.

Gymnasium's SyncVectorEnv merges every env's info dict into batched arrays on every step; for a
single fast MuJoCo env that bookkeeping costs as much as the physics. ppokit only needs the
observations, rewards, the two done flags and the final observation of ended episodes, so the
loop below produces exactly those (infos carry only `final_obs`/`final_info` of ended envs).
Dict observation spaces are batched per key into a dict of arrays, as Gymnasium's vector envs do.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

from ppokit.errors import EnvError


def _describe(value: Any) -> str:
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None:
        return f"an array of shape {tuple(shape)} and dtype {dtype}"
    return f"a {type(value).__name__}"


class SerialVectorEnv:
    """N envs in this process. `step` returns (obs, rewards, terminated, truncated, infos) with
    the reset observation in the rows of envs that ended; their last observation is in
    ``infos["final_obs"][i]``, as Gymnasium's SAME_STEP mode reports it."""

    def __init__(self, env_fns: Sequence[Callable[[], gym.Env]]) -> None:
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.metadata = {**self.envs[0].metadata, "autoreset_mode": AutoresetMode.SAME_STEP}
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space
        for i, env in enumerate(self.envs[1:], start=1):
            if (
                env.observation_space != self.single_observation_space
                or env.action_space != self.single_action_space
            ):
                raise ValueError(f"env {i} has spaces different from env 0")
        space = self.single_observation_space
        self._dict_obs = isinstance(space, gym.spaces.Dict)
        if self._dict_obs:
            self._key_layout = {
                k: (s.shape, s.dtype or np.float32) for k, s in space.spaces.items()
            }
        else:
            self._obs_shape = space.shape
            self._obs_dtype = space.dtype or np.float32

    def _empty_obs(self) -> np.ndarray | dict[str, np.ndarray]:
        n = self.num_envs
        if self._dict_obs:
            return {
                k: np.empty((n, *shape), dtype) for k, (shape, dtype) in self._key_layout.items()
            }
        return np.empty((n, *self._obs_shape), dtype=self._obs_dtype)

    def _put(self, obs: np.ndarray | dict, i: int, o: np.ndarray | dict) -> None:
        try:
            if self._dict_obs:
                for k, array in obs.items():
                    array[i] = o[k]
            else:
                obs[i] = o
        except (ValueError, TypeError, KeyError, IndexError) as e:
            error = EnvError(
                f"env index {i} returned an observation that does not fit its observation"
                f" space {self.single_observation_space} (got {_describe(o)}: {e})"
            )
            error.ppokit_env_index = i
            raise error from None

    def reset(self, seed: int | None = None) -> tuple[np.ndarray | dict, dict]:
        obs = self._empty_obs()
        for i, env in enumerate(self.envs):
            o, _ = env.reset(seed=None if seed is None else seed + i)
            self._put(obs, i, o)
        return obs, {}

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray | dict, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        n = self.num_envs
        obs = self._empty_obs()
        rewards = np.empty(n, dtype=np.float64)
        terminated = np.empty(n, dtype=bool)
        truncated = np.empty(n, dtype=bool)
        infos: dict[str, Any] = {}
        for i, env in enumerate(self.envs):
            try:
                o, rewards[i], terminated[i], truncated[i], info = env.step(actions[i])
            except Exception as e:
                e.ppokit_env_index = i  # the trainer's one-line error names the env
                raise
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
                try:
                    o, _ = env.reset()
                except Exception as e:
                    e.ppokit_env_index = i
                    raise
            self._put(obs, i, o)
        return obs, rewards, terminated, truncated, infos

    def render(self) -> tuple:
        return tuple(env.render() for env in self.envs)

    def close(self) -> None:
        for env in self.envs:
            env.close()
