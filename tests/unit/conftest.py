"""Shared helpers of the unit tests: seeding, a PPO built without an env, fake rollouts.

Helpers are handed out as fixtures (``make_ppo``, ``collect``) rather than imported, so the tests do
not depend on how pytest puts test directories on sys.path.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.algo.ppo import PPO
from ppokit.config import PolicyConfig, TrainConfig, validate
from ppokit.envs.base import StepResult
from ppokit.nn.actor_critic import ActorCritic


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    np.random.seed(0)


def box(dim: int, low: float = -1.0, high: float = 1.0) -> gym.spaces.Box:
    return gym.spaces.Box(low, high, (dim,), np.float32)


def small_policy(**kwargs: Any) -> PolicyConfig:
    base = {"actor_hidden": [16, 16], "critic_hidden": [16, 16]}
    base.update(kwargs)
    return PolicyConfig(**base)


def build_ppo(
    obs_dim: int = 3,
    action_space: gym.Space | None = None,
    num_envs: int = 2,
    num_steps: int = 8,
    num_minibatches: int = 4,
    policy: PolicyConfig | None = None,
    total_updates: int = 10,
    env: dict[str, Any] | None = None,
    **algo: Any,
) -> PPO:
    """A PPO on CPU over a Box observation of `obs_dim` (no environment involved)."""
    cfg = TrainConfig()
    cfg.env.num_envs = num_envs
    cfg.algo.num_steps = num_steps
    cfg.algo.num_minibatches = num_minibatches
    for key, value in (env or {}).items():
        assert hasattr(cfg.env, key), key
        setattr(cfg.env, key, value)
    for key, value in algo.items():
        assert hasattr(cfg.algo, key), key
        setattr(cfg.algo, key, value)
    validate(cfg)
    model = ActorCritic(
        box(obs_dim, -np.inf, np.inf),
        action_space if action_space is not None else box(2),
        replace(
            policy if policy is not None else small_policy(),
            normalize_obs=cfg.policy.normalize_obs,
            obs_clip=cfg.policy.obs_clip,
        ),
    )
    return PPO(model, cfg, torch.device("cpu"), total_updates)


def collect_rollout(
    ppo: PPO,
    obs_mean: float = 0.0,
    obs_std: float = 1.0,
    end_prob: float = 0.2,
    first_obs: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Fill the buffer through ppo.act / ppo.record with random observations, rewards and ends.

    Returns what was fed in (obs[t] acted on, final_obs[t] or None, next_obs after the last step)
    so tests can recompute things independently.
    """
    N, T, D = ppo.num_envs, ppo.buffer.num_steps, ppo.model.obs_dim
    obs = first_obs if first_obs is not None else torch.randn(N, D) * obs_std + obs_mean
    log: dict[str, list] = {"obs": [], "env_actions": [], "final_obs": []}
    for _ in range(T):
        log["obs"].append(obs.clone())
        log["env_actions"].append(ppo.act(obs))
        rewards = torch.randn(N)
        ended = torch.rand(N) < end_prob
        terminated = ended & (torch.rand(N) < 0.5)
        truncated = ended & ~terminated
        next_obs = torch.randn(N, D) * obs_std + obs_mean
        final_obs = None
        if ended.any():
            final_obs = torch.where(
                ended.unsqueeze(1), torch.randn(N, D) * obs_std + obs_mean, next_obs
            )
        log["final_obs"].append(final_obs)
        ppo.record(StepResult(next_obs, rewards, terminated, truncated, final_obs))
        obs = next_obs
    log["next_obs"] = obs
    return log


@pytest.fixture
def make_ppo():
    return build_ppo


@pytest.fixture
def collect():
    return collect_rollout
