"""Environments built outside ppokit and handed to `Trainer(cfg, env=...)` / `ppokit.train`.

Four kinds are accepted (docs/training.md, "Bring your own environment"):

- a callable with no arguments that returns a `gymnasium.Env`: ppokit builds `env.num_envs` of
  them, in this process or in subprocesses per `env.vectorization`, exactly as it builds a
  registered id;
- a `gymnasium.Env` instance: one env (`env.num_envs` must be 1), stepped in this process;
- a `gymnasium.vector.VectorEnv` that autoresets in SAME_STEP mode: wrapped as is;
- a ppokit `VecEnv` (`TorchVecEnv`, `IsaacLabVecEnv`, ...): used as is.

The three Gymnasium kinds become a `GymVecEnv`, so they get its checks (every env has the same
spaces; NaN/inf observations and rewards name the env and step) and its final observations for
truncation bootstrapping. `env.id`, `env.kwargs` and `env.max_episode_steps` say how ppokit
makes a registered id; they do not apply to an env given here.

The final evaluation needs more envs of the same kind: a callable makes them, and an instance or
vector env whose `spec` lets `gym.make(spec)` rebuild one (anything made by `gym.make` or
`gym.make_vec`). `ExternalEnv.make_one` is that factory, or None with the reason in `no_eval`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import torch
from gymnasium.envs.registration import EnvSpec

from ppokit.config import EnvConfig
from ppokit.envs.base import VecEnv
from ppokit.envs.gym_env import GymVecEnv, env_name
from ppokit.errors import ConfigError, EnvError

ACCEPTED = (
    "a callable returning a gymnasium.Env, a gymnasium.Env instance (env.num_envs 1), a"
    " gymnasium.vector.VectorEnv in SAME_STEP autoreset mode, or a ppokit VecEnv"
)

# Keys `gym.make_vec` adds to the spec of the vector env it returns; one env is made without them.
VECTOR_SPEC_KWARGS = ("num_envs", "vectorization_mode", "vector_kwargs", "wrappers")
# `gym.make`'s own arguments, which `gym.make_vec` records among the env's kwargs.
MAKE_ARGS = ("max_episode_steps", "disable_env_checker")


@dataclass
class ExternalEnv:
    """A given env as a VecEnv, the name of the run it trains, and how to make one more of it."""

    env: VecEnv
    name: str  # the spec id, else the class name
    make_one: Callable[[], gym.Env] | None  # one more env (final evaluation); None: cannot
    no_eval: str = ""  # why make_one is None


class CheckedFactory:
    """A user's env factory whose result is checked to be a `gymnasium.Env`; remembers the name
    of the first env it made (in this process: with async vectorization Gymnasium makes one
    there to read the spaces)."""

    def __init__(self, fn: Callable[[], gym.Env]) -> None:
        self.fn = fn
        self.name: str | None = None

    def __call__(self) -> gym.Env:
        env = self.fn()
        if not isinstance(env, gym.Env):
            raise EnvError(
                f"the env factory {describe(self.fn)} returned {type(env).__name__}, not a"
                " gymnasium.Env"
            )
        if self.name is None:
            self.name = env_name(env)
        return env


def describe(fn: object) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__name__
    module = getattr(fn, "__module__", None)
    return f"{module}:{name}" if module else name


def single_env_factory(spec: EnvSpec) -> Callable[[], gym.Env]:
    """`gym.make(spec)`; for the spec of a `gym.make_vec` vector env, one env of it: its vector
    arguments dropped, the arguments `make_vec` passed on to `gym.make` given to it again, its
    per-env wrappers applied."""
    kwargs = dict(spec.kwargs)
    wrappers = kwargs.pop("wrappers", None) or ()
    for key in VECTOR_SPEC_KWARGS:
        kwargs.pop(key, None)
    make_args = {k: kwargs.pop(k) for k in MAKE_ARGS if k in kwargs}
    single = dataclasses.replace(spec, kwargs=kwargs)

    def make() -> gym.Env:
        env = gym.make(single, **make_args)
        for wrapper in wrappers:
            env = wrapper(env)
        return env

    return make


def adapt_external_env(
    env: object, cfg: EnvConfig, device: torch.device | str = "cpu"
) -> ExternalEnv:
    """The VecEnv for an env of one of the accepted kinds (module docstring); one-line errors for
    an instance with `cfg.num_envs` != 1, a vector env not in SAME_STEP mode, or another kind."""
    if isinstance(env, gym.vector.VectorEnv):
        vec = GymVecEnv(env, device, env_name(env))  # raises unless SAME_STEP, naming the fix
        if env.spec is not None:
            return ExternalEnv(vec, vec.env_id, single_env_factory(env.spec))
        return ExternalEnv(
            vec,
            vec.env_id,
            None,
            "the vector env has no spec to rebuild it from (pass a callable that makes one env,"
            " or make the vector env with gym.make_vec)",
        )
    if isinstance(env, gym.Env):
        if cfg.num_envs != 1:
            raise ConfigError(
                f"a gymnasium.Env instance is one env but env.num_envs is {cfg.num_envs}; pass a"
                " callable that makes the env (ppokit then builds env.num_envs of them) or set"
                " env.num_envs 1"
            )
        name = env_name(env)
        vec = GymVecEnv.from_factories([lambda: env], "sync", device, name)
        if env.spec is not None:
            return ExternalEnv(vec, name, single_env_factory(env.spec))
        return ExternalEnv(
            vec,
            name,
            None,
            f"the {name} instance has no spec to rebuild it from (pass a callable that makes"
            " the env, or make it with gym.make)",
        )
    if isinstance(env, VecEnv):
        name = getattr(env, "name", None) or getattr(env, "env_id", None) or env_name(env)
        return ExternalEnv(env, name, None, f"ppokit cannot make more of a {type(env).__name__}")
    if callable(env):
        factory = CheckedFactory(env)
        fns = [factory] * cfg.num_envs
        vec = GymVecEnv.from_factories(fns, cfg.vectorization, device, describe(env))
        vec.env_id = factory.name or describe(env)
        return ExternalEnv(vec, vec.env_id, factory)
    raise EnvError(f"env= is an object of type {type(env).__name__}; ppokit accepts {ACCEPTED}")
