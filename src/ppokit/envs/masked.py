"""Velocity-masked control tasks: partially observable versions of classic-control envs.

Hiding the velocities makes the task a POMDP that a feedforward policy cannot solve from one
observation; a recurrent policy must infer velocity from consecutive observations. These are the
standard memory benchmarks (sb3-contrib's CartPoleNoVel / PendulumNoVel).

Registered ids (importing ppokit.envs registers them):
- ``ppokit/CartPoleNoVel-v1``: CartPole-v1 observing [cart position, pole angle].
- ``ppokit/PendulumNoVel-v1``: Pendulum-v1 observing [cos(theta), sin(theta)].
"""

from __future__ import annotations

from collections.abc import Sequence

import gymnasium as gym
import numpy as np

CARTPOLE_NO_VEL = "ppokit/CartPoleNoVel-v1"
PENDULUM_NO_VEL = "ppokit/PendulumNoVel-v1"


class MaskObservation(gym.ObservationWrapper):
    """Keeps only the entries `keep` of a 1-D Box observation."""

    def __init__(self, env: gym.Env, keep: Sequence[int]) -> None:
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"MaskObservation needs a 1-D Box observation, got {space}")
        self.keep = np.asarray(keep, dtype=np.intp)
        self.observation_space = gym.spaces.Box(
            space.low[self.keep], space.high[self.keep], dtype=space.dtype
        )

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[self.keep]


def cartpole_no_velocity(**kwargs) -> gym.Env:
    """CartPole-v1 without the cart and pole velocities (obs: x, theta)."""
    return MaskObservation(gym.make("CartPole-v1", **kwargs).unwrapped, keep=[0, 2])


def pendulum_no_velocity(**kwargs) -> gym.Env:
    """Pendulum-v1 without the angular velocity (obs: cos theta, sin theta)."""
    return MaskObservation(gym.make("Pendulum-v1", **kwargs).unwrapped, keep=[0, 1])


def register() -> None:
    # The time limits of the originals (500 and 200 steps) are added by gym.make, as usual.
    if CARTPOLE_NO_VEL not in gym.registry:
        gym.register(
            CARTPOLE_NO_VEL,
            entry_point="ppokit.envs.masked:cartpole_no_velocity",
            max_episode_steps=500,
            reward_threshold=475.0,
        )
    if PENDULUM_NO_VEL not in gym.registry:
        gym.register(
            PENDULUM_NO_VEL,
            entry_point="ppokit.envs.masked:pendulum_no_velocity",
            max_episode_steps=200,
        )
