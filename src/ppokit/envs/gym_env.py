"""Gymnasium 1.x vector envs (sync or subprocess) behind the VecEnv protocol.

The vector env runs in SAME_STEP autoreset mode: when an episode ends, `step` returns the first
observation of the next episode and reports the observation it ended on in
``infos["final_obs"]``. That is what truncation bootstrapping needs, without the extra dummy
transition of the NEXT_STEP mode.

`GymVecEnv` is built from env factories; a registered id (`GymVecEnv.from_config`) is one way to
get them, a user's callable another (`ppokit.envs.external`). A user's own Gymnasium vector env
is wrapped as it is when it autoresets in SAME_STEP mode.

Dict observation spaces come out as a dict of tensors, one per key (uint8 images stay uint8,
everything else is float32); NaN checks and final observations work per key.
"""

from __future__ import annotations

import difflib
import importlib
import math
import sys
import warnings
from collections.abc import Callable, Sequence

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState

from ppokit.config import EnvConfig
from ppokit.envs.base import StepResult
from ppokit.envs.serial import SerialVectorEnv
from ppokit.envs.snapshot import env_state, load_env_state
from ppokit.errors import EnvError, EnvStateUnsupported
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


def env_name(env: object) -> str:
    """The spec id of a Gymnasium env or vector env, else its (unwrapped) class name."""
    spec = getattr(env, "spec", None)
    if spec is not None:
        return spec.id
    return type(getattr(env, "unwrapped", env)).__name__


def vectorize(
    env_fns: Sequence[Callable[[], gym.Env]], vectorization: str = "sync", name: str = "env"
) -> SerialVectorEnv | AsyncVectorEnv:
    """The envs of `env_fns` as one Gymnasium-style vector env in SAME_STEP autoreset mode: in
    this process (sync) or one subprocess each (async)."""
    try:
        if vectorization == "async":
            return WorkerErrorsAsyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.SAME_STEP)
        return SerialVectorEnv(env_fns)
    except (gym.error.Error, TypeError, ValueError) as e:
        # gym.make re-raises a constructor's TypeError (an unknown env.kwargs key) with the kwargs
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise EnvError(
            f"cannot build environment {name!r}: {message}; check env.id and env.kwargs"
        ) from None


class WorkerErrorsAsyncVectorEnv(AsyncVectorEnv):
    """AsyncVectorEnv whose worker errors reach the trainer as the exception alone, marked with
    the env index and the worker's traceback (for error.log), instead of also being printed as
    three warnings with the traceback inside; the rest is Gymnasium's. (Overrides a private
    method of gymnasium 1.x, which pyproject pins below 2.)"""

    def _raise_if_errors(self, successes: Sequence[bool]) -> None:
        if all(successes):
            return
        errors = [self.error_queue.get() for _ in range(self.num_envs - sum(successes))]
        for index, *_ in errors:  # as Gymnasium does: a failed worker is shut down
            self.parent_pipes[index].close()
            self.parent_pipes[index] = None
        self._state = AsyncState.DEFAULT
        index, exctype, value, trace = errors[-1]
        error = exctype(value)
        error.ppokit_env_index = index
        error.ppokit_worker_traceback = trace
        raise error


def same_step_fix(env: gym.vector.VectorEnv) -> str:
    """How to build `env` again in SAME_STEP autoreset mode (its own id and count when known)."""
    spec = getattr(env, "spec", None)
    env_id = repr(spec.id) if spec is not None else "ID"
    return (
        f"gym.make_vec({env_id}, {env.num_envs}, vector_kwargs={{'autoreset_mode':"
        " gym.vector.AutoresetMode.SAME_STEP}) or SyncVectorEnv(fns,"
        " autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)"
    )


