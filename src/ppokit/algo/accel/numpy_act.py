"""An accelerator of the rollout's act step: `ActorCritic.act` in NumPy, for flat MLP policies on
the CPU.

With one or a few environments the act step runs on batches of 1-8 rows, where torch's per-op
dispatch (a few microseconds per op, ~30 ops per step) costs several times the arithmetic; NumPy
does the same arithmetic in about a third of the time. The weights cannot change during a rollout,
so they are copied once per rollout (`start_rollout`). This is an inference mirror of
`ActorCritic.act` (the reference), nothing more: the stored actions and log-probabilities are
re-evaluated by the torch model in the update, and tests/unit/test_numpy_act.py checks that,
given the same noise, both compute the same actions and log-probabilities.
"""

from __future__ import annotations

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from ppokit.algo.rollout import RolloutBuffer
from ppokit.nn.actor_critic import ActorCritic, PolicyStep
from ppokit.nn.distributions import LOG_SQRT_2PI, Categorical, DiagGaussian
from ppokit.nn.encoders import MLP


def _elu(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0),
    "elu": _elu,
}


class NumpyAct:
    """Callable like `ActorCritic.act` (sampling): raw obs, state -> PolicyStep."""

    @staticmethod
    def unsupported(model: ActorCritic) -> str:
        """Why the NumPy act step cannot run `model` ('' when it can): it runs an MLP actor with
        a NumPy activation and Gaussian or Categorical actions on the CPU; not dict observations
        (encoders) or recurrent models (memory)."""
        if model.recurrent:
            return "recurrent policy"
        if not model.flat_mlp:
            return "dict observations"
        if not isinstance(model.actor, MLP):
            return "the actor is not an MLP"
        if model.actor.activation not in NUMPY_ACTIVATIONS:
            return f"{model.actor.activation} activation"
        if not isinstance(model.distribution, (DiagGaussian, Categorical)):
            return f"{type(model.distribution).__name__} actions"
        devices = {p.device.type for p in model.parameters()}
        if devices != {"cpu"}:
            return f"on {', '.join(sorted(devices))}"
        return ""

    @staticmethod
    def supports(model: ActorCritic) -> bool:
        return not NumpyAct.unsupported(model)

    def __init__(self, model: ActorCritic, rollout: RolloutBuffer | None = None) -> None:
        """With `rollout` (PPO's buffer) the weights are copied again at each rollout's first
        step; without, `start_rollout()` (or `sync`) does it."""
        if not self.supports(model):
            raise ValueError(
                "the NumPy act step needs an MLP policy with Gaussian/Categorical actions on the CPU"
            )
        self.model, self.rollout = model, rollout
        self.activation = NUMPY_ACTIVATIONS[model.actor.activation]
        # The matmuls here are a few rows by tens of columns: BLAS worker threads only add
        # hand-offs (measured 3.5x slower with 8 envs on a busy 2-core machine), so NumPy's BLAS
        # runs single-threaded in a process that acts through this class, like torch_threads 1.
        threadpool_limits(limits=1, user_api="blas")
        self.rng = np.random.default_rng(0)
        self.sync(0)

    def start_rollout(self) -> None:
        """Copy the weights and statistics for a new rollout, with a sampler seeded from torch's
        generator (so a resumed checkpoint samples the same)."""
        self.sync(int(torch.randint(2**62, ())))

    @torch.no_grad()
    def sync(self, seed: int) -> None:
        """Copy the current weights and statistics; reseed the sampler."""
        m = self.model

        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().numpy().astype(np.float32, copy=True)

        self.layers = [
            (np.ascontiguousarray(array(layer.weight).T), array(layer.bias))
            for layer in m.actor.layers
        ]
        norm = m.obs_normalizer
        self.normalize = norm.enabled
        (self.obs_mean, self.obs_inv_std), self.obs_clip = norm.as_numpy(), norm.clip
        self.gaussian = isinstance(m.distribution, DiagGaussian)
        if self.gaussian:
            log_std = array(m.distribution.clamped_log_std())
            self.std = np.exp(log_std)
            self.log_prob_offset = np.float32(
                log_std.sum() + LOG_SQRT_2PI * m.distribution.action_dim
            )
            self.center, self.half = array(m.action_center), array(m.action_half)
            self.low, self.high = array(m.action_low), array(m.action_high)
        self.rng = np.random.default_rng(seed)

    def __call__(self, raw_obs: torch.Tensor, state: torch.Tensor | None = None) -> PolicyStep:
        if self.rollout is not None and self.rollout.step == 0:
            self.start_rollout()  # weights and statistics change only between rollouts
        x = raw_obs.numpy().reshape(raw_obs.shape[0], -1)
        if self.normalize:
            x = np.clip((x - self.obs_mean) * self.obs_inv_std, -self.obs_clip, self.obs_clip)
        *hidden, (w_out, b_out) = self.layers
        for w, b in hidden:
            x = self.activation(x @ w + b)
        out = x @ w_out + b_out
        if self.gaussian:
            noise = self.rng.standard_normal(out.shape, dtype=np.float32)
            actions = out + noise * self.std
            log_probs = (
                np.float32(-0.5) * np.einsum("ij,ij->i", noise, noise) - self.log_prob_offset
            )
            env_actions = np.clip(self.center + actions * self.half, self.low, self.high)
            return PolicyStep(
                torch.from_numpy(env_actions),
                state,
                torch.from_numpy(actions),
                torch.from_numpy(log_probs),
                None,
            )
        log_p = out - out.max(axis=-1, keepdims=True)
        log_p -= np.log(np.exp(log_p).sum(axis=-1, keepdims=True))
        gumbel = -np.log(-np.log(self.rng.random(log_p.shape, dtype=np.float32).clip(1e-20, 1.0)))
        actions = (log_p + gumbel).argmax(-1)
        log_probs = np.take_along_axis(log_p, actions[:, None], axis=-1)[:, 0]
        actions_t = torch.from_numpy(actions)
        return PolicyStep(actions_t, state, actions_t, torch.from_numpy(log_probs), None)
