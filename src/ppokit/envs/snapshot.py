"""Saving and restoring the state of one Gymnasium env, wrappers included, for an exact resume.

`env_state(env)` walks the wrapper chain (`env` -> `env.env` -> ... -> the unwrapped env) and
saves each layer; `load_env_state(env, state)` puts the state into an env built the same way
(fresh or already used: everything it saves is overwritten). After it, the env continues exactly
as the saved one would have: the same observations, rewards, ends and reset draws.

Per layer:
- a layer that defines `state_dict()` / `load_state_dict(state)` saves itself (ppokit's own envs
  with state the generic rule cannot see, e.g. `AntLocomotionEnv`'s terrain in the MuJoCo model).
  The names are torch's, not `get_state`/`set_state`: Gymnasium's `MujocoEnv.set_state(qpos, qvel)`
  already takes the latter.
- otherwise its plain attributes are copied: numbers, strings, None, NumPy arrays and generators
  (the env's `np_random`, whose draws reset episodes), and tuples/lists/dicts/deques of them. That
  covers TimeLimit's elapsed steps, OrderEnforcing's and PassiveEnvChecker's flags,
  RecordEpisodeStatistics' counters, NormalizeObservation's running statistics and the
  classic-control envs (`state`, `last_u`, ...). Attributes that are not state (the inner env,
  spaces, the spec, renderers, functions a wrapper was given) are skipped; any other
  kind of attribute raises `EnvStateUnsupported` naming it, rather than resuming inexactly.
- a Gymnasium `MujocoEnv` also saves its physics with MuJoCo's own state API
  (mjSTATE_INTEGRATION: time, qpos, qvel, actuator state, warm start, controls, applied forces,
  ...) and restores it with `mj_setState` + `mj_forward`; `copy.deepcopy` of a MuJoCo env does not
  continue identically. The MjModel is not saved: an env that changes its model while running
  must save that itself (`state_dict`).

A state holds copies (never views of the env's buffers) and pickles, so it can go into a
checkpoint (torch.save; loading it needs `weights_only=False`, for the NumPy arrays).
"""

from __future__ import annotations

import copy
import functools
import sys
import types
from collections import deque
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.wrappers.utils import RunningMeanStd

from ppokit.errors import EnvError, EnvStateUnsupported

# Attributes that configure or display an env rather than hold its state; the env built for the
# resume has its own.
NOT_STATE = frozenset(
    {
        "env",  # the inner layer, saved as a layer of its own
        "_saved_kwargs",  # a wrapper's constructor arguments
        "_ezpickle_args",
        "_ezpickle_kwargs",
        "spec",
        "_cached_spec",
        "metadata",
        "_metadata",
        "render_mode",
        "screen",  # classic control's pygame rendering
        "clock",
        "isopen",
        "mujoco_renderer",
        "viewer",
    }
)
# Code, not state: the functions a wrapper was built with (TransformObservation's func, ...).
FUNCTIONS = (
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    functools.partial,
)
# Objects copied whole (their attributes are arrays and numbers): the normalization wrappers'
# running statistics.
COPYABLE = (RunningMeanStd,)
# gym.Env's own state, saved with every unwrapped env (also one that has `state_dict`).
ENV_BASE_STATE = ("_np_random", "_np_random_seed")


@dataclass(frozen=True)
class GeneratorState:
    """A NumPy Generator's bit generator, by name and state (restored in place where it can be,
    so that anything sharing the generator sees the restored stream)."""

    bit_generator: str
    state: dict


def vec_env_state(env: object) -> dict:
    """`env.get_state()` of a VecEnv (GymVecEnv, TorchVecEnv), or EnvStateUnsupported naming a
    VecEnv that has no get_state()/set_state() (a user's own)."""
    _check_vec_env(env)
    return env.get_state()


def load_vec_env_state(env: object, state: dict) -> None:
    """`env.set_state(state)` of a VecEnv, or EnvStateUnsupported as `vec_env_state` says."""
    _check_vec_env(env)
    env.set_state(state)


def _check_vec_env(env: object) -> None:
    if not (
        callable(getattr(env, "get_state", None)) and callable(getattr(env, "set_state", None))
    ):
        raise EnvStateUnsupported(
            f"the state of env {type(env).__name__} cannot be saved: it has no"
            " get_state()/set_state()"
        )


def env_state(env: gym.Env) -> dict:
    """The state of `env` and every wrapper around it, outermost first (see the module doc)."""
    return {"layers": [_layer_state(layer) for layer in _layers(env)]}


def load_env_state(env: gym.Env, state: dict) -> None:
    """Restore a state from `env_state` into `env`, which must have the same wrapper chain."""
    layers = _layers(env)
    saved = state["layers"]
    names = [type(layer).__name__ for layer in layers]
    saved_names = [s["type"] for s in saved]
    if names != saved_names:
        raise EnvError(
            f"the saved env state is of {' > '.join(saved_names)}, this env is"
            f" {' > '.join(names)}; build the env as the saved run did"
        )
    for layer, layer_state in zip(layers, saved, strict=True):
        _load_layer(layer, layer_state)


