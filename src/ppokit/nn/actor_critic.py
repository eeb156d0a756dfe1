"""The actor-critic: observation normalizer -> [per-key encoders] -> [memory] -> actor and critic
heads -> distribution.

Observation normalization lives here so that checkpoints and exported policies carry it. The
policy acts in a normalized action space when the Box bounds are finite ([-1, 1] maps onto
[low, high]); the sample is stored unclipped for the loss and clipped only on its way to the env.

A Box observation with no memory is the plain case: two MLPs over the normalized vector. Dict
observations go through a `MultiModalEncoder` per trunk, the actor over `policy.actor_keys` and
the critic over `policy.critic_keys` (keys only the critic sees make a privileged critic). With
`policy.memory` a GRU/LSTM sits between the encoder and the heads; the critic shares it, has its
own, or none (`policy.critic_memory`).
"""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit.config import PolicyConfig
from ppokit.errors import ConfigError, EnvError
from ppokit.nn.distributions import Categorical, DiagGaussian, MultiCategorical
from ppokit.nn.encoders import MultiModalEncoder, mlp
from ppokit.nn.memory import Memory
from ppokit.nn.normalization import DictObservationNormalizer, ObservationNormalizer
from ppokit.observations import Obs, obs_map

POLICY_HEAD_GAIN = 0.01
VALUE_HEAD_GAIN = 1.0


class PolicyStep(NamedTuple):
    """What `ActorCritic.act` returns for a batch of observations."""

    env_actions: torch.Tensor  # what the env takes: rescaled and clipped to its bounds
    state: torch.Tensor | None  # the memory state after this step (feedforward: as passed in)
    actions: torch.Tensor  # the sample (or mode) in the policy's space, unclipped
    log_probs: torch.Tensor | None  # of `actions`; None when deterministic
    values: torch.Tensor | None  # recurrent models: V(this step); feedforward: None


