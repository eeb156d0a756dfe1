"""Tiny deterministic Gymnasium envs for tests, registered under the ``ppokit-test/`` namespace.

Importing this module registers them. Subprocesses (the CLI tests) reach them with the
``module:env_id`` form, e.g. ``--env ppokit_test_envs:ppokit-test/Countdown-v0`` with this
folder on PYTHONPATH.
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

COUNTDOWN = "ppokit-test/Countdown-v0"
MATRIX_ACTION = "ppokit-test/MatrixAction-v0"
COUNTDOWN_MAX_STEPS = 6  # TimeLimit of the registered Countdown (truncation)


class Countdown(gym.Env):
    """Observation ``[t, seed]``: the step count within the episode and the env's first seed.

    Reward is 1 per step. With ``terminate_at`` set, the episode terminates when t reaches
    ``terminate_at`` (plus ``seed % 2`` when ``stagger``, so envs of one vector end apart);
    otherwise only the TimeLimit (``max_episode_steps``) ends it, as a truncation.
    ``nan_at``/``nan_in``/``nan_seed`` inject a NaN (``nan_value``) into the observation or reward
    at step ``nan_at`` of the env whose first seed is ``nan_seed``.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        terminate_at: int | None = None,
        stagger: bool = False,
        nan_at: int | None = None,
        nan_in: str = "obs",
        nan_seed: int | None = None,
        nan_value: float = float("nan"),
    ) -> None:
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.terminate_at = terminate_at
        self.stagger = stagger
        self.nan_at, self.nan_in, self.nan_seed, self.nan_value = (
            nan_at,
            nan_in,
            nan_seed,
            nan_value,
        )
        self.first_seed = 0
        self.t = 0

    def _obs(self) -> np.ndarray:
        return np.array([self.t, self.first_seed], dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.first_seed = seed
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        obs, reward = self._obs(), 1.0
        if self.nan_at == self.t and self.nan_seed in (None, self.first_seed):
            if self.nan_in == "obs":
                obs[0] = self.nan_value
            else:
                reward = self.nan_value
        terminated = False
        if self.terminate_at is not None:
            terminated = self.t >= self.terminate_at + (self.first_seed % 2 if self.stagger else 0)
        return obs, reward, terminated, False, {}


class MatrixAction(gym.Env):
    """A 2x2 Box action space: a kind the MLP policy does not support."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2, 2), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        return np.zeros(3, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(3, dtype=np.float32), 0.0, False, False, {}


def _register(env_id: str, entry_point: type, **kwargs) -> None:
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=entry_point, disable_env_checker=True, **kwargs)


_register(COUNTDOWN, Countdown, max_episode_steps=COUNTDOWN_MAX_STEPS)
_register(MATRIX_ACTION, MatrixAction, max_episode_steps=10)


DICT_OBS = "ppokit-test/DictObs-v0"
DICT_OBS_MAX_STEPS = 5


class DictObs(gym.Env):
    """Dict observation {"image": uint8 (1, 12, 12), "privileged": (2,), "state": (3,)}.

    ``state`` is ``[t, first_seed, 0]``, ``image`` is filled with t, ``privileged`` is
    ``[seed, -t]``. Reward is 1 per step; the TimeLimit (``max_episode_steps``) truncates;
    ``terminate_at`` terminates. ``nan_at`` puts a NaN into ``privileged`` at that step.
    """

    metadata = {"render_modes": []}

    def __init__(self, terminate_at: int | None = None, nan_at: int | None = None) -> None:
        self.observation_space = gym.spaces.Dict(
            {
                "state": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
                "privileged": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
                "image": gym.spaces.Box(0, 255, (1, 12, 12), np.uint8),
            }
        )
        self.action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.terminate_at, self.nan_at = terminate_at, nan_at
        self.first_seed = 0
        self.t = 0

    def _obs(self) -> dict:
        privileged = np.array([self.first_seed, -self.t], dtype=np.float32)
        if self.nan_at == self.t:
            privileged[0] = np.nan
        return {
            "state": np.array([self.t, self.first_seed, 0.0], dtype=np.float32),
            "privileged": privileged,
            "image": np.full((1, 12, 12), self.t % 256, dtype=np.uint8),
        }

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.first_seed = seed
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        self.t += 1
        terminated = self.terminate_at is not None and self.t >= self.terminate_at
        return self._obs(), 1.0, terminated, False, {}


_register(DICT_OBS, DictObs, max_episode_steps=DICT_OBS_MAX_STEPS)


FAULTY = "ppokit-test/Faulty-v0"


class Faulty(gym.Env):
    """A well-behaved 3-dim env until step ``at`` of the env whose first seed is ``seed_of``
    (env index 1 of a vector reset with seed s is seeded s + 1), which then misbehaves as
    ``fault`` says: ``nan_obs``, ``inf_reward``, ``raise`` (ValueError), ``wrong_shape`` (an
    observation of 2 numbers), ``wrong_dtype`` (strings), ``slow`` (each step sleeps
    ``seconds``), ``hang`` (the step sleeps ``seconds``, long). Steps count over episodes."""

    metadata = {"render_modes": []}

    def __init__(self, fault: str = "none", at: int = 10, seed_of: int | None = None,
                 seconds: float = 3600.0) -> None:  # fmt: skip
        self.observation_space = gym.spaces.Box(-10.0, 10.0, (3,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.fault, self.at, self.seed_of, self.seconds = fault, at, seed_of, seconds
        self.first_seed: int | None = None
        self.steps = 0
        self.x = np.zeros(3, dtype=np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None and self.first_seed is None:
            self.first_seed = seed
        self.x = self.np_random.uniform(-1, 1, 3).astype(np.float32)
        return self.x.copy(), {}

    def step(self, action):
        self.steps += 1
        self.x = np.clip(self.x + 0.1 * float(np.asarray(action).ravel()[0]), -10, 10)
        obs, reward = self.x.copy(), float(-np.square(self.x).sum())
        mine = self.seed_of is None or self.seed_of == self.first_seed
        if self.fault == "slow":
            time.sleep(self.seconds)
        elif mine and self.steps >= self.at:
            if self.fault == "nan_obs":
                obs[1] = np.nan
            elif self.fault == "inf_reward":
                reward = float("inf")
            elif self.fault == "raise":
                raise ValueError(f"simulated physics blew up at step {self.steps}")
            elif self.fault == "wrong_shape":
                obs = obs[:2]
            elif self.fault == "wrong_dtype":
                obs = np.array(["a", "b", "c"])
            elif self.fault == "hang":
                time.sleep(self.seconds)
        return obs, reward, False, False, {}


_register(FAULTY, Faulty, max_episode_steps=50)


SLOW_CARTPOLE = "ppokit-test/SlowCartPole-v0"


class SlowCartPole(CartPoleEnv):
    """CartPole-v1 whose every step also sleeps ``seconds``: a short training that still takes
    seconds of wall time on any machine, so a test can stop it part-way (a tuner's pruner) and see
    that it stopped, however fast the CPU runs the rest."""

    def __init__(self, seconds: float = 0.002, **kwargs) -> None:
        super().__init__(**kwargs)
        self.seconds = seconds

    def step(self, action):
        time.sleep(self.seconds)
        return super().step(action)


_register(SLOW_CARTPOLE, SlowCartPole, max_episode_steps=500)
