"""Episode returns and lengths, recovered from a rollout's raw rewards and done flags, and the
env's own metrics (`EnvLog`).

Done once per rollout with vectorised tensor ops, so the per-step loop pays nothing and the
device is read once per update.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch


class EpisodeTracker:
    """Completed-episode statistics over a rolling window, plus the partial episode of each env."""

    def __init__(self, num_envs: int, window: int, device: torch.device) -> None:
        self.partial_return = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.partial_length = torch.zeros(num_envs, dtype=torch.long, device=device)
        self.returns: deque[float] = deque(maxlen=window)
        self.lengths: deque[int] = deque(maxlen=window)
        self.total_episodes = 0

    def add_rollout(
        self, rewards: torch.Tensor, dones: torch.Tensor
    ) -> tuple[list[float], list[int]]:
        """Account a [T, N] rollout; returns the (returns, lengths) of episodes completed in it."""
        T, N = rewards.shape
        device = rewards.device
        steps = torch.arange(T, device=device).unsqueeze(1).expand(T, N)
        # cumulative[t + 1] = sum of rewards[0..t]
        cumulative = torch.cat(
            [torch.zeros(1, N, dtype=torch.float64, device=device), rewards.double().cumsum(0)]
        )
        last_done = torch.where(dones, steps, torch.full_like(steps, -1)).cummax(0).values
        start = (
            torch.cat([torch.full((1, N), -1, device=device, dtype=torch.long), last_done[:-1]]) + 1
        )
        from_before = start == 0  # the episode began in an earlier rollout
        ep_return = cumulative[1:] - cumulative.gather(0, start)
        ep_return = ep_return + from_before * self.partial_return
        ep_length = steps + 1 - start + from_before * self.partial_length
        done_returns = ep_return[dones].tolist()
        done_lengths = ep_length[dones].tolist()
        # Carry the unfinished episode of each env into the next rollout.
        last_start = last_done[-1] + 1
        any_done = last_done[-1] >= 0
        tail_return = cumulative[-1] - cumulative.gather(0, last_start.unsqueeze(0)).squeeze(0)
        self.partial_return = torch.where(
            any_done, tail_return, self.partial_return + cumulative[-1]
        )
        self.partial_length = torch.where(any_done, T - last_start, self.partial_length + T)
        self.returns.extend(done_returns)
        self.lengths.extend(done_lengths)
        self.total_episodes += len(done_returns)
        return done_returns, done_lengths

    def reset_partial(self) -> None:
        """Forget unfinished episodes (the envs were reset)."""
        self.partial_return.zero_()
        self.partial_length.zero_()

    def mean_return(self) -> float | None:
        return sum(self.returns) / len(self.returns) if self.returns else None

    def mean_length(self) -> float | None:
        return sum(self.lengths) / len(self.lengths) if self.lengths else None

    def metrics(self) -> dict[str, float]:
        """charts/episode_return and charts/episode_length over the window (none before the
        first episode ends): what `ppokit train` and graph trainers log."""
        mean_return = self.mean_return()
        if mean_return is None:
            return {}
        return {
            "charts/episode_return": mean_return,
            "charts/episode_length": float(self.mean_length() or 0.0),
        }

    def state_dict(self) -> dict:
        return {
            "returns": list(self.returns),
            "lengths": list(self.lengths),
            "total_episodes": self.total_episodes,
            # the unfinished episode of each env, which a resume that restores the envs goes on
            "partial_return": self.partial_return.cpu(),
            "partial_length": self.partial_length.cpu(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.returns.clear()
        self.lengths.clear()
        self.returns.extend(state["returns"])
        self.lengths.extend(state["lengths"])
        self.total_episodes = int(state["total_episodes"])
        if "partial_return" in state and state["partial_return"].shape == self.partial_return.shape:
            self.partial_return.copy_(state["partial_return"])
            self.partial_length.copy_(state["partial_length"])


class EnvLog:
    """Means over a rollout of the scalars an env reports in its step's ``infos["log"]`` (Isaac
    Lab's ``extras["log"]``; ppokit's batched Ant reports its tracking errors there), logged as
    ``env/<name>``. A value may be a number, an array or a tensor (its mean is taken); tensors
    are summed on their device and read once per update."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor | float] = {}
        self.counts: dict[str, int] = {}

    def add(self, log: dict) -> None:
        for name, value in log.items():
            if isinstance(value, torch.Tensor):
                value = value.detach().double().mean()
            elif isinstance(value, (int, float, np.number, np.ndarray)):
                value = float(np.mean(value))
            else:  # nested groups and text are not scalars
                continue
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def means(self) -> dict[str, float]:
        """env/<name>: the mean over the steps that reported it; then starts over."""
        out = {f"env/{k}": float(v) / self.counts[k] for k, v in self.sums.items()}
        self.sums.clear()
        self.counts.clear()
        return out
