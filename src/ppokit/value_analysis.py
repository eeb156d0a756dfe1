"""How well the critic predicts returns: V(s_t) against the realised discounted return G_t along
evaluated episodes (`ppokit eval --analyze-value`; evaluate.py collects the traces, plot.py
draws them)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class EpisodeTrace:
    """V(s_t) and r_t along one episode, and how it ended."""

    values: np.ndarray
    rewards: np.ndarray
    terminated: bool
    bootstrap: float  # V(final observation) for a truncated episode, 0 for a terminated one


def discounted_returns(rewards: np.ndarray, gamma: float, bootstrap: float = 0.0) -> np.ndarray:
    """G_t = r_t + gamma * G_{t+1}, with G_T = bootstrap."""
    out = np.empty(len(rewards))
    g = bootstrap
    for t in range(len(rewards) - 1, -1, -1):
        g = rewards[t] + gamma * g
        out[t] = g
    return out


def value_analysis(traces: Sequence[EpisodeTrace], gamma: float) -> dict:
    """How well V(s_t) predicts the realised discounted return G_t along the episodes.

    G_t sums the episode's rewards discounted by gamma; a truncated episode (time limit) adds
    gamma^(T-t) V(final observation), as training does, so the time limit does not read as a
    critic error. explained_variance = 1 - Var(G - V) / Var(G) over every step; bias = mean(V - G).
    """
    values = [t.values for t in traces]
    returns = [discounted_returns(t.rewards, gamma, t.bootstrap) for t in traces]
    v, g = np.concatenate(values), np.concatenate(returns)
    var_g = float(np.var(g))
    per_episode = [
        {
            "episode": k,
            "length": len(vk),
            "terminated": t.terminated,
            "bias": float(np.mean(vk - gk)),
            "rmse": float(np.sqrt(np.mean((vk - gk) ** 2))),
            "value_start": float(vk[0]),
            "return_start": float(gk[0]),
        }
        for k, (t, vk, gk) in enumerate(zip(traces, values, returns))
    ]
    return {
        "gamma": gamma,
        "steps": int(len(v)),
        "explained_variance": float(1.0 - np.var(g - v) / var_g) if var_g > 0 else math.nan,
        "bias": float(np.mean(v - g)),
        "rmse": float(np.sqrt(np.mean((v - g) ** 2))),
        "correlation": float(np.corrcoef(v, g)[0, 1]) if len(v) > 1 and var_g > 0 else math.nan,
        "truncation_bootstrap": "G of a truncated episode ends with gamma^k V(final observation)",
        "per_episode": per_episode,
    }
