"""The actor-critic: observation normalizer -> separate actor and critic MLPs -> distribution.

Observation normalization lives here so that checkpoints and exported policies carry it. The
policy acts in a normalized action space when the Box bounds are finite ([-1, 1] maps onto
[low, high]); the sample is stored unclipped for the loss and clipped only on its way to the env.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.config import PolicyConfig
from ppokit.errors import EnvError
from ppokit.nn.distributions import Categorical, DiagGaussian, MultiCategorical
from ppokit.nn.encoders import mlp
from ppokit.nn.normalization import ObservationNormalizer

POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0


def observation_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise EnvError(
        f"observation space {space} is not supported by the MLP policy; use a Box observation"
        " (wrap the env with gymnasium.wrappers.FlattenObservation for nested spaces)"
    )


def make_distribution(action_space: gym.Space, cfg: PolicyConfig) -> nn.Module:
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) != 1:
            raise EnvError(
                f"Box action space of shape {action_space.shape} is not supported; flatten it to 1-D"
                " (gymnasium.wrappers.FlattenAction... or reshape in a wrapper)"
            )
        low, high = action_space.low.astype(np.float64), action_space.high.astype(np.float64)
        finite = np.isfinite(low) & np.isfinite(high)
        if cfg.noise_std_relative:
            if not finite.all():
                raise EnvError(
                    "policy.noise_std_relative needs finite action bounds; this env's Box is"
                    f" [{low}, {high}]; give an absolute --policy.init_noise_std instead"
                )
            std_env = cfg.init_noise_std * (high - low)
        else:
            std_env = np.full(low.shape, cfg.init_noise_std)
        scale = action_half_range(action_space) if cfg.rescale_actions else np.ones_like(low)
        init_std = torch.as_tensor(std_env / scale, dtype=torch.float32)
        return DiagGaussian(int(action_space.shape[0]), init_std, cfg.log_std_min, cfg.log_std_max)
    if isinstance(action_space, gym.spaces.Discrete):
        return Categorical(int(action_space.n))
    if isinstance(action_space, gym.spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise EnvError(
                f"MultiDiscrete actions must be 1-D, got nvec shape {action_space.nvec.shape}"
            )
        return MultiCategorical(action_space.nvec.tolist())
    raise EnvError(
        f"action space {action_space} cannot be handled by the policy: supported are Box (1-D,"
        " continuous), Discrete and MultiDiscrete"
    )


def action_half_range(space: gym.spaces.Box) -> np.ndarray:
    """(high - low) / 2 where the bounds are finite, else 1."""
    low, high = space.low.astype(np.float64), space.high.astype(np.float64)
    finite = np.isfinite(low) & np.isfinite(high)
    return np.where(finite, (high - low) / 2.0, 1.0)


class ActorCritic(nn.Module):
    """Separate actor and critic MLPs over normalized observations.

    Methods taking `obs` expect *normalized* observations (call `normalize` first): the rollout
    stores normalized observations so the update re-evaluates exactly what the actor saw.
    `forward` is the inference path: raw observation in, deterministic env action out.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: PolicyConfig,
        normalize_obs: bool = True,
        obs_clip: float = 10.0,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.obs_dim = observation_dim(observation_space)
        self.obs_normalizer = ObservationNormalizer(
            (self.obs_dim,), clip=obs_clip, enabled=normalize_obs
        )
        self.distribution = make_distribution(action_space, cfg)
        self.actor = mlp(
            self.obs_dim,
            cfg.actor_hidden,
            self.distribution.head_dim,
            cfg.activation,
            POLICY_HEAD_GAIN,
        )
        self.critic = mlp(self.obs_dim, cfg.critic_hidden, 1, cfg.activation, VALUE_HEAD_GAIN)
        self.continuous = bool(self.distribution.continuous)
        if self.continuous:
            low = torch.as_tensor(action_space.low, dtype=torch.float32)
            high = torch.as_tensor(action_space.high, dtype=torch.float32)
            if cfg.rescale_actions:
                half = torch.as_tensor(action_half_range(action_space), dtype=torch.float32)
                center = torch.where(
                    torch.isfinite(low) & torch.isfinite(high),
                    (low + high) / 2,
                    torch.zeros_like(low),
                )
            else:
                half, center = torch.ones_like(low), torch.zeros_like(low)
            self.register_buffer("action_low", low)
            self.register_buffer("action_high", high)
            self.register_buffer("action_center", center)
            self.register_buffer("action_half", half)

    # --- observations -------------------------------------------------------------------------
    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return self.obs_normalizer(obs.reshape(obs.shape[0], -1))

    # --- actor ----------------------------------------------------------------------------------
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample actions (unclipped, policy space) and their log-probabilities."""
        return self.distribution.sample(self.actor(obs))

    def explore(self, raw_obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rollout's act step on raw observations: (actions, log_probs, env actions)."""
        actions, log_probs = self.act(self.normalize(raw_obs))
        return actions, log_probs, self.to_env(actions)

    def act_deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        return self.distribution.mode(self.actor(obs))

    def evaluate(
        self, obs: torch.Tensor, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_prob, entropy, value) of stored actions under the current parameters."""
        params = self.actor(obs)
        return (
            self.distribution.log_prob(params, actions),
            self.distribution.entropy(params),
            self.critic(obs).squeeze(-1),
        )

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs).squeeze(-1)

    def to_env(self, actions: torch.Tensor) -> torch.Tensor:
        """Policy-space actions to what the env accepts: rescaled and clipped to the Box bounds."""
        if not self.continuous:
            return actions
        scaled = torch.addcmul(self.action_center, actions, self.action_half)
        return torch.clamp(scaled, self.action_low, self.action_high)

    def action_std(self) -> torch.Tensor | None:
        """Std of the Gaussian in env units (None for discrete policies)."""
        if not self.continuous:
            return None
        return self.distribution.std() * self.action_half

    def forward(self, raw_obs: torch.Tensor) -> torch.Tensor:
        """Inference: raw observations -> deterministic env actions."""
        return self.to_env(self.act_deterministic(self.normalize(raw_obs)))
