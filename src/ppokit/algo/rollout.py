"""Preallocated rollout storage of torch tensors shaped [T, N, ...] and its minibatch views:
shuffled samples (feedforward policies) or shuffled sequences (recurrent policies)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ppokit.observations import Obs, obs_map, obs_map2

# Observation layout: the shape of a flat observation, or per key (shape, dtype) of a dict one.
ObsSpec = tuple[int, ...] | dict[str, tuple[tuple[int, ...], torch.dtype]]


@dataclass
class Minibatch:
    """Samples for one gradient step: flat [B, ...], or sequences [L, B, ...] for recurrent
    policies, which also carry each sequence's initial memory `states` [B, S], the `resets`
    [L, B] (an episode ended at the previous step) and, where sequences were padded, a `mask`
    [L, B] of the real steps. `weights` are per-sample importance weights pi_prox/pi_behaviour
    when another policy (the EMA agent) collected the rollout (algo/ema.py)."""

    obs: Obs
    actions: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor
    states: torch.Tensor | None = None
    resets: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    weights: torch.Tensor | None = None


class RolloutBuffer:
    """One rollout of `num_steps` x `num_envs` transitions.

    Observations are stored raw; the update normalizes them with the same (frozen) statistics
    the actor used during the rollout, so recomputed log-probs match the stored ones exactly.
    With `state_size` > 0 the memory state each step was acted from is stored too, so the update
    can start each sequence from it.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: ObsSpec,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device,
        state_size: int = 0,
    ) -> None:
        self.num_steps, self.num_envs, self.device = num_steps, num_envs, device
        tn = (num_steps, num_envs)

        def zeros(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.zeros(shape, dtype=dtype, device=device)

        self.obs: Obs
        if isinstance(obs_shape, dict):
            self.obs = {
                k: zeros(*tn, *shape, dtype=dtype) for k, (shape, dtype) in obs_shape.items()
            }
        else:
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
        self.states = zeros(*tn, state_size) if state_size else None
        # pi_prox / pi_behaviour per sample, set by PPO when an EMA agent acted (else None).
        self.weights: torch.Tensor | None = None
        # Steps whose env gave no final observations (bootstrap from V(pre-step observation)).
        self.pre_step_bootstrap: list[int] = []
        self.step = 0

    @property
    def full(self) -> bool:
        return self.step >= self.num_steps

    @property
    def dones(self) -> torch.Tensor:
        return self.terminated | self.truncated

    def flat_obs(self) -> Obs:
        """The stored observations as [T*N, ...]."""
        return obs_map(lambda x: x.flatten(0, 1), self.obs)

    def add_action(
        self,
        obs: Obs,
        actions: torch.Tensor,
        log_probs: torch.Tensor,
        state: torch.Tensor | None = None,
        values: torch.Tensor | None = None,
    ) -> None:
        """Store what was acted on; recurrent policies also pass the memory `state` the step was
        acted from and the `values` computed with it."""
        if self.full:
            raise RuntimeError("rollout buffer is full: call finish_rollout() and update() first")
        t = self.step
        if isinstance(obs, dict):
            obs_map2(lambda dst, src: dst.copy_(src), {k: v[t] for k, v in self.obs.items()}, obs)
        else:
            self.obs[t].copy_(obs.reshape(obs.shape[0], -1))
        self.actions[t].copy_(actions)
        self.log_probs[t].copy_(log_probs)
        if state is not None and self.states is not None:
            self.states[t].copy_(state)
        if values is not None:
            self.values[t].copy_(values)

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
        self.pre_step_bootstrap.clear()

    def minibatches(
        self, obs: Obs, advantages: torch.Tensor, minibatch_size: int
    ) -> Iterator[Minibatch]:
        """One epoch of shuffled minibatches over the flattened rollout.

        `obs` (normalized) and `advantages` (possibly normalized) are passed in flat [T*N, ...];
        the rest comes from the buffer. Shuffling gathers each tensor once per epoch, then
        minibatches are contiguous slices.
        """
        batch = self.num_steps * self.num_envs
        perm = torch.randperm(batch, device=self.device)
        shuffled_obs = obs_map(lambda x: x.index_select(0, perm), obs)
        tensors = (
            self.actions.flatten(0, 1),
            self.log_probs.flatten(),
            self.values.flatten(),
            advantages,
            self.returns.flatten(),
        )
        shuffled = [x.index_select(0, perm) for x in tensors]
        weights = None if self.weights is None else self.weights.flatten().index_select(0, perm)
        for start in range(0, batch, minibatch_size):
            end = start + minibatch_size
            yield Minibatch(
                _slice(shuffled_obs, start, end),
                *(x[start:end] for x in shuffled),
                weights=None if weights is None else weights[start:end],
            )

    def sequences(self, obs: Obs, advantages: torch.Tensor, length: int) -> Minibatch:
        """The rollout cut into sequences of `length` steps: every field [length, S, ...] with
        S = ceil(T / length) * N sequences (sequence c * N + n is env n's steps c*length...).

        `obs` and `advantages` are passed in flat [T*N, ...] like for `minibatches`. The last
        chunk is padded with zeros when `length` does not divide T; `mask` marks the real steps
        (None without padding). `resets[t]` is true where the episode ended at step t - 1 inside
        the sequence; the first step's memory state is the stored one, already reset.
        """
        assert self.states is not None, "sequences need a buffer with memory states"
        T, N, L = self.num_steps, self.num_envs, length
        chunks = -(-T // L)
        pad = chunks * L - T

        def cut(x: torch.Tensor) -> torch.Tensor:  # [T, N, ...] -> [L, chunks * N, ...]
            if pad:
                x = torch.cat([x, x.new_zeros(pad, *x.shape[1:])])
            x = x.reshape(chunks, L, N, *x.shape[2:]).transpose(0, 1)
            return x.reshape(L, chunks * N, *x.shape[3:])

        dones = self.dones
        resets = torch.zeros_like(dones)
        resets[1:] = dones[:-1]
        return Minibatch(
            obs=obs_map(lambda x: cut(x.reshape(T, N, *x.shape[1:])), obs),
            actions=cut(self.actions),
            log_probs=cut(self.log_probs),
            values=cut(self.values),
            advantages=cut(advantages.reshape(T, N)),
            returns=cut(self.returns),
            states=self.states[::L].reshape(chunks * N, -1),
            resets=cut(resets),
            mask=cut(torch.ones_like(dones)) if pad else None,
        )

    def sequence_minibatches(
        self, sequences: Minibatch, sequences_per_minibatch: int
    ) -> Iterator[Minibatch]:
        """One epoch of shuffled minibatches of whole sequences (from `sequences`)."""
        assert sequences.states is not None
        count = sequences.states.shape[0]
        perm = torch.randperm(count, device=self.device)
        # The sequence axis is 1 for [L, S, ...] fields, 0 for the initial states [S, state].
        axes = {f.name: 0 if f.name == "states" else 1 for f in dataclasses.fields(Minibatch)}

        def take(x: Obs | None, dim: int) -> Obs | None:
            return None if x is None else obs_map(lambda v: v.index_select(dim, perm), x)

        shuffled = {name: take(getattr(sequences, name), dim) for name, dim in axes.items()}
        for start in range(0, count, sequences_per_minibatch):
            end = start + sequences_per_minibatch
            yield Minibatch(
                **{name: _slice(shuffled[name], start, end, dim) for name, dim in axes.items()}
            )


def _slice(x: Obs | None, start: int, end: int, dim: int = 0) -> Obs | None:
    """x[start:end] along `dim` (per key for dict observations; None stays None)."""
    if x is None:
        return None
    if isinstance(x, dict):
        return {k: v.narrow(dim, start, end - start) for k, v in x.items()}
    return x.narrow(dim, start, end - start)
