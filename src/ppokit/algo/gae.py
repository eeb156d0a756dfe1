"""Generalized Advantage Estimation with truncation-aware bootstrapping."""

from __future__ import annotations

import torch


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    dones: torch.Tensor,
    gamma: float,
    lam: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Advantages and returns of a [T, N] rollout.

    Args:
        rewards: r_t.
        values: V(s_t) under the policy that collected the rollout.
        next_values: V(s_{t+1}); where the episode was truncated at t, V(final observation).
        terminated: episode reached a terminal state at t: no bootstrap from next_values[t].
        dones: terminated or truncated at t: the GAE recursion does not cross into the next
            episode.

    Returns:
        (advantages, returns) with returns = advantages + values.
    """
    not_terminal = 1.0 - terminated.to(values.dtype)
    deltas = rewards + gamma * next_values * not_terminal - values
    carry = (gamma * lam) * (1.0 - dones.to(values.dtype))
    advantages = torch.empty_like(values)
    next_advantage = torch.zeros_like(values[0])
    # A_t = delta_t + gamma * lam * (1 - done_t) * A_{t+1}: one fused op per step.
    for t in range(values.shape[0] - 1, -1, -1):
        next_advantage = torch.addcmul(deltas[t], carry[t], next_advantage, out=advantages[t])
    return advantages, advantages + values