def check_same_step(env: gym.vector.VectorEnv | SerialVectorEnv) -> None:
    """Raise EnvError unless the vector env autoresets in SAME_STEP mode, the mode in which a
    step reports the observation an episode ended on (truncation bootstraps from it)."""
    mode = env.metadata.get("autoreset_mode")
    if mode in (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP.value):
        return
    if isinstance(mode, AutoresetMode):
        found = f"autoresets in {mode.name} mode"
    elif mode is None:
        found = "does not say its autoreset mode (metadata['autoreset_mode'])"
    else:
        found = f"has autoreset mode {mode!r}"
    raise EnvError(
        f"the vector env {found}; ppokit needs SAME_STEP, which reports the final observation"
        f" of an episode in the step that ends it (truncation bootstraps from it): build it with"
        f" {same_step_fix(env)}"
    )


class GymVecEnv:
    """Adapts a Gymnasium vector env to batched torch tensors on `device`.

    Built from env factories (`from_factories`); a registered id (`from_config`) is one way to
    get them. The constructor wraps a vector env that already autoresets in SAME_STEP mode (a
    user's `gym.make_vec(..., vector_kwargs={"autoreset_mode": SAME_STEP})`). `name` appears in
    error messages.
    """

    def __init__(
        self,
        env: gym.vector.VectorEnv | SerialVectorEnv,
        device: torch.device | str = "cpu",
        name: str | None = None,
    ) -> None:
        check_same_step(env)
        self.env = env
        self.device = torch.device(device)
        self.num_envs = env.num_envs
        self.env_id = name or env_name(env)
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

    @classmethod
    def from_factories(
        cls,
        env_fns: Sequence[Callable[[], gym.Env]],
        vectorization: str = "sync",
        device: torch.device | str = "cpu",
        name: str | None = None,
    ) -> GymVecEnv:
        """One env per factory, stepped in this process (sync) or in subprocesses (async).
        `name` defaults to the first env's (`env_name`) where it is in this process."""
        vec = vectorize(env_fns, vectorization, name or "env")
        if name is None and isinstance(vec, SerialVectorEnv):
            name = env_name(vec.envs[0])
        return cls(vec, device, name)

    @classmethod
    def from_config(cls, cfg: EnvConfig, device: torch.device | str = "cpu") -> GymVecEnv:
        """`cfg.num_envs` envs of the registered id `cfg.id` (with its time limit and kwargs)."""
        check_env_id(cfg.id)
        fns = [env_factory(cfg.id, cfg.max_episode_steps, cfg.kwargs) for _ in range(cfg.num_envs)]
        return cls.from_factories(fns, cfg.vectorization, device, cfg.id)

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

    def get_state(self) -> dict:
        """The state of every env (physics, wrappers, RNGs: `ppokit.envs.snapshot`) and the
        step counter, at a step boundary, for an exact resume. Raises EnvStateUnsupported for
        envs in subprocesses or a user's vector env, whose envs this process cannot reach."""
        if not isinstance(self.env, SerialVectorEnv):
            where = (
                "in subprocesses (env.vectorization async)"
                if isinstance(self.env, AsyncVectorEnv)
                else f"in a {type(self.env).__name__} built outside ppokit"
            )
            raise EnvStateUnsupported(
                f"the state of env {self.env_id!r} cannot be saved: its envs run {where}"
            )
        return {"steps": self.steps, "envs": [env_state(env) for env in self.env.envs]}

    def set_state(self, state: dict) -> None:
        """Restore a `get_state` into envs built from the same config (reset or not)."""
        if not isinstance(self.env, SerialVectorEnv):
            self.get_state()  # raises, saying why
        if len(state["envs"]) != self.num_envs:
            raise EnvError(
                f"the saved env state holds {len(state['envs'])} envs of {self.env_id!r}, this"
                f" vector env has {self.num_envs}"
            )
        for env, saved in zip(self.env.envs, state["envs"], strict=True):
            load_env_state(env, saved)
        self.steps = state["steps"]

    def close(self) -> None:
        self.env.close()

    def abort(self) -> None:
        """Close after a fault: subprocess envs are terminated, not waited for (a hung worker
        would never answer)."""
        if isinstance(self.env, AsyncVectorEnv):
            with warnings.catch_warnings():  # "close while waiting for step": we know
                warnings.simplefilter("ignore")
                self.env.close(terminate=True)
        else:
            self.env.close()
