"""Action distributions over head outputs: diagonal Gaussian (state-independent log-std),
Categorical and MultiCategorical. Written out rather than via torch.distributions because the
rollout calls them once per env step, where torch.distributions' bookkeeping is the cost."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class DiagGaussian(nn.Module):
    """N(mean, diag(exp(log_std))^2) with a learned log-std that does not depend on the state."""

    continuous = True

    def __init__(
        self, action_dim: int, init_std: torch.Tensor, log_std_min: float, log_std_max: float
    ) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.head_dim = action_dim
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        self.log_std = nn.Parameter(
            torch.log(init_std.float()).clamp(log_std_min, log_std_max).clone()
        )

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (self.action_dim,)

    action_dtype = torch.float32

    def clamped_log_std(self) -> torch.Tensor:
        return self.log_std.clamp(self.log_std_min, self.log_std_max)

    def sample(self, mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_std = self.clamped_log_std()
        noise = torch.randn_like(mean)
        actions = torch.addcmul(mean, noise, log_std.exp())
        # log N(a; mean, std) with (a - mean) / std = noise.
        log_prob = noise.square().sum(-1).mul(-0.5) - (
            log_std.sum() + LOG_SQRT_2PI * self.action_dim
        )
        return actions, log_prob

    def log_prob(self, mean: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        log_std = self.clamped_log_std()
        z = (actions - mean) * torch.exp(-log_std)
        return z.square().sum(-1).mul(-0.5) - (log_std.sum() + LOG_SQRT_2PI * self.action_dim)

    def entropy(self, mean: torch.Tensor) -> torch.Tensor:
        per_dim = 0.5 + LOG_SQRT_2PI + self.clamped_log_std()
        return per_dim.sum().expand(mean.shape[:-1])

    def mode(self, mean: torch.Tensor) -> torch.Tensor:
        return mean

    def std(self) -> torch.Tensor:
        return self.clamped_log_std().exp()


class Categorical(nn.Module):
    """One discrete action from logits."""

    continuous = False
    action_dtype = torch.long

    def __init__(self, n: int) -> None:
        super().__init__()
        self.head_dim = n

    @property
    def action_shape(self) -> tuple[int, ...]:
        return ()

    def sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_p = torch.log_softmax(logits, dim=-1)
        # Gumbel-max: argmax(log p + Gumbel noise) is a sample of the categorical.
        gumbel = -torch.log(-torch.log(torch.rand_like(log_p).clamp_(1e-20, 1.0)))
        actions = (log_p + gumbel).argmax(-1)
        return actions, log_p.gather(-1, actions.unsqueeze(-1)).squeeze(-1)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits, dim=-1)
        return log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        log_p = torch.log_softmax(logits, dim=-1)
        return -(log_p.exp() * log_p).sum(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)


class MultiCategorical(nn.Module):
    """Independent discrete actions (MultiDiscrete), one Categorical per component."""

    continuous = False
    action_dtype = torch.long

    def __init__(self, nvec: list[int]) -> None:
        super().__init__()
        self.nvec = [int(n) for n in nvec]
        self.head_dim = sum(self.nvec)
        self.parts = Categorical(1)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return (len(self.nvec),)

    def _split(self, logits: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.split(logits, self.nvec, dim=-1)

    def sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        samples = [self.parts.sample(chunk) for chunk in self._split(logits)]
        actions = torch.stack([a for a, _ in samples], dim=-1)
        return actions, torch.stack([lp for _, lp in samples], dim=-1).sum(-1)

    def log_prob(self, logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        parts = [
            self.parts.log_prob(chunk, actions[..., i])
            for i, chunk in enumerate(self._split(logits))
        ]
        return torch.stack(parts, dim=-1).sum(-1)

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [self.parts.entropy(chunk) for chunk in self._split(logits)], dim=-1
        ).sum(-1)

    def mode(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.stack([chunk.argmax(-1) for chunk in self._split(logits)], dim=-1)
