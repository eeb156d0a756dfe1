"""What `PPO.finish_rollout` computes from a rollout's rewards: return-based reward scaling
(`RewardScaler`), then Generalized Advantage Estimation with truncation-aware bootstrapping
(`compute_gae`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from ppokit.nn.normalization import RunningMeanStd

if TYPE_CHECKING:
    from ppokit.distributed import LocalSync


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


class RewardScaler(nn.Module):
    """Divide rewards by the running std of the discounted return (return-based scaling).

    Each env keeps a discounted return G <- gamma * G * (1 - done_prev) + r; the std of all G seen
    so far scales the rewards. The mean is not subtracted, so the sign of rewards is preserved.
    """

    def __init__(
        self,
        num_envs: int,
        gamma: float,
        clip: float = 10.0,
        enabled: bool = True,
        eps: float = 1e-8,
    ) -> None:
        super().__init__()
        self.enabled = enabled
        self.gamma = gamma
        self.clip = clip
        self.eps = eps
        self.rms = RunningMeanStd(())
        self.register_buffer("returns", torch.zeros(num_envs))

    @torch.no_grad()
    def scale_rollout(
        self, rewards: torch.Tensor, dones: torch.Tensor, sync: LocalSync | None = None
    ) -> torch.Tensor:
        """Update the statistics with a [T, N] rollout and return its scaled rewards.

        The whole rollout is scaled with the statistics after it is merged, so every reward of one
        batch shares one scale. With `sync` every rank's returns are merged (in rank order).
        """
        if not self.enabled:
            return rewards
        # G_t = r_t + gamma * (1 - done_{t-1}) * G_{t-1}; one fused op per step.
        continues = 1.0 - dones.to(rewards.dtype)
        carry = torch.cat([torch.ones_like(continues[:1]), continues[:-1]]) * self.gamma
        returns = torch.empty_like(rewards)
        previous = self.returns
        for t in range(rewards.shape[0]):
            previous = torch.addcmul(rewards[t], previous, carry[t], out=returns[t])
        self.returns.copy_(returns[-1] * continues[-1])
        self.rms.update(returns, sync)
        scaled = rewards * torch.rsqrt(self.rms.var + self.eps).to(rewards.dtype)
        if self.clip > 0:
            scaled = scaled.clamp(-self.clip, self.clip)
        return scaled

    def reset(self) -> None:
        """Forget the per-env running returns (new episodes everywhere), keep the statistics."""
        self.returns.zero_()
