"""The EMA rollout agent: rollouts act with an exponential moving average of the policy weights.

The Isaac-Lab recipe ("use an EMA agent for inference during the rollout") smooths the policy
that collects data. The averaged model only *acts*: the values, the gradient steps and the
checkpointed/exported policy are the trained model's. After every update

    ema <- decay * ema + (1 - decay) * weights          (buffers, e.g. normalizer statistics, copied)

Data collected by the average is off-policy for the trained model, so the update needs the
probabilities of the policy that actually produced the actions. Following Hilton et al. (2021,
"Batch size-invariance for policy optimization", PPO-EWMA), PPO separates the *behaviour* policy
(the EMA, which sampled the actions) from the *proximal* policy (the centre of the clip range):

    L = E_behaviour[ pi_prox / pi_behaviour * min(r A, clip(r, 1 - eps, 1 + eps) A) ],
    r = pi_theta / pi_prox,

with the proximal policy the trained policy at the start of the update (pi_theta_old). The
ratio and its clip are therefore exactly PPO's (r = 1 before the first gradient step, the trust
region around the policy being optimised); the EMA enters only through the importance weight
pi_prox / pi_behaviour, computed once per rollout and not differentiated. docs/gpu.md gives the
reasoning for this choice over the alternative (the EMA as proximal policy).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ppokit.algo.rollout import RolloutBuffer
from ppokit.errors import ConfigError
from ppokit.observations import Obs


class EmaPolicy:
    """A frozen copy of `model` whose parameters trail the model's by `decay` per update."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if getattr(model, "recurrent", False):
            raise ConfigError("ema.decay does not support recurrent policies; use 0")
        self.decay = decay
        self.model = copy.deepcopy(model)
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards `model`'s parameters; take its buffers as they are."""
        ema_params = list(self.model.parameters())
        params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.model.buffers(), model.buffers()):
            ema_buffer.copy_(buffer)

    @torch.no_grad()
    def relabel(self, model: nn.Module, buffer: RolloutBuffer, obs: Obs) -> None:
        """The trained `model`'s values and (proximal) log-probabilities of the full rollout in
        one pass over its normalized flat `obs`; the buffer's log-probabilities become the
        proximal ones and its `weights` pi_prox / pi_behaviour (the stored log-probs were the
        EMA's)."""
        T, N = buffer.num_steps, buffer.num_envs
        log_probs, _, values = model.evaluate(obs, buffer.actions.flatten(0, 1))
        buffer.values.copy_(values.view(T, N))
        buffer.weights = behaviour_weights(log_probs.view(T, N), buffer.log_probs)
        buffer.log_probs.copy_(log_probs.view(T, N))

    @staticmethod
    def weight_metrics(buffer: RolloutBuffer) -> dict[str, float]:
        """Mean and max of the rollout's importance weights (logged), which it then forgets."""
        assert buffer.weights is not None
        w_mean, w_max = torch.stack([buffer.weights.mean(), buffer.weights.max()]).tolist()
        buffer.weights = None
        return {"charts/ema_weight_mean": w_mean, "charts/ema_weight_max": w_max}

    def state_dict(self) -> dict:
        return self.model.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state)


def behaviour_weights(
    proximal_log_probs: torch.Tensor, behaviour_log_probs: torch.Tensor
) -> torch.Tensor:
    """pi_prox(a|s) / pi_behaviour(a|s) per sample (the PPO-EWMA importance weight)."""
    return (proximal_log_probs - behaviour_log_probs).exp()
