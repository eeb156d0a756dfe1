"""The PPO loss of one minibatch, and the batch statistics around it (advantage normalization,
explained variance).

`ppo_loss` is a pure function of the model and a minibatch: the reference update (algo/ppo.py)
and the compiled one (algo/accel/compiled.py) both call it, and `ppokit verify` reads the clip
ranges off it. `loss_settings` turns the config into its keyword arguments, once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from ppokit.algo.rollout import Minibatch
from ppokit.config import AlgoConfig
from ppokit.nn.actor_critic import ActorCritic

if TYPE_CHECKING:
    from ppokit.distributed import LocalSync

ADV_EPS = 1e-8


@dataclass
class LossTerms:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


@dataclass
class MinibatchReport:
    """What an update observer (`PPO.update(observers=...)`) sees of each minibatch step, after
    the gradient is computed (and averaged across ranks) and before the optimizer steps."""

    minibatch: Minibatch
    terms: torch.Tensor  # (policy loss, value loss, entropy, approx KL, clip fraction)
    grad_norm: torch.Tensor | None  # global norm of the gradient applied (clipped); None: no step
    stepped: bool  # False when the KL early stop ended the update at this minibatch


UpdateObserver = Callable[[MinibatchReport], None]


def stack_terms(terms: LossTerms) -> torch.Tensor:
    """(policy loss, value loss, entropy, approx KL, clip fraction) as one tensor."""
    return torch.stack(
        [terms.policy_loss, terms.value_loss, terms.entropy, terms.approx_kl, terms.clip_fraction]
    )


def loss_settings(algo: AlgoConfig) -> dict[str, Any]:
    """`ppo_loss`'s keyword arguments for a config. The value loss is clipped at
    `algo.value_clip_coef`, or at `algo.clip_coef` when that is unset (the one place this default
    is decided), and not at all without `algo.clip_value_loss`."""
    value_clip = algo.value_clip_coef if algo.value_clip_coef is not None else algo.clip_coef
    return {
        "clip_coef": algo.clip_coef,
        "value_clip_coef": value_clip if algo.clip_value_loss else None,
        "vf_coef": algo.vf_coef,
        "ent_coef": algo.ent_coef,
        "normalize_minibatch_advantages": algo.normalize_advantages
        and algo.advantage_norm_scope == "minibatch",
    }


def normalize_advantages(
    advantages: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Zero mean, unit std; over the entries where `mask` is true when given (padding)."""
    if mask is None:
        return (advantages - advantages.mean()) / (advantages.std() + ADV_EPS)
    real = advantages[mask]
    return (advantages - real.mean()) / (real.std() + ADV_EPS)


def normalize_batch_advantages(advantages: torch.Tensor, sync: LocalSync) -> torch.Tensor:
    """`normalize_advantages` over the whole batch: every rank's advantages when distributed."""
    if not sync.distributed:
        return normalize_advantages(advantages)
    mean, var, n = sync.moments(advantages)
    std = (var * n / (n - 1)).sqrt().to(advantages.dtype)
    return (advantages - mean.to(advantages.dtype)) / (std + ADV_EPS)


def evaluate_minibatch(
    model: ActorCritic, mb: Minibatch
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(log_prob, entropy, value) of the minibatch's actions under the model's parameters: a
    minibatch of sequences (recurrent policies: `mb.states` set) is re-run through the memory
    from its stored initial states with the episode resets inside it."""
    if mb.states is not None:
        return model.evaluate_sequence(mb.obs, mb.actions, mb.states, mb.resets)
    return model.evaluate(mb.obs, mb.actions)


def ppo_loss(
    model: ActorCritic,
    mb: Minibatch,
    clip_coef: float,
    value_clip_coef: float | None,
    vf_coef: float,
    ent_coef: float,
    normalize_minibatch_advantages: bool = False,
) -> LossTerms:
    """Clipped surrogate + (optionally clipped) value loss - entropy bonus, for one minibatch.

    `value_clip_coef` None means an unclipped value loss. The padded steps of a minibatch of
    sequences (`mb.mask` false) are left out of every term and statistic. With `mb.weights` (an
    EMA agent collected the data) each sample's clipped surrogate is weighted by
    pi_prox / pi_behaviour, and `mb.log_probs` are the proximal policy's (algo/ema.py).
    """
    log_probs, entropy, values = evaluate_minibatch(model, mb)
    mask = mb.mask
    if mask is None:
        mean = torch.mean
    else:
        count = mask.sum()

        def mean(x: torch.Tensor) -> torch.Tensor:
            return torch.where(mask, x, 0.0).sum() / count

    log_ratio = log_probs - mb.log_probs
    ratio = log_ratio.exp()
    advantages = (
        normalize_advantages(mb.advantages, mask)
        if normalize_minibatch_advantages
        else mb.advantages
    )
    surrogate = torch.max(
        -advantages * ratio, -advantages * ratio.clamp(1.0 - clip_coef, 1.0 + clip_coef)
    )
    if mb.weights is not None:
        surrogate = surrogate * mb.weights
    policy_loss = mean(surrogate)
    value_error = (values - mb.returns).square()
    if value_clip_coef is not None:
        clipped = mb.values + (values - mb.values).clamp(-value_clip_coef, value_clip_coef)
        value_error = torch.max(value_error, (clipped - mb.returns).square())
    value_loss = 0.5 * mean(value_error)
    entropy_mean = mean(entropy)
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy_mean
    with torch.no_grad():
        # The low-variance estimator E[(r - 1) - log r] (Schulman), >= 0 for every sample.
        approx_kl = mean((ratio - 1.0) - log_ratio)
        clip_fraction = mean(((ratio - 1.0).abs() > clip_coef).float())
    return LossTerms(
        loss,
        policy_loss.detach(),
        value_loss.detach(),
        entropy_mean.detach(),
        approx_kl,
        clip_fraction,
    )


def explained_variance(
    predicted: torch.Tensor, target: torch.Tensor, sync: LocalSync | None = None
) -> torch.Tensor:
    """1 - Var[target - predicted] / Var[target] (nan when the target is constant); over every
    rank's samples when `sync` is distributed."""
    if sync is not None and sync.distributed:
        _, var, _ = sync.moments(torch.stack([target - predicted, target], 1))
        return 1.0 - var[0] / var[1]
    var_target = target.var()
    return 1.0 - (target - predicted).var() / var_target
