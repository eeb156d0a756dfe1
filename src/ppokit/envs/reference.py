"""Reference batched tasks: N envs at once as torch tensor math, shipped with ppokit.

They are the GPU-simulator path without a GPU simulator: each task steps every env with a
handful of elementwise tensor ops on its device (CPU in CI, CUDA unchanged), resets ended episodes
itself, reports the observation they ended on in ``extras["final_obs"]``, and never reads a
tensor on the host. `ppokit train --env ppokit/TorchPointMass-v0` (or the `pointmass-4096`
preset) trains through `TorchVecEnv`; evaluation uses the tasks' one-env Gymnasium views.

- `TorchPointMass` (ppokit/TorchPointMass-v0): a 2-D point mass pushed towards a random goal;
  reward exp(-distance^2 / 0.1) per step, *terminated* when it leaves the arena, *truncated* after
  100 steps. Learns in a few updates at 4096 envs (the CI learning test).
- `TorchPendulum` (ppokit/TorchPendulum-v0): Gymnasium's Pendulum-v1 (dynamics, reward,
  observation, reset distribution; tests compare them step by step) in float32, truncated after
  200 steps. Harder: the swing-up needs many updates.

With ``privileged=True`` a task's observation is a dict of groups, ``{"policy": ..., "critic":
...}`` (the critic's group adds exact quantities: the pendulum's angle, the offset and distance
to the goal), the layout of a simulator with an asymmetric critic.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import torch

from ppokit.envs.torch_env import register_torch_env

POINT_MASS_ID = "ppokit/TorchPointMass-v0"
PENDULUM_ID = "ppokit/TorchPendulum-v0"


class TaskState:
    """`state_dict()`/`load_state_dict()` for a task whose state is the tensors named in
    `state_tensors` and its `generator` (the draws of resets), for an exact resume."""

    state_tensors: tuple[str, ...] = ()
    device: torch.device
    generator: torch.Generator

    def state_dict(self) -> dict:
        state = {name: getattr(self, name).detach().clone() for name in self.state_tensors}
        state["generator"] = self.generator.get_state()  # a new CPU tensor, also for CUDA
        return state

    def load_state_dict(self, state: dict) -> None:
        for name in self.state_tensors:
            setattr(self, name, state[name].to(self.device).clone())
        # A generator's state is a CPU tensor even for a CUDA generator (a checkpoint loaded
        # with map_location may have moved it).
        self.generator.set_state(state["generator"].cpu().clone())


class TorchPointMass(TaskState):
    """N point masses in the arena [-1, 1]^2, each pushed towards its own goal; see module doc.

    Observation [position (2), velocity (2), goal (2)]; action: a force in [-1, 1]^2;
    v <- 0.9 v + 0.2 a, x <- x + 0.1 v. Rewards are positive, so leaving the arena (a
    termination) forfeits the rest of the episode: the task needs termination handled as well as
    truncation.
    """

    state_tensors = ("position", "velocity", "goal", "elapsed")
    arena = 1.0
    start = 0.8  # positions and goals are drawn from [-start, start]^2

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        max_episode_steps: int | None = 100,
        privileged: bool = False,
    ) -> None:
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps
        self.privileged = privileged
        high = np.array([1.0, 1.0, 2.0, 2.0, 1.0, 1.0], dtype=np.float32)
        policy_space = gym.spaces.Box(-high, high, dtype=np.float32)
        if privileged:
            critic_high = np.concatenate([high, [2.0, 2.0, 3.0]]).astype(np.float32)
            self.single_observation_space: gym.Space = gym.spaces.Dict(
                {
                    "policy": policy_space,
                    "critic": gym.spaces.Box(-critic_high, critic_high, dtype=np.float32),
                }
            )
        else:
            self.single_observation_space = policy_space
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        self.position = torch.zeros(num_envs, 2, device=self.device)
        self.velocity = torch.zeros_like(self.position)
        self.goal = torch.zeros_like(self.position)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def _random_points(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(start positions, goals) for every env, uniform in [-start, start]^2."""
        u = torch.rand(2, self.num_envs, 2, device=self.device, generator=self.generator)
        points = (2 * u - 1) * self.start
        return points[0], points[1]

    def _obs(self, position: torch.Tensor, velocity: torch.Tensor, goal: torch.Tensor):
        obs = torch.cat([position, velocity, goal], dim=1)
        if not self.privileged:
            return obs
        offset = goal - position
        distance = offset.norm(dim=1, keepdim=True)
        return {"policy": obs, "critic": torch.cat([obs, offset, distance], dim=1)}

    def reset(self, seed: int | None = None) -> tuple[object, dict]:
        """Reset every env; `seed` seeds the task's generator (one stream for all envs)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.position, self.goal = self._random_points()
        self.velocity = torch.zeros_like(self.position)
        self.elapsed = torch.zeros_like(self.elapsed)
        return self._obs(self.position, self.velocity, self.goal), {}

    def step(self, actions: torch.Tensor) -> tuple:
        """Apply forces [N, 2]; returns (obs, rewards, terminated, truncated, extras) with the
        ended envs already reset and ``extras["final_obs"]`` their last observation."""
        force = actions.reshape(self.num_envs, 2).clamp(-1.0, 1.0)
        velocity = 0.9 * self.velocity + 0.2 * force
        position = self.position + 0.1 * velocity
        rewards = torch.exp(-(position - self.goal).square().sum(dim=1) / 0.1)
        terminated = (position.abs() > self.arena).any(dim=1)
        elapsed = self.elapsed + 1
        if self.max_episode_steps is None:
            truncated = torch.zeros_like(terminated)
        else:
            truncated = (elapsed >= self.max_episode_steps) & ~terminated
        final_obs = self._obs(position, velocity, self.goal)
        # Auto-reset with tensor selects: no host read of which envs ended.
        ended = terminated | truncated
        new_position, new_goal = self._random_points()
        self.position = torch.where(ended.unsqueeze(1), new_position, position)
        self.velocity = torch.where(ended.unsqueeze(1), 0.0, velocity)
        self.goal = torch.where(ended.unsqueeze(1), new_goal, self.goal)
        self.elapsed = torch.where(ended, 0, elapsed)
        obs = self._obs(self.position, self.velocity, self.goal)
        return obs, rewards, terminated, truncated, {"final_obs": final_obs}


class TorchPendulum(TaskState):
    """N pendulums (swing up and balance), stepped together; see the module doc."""

    state_tensors = ("theta", "theta_dot", "elapsed")

    max_speed = 8.0
    max_torque = 2.0
    dt = 0.05
    mass = 1.0
    length = 1.0

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        max_episode_steps: int | None = 200,
        g: float = 10.0,
        privileged: bool = False,
    ) -> None:
        self.num_envs = num_envs
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps
        self.g = g
        self.privileged = privileged
        high = np.array([1.0, 1.0, self.max_speed], dtype=np.float32)
        policy_space = gym.spaces.Box(-high, high, dtype=np.float32)
        if privileged:
            critic_high = np.array([1.0, 1.0, self.max_speed, math.pi], dtype=np.float32)
            self.single_observation_space: gym.Space = gym.spaces.Dict(
                {
                    "policy": policy_space,
                    "critic": gym.spaces.Box(-critic_high, critic_high, dtype=np.float32),
                }
            )
        else:
            self.single_observation_space = policy_space
        self.single_action_space = gym.spaces.Box(
            -self.max_torque, self.max_torque, (1,), np.float32
        )
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(0)
        self.theta = torch.zeros(num_envs, device=self.device)
        self.theta_dot = torch.zeros(num_envs, device=self.device)
        self.elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def _random_states(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Pendulum-v1's reset: theta ~ U(-pi, pi), theta_dot ~ U(-1, 1), for every env."""
        u = torch.rand(2, self.num_envs, device=self.device, generator=self.generator)
        return (2 * u[0] - 1) * math.pi, 2 * u[1] - 1

    def _obs(self, theta: torch.Tensor, theta_dot: torch.Tensor) -> torch.Tensor | dict:
        obs = torch.stack([theta.cos(), theta.sin(), theta_dot], dim=1)
        if not self.privileged:
            return obs
        angle = angle_normalize(theta).unsqueeze(1)
        return {"policy": obs, "critic": torch.cat([obs, angle], dim=1)}

    def reset(self, seed: int | None = None) -> tuple[object, dict]:
        """Reset every env; `seed` seeds the task's generator (one stream for all envs)."""
        if seed is not None:
            self.generator.manual_seed(seed)
        self.theta, self.theta_dot = self._random_states()
        self.elapsed = torch.zeros_like(self.elapsed)
        return self._obs(self.theta, self.theta_dot), {}

    def step(self, actions: torch.Tensor) -> tuple:
        """Apply torques [N, 1]; returns (obs, rewards, terminated, truncated, extras) with the
        ended envs already reset and ``extras["final_obs"]`` their last observation."""
        u = actions.reshape(self.num_envs).clamp(-self.max_torque, self.max_torque)
        theta, theta_dot = self.theta, self.theta_dot
        costs = angle_normalize(theta).square() + 0.1 * theta_dot.square() + 0.001 * u.square()
        accel = (
            3 * self.g / (2 * self.length) * theta.sin() + 3.0 / (self.mass * self.length**2) * u
        )
        theta_dot = (theta_dot + accel * self.dt).clamp(-self.max_speed, self.max_speed)
        theta = theta + theta_dot * self.dt
        elapsed = self.elapsed + 1
        if self.max_episode_steps is None:
            truncated = torch.zeros_like(elapsed, dtype=torch.bool)
        else:
            truncated = elapsed >= self.max_episode_steps
        terminated = torch.zeros_like(truncated)
        final_obs = self._obs(theta, theta_dot)
        # Auto-reset with tensor selects: no host read of which envs ended.
        new_theta, new_theta_dot = self._random_states()
        self.theta = torch.where(truncated, new_theta, theta)
        self.theta_dot = torch.where(truncated, new_theta_dot, theta_dot)
        self.elapsed = torch.where(truncated, 0, elapsed)
        obs = self._obs(self.theta, self.theta_dot)
        return obs, -costs, terminated, truncated, {"final_obs": final_obs}


def angle_normalize(x: torch.Tensor) -> torch.Tensor:
    """The angle in [-pi, pi)."""
    return torch.remainder(x + math.pi, 2 * math.pi) - math.pi


register_torch_env(POINT_MASS_ID, "ppokit.envs.reference:TorchPointMass", max_episode_steps=100)
register_torch_env(PENDULUM_ID, "ppokit.envs.reference:TorchPendulum", max_episode_steps=200)
