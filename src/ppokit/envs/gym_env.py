"""Gymnasium 1.x vector envs (sync or subprocess) behind the VecEnv protocol.

The vector env runs in SAME_STEP autoreset mode: when an episode ends, `step` returns the first
observation of the next episode and reports the observation it ended on in
``infos["final_obs"]``. That is what truncation bootstrapping needs, without the extra dummy
transition of the NEXT_STEP mode.

Dict observation spaces come out as a dict of tensors, one per key (uint8 images stay uint8,
everything else is float32); NaN checks and final observations work per key.
"""

from __future__ import annotations

import difflib
import importlib
import math
import sys
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode

from ppokit.config import EnvConfig
from ppokit.envs.base import StepResult
from ppokit.envs.serial import SerialVectorEnv
from ppokit.errors import EnvError
from ppokit.observations import numpy_storage_dtype


def check_env_id(env_id: str) -> None:
    """Raise EnvError naming close registered ids when `env_id` is unknown."""
    if env_id in gym.registry:
        return
    module, _, name = env_id.rpartition(":")
    if module:  # "ale_py:ALE/Pong-v5": importing the module registers the id (as gym.make does)
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise EnvError(
                f"cannot import module {module!r} of environment id {env_id!r}: {e}"
            ) from None
        env_id = name
        if env_id in gym.registry:
            return
    try:
        gym.spec(env_id)
        return
    except gym.error.Error:
        pass
    close = difflib.get_close_matches(env_id, list(gym.registry.keys()), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise EnvError(f"unknown environment id {env_id!r}{hint} (any registered Gymnasium id works)")


def quiet_known_mujoco_warnings() -> None:
    """Drop MuJoCo 4's deprecation warning about Gymnasium's own assets (`settotalmass`, printed
    once per env built); every other MuJoCo warning still reaches stderr."""
    try:
        import mujoco
    except ImportError:
        return
    if mujoco.get_mju_user_warning() is None:

        def warn(message: str) -> None:
            if "settotalmass" not in message:
                print(f"WARNING: {message}", file=sys.stderr)

        mujoco.set_mju_user_warning(warn)


def env_factory(
    env_id: str, max_episode_steps: int | None, kwargs: dict, render_mode: str | None = None
) -> Callable[[], gym.Env]:
    def make() -> gym.Env:
        quiet_known_mujoco_warnings()
        extra = dict(kwargs)
        if max_episode_steps is not None:
            extra["max_episode_steps"] = max_episode_steps
        if render_mode is not None:
            extra["render_mode"] = render_mode
        return gym.make(env_id, **extra)

    return make


class GymVecEnv:
    """Adapts a Gymnasium vector env to batched torch tensors on `device`."""

    def __init__(self, cfg: EnvConfig, device: torch.device | str = "cpu") -> None:
        check_env_id(cfg.id)
        self.device = torch.device(device)
        self.num_envs = cfg.num_envs
        self.env_id = cfg.id
        fns = [env_factory(cfg.id, cfg.max_episode_steps, cfg.kwargs) for _ in range(cfg.num_envs)]
        try:
            if cfg.vectorization == "async":
                self.env = AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.SAME_STEP)
            else:
                self.env = SerialVectorEnv(fns)
        except gym.error.Error as e:
            raise EnvError(f"cannot build environment {cfg.id!r}: {e}") from None
        self.observation_space = self.env.single_observation_space
        self.action_space = self.env.single_action_space
        self._discrete_actions = isinstance(
            self.action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)
        )
        self._action_dtype = self.action_space.dtype
        self._dict_obs = isinstance(self.observation_space, gym.spaces.Dict)
        if self._dict_obs:
            self._key_dtypes = {
                k: numpy_storage_dtype(s) for k, s in self.observation_space.spaces.items()
            }
        self.steps = 0

    def _to_tensor(self, array: np.ndarray, dtype: type = np.float32) -> torch.Tensor:
        array = np.asarray(array, dtype=dtype)
        if self.device.type == "cpu":
            return torch.from_numpy(array)
        return torch.as_tensor(array, device=self.device)

    def _obs_to_tensor(self, obs: np.ndarray | dict) -> torch.Tensor | dict[str, torch.Tensor]:
        if self._dict_obs:
            return {k: self._to_tensor(obs[k], dtype) for k, dtype in self._key_dtypes.items()}
        return self._to_tensor(obs)

    def _check_obs_finite(self, what: str, obs: np.ndarray | dict) -> None:
        if self._dict_obs:
            for k in self._key_dtypes:
                self._check_finite(f"{what} key {k!r}", obs[k])
        else:
            self._check_finite(what, obs)

    def _obs_sum(self, obs: np.ndarray | dict) -> float:
        if self._dict_obs:
            return sum(
                float(obs[k].sum()) for k, dtype in self._key_dtypes.items() if dtype != np.uint8
            )
        return obs.sum()

    def _final_obs(self, obs: np.ndarray | dict, ended: np.ndarray, finals: np.ndarray) -> object:
        """`obs` with the rows of ended envs replaced by the observation their episode ended on."""
        if self._dict_obs:
            final = {
                k: np.array(obs[k], dtype=dtype, copy=True) for k, dtype in self._key_dtypes.items()
            }
            for i in np.flatnonzero(ended):
                for k, array in final.items():
                    array[i] = finals[i][k]
            return final
        final = np.array(obs, dtype=np.float32, copy=True)
        for i in np.flatnonzero(ended):
            final[i] = finals[i]
        return final

    def _check_finite(self, what: str, array: np.ndarray) -> None:
        if array.dtype == np.uint8:
            return
        if not np.isfinite(array).all():
            bad = np.argwhere(~np.isfinite(array.reshape(self.num_envs, -1)).all(axis=1))[:, 0]
            raise EnvError(
                f"{what} from env {self.env_id!r} contains NaN/inf at vector step {self.steps}"
                f" in env index {bad.tolist()}; fix the env or wrap it to sanitise its output"
            )

    def reset(self, seed: int | None = None) -> torch.Tensor:
        obs, _ = self.env.reset(seed=seed)
        self._check_obs_finite("observation", obs)
        return self._obs_to_tensor(obs)

    def step(self, actions: torch.Tensor) -> StepResult:
        actions_np = (
            actions.detach().numpy() if actions.device.type == "cpu" else actions.cpu().numpy()
        )
        if self._discrete_actions:
            actions_np = actions_np.astype(self._action_dtype, copy=False)
        obs, rewards, terminated, truncated, infos = self.env.step(actions_np)
        self.steps += 1
        # One reduction covers both arrays: a sum is finite iff every term is (or it overflowed,
        # which the precise checks below then clear).
        if not math.isfinite(self._obs_sum(obs) + rewards.sum()):
            self._check_obs_finite("observation", obs)
            self._check_finite("reward", rewards)
        final_obs = None
        if "final_obs" in infos:  # present only when an episode ended (SAME_STEP autoreset)
            final = self._final_obs(obs, terminated | truncated, infos["final_obs"])
            self._check_obs_finite("final observation", final)
            final_obs = self._obs_to_tensor(final)
        return StepResult(
            obs=self._obs_to_tensor(obs),
            rewards=self._to_tensor(rewards),
            terminated=self._to_tensor(terminated, bool),
            truncated=self._to_tensor(truncated, bool),
            final_obs=final_obs,
            infos=infos,
        )

    def close(self) -> None:
        self.env.close()
