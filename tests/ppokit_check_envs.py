"""Deliberately broken envs for `ppokit check-env` (importable: tests/ is on sys.path).

Importing this module registers them under ``ppokit-check/``; the CLI reaches them as
``ppokit_check_envs:ppokit-check/NanObs-v0``, and the factories below as
``ppokit_check_envs:make_nan_obs``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

NAN_OBS = "ppokit-check/NanObs-v0"
UNSEEDED_RESET = "ppokit-check/UnseededReset-v0"
TUPLE_OBS = "ppokit-check/TupleObs-v0"
NAN_AT = 7  # NanObs puts a NaN into the observation of this step of every episode


class Walk(gym.Env):
    """A seeded 1-D random walk: obs [position, t], reward -|position|; the TimeLimit it is
    registered with truncates. The subclasses each break one thing."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.position, self.t = 0.0, 0

    def _obs(self):
        return np.array([self.position, self.t], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position, self.t = float(self.np_random.uniform(-1, 1)), 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        self.position += float(np.clip(action, -1, 1)[0]) + float(self.np_random.normal(0, 0.1))
        return self._obs(), -abs(self.position), False, False, {}


class NanObs(Walk):
    """A NaN in the observation at step NAN_AT of each episode."""

    def _obs(self):
        obs = super()._obs()
        if self.t == NAN_AT:
            obs[0] = np.nan
        return obs


class UnseededReset(Walk):
    """reset ignores its seed: the start position comes from a generator seeded once, at
    construction, from the OS."""

    def __init__(self) -> None:
        super().__init__()
        self.own_rng = np.random.default_rng()

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = float(self.own_rng.uniform(-1, 1))
        return self._obs(), {}


class TupleObs(Walk):
    """A Tuple observation space, which ppokit's policy does not read."""

    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Tuple(
            (gym.spaces.Box(-np.inf, np.inf, (1,), np.float32), gym.spaces.Discrete(1000))
        )

    def _obs(self):
        return (np.array([self.position], dtype=np.float32), min(self.t, 999))


def make_walk_without_time_limit() -> gym.Env:
    """A factory: the walk with no TimeLimit, so no episode ever ends."""
    return Walk()


def make_nan_obs() -> gym.Env:
    return gym.make(NAN_OBS)


def make_not_an_env() -> dict:
    return {"observation_space": None}


NOT_CALLABLE = 3

for _id, _entry in ((NAN_OBS, NanObs), (UNSEEDED_RESET, UnseededReset), (TUPLE_OBS, TupleObs)):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry, max_episode_steps=50)
