"""Preallocated rollout storage of torch tensors shaped [T, N, ...] and its minibatch views."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass
class Minibatch:
    """Flat samples for one gradient step."""

    obs: torch.Tensor
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor


class RolloutBuffer:
    """One rollout of `num_steps` x `num_envs` transitions.

    Observations are stored raw; the update normalizes them with the same (frozen) statistics
    the actor used during the rollout, so recomputed log-probs match the stored ones exactly.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, device
        tn = (num_steps, num_envs)

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.obs = zeros(*tn, *obs_shape)
        self.actions = zeros(*tn, *action_shape, dtype=action_dtype)
        self.log_probs = zeros(*tn)
        self.rewards = zeros(*tn)
        self.terminated = zeros(*tn, dtype=torch.bool)
        self.truncated = zeros(*tn, dtype=torch.bool)
        # V(final observation) where an episode ended at t (read only where truncated).
        self.bootstrap_values = zeros(*tn)
        self.values = zeros(*tn)
        self.advantages = zeros(*tn)
        self.returns = zeros(*tn)
        self.step = 0

    @property
    def full(self) -> bool:
        return self.step >= self.num_steps

    @property
    def dones(self) -> torch.Tensor:
        return self.terminated | self.truncated

    def add_action(self, obs: torch.Tensor, actions: torch.Tensor, log_probs: torch.Tensor) -> None:
        if self.full:
            raise RuntimeError("rollout buffer is full: call finish_rollout() and update() first")
        t = self.step
        self.obs[t].copy_(obs)
        self.actions[t].copy_(actions)
        self.log_probs[t].copy_(log_probs)

    def add_outcome(
        self, rewards: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor
    ) -> None:
        t = self.step
        self.rewards[t].copy_(rewards)
        self.terminated[t].copy_(terminated)
        self.truncated[t].copy_(truncated)
        self.step += 1

    def reset(self) -> None:
        self.step = 0

    def minibatches(
        self, obs: torch.Tensor, advantages: torch.Tensor, minibatch_size: int
    ) -> Iterator[Minibatch]:
        """One epoch of shuffled minibatches over the flattened rollout.

        `obs` (normalized) and `advantages` (possibly normalized) are passed in flat [T*N, ...];
        the rest comes from the buffer. Shuffling gathers each tensor once per epoch, then
        minibatches are contiguous slices.
        """
        batch = self.num_steps * self.num_envs
        perm = torch.randperm(batch, device=self.device)
        tensors = (
            obs,
            self.actions.flatten(0, 1),
            self.log_probs.flatten(),
            self.values.flatten(),
            advantages,
            self.returns.flatten(),
        )
        shuffled = [x.index_select(0, perm) for x in tensors]
        for start in range(0, batch, minibatch_size):
            end = start + minibatch_size
            yield Minibatch(*(x[start:end] for x in shuffled))