def _layers(env: gym.Env) -> list:
    layers = [env]
    while isinstance(layers[-1], gym.Wrapper):
        layers.append(layers[-1].env)
    return layers


def _own_state_dict(layer: object) -> bool:
    # Looked up on the class: a wrapper must not answer with its inner env's method.
    return callable(getattr(type(layer), "state_dict", None)) and callable(
        getattr(type(layer), "load_state_dict", None)
    )


def _is_mujoco_env(layer: object) -> bool:
    # Looked up in sys.modules so that this module never imports MuJoCo itself: an env can only be
    # a MujocoEnv when Gymnasium's MuJoCo module has been imported.
    module = sys.modules.get("gymnasium.envs.mujoco.mujoco_env")
    return module is not None and isinstance(layer, module.MujocoEnv)


def _layer_state(layer: object) -> dict:
    name = type(layer).__name__
    state: dict[str, Any] = {"type": name}
    mujoco_env = _is_mujoco_env(layer)
    if _own_state_dict(layer):
        state["own"] = copy.deepcopy(layer.state_dict())
        attrs = {k: v for k, v in vars(layer).items() if k in ENV_BASE_STATE}
    else:
        attrs = {
            k: v
            for k, v in vars(layer).items()
            if k not in NOT_STATE
            and not isinstance(v, (gym.Space, EnvSpec, *FUNCTIONS))
            and not (mujoco_env and k in ("model", "data"))
        }
    state["attrs"] = {k: _copy(v, f"{name}.{k}") for k, v in attrs.items()}
    if mujoco_env:
        state["mujoco"] = _mujoco_state(layer)
    return state


def _load_layer(layer: object, state: dict) -> None:
    for k, v in state["attrs"].items():
        current = getattr(layer, k, None)
        if (
            isinstance(v, GeneratorState)
            and isinstance(current, np.random.Generator)
            and type(current.bit_generator).__name__ == v.bit_generator
        ):
            current.bit_generator.state = copy.deepcopy(v.state)
        else:
            setattr(layer, k, _restore(v))
    if "own" in state:
        layer.load_state_dict(copy.deepcopy(state["own"]))
    if "mujoco" in state:  # last: the physics is forwarded in the model the layer has restored
        _load_mujoco_state(layer, state["mujoco"])


def _copy(value: Any, where: str) -> Any:
    """A copy of a plain value (no views, no shared containers); EnvStateUnsupported otherwise."""
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes, np.generic)):
        return value
    if isinstance(value, np.ndarray) and value.dtype != object:
        return value.copy()
    if isinstance(value, COPYABLE):
        return copy.deepcopy(value)
    if isinstance(value, np.random.Generator):
        bit_generator = value.bit_generator
        return GeneratorState(type(bit_generator).__name__, copy.deepcopy(bit_generator.state))
    if isinstance(value, (tuple, list)):
        return type(value)(_copy(v, f"{where}[{i}]") for i, v in enumerate(value))
    if isinstance(value, deque):
        return deque((_copy(v, f"{where}[{i}]") for i, v in enumerate(value)), value.maxlen)
    if isinstance(value, dict):
        return {k: _copy(v, f"{where}[{k!r}]") for k, v in value.items()}
    raise EnvStateUnsupported(
        f"cannot save the env's state: {where} is a {type(value).__module__}."
        f"{type(value).__qualname__}, which ppokit does not know how to copy (give the class"
        " state_dict()/load_state_dict() to save it)"
    )


def _restore(value: Any) -> Any:
    """A fresh copy of a saved value, generators rebuilt."""
    if isinstance(value, GeneratorState):
        generator = np.random.Generator(getattr(np.random, value.bit_generator)())
        generator.bit_generator.state = copy.deepcopy(value.state)
        return generator
    if isinstance(value, (np.ndarray, *COPYABLE)):
        return copy.deepcopy(value)
    if isinstance(value, (tuple, list)):
        return type(value)(_restore(v) for v in value)
    if isinstance(value, deque):
        return deque((_restore(v) for v in value), value.maxlen)
    if isinstance(value, dict):
        return {k: _restore(v) for k, v in value.items()}
    return value


def _mujoco_state(env: Any) -> np.ndarray:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    buffer = np.empty(mujoco.mj_stateSize(env.model, spec), dtype=np.float64)
    mujoco.mj_getState(env.model, env.data, buffer, spec)
    return buffer


def _load_mujoco_state(env: Any, buffer: np.ndarray) -> None:
    import mujoco

    spec = mujoco.mjtState.mjSTATE_INTEGRATION
    size = mujoco.mj_stateSize(env.model, spec)
    if buffer.shape != (size,):
        raise EnvError(
            f"the saved MuJoCo state of {type(env).__name__} has {buffer.size} numbers, this"
            f" model's has {size}; build the env as the saved run did"
        )
    mujoco.mj_setState(env.model, env.data, np.array(buffer, dtype=np.float64), spec)
    # The derived quantities (positions of bodies, contacts, ...) that the saved env had computed.
    mujoco.mj_forward(env.model, env.data)