def observation_dim(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise EnvError(
        f"observation space {space} is not supported by the policy; use a Box or a Dict of Box"
        " observations (wrap the env with gymnasium.wrappers.FlattenObservation for other spaces)"
    )


def observation_groups(space: gym.Space, cfg: PolicyConfig) -> tuple[list[str], list[str]]:
    """(actor keys, critic keys) of a Dict observation space, checked against the config."""
    if not isinstance(space, gym.spaces.Dict):
        for name in ("actor_keys", "critic_keys", "encoders"):
            if getattr(cfg, name):
                raise ConfigError(
                    f"policy.{name} needs a Dict observation space; this env's is {space}"
                )
        return [], []
    available = list(space.spaces)
    for key, sub in space.spaces.items():
        if not isinstance(sub, gym.spaces.Box):
            raise EnvError(
                f"observation key {key!r} is a {type(sub).__name__}; the policy reads Box keys only"
            )
        if len(sub.shape) > 3:
            raise EnvError(
                f"observation key {key!r} has shape {sub.shape}: images must be (C, H, W) or"
                " (H, W, C), vectors 1-D or 2-D"
            )

    def check(name: str, keys: list[str] | None, default: list[str]) -> list[str]:
        if keys is None:
            return list(default)
        if not keys:
            raise ConfigError(f"policy.{name} is empty; name at least one of {available}")
        missing = [k for k in keys if k not in space.spaces]
        if missing:
            raise ConfigError(
                f"policy.{name}: the env has no observation key {missing[0]!r}"
                f" (its keys: {', '.join(available)})"
            )
        return list(keys)

    actor = check("actor_keys", cfg.actor_keys, available)
    critic = check("critic_keys", cfg.critic_keys, actor)
    unknown = [k for k in cfg.encoders if k not in space.spaces]
    if unknown:
        raise ConfigError(
            f"policy.encoders: the env has no observation key {unknown[0]!r}"
            f" (its keys: {', '.join(available)})"
        )
    return actor, critic


def make_distribution(action_space: gym.Space, cfg: PolicyConfig) -> nn.Module:
    if isinstance(action_space, gym.spaces.Box):
        if len(action_space.shape) != 1:
            raise EnvError(
                f"Box action space of shape {action_space.shape} is not supported; flatten it to 1-D"
                " (gymnasium.wrappers.FlattenAction... or reshape in a wrapper)"
            )
        low = action_space.low.astype(np.float64)
        if cfg.noise_std_relative:  # one convention for any action range (unbounded: [-1, 1])
            std_env = cfg.init_noise_std * 2.0 * action_half_range(action_space)
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
    """Actor and critic over normalized observations, optionally recurrent.

    `act(raw_obs, state)` is the one observation -> action path: the rollout samples through it,
    evaluation, `load_policy` and export take its deterministic action (`policy_step`, `forward`).
    Recurrent models (`recurrent`) carry a memory state [B, state_size] per env between calls
    (zeroed where an episode ended: `nn.memory.reset_states`); a feedforward model's state is
    empty ([B, 0], `initial_state`) or None and passes through.

    The update's methods take *normalized* observations (call `normalize` first): the rollout
    stores raw observations and the update normalizes them with the statistics the actor used.
    `evaluate`/`value` score [B, ...] batches; `step` (one env step), `unroll` and
    `evaluate_sequence` run recurrent models over [T, B, ...] sequences with resets.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        cfg: PolicyConfig,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.dict_obs = isinstance(observation_space, gym.spaces.Dict)
        self.actor_keys, self.critic_keys = observation_groups(observation_space, cfg)
        self.recurrent = cfg.memory != "none"
        self.critic_memory_mode = cfg.critic_memory if self.recurrent else "none"
        shared = self.critic_memory_mode == "shared"
        if self.dict_obs:
            self.obs_dim = None
            self.obs_normalizer = DictObservationNormalizer(
                observation_space, clip=cfg.obs_clip, enabled=cfg.normalize_obs
            )
            self.actor_encoder = MultiModalEncoder(
                observation_space, self.actor_keys, cfg.encoders, cfg.activation
            )
            actor_features = self.actor_encoder.out_dim
            # A shared core already encodes the actor's keys; the critic adds the rest.
            own = [k for k in self.critic_keys if k not in self.actor_keys] if shared else None
            critic_keys = self.critic_keys if own is None else own
            self.critic_encoder = (
                MultiModalEncoder(observation_space, critic_keys, cfg.encoders, cfg.activation)
                if critic_keys
                else None
            )
            critic_features = self.critic_encoder.out_dim if self.critic_encoder else 0
        else:
            self.obs_dim = observation_dim(observation_space)
            self.obs_normalizer = ObservationNormalizer(
                (self.obs_dim,), clip=cfg.obs_clip, enabled=cfg.normalize_obs
            )
            self.actor_encoder = self.critic_encoder = None
            actor_features = self.obs_dim
            critic_features = 0 if shared else self.obs_dim
        self.memory = self.critic_memory = None
        actor_in, critic_in = actor_features, critic_features
        if self.recurrent:
            self.memory = Memory(cfg.memory, actor_features, cfg.memory_hidden, cfg.memory_layers)
            actor_in = self.memory.out_dim
            if self.critic_memory_mode == "separate":
                self.critic_memory = Memory(
                    cfg.memory, critic_features, cfg.memory_hidden, cfg.memory_layers
                )
                critic_in = self.critic_memory.out_dim
            elif shared:
                critic_in = self.memory.out_dim + critic_features
        self.state_size = (self.memory.state_size if self.memory else 0) + (
            self.critic_memory.state_size if self.critic_memory else 0
        )
        self.distribution = make_distribution(action_space, cfg)
        self.actor = mlp(
            actor_in,
            cfg.actor_hidden,
            self.distribution.head_dim,
            cfg.activation,
            POLICY_HEAD_GAIN,
        )
        self.critic = mlp(critic_in, cfg.critic_hidden, 1, cfg.activation, VALUE_HEAD_GAIN)
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

    @property
    def flat_mlp(self) -> bool:
        """A Box observation, no encoders, no memory: the actor is one MLP over the vector."""
        return not self.dict_obs and not self.recurrent

    # --- observations -------------------------------------------------------------------------
    def normalize(self, obs: Obs) -> Obs:
        if self.dict_obs:
            return self.obs_normalizer(obs)
        return self.obs_normalizer(obs.reshape(obs.shape[0], -1))

    def _actor_features(self, obs: Obs) -> torch.Tensor:
        return obs if self.actor_encoder is None else self.actor_encoder(obs)

    def _critic_features(self, obs: Obs) -> torch.Tensor | None:
        if self.critic_encoder is not None:
            return self.critic_encoder(obs)
        return None if self.dict_obs or self.critic_memory_mode == "shared" else obs

    # --- acting: raw observations -> actions ---------------------------------------------------
    def act(
        self, raw_obs: Obs, state: torch.Tensor | None = None, deterministic: bool = False
    ) -> PolicyStep:
        """The one observation -> action path: normalize, [encoders, memory from `state`],
        actor head, then a sample of the distribution (or its mode when `deterministic`), mapped
        to the env's action space. Recurrent models also return this step's value (their critic
        needs this step's state); feedforward ones leave `values` to a batched pass later."""
        obs = self.normalize(raw_obs)
        values = None
        if self.recurrent:
            params, values, state = self.step(obs, state)
        else:
            params = self.actor(self._actor_features(obs))
        if deterministic:
            actions, log_probs = self.distribution.mode(params), None
        else:
            actions, log_probs = self.distribution.sample(params)
        return PolicyStep(self.to_env(actions), state, actions, log_probs, values)

    @torch.no_grad()
    def policy_step(
        self, raw_obs: Obs, state: torch.Tensor | None = None, deterministic: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Inference: raw obs, memory state -> (env actions, next state), through `act`."""
        step = self.act(raw_obs, state, deterministic)
        return step.env_actions, step.state

    def forward(self, raw_obs: Obs) -> torch.Tensor:
        """Inference for feedforward models: raw observations -> deterministic env actions
        (recurrent models carry a state: `policy_step`)."""
        if self.recurrent:
            raise TypeError(
                "a recurrent policy carries a memory state between steps: call"
                " policy_step(raw_obs, state) (initial_state(batch) to start)"
            )
        return self.act(raw_obs, deterministic=True).env_actions

    def value_of(self, raw_obs: Obs, state: torch.Tensor | None = None) -> torch.Tensor:
        """V(raw observations); a recurrent model's from the memory `state` (the state the last
        step acted on left)."""
        obs = self.normalize(raw_obs)
        if self.recurrent:
            return self.step(obs, state)[1]
        return self.value(obs)

    # --- the update: normalized observations -------------------------------------------------
    def evaluate(
        self, obs: Obs, actions: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_prob, entropy, value) of stored actions under the current parameters."""
        params = self.actor(self._actor_features(obs))
        return (
            self.distribution.log_prob(params, actions),
            self.distribution.entropy(params),
            self.critic(self._critic_features(obs)).squeeze(-1),
        )

    def value(self, obs: Obs) -> torch.Tensor:
        return self.critic(self._critic_features(obs)).squeeze(-1)

    # --- recurrent ------------------------------------------------------------------------------
    def initial_state(self, batch: int, device: torch.device | None = None) -> torch.Tensor:
        """Zero memory state, [batch, state_size] (state_size 0 for feedforward models)."""
        return torch.zeros(batch, self.state_size, device=device)

    def unroll(
        self, obs: Obs, state: torch.Tensor, resets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run normalized observations [T, B, ...] through encoders, memory and heads from
        `state` [B, state_size]; `resets` [T, B] zeroes an env's state before that step.

        Returns (distribution parameters [T, B, ...], values [T, B], state after the last step).
        """
        assert self.memory is not None, "unroll needs a recurrent model (policy.memory)"
        flat = obs_map(lambda x: x.flatten(0, 1), obs)
        first = next(iter(obs.values())) if isinstance(obs, dict) else obs
        T, B = first.shape[:2]
        actor_state, critic_state = state.split(
            [self.memory.state_size, self.state_size - self.memory.state_size], dim=-1
        )
        features = self._actor_features(flat).view(T, B, -1)
        actor_out, actor_state = self.memory(features, actor_state, resets)
        params = self.actor(actor_out)
        critic_features = self._critic_features(flat)
        if critic_features is not None:
            critic_features = critic_features.view(T, B, -1)
        if self.critic_memory is not None:
            critic_out, critic_state = self.critic_memory(critic_features, critic_state, resets)
        elif self.critic_memory_mode == "shared":
            critic_out = (
                actor_out
                if critic_features is None
                else torch.cat([actor_out, critic_features], dim=-1)
            )
        else:
            critic_out = critic_features
        values = self.critic(critic_out).squeeze(-1)
        return params, values, torch.cat([actor_state, critic_state], dim=-1)

    def step(
        self, obs: Obs, state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One env step of a recurrent model on normalized obs [B, ...]:
        (distribution parameters, values, next state)."""
        params, values, state = self.unroll(obs_map(lambda x: x.unsqueeze(0), obs), state)
        return params[0], values[0], state

    def evaluate_sequence(
        self, obs: Obs, actions: torch.Tensor, state: torch.Tensor, resets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(log_prob, entropy, value), each [T, B], of stored action sequences re-run from their
        stored initial state with the episode resets inside the sequences."""
        params, values, _ = self.unroll(obs, state, resets)
        return (
            self.distribution.log_prob(params, actions),
            self.distribution.entropy(params),
            values,
        )

    # --- actions --------------------------------------------------------------------------------
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
