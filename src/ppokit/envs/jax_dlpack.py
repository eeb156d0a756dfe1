"""JAX simulators (MuJoCo Playground, MJX, Brax) as a ppokit `VecEnv`, arrays handed over by DLPack.

A JAX simulator keeps its state in JAX arrays on the accelerator. This adapter exchanges them
with torch through DLPack, which shares the memory instead of copying it (`torch.from_dlpack` on
the simulator's outputs, `jax.dlpack.from_dlpack` on the actions), so a GPU simulator and the
learner meet on the GPU with no host round trip. JAX is imported only when needed; tests use
NumPy arrays, which speak DLPack the same way, as a fake with the same shapes.

The simulator is given as two functions over Brax's `State` (fields ``obs``, ``reward``,
``done``, ``info["truncation"]``), already batched over the envs, with episodes auto-reset:

    reset_fn(seed: int) -> State          # e.g. lambda s: jit_reset(jax.random.split(key(s), N))
    step_fn(state, actions) -> State      # e.g. jax.jit(env.step)

`JaxVecEnv.from_brax(env, num_envs)` builds them for an env wrapped by Brax's or MuJoCo
Playground's training wrappers (``mujoco_playground.wrapper.wrap_for_brax_training``: vmap,
episode length, auto-reset):

    from mujoco_playground import registry, wrapper
    env = wrapper.wrap_for_brax_training(registry.load("CartpoleBalance"), episode_length=1000)
    vec = JaxVecEnv.from_brax(env, num_envs=4096)
    ppokit.train(ppokit.load_config("pointmass-4096", overrides={"env.id": "CartpoleBalance",
        "env.num_envs": 4096, "device": str(vec.device), "eval.episodes": 0}), env=vec)

Notes:
- ``done`` ends an episode; ``info["truncation"]`` marks the ends that were time limits, so
  terminated = done and not truncation, truncated = done and truncation.
- These simulators report no final observations: truncated episodes bootstrap from V(observation
  the action was taken in), rsl_rl's approximation (docs/gpu.md).
- Tensors from DLPack alias JAX's buffers. ppokit never writes to them, and copies observations
  into its rollout buffer before the next step, so a ``step_fn`` jitted with donated arguments
  is safe.
- A dict observation (Playground's ``{"state": ..., "privileged_state": ...}``) becomes a dict
  of groups; ``obs_groups`` selects them as for `TorchVecEnv`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit.envs.torch_env import TorchVecEnv
from ppokit.errors import EnvError


def to_torch(x: Any) -> Any:
    """A DLPack-capable array (or dict of them) as torch tensors sharing its memory."""
    if isinstance(x, dict):
        return {k: to_torch(v) for k, v in x.items()}
    return torch.from_dlpack(x)


def jax_from_torch(tensor: torch.Tensor) -> Any:
    """A torch tensor as a JAX array sharing its memory (jax.dlpack)."""
    import jax.dlpack

    tensor = tensor.contiguous()
    try:
        return jax.dlpack.from_dlpack(tensor)
    except TypeError:  # JAX releases that only take a DLPack capsule
        return jax.dlpack.from_dlpack(torch.utils.dlpack.to_dlpack(tensor))


class _JaxSim:
    """A batched JAX simulator in the `TensorSim` shape."""

    def __init__(
        self,
        reset_fn: Callable[[int], Any],
        step_fn: Callable[[Any, Any], Any],
        num_envs: int,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device | str | None,
        to_jax: Callable[[torch.Tensor], Any],
    ) -> None:
        self.reset_fn, self.step_fn, self.to_jax = reset_fn, step_fn, to_jax
        self.num_envs = num_envs
        self.single_observation_space = observation_space
        self.single_action_space = action_space
        self.state: Any = None
        if device is None:  # where the simulator's arrays live
            first = self.reset(0)
            device = (next(iter(first.values())) if isinstance(first, dict) else first).device
        self.device = torch.device(device)

    def reset(self, seed: int | None = None) -> Any:
        self.state = self.reset_fn(0 if seed is None else seed)
        return to_torch(self.state.obs)

    def step(self, actions: torch.Tensor) -> tuple:
        if self.state is None:
            raise EnvError("JaxVecEnv.step before reset")
        self.state = state = self.step_fn(self.state, self.to_jax(actions))
        done = to_torch(state.done) > 0.5
        info = getattr(state, "info", None) or {}
        if "truncation" in info:
            time_limit = to_torch(info["truncation"]) > 0.5
        else:
            time_limit = torch.zeros_like(done)
        truncated = done & time_limit
        return to_torch(state.obs), to_torch(state.reward), done & ~time_limit, truncated, {}


class JaxVecEnv(TorchVecEnv):
    """A batched JAX simulator behind the `VecEnv` protocol (see the module doc).

    Args:
        reset_fn, step_fn: the simulator (module doc).
        num_envs: how many envs its batch holds.
        observation_space, action_space: one env's spaces (a Dict of Box for dict observations).
        device: where its arrays live (default: found with one reset).
        obs_groups: as for `TorchVecEnv`.
        to_jax: torch tensor -> the simulator's array type (default: `jax_from_torch`).
    """

    def __init__(
        self,
        reset_fn: Callable[[int], Any],
        step_fn: Callable[[Any, Any], Any],
        num_envs: int,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device | str | None = None,
        obs_groups: str | Sequence[str] | None = None,
        to_jax: Callable[[torch.Tensor], Any] | None = None,
        name: str = "jax simulator",
    ) -> None:
        sim = _JaxSim(
            reset_fn,
            step_fn,
            num_envs,
            observation_space,
            action_space,
            device,
            to_jax or jax_from_torch,
        )
        super().__init__(sim, obs_groups=obs_groups, name=name)

    @classmethod
    def from_brax(cls, env: Any, num_envs: int, **kwargs: Any) -> JaxVecEnv:
        """Adapt a Brax/MuJoCo Playground env wrapped for training (batched reset over a key per
        env, auto-reset, `observation_size`, `action_size`, actions in [-1, 1])."""
        import jax

        reset, step = jax.jit(env.reset), jax.jit(env.step)

        def reset_fn(seed: int) -> Any:
            return reset(jax.random.split(jax.random.PRNGKey(seed), num_envs))

        kwargs.setdefault("name", type(getattr(env, "unwrapped", env)).__name__)
        return cls(
            reset_fn,
            step,
            num_envs,
            brax_observation_space(env.observation_size),
            gym.spaces.Box(-1.0, 1.0, (int(env.action_size),), np.float32),
            **kwargs,
        )


def brax_observation_space(size: Any) -> gym.Space:
    """A Brax `observation_size` (an int, a shape, or a dict of them) as one env's space."""
    if isinstance(size, dict):
        return gym.spaces.Dict({k: brax_observation_space(v) for k, v in size.items()})
    shape = (int(size),) if isinstance(size, (int, np.integer)) else tuple(int(d) for d in size)
    return gym.spaces.Box(-np.inf, np.inf, shape, np.float32)
