"""Evaluation of a policy over whole episodes on a fresh vector env."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from ppokit.config import EnvConfig
from ppokit.envs.gym_env import GymVecEnv
from ppokit.nn.actor_critic import ActorCritic


def policy_fn(
    model: ActorCritic, deterministic: bool = True
) -> Callable[[torch.Tensor], torch.Tensor]:
    """raw observations -> env actions, deterministic (mode) or sampled."""

    @torch.no_grad()
    def act(obs: torch.Tensor) -> torch.Tensor:
        normalized = model.normalize(obs)
        actions = model.act_deterministic(normalized) if deterministic else model.act(normalized)[0]
        return model.to_env(actions)

    return act


def evaluate_policy(
    policy: Callable[[torch.Tensor], torch.Tensor],
    env_cfg: EnvConfig,
    episodes: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
    max_parallel: int = 8,
) -> dict:
    """Run `episodes` full episodes; mean/std of return and length.

    Envs run in parallel, each assigned a fixed share of the episodes up front, so fast-ending
    episodes are not over-represented.
    """
    n = max(1, min(episodes, max_parallel))
    env = GymVecEnv(replace(env_cfg, num_envs=n, vectorization="sync"), device=device)
    targets = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    done_counts = np.zeros(n, dtype=int)
    returns: list[float] = []
    lengths: list[int] = []
    ep_ret = np.zeros(n)
    ep_len = np.zeros(n, dtype=int)
    try:
        obs = env.reset(seed=seed)
        while (done_counts < targets).any():
            result = env.step(policy(obs))
            ep_ret += result.rewards.cpu().numpy()
            ep_len += 1
            ended = (result.terminated | result.truncated).cpu().numpy()
            for i in np.flatnonzero(ended):
                if done_counts[i] < targets[i]:
                    returns.append(float(ep_ret[i]))
                    lengths.append(int(ep_len[i]))
                    done_counts[i] += 1
                ep_ret[i] = 0.0
                ep_len[i] = 0
            obs = result.obs
    finally:
        env.close()
    return {
        "episodes": len(returns),
        "mean_return": float(np.mean(returns)),
        "std_return": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "std_length": float(np.std(lengths)),
        "returns": returns,
        "lengths": lengths,
    }
