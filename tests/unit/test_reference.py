"""The reference batched tasks: Pendulum-v1 as tensor math (checked against Gymnasium's) and
the point mass (termination, truncation, final observations, groups)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from ppokit.envs.reference import TorchPendulum, TorchPointMass


def test_pendulum_matches_gymnasium_step_by_step():
    ours = TorchPendulum(num_envs=3, max_episode_steps=None)
    theirs = [gym.make("Pendulum-v1").unwrapped for _ in range(3)]
    ours.reset(seed=0)
    for i, env in enumerate(theirs):
        env.reset(seed=i)
        env.state = np.array([float(ours.theta[i]), float(ours.theta_dot[i])])
    rng = np.random.default_rng(0)
    for _ in range(60):
        actions = rng.uniform(-2.5, 2.5, size=(3, 1)).astype(np.float32)  # beyond the bounds too
        obs, rewards, terminated, truncated, _ = ours.step(torch.as_tensor(actions))
        for i, env in enumerate(theirs):
            want_obs, want_reward, *_ = env.step(actions[i])
            np.testing.assert_allclose(obs[i].numpy(), want_obs, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(float(rewards[i]), want_reward, rtol=1e-4, atol=1e-4)
        assert not terminated.any() and not truncated.any()


def test_pendulum_reset_distribution_and_time_limit():
    env = TorchPendulum(num_envs=2000, max_episode_steps=4)
    obs, _ = env.reset(seed=1)
    assert obs.shape == (2000, 3)
    assert env.theta.abs().max() <= np.pi and env.theta_dot.abs().max() <= 1.0
    assert env.theta.std() > 1.5  # spread over [-pi, pi]
    for step in range(4):
        obs, _, terminated, truncated, extras = env.step(torch.zeros(2000, 1))
        assert truncated.all() == (step == 3) and not terminated.any()
    assert not torch.allclose(obs, extras["final_obs"])  # reset, final obs kept apart
    again, _ = TorchPendulum(num_envs=2000).reset(seed=1)
    torch.testing.assert_close(again, TorchPendulum(num_envs=2000).reset(seed=1)[0])


def test_point_mass_terminates_outside_the_arena_and_truncates_at_the_limit():
    env = TorchPointMass(num_envs=4, max_episode_steps=50)
    env.reset(seed=0)
    env.position = torch.tensor([[0.99, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    env.goal = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    env.elapsed = torch.tensor([0, 0, 0, 49])
    push = torch.tensor([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    obs, rewards, terminated, truncated, extras = env.step(push)
    assert terminated.tolist() == [True, False, False, False]
    assert truncated.tolist() == [False, False, False, True]
    final = extras["final_obs"]
    assert final[0, 0] > 1.0 and final[0, 2] > 0  # left the arena, moving out
    assert torch.equal(obs[1], final[1]) and torch.equal(obs[2], final[2])  # not reset
    assert env.elapsed.tolist() == [0, 1, 1, 0]
    torch.testing.assert_close(rewards[1], torch.tensor(1.0))  # on its goal
    torch.testing.assert_close(rewards[2], torch.exp(torch.tensor(-0.5 / 0.1)))


def test_privileged_groups():
    env = TorchPointMass(num_envs=3, privileged=True)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"policy", "critic"}
    assert obs["policy"].shape == (3, 6) and obs["critic"].shape == (3, 9)
    torch.testing.assert_close(obs["critic"][:, 6:8], env.goal - env.position)
    assert env.single_observation_space["critic"].shape == (9,)
    pendulum = TorchPendulum(num_envs=2, privileged=True)
    obs, _ = pendulum.reset(seed=0)
    torch.testing.assert_close(obs["critic"][:, 3], pendulum.theta)
