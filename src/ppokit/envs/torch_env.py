"""Batched torch-tensor simulators (GPU simulators and ppokit's reference tasks) as a `VecEnv`.

A *tensor simulator* steps all of its envs at once and hands over torch tensors that already
live on its device (Isaac Lab, Genesis, ManiSkill, a JAX simulator through DLPack, the tasks of
`ppokit.envs.reference`). Its shape is Gymnasium's vector-env API in tensors (`TensorSim`):

    reset(seed) -> obs | (obs, extras)
    step(actions) -> (obs, rewards, terminated, truncated, extras)      # Isaac Lab, Gymnasium
                   | (obs, rewards, dones, extras)                      # rsl_rl: extras["time_outs"]

with observations a tensor [N, ...] or a dict of named groups ({"policy": ..., "critic": ...}),
episodes reset inside `step` (the returned observation of an ended env is its next episode's
first one), and optionally ``extras["final_obs"]``: the observation each env's episode ended on
(all N rows; rows of envs that did not end are ignored).

`TorchVecEnv` adapts one to `VecEnv` without leaving the device and without reading it on the
host: dtypes and shapes are normalised with tensor ops, observation groups are selected by name,
and NaN/inf is detected with a flag accumulated on the device that the trainer reads once per
rollout (`check_finite`), naming the env and step. Where the simulator reports no final
observations, the step says so (`StepResult.bootstrap_pre_step`) and PPO bootstraps a truncated
episode from the value of the observation the action was taken in, as rsl_rl does
(docs/gpu.md explains the difference).

Tasks registered with `register_torch_env` are built by `make_env` for `env.id`, and also get a
one-env Gymnasium view (`SingleEnvView`) under the same id, so evaluation, export and
`ppokit.load_policy` treat them like any Gymnasium env.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from ppokit.envs.base import StepResult
from ppokit.errors import EnvError, EnvStateUnsupported
from ppokit.observations import Obs, storage_dtype


class TensorSim(Protocol):
    """What `TorchVecEnv` adapts: N envs stepped together on torch tensors (see module doc)."""

    num_envs: int
    device: torch.device | str
    single_observation_space: gym.Space
    single_action_space: gym.Space

    def reset(self, seed: int | None = None) -> Any: ...

    def step(self, actions: torch.Tensor) -> tuple: ...


class TorchVecEnv:
    """A `TensorSim` behind the `VecEnv` protocol; no host-device synchronisation per step.

    Args:
        sim: the simulator.
        obs_groups: which observation groups of a dict-observation simulator the policy sees:
            None keeps every group (a dict, or the tensor of a non-dict simulator); a name gives
            that group as a flat tensor (e.g. Isaac Lab's "policy"); a list gives a dict of
            those groups (e.g. ["policy", "critic"] with `policy.actor_keys: [policy]` for a
            privileged critic).
        name: the env id used in messages.
    """

    def __init__(
        self, sim: TensorSim, obs_groups: str | Sequence[str] | None = None, name: str = ""
    ) -> None:
        self.sim = sim
        self.name = name or type(sim).__name__
        self.num_envs = int(sim.num_envs)
        self.device = torch.device(sim.device)
        self.action_space = sim.single_action_space
        space = sim.single_observation_space
        self._group: str | None = None
        self._groups: list[str] | None = None
        if obs_groups is not None:
            if not isinstance(space, gym.spaces.Dict):
                raise EnvError(
                    f"{self.name}: obs_groups {obs_groups!r} needs a simulator with named"
                    f" observation groups; its observation space is {space}"
                )
            wanted = [obs_groups] if isinstance(obs_groups, str) else list(obs_groups)
            missing = [g for g in wanted if g not in space.spaces]
            if missing:
                raise EnvError(
                    f"{self.name} has no observation group {missing[0]!r}"
                    f" (its groups: {', '.join(space.spaces)})"
                )
            if isinstance(obs_groups, str):
                self._group = obs_groups
                space = space.spaces[obs_groups]
            else:
                self._groups = wanted
                space = gym.spaces.Dict({g: space.spaces[g] for g in wanted})
        self.observation_space = space
        self._dict_obs = isinstance(space, gym.spaces.Dict)
        if self._dict_obs:
            self._dtypes = {k: storage_dtype(s) for k, s in space.spaces.items()}
        self.steps = 0
        self._first_bad = torch.full((self.num_envs,), -1, dtype=torch.long, device=self.device)

    # --- tensors from the simulator ---------------------------------------------------------------
    def _select(self, obs: Any) -> Any:
        if self._group is not None:
            return obs[self._group]
        if self._groups is not None:
            return {g: obs[g] for g in self._groups}
        return obs

    def _obs(self, obs: Any) -> Obs:
        """The selected groups as float32 [N, ...] (uint8 images stay uint8) on the device."""
        obs = self._select(obs)
        if self._dict_obs:
            if not isinstance(obs, dict):
                raise EnvError(
                    f"{self.name} returned {type(obs).__name__} observations, not a dict"
                )
            return {k: _tensor(obs[k], dtype, self.device) for k, dtype in self._dtypes.items()}
        return _tensor(obs, torch.float32, self.device)

    def _flag(self, x: Any) -> torch.Tensor:
        return _tensor(x, torch.bool, self.device).reshape(self.num_envs)

    # --- NaN/inf on the device --------------------------------------------------------------------
    def _nonfinite_rows(self, obs: Obs) -> torch.Tensor:
        """[N] bool: the env's observation holds NaN/inf (tensor ops only, no host read)."""
        parts = obs.values() if isinstance(obs, dict) else (obs,)
        bad = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        for x in parts:
            if x.is_floating_point():
                bad = bad | ~torch.isfinite(x.reshape(self.num_envs, -1)).all(dim=1)
        return bad

    def _note_nonfinite(self, bad: torch.Tensor) -> None:
        """Remember the first step at which each env produced NaN/inf (read in check_finite)."""
        self._first_bad = torch.where((self._first_bad < 0) & bad, self.steps, self._first_bad)

    def check_finite(self) -> None:
        """Raise EnvError if any observation, reward or final observation since the last check
        held NaN/inf. One host read; the trainer calls it once per rollout."""
        first = self._first_bad
        if not bool((first >= 0).any()):
            return
        envs = torch.nonzero(first >= 0).flatten()
        step = int(first[envs].min())
        self._first_bad = torch.full_like(first, -1)
        raise EnvError(
            f"observations or rewards from {self.name} contain NaN/inf (first at vector step"
            f" {step}, in env index {envs[:10].tolist()}); fix the simulator or sanitise its"
            " output"
        )

    # --- VecEnv ----------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> Obs:
        out = self.sim.reset(seed=seed)
        obs = self._obs(out[0] if isinstance(out, tuple) else out)
        self._first_bad = torch.full_like(self._first_bad, -1)
        self._note_nonfinite(self._nonfinite_rows(obs))
        self.check_finite()
        return obs

    def step(self, actions: torch.Tensor) -> StepResult:
        out = self.sim.step(actions.to(self.device))
        if len(out) == 5:  # Gymnasium / Isaac Lab: obs, rewards, terminated, truncated, extras
            raw_obs, rewards, terminated, truncated, extras = out
            terminated, truncated = self._flag(terminated), self._flag(truncated)
        elif len(out) == 4:  # rsl_rl: obs, rewards, dones, extras with "time_outs"
            raw_obs, rewards, dones, extras = out
            time_outs = extras.get("time_outs") if isinstance(extras, dict) else None
            dones = self._flag(dones)
            truncated = (
                self._flag(time_outs) & dones if time_outs is not None else torch.zeros_like(dones)
            )
            terminated = dones & ~truncated
        else:
            raise EnvError(
                f"{self.name}.step returned {len(out)} values; expected (obs, rewards, terminated,"
                " truncated, extras) or (obs, rewards, dones, extras)"
            )
        extras = extras if isinstance(extras, dict) else {}
        self.steps += 1
        obs = self._obs(raw_obs)
        rewards = _tensor(rewards, torch.float32, self.device).reshape(self.num_envs)
        bad = self._nonfinite_rows(obs) | ~torch.isfinite(rewards)
        final_obs = None
        if extras.get("final_obs") is not None:
            final_obs = self._obs(extras["final_obs"])
            bad = bad | (self._nonfinite_rows(final_obs) & (terminated | truncated))
        self._note_nonfinite(bad)
        return StepResult(
            obs=obs,
            rewards=rewards,
            terminated=terminated,
            truncated=truncated,
            final_obs=final_obs,
            infos=extras,
            bootstrap_pre_step=final_obs is None,
        )

    # --- exact resume ----------------------------------------------------------------------------
    def get_state(self) -> dict:
        """The simulator's state (its `state_dict()`: every state tensor, step counter and RNG)
        and this adapter's counters, for an exact resume. Raises EnvStateUnsupported for a
        simulator without `state_dict()`/`load_state_dict()` (Isaac Lab, JAX, most others)."""
        self._check_state_support()
        return {
            "sim": self.sim.state_dict(),
            "steps": self.steps,
            "first_bad": self._first_bad.detach().clone(),
        }

    def set_state(self, state: dict) -> None:
        """Restore a `get_state` into a simulator built from the same config (reset or not)."""
        self._check_state_support()
        self.sim.load_state_dict(state["sim"])
        self.steps = state["steps"]
        self._first_bad = state["first_bad"].to(self.device).clone()

    def _check_state_support(self) -> None:
        sim = self.sim
        if not (
            callable(getattr(sim, "state_dict", None))
            and callable(getattr(sim, "load_state_dict", None))
        ):
            raise EnvStateUnsupported(
                f"the state of env {self.name!r} cannot be saved: its simulator"
                f" {type(self.sim).__name__} has no state_dict()/load_state_dict()"
            )

    def close(self) -> None:
        close = getattr(self.sim, "close", None)
        if close is not None:
            close()


def _tensor(x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor of `dtype` on `device` (a no-op for one already there)."""
    if not isinstance(x, torch.Tensor):
        x = torch.as_tensor(np.asarray(x))
    return x.to(device=device, dtype=dtype)


# ----------------------------------------------------------------------------------------------
# Registry of batched tasks, and their one-env Gymnasium view
# ----------------------------------------------------------------------------------------------

# env id -> "module:Class" of a TensorSim taking (num_envs, device, max_episode_steps, **kwargs)
TORCH_ENVS: dict[str, str] = {}
DEFAULT_MAX_STEPS: dict[str, int] = {}


def register_torch_env(env_id: str, entry_point: str, max_episode_steps: int) -> None:
    """Make `env_id` a batched torch task: `make_env` builds it as a `TorchVecEnv`, and Gymnasium
    knows a one-env view of it (for evaluation, export and `load_policy`)."""
    TORCH_ENVS[env_id] = entry_point
    DEFAULT_MAX_STEPS[env_id] = max_episode_steps
    if env_id not in gym.registry:
        gym.register(
            env_id,
            entry_point="ppokit.envs.torch_env:SingleEnvView",
            max_episode_steps=max_episode_steps,
            kwargs={"task": entry_point},
        )


def is_torch_env(env_id: str) -> bool:
    return env_id in TORCH_ENVS


def load_task(entry_point: str) -> Callable[..., Any]:
    module, _, name = entry_point.partition(":")
    return getattr(importlib.import_module(module), name)


def make_torch_env(
    env_id: str,
    num_envs: int,
    device: torch.device | str = "cpu",
    max_episode_steps: int | None = None,
    kwargs: dict | None = None,
) -> TorchVecEnv:
    """Build a registered batched task with `num_envs` envs on `device`."""
    task = load_task(TORCH_ENVS[env_id])
    steps = max_episode_steps if max_episode_steps is not None else DEFAULT_MAX_STEPS[env_id]
    try:
        sim = task(num_envs=num_envs, device=device, max_episode_steps=steps, **(kwargs or {}))
    except (TypeError, ValueError) as e:  # bad kwargs: unknown keys, values out of range
        raise EnvError(f"cannot build environment {env_id!r}: {e}") from None
    return TorchVecEnv(sim, name=env_id)


class SingleEnvView(gym.Env):
    """One env of a batched torch task as a Gymnasium env (NumPy in and out, on the CPU).

    The task runs without its own time limit; Gymnasium's TimeLimit (the registered
    max_episode_steps, or env.max_episode_steps) truncates, as for any Gymnasium env.
    """

    def __init__(self, task: str, render_mode: str | None = None, **kwargs: Any) -> None:
        if render_mode is not None:  # only tasks that render take the argument
            kwargs["render_mode"] = render_mode
        self.task = load_task(task)(num_envs=1, device="cpu", max_episode_steps=None, **kwargs)
        self.render_mode = render_mode
        self.observation_space = self.task.single_observation_space
        self.action_space = self.task.single_action_space

    @property
    def metadata(self) -> dict:  # type: ignore[override]
        """The task's (its render modes and fps); a property, so gym.make reads no class value."""
        return getattr(self.task, "metadata", None) or {"render_modes": []}

    def render(self) -> Any:
        if self.render_mode is None or not hasattr(self.task, "render"):
            return None
        return self.task.render()

    def close(self) -> None:
        close = getattr(self.task, "close", None)
        if close is not None:
            close()

    def reset(
        self, *, seed: int | None = None, options: dict | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        out = self.task.reset(seed=seed)
        obs = out[0] if isinstance(out, tuple) else out
        return self._numpy(obs), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        actions = torch.as_tensor(np.asarray(action, dtype=self.action_space.dtype))[None]
        obs, reward, terminated, truncated, extras = self.task.step(actions)
        ended = bool(terminated[0]) or bool(truncated[0])
        if ended and extras.get("final_obs") is not None:
            obs = extras["final_obs"]  # the task has already reset; Gymnasium reports the end
        return self._numpy(obs), float(reward[0]), bool(terminated[0]), bool(truncated[0]), {}

    def state_dict(self) -> dict:
        """The task's state (`ppokit.envs.snapshot` saves gym.Env's np_random with it)."""
        return self.task.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.task.load_state_dict(state)

    @staticmethod
    def _numpy(obs: Obs) -> Any:
        if isinstance(obs, dict):
            return {k: v[0].numpy() for k, v in obs.items()}
        return obs[0].numpy()
