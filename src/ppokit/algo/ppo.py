"""PPO's public steps — `act`, `record`, `finish_rollout`, `update` — on the reference path.

This file is the algorithm a reader follows; the rest of it is in four files: the loss
(algo/loss.py), the rollout buffer and its minibatches (algo/rollout.py), reward scaling and GAE
(algo/gae.py) and the model (nn/actor_critic.py). The trainer, the node programs and user loops
call these steps; none of them re-implements any of it.

What runs is this eager torch code unless an accelerator replaces a step (the NumPy or compiled
act step, the compiled update, bf16): `algo/accel` chooses them in one place (`PPO.paths`, the
line the Trainer prints at start-up), and each is tested equal to the step it replaces.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ppokit.algo.accel import Accelerators, choose_paths
from ppokit.algo.ema import EmaPolicy
from ppokit.algo.gae import RewardScaler, compute_gae
from ppokit.algo.loss import (
    MinibatchReport,
    UpdateObserver,
    explained_variance,
    loss_settings,
    normalize_batch_advantages,
    ppo_loss,
    stack_terms,
)
from ppokit.algo.rollout import Minibatch, RolloutBuffer
from ppokit.algo.schedules import LRSchedule
from ppokit.config import TrainConfig, minibatch_size
from ppokit.distributed import LocalSync
from ppokit.envs.base import StepResult
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.memory import reset_states
from ppokit.observations import Obs, storage_dtype

# The loss terms `update` averages over its minibatches, in `stack_terms` order.
LOSS_METRICS = (
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clip_fraction",
)


class PPO:
    """The algorithm's state (model, optimizer, LR schedule, reward scaler, rollout buffer) and the
    steps a training loop is made of.

    A loop calls, per env step, `act(obs)` then `record(step_result)`; when `rollout_full`,
    `finish_rollout(next_obs)` then `update()`. For recurrent models PPO also carries the memory
    state of every env (`memory_state`) across steps and rollouts, zeroed where an episode ended;
    a loop that resets its envs calls `reset_memory()`.

    `sync` shares the update between data-parallel ranks (ppokit.distributed): rank 0's initial
    parameters, averaged gradients and loss terms, merged statistics. The default, one process,
    shares nothing.
    """

    def __init__(
        self,
        model: ActorCritic,
        cfg: TrainConfig,
        device: torch.device,
        total_updates: int,
        sync: LocalSync | None = None,
    ) -> None:
        self.sync = sync if sync is not None else LocalSync()
        self.sync.broadcast_module(model)  # every rank starts from rank 0's parameters
        self.model, self.cfg, self.algo, self.device = model, cfg, cfg.algo, device
        self.num_envs = cfg.env.num_envs
        self.recurrent = model.recurrent
        self.finite_horizon = cfg.env.finite_horizon
        self.minibatch_size = minibatch_size(cfg)
        self.schedule = LRSchedule(cfg.algo, total_updates)
        self.optimizer = make_optimizer(model, cfg)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.loss_kwargs = loss_settings(cfg.algo)
        self.reward_scaler = RewardScaler(
            self.num_envs, cfg.algo.gamma, clip=cfg.algo.reward_clip, enabled=cfg.algo.scale_rewards
        ).to(device)
        dist = model.distribution
        self.buffer = RolloutBuffer(
            cfg.algo.num_steps,
            self.num_envs,
            observation_layout(model),
            dist.action_shape,
            dist.action_dtype,
            device,
            state_size=model.state_size,
        )
        self.memory_state = model.initial_state(self.num_envs, device)  # [N, 0] without memory
        # The finished rollout's GAE inputs, kept for recomputing advantages between epochs.
        self.scaled_rewards: torch.Tensor | None = None
        self.last_values: torch.Tensor | None = None
        self.next_obs: Obs | None = None
        # The policy that acts in rollouts: the model, or an EMA of it (algo/ema.py).
        self.ema = EmaPolicy(model, cfg.ema.decay) if cfg.ema.decay > 0 else None
        self.acting_model = self.ema.model if self.ema is not None else model
        # Which accelerators replace a step of this file (None: the code here runs), and why.
        self.paths = choose_paths(cfg, model, device)
        self.accel = Accelerators(self.paths, self)
        self.updates = 0

    # --- rollout -------------------------------------------------------------------------------
    @property
    def rollout_full(self) -> bool:
        return self.buffer.full

    def reset_memory(self) -> None:
        """Zero every env's memory state (the envs were reset)."""
        self.memory_state.zero_()

    def act(self, obs: Obs) -> torch.Tensor:
        """Sample actions for raw observations, store them in the rollout, return env actions."""
        act = self.accel.act or self.acting_model.act  # the model's, unless accelerated
        with torch.no_grad():
            step = act(obs, self.memory_state)
        # Recurrent models also store the state acted from, and this step's value.
        self.buffer.add_action(obs, step.actions, step.log_probs, self.memory_state, step.values)
        self.memory_state = step.state
        return step.env_actions

    def record(self, step: StepResult) -> None:
        """Store the outcome of the actions returned by the last `act`.

        Reads nothing on the host: on a batched torch env this is a few device ops per step.
        """
        b = self.buffer
        if step.final_obs is not None:
            # V(final observation) for envs whose episode ended now; used where it was truncated.
            with torch.no_grad():
                b.bootstrap_values[b.step] = self.model.value_of(step.final_obs, self.memory_state)
        elif step.bootstrap_pre_step:
            # No final observations from this simulator: V(obs acted on), set in finish_rollout.
            b.pre_step_bootstrap.append(b.step)
        terminated = step.terminated
        if self.finite_horizon:  # the time limit is part of the task: no bootstrap past it
            terminated = terminated | step.truncated
        b.add_outcome(step.rewards, terminated, step.truncated)
        if self.recurrent:  # a new episode starts from a zero state (terminated or truncated)
            self.memory_state = reset_states(self.memory_state, step.terminated | step.truncated)

    @torch.no_grad()
    def finish_rollout(self, next_obs: Obs) -> None:
        """Values, reward scaling and GAE over the full rollout; `next_obs` follows its last step.

        Feedforward values are computed here in one batched pass; recurrent ones were stored by
        `act` (they depend on the memory state of each step).
        """
        b = self.buffer
        if not b.full:
            raise RuntimeError(
                f"finish_rollout() needs a full rollout ({b.step}/{b.num_steps} steps recorded)"
            )
        if not self.recurrent:
            obs = self.model.normalize(b.flat_obs())
            if self.ema is None:
                b.values.copy_(self.model.value(obs).view(b.num_steps, b.num_envs))
            else:  # values and the proximal log-probs in one pass; the stored ones are the EMA's
                self.ema.relabel(self.model, b, obs)
        for t in b.pre_step_bootstrap:  # rsl_rl's bootstrap: V(s_t) for a truncation at t
            b.bootstrap_values[t].copy_(b.values[t])
        self.scaled_rewards = self.reward_scaler.scale_rollout(b.rewards, b.dones, self.sync)
        self.last_values = self.model.value_of(next_obs, self.memory_state)
        if self.algo.recompute_advantages and not self.recurrent:
            self.next_obs = self.model.normalize(next_obs)
        self._advantages_from(b.values)

    def _advantages_from(self, values: torch.Tensor) -> None:
        """GAE advantages and returns of the finished rollout under the critic's `values` [T, N].

        A truncated step bootstraps from V(final observation) stored during the rollout.
        """
        b = self.buffer
        next_values = torch.cat([values[1:], self.last_values.unsqueeze(0)])
        next_values = torch.where(b.truncated, b.bootstrap_values, next_values)
        advantages, returns = compute_gae(
            self.scaled_rewards,
            values,
            next_values,
            b.terminated,
            b.dones,
            self.algo.gamma,
            self.algo.lam,
        )
        b.advantages.copy_(advantages)
        b.returns.copy_(returns)

    @torch.no_grad()
    def _recompute_advantages(self, obs: Obs) -> None:
        """Advantages and returns under the current critic (`obs` normalized, flat). The rollout's
        values stay the value-clipping reference; V(next_obs) is recomputed, the truncation
        bootstraps keep the rollout's critic (their final observations are not stored)."""
        b = self.buffer
        self.last_values = self.model.value(self.next_obs)
        self._advantages_from(self.model.value(obs).view(b.num_steps, b.num_envs))

    def _batch_advantages(self) -> torch.Tensor:
        """The rollout's advantages, flat, normalized over the whole batch when configured."""
        advantages = self.buffer.advantages.flatten()
        if self.algo.normalize_advantages and self.algo.advantage_norm_scope == "batch":
            return normalize_batch_advantages(advantages, self.sync)
        return advantages

    # --- update ---------------------------------------------------------------------------------
    def update(self, observers: Sequence[UpdateObserver] = ()) -> dict[str, float]:
        """Epochs x minibatches of PPO on the finished rollout; returns metrics for logging.

        Each of `observers` is called with a `MinibatchReport` of every minibatch step, before
        the optimizer steps (`ppokit verify` watches the update this way).
        """
        a, b = self.algo, self.buffer
        if not self.schedule.adaptive:
            self.set_lr(self.schedule.at_update(self.updates))
        with torch.no_grad():
            obs = self.model.normalize(b.flat_obs())
            advantages = self._batch_advantages()
            sequences = b.sequences(obs, advantages, a.bptt_length) if self.recurrent else None
        recompute = a.recompute_advantages and not self.recurrent
        # Explained variance is reported for the rollout's own returns.
        rollout_returns = b.returns.clone() if recompute else b.returns
        check_kl = a.kl_early_stop or self.schedule.adaptive
        sums = torch.zeros(len(LOSS_METRICS), device=self.device)
        steps = 0
        epoch_kls: list[float] = []
        stopped_early = False
        for epoch in range(a.num_epochs):
            if recompute and epoch > 0:
                self._recompute_advantages(obs)
                advantages = self._batch_advantages()
            epoch_kl = torch.zeros((), device=self.device)
            epoch_steps = 0
            minibatches = (
                b.sequence_minibatches(sequences, self.minibatch_size)
                if sequences is not None
                else b.minibatches(obs, advantages, self.minibatch_size)
            )
            for mb in minibatches:
                terms = self.minibatch_step(mb, check_kl, observers)
                if terms is None:
                    stopped_early = True
                    break
                sums += terms
                epoch_kl += terms[3]
                steps += 1
                epoch_steps += 1
            if epoch_steps:
                epoch_kls.append(float(epoch_kl) / epoch_steps)
            if stopped_early:
                break

        self.model.obs_normalizer.update(b.flat_obs(), self.sync)
        if self.ema is not None:
            self.ema.update(self.model)
        self.updates += 1
        b.reset()
        metrics = dict(zip(LOSS_METRICS, (sums / max(steps, 1)).tolist()))
        metrics["losses/approx_kl"] = epoch_kls[-1] if epoch_kls else float("nan")
        explained = explained_variance(b.values.flatten(), rollout_returns.flatten(), self.sync)
        metrics["losses/explained_variance"] = float(explained)
        metrics["losses/epochs_run"] = float(len(epoch_kls))
        metrics["losses/early_stopped"] = float(stopped_early)
        metrics["charts/learning_rate"] = self.schedule.lr
        std = self.model.action_std()
        if std is not None:
            metrics["charts/action_std"] = float(std.detach().mean())
        if self.ema is not None:
            metrics.update(self.ema.weight_metrics(b))
        return metrics

    def metric_names(self) -> list[str]:
        """The keys `update()` returns, in its order (metrics.csv declares its columns up front)."""
        names = [
            *LOSS_METRICS,
            "losses/explained_variance",
            "losses/epochs_run",
            "losses/early_stopped",
            "charts/learning_rate",
        ]
        if self.model.action_std() is not None:
            names.append("charts/action_std")
        if self.ema is not None:
            names += ["charts/ema_weight_mean", "charts/ema_weight_max"]
        return names

    def minibatch_step(
        self, mb: Minibatch, check_kl: bool = False, observers: Sequence[UpdateObserver] = ()
    ) -> torch.Tensor | None:
        """One gradient step on `mb`; None (and no step) when the KL early stop fires.

        Returns the stacked (policy loss, value loss, entropy, approx KL, clip fraction). Runs
        `_reference_step` below, or its compiled equivalent with algo.compile.
        """
        step = self.accel.update or self._reference_step
        return step(mb, check_kl, observers)

    def _reference_step(
        self, mb: Minibatch, check_kl: bool, observers: Sequence[UpdateObserver]
    ) -> torch.Tensor | None:
        """The eager step: loss, backward, [all-reduce], KL decision, gradient clip, Adam."""
        with self.accel.autocast():  # bf16: the loss's matmuls in bfloat16; fp32: nothing
            terms = ppo_loss(self.model, mb, **self.loss_kwargs)
        self.optimizer.zero_grad(set_to_none=True)
        terms.loss.backward()
        # Across data-parallel ranks the gradient and the loss terms are averaged in one
        # all-reduce before the KL decision, so every rank decides and steps the same.
        stacked = self.sync.average_gradients(self.params, stack_terms(terms))
        stepping = not check_kl or self.kl_allows_step(float(stacked[3]))
        if stepping and self.algo.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.params, self.algo.max_grad_norm, foreach=True)
        for observe in observers:
            norm = grad_norm(self.params) if stepping else None
            observe(MinibatchReport(mb, stacked, norm, stepping))
        if not stepping:
            return None
        self.optimizer.step()
        return stacked

    def kl_allows_step(self, kl: float) -> bool:
        """Whether a minibatch whose approx KL is `kl` may step: False ends the update (KL early
        stop); the adaptive LR adapts to `kl` first."""
        if self.algo.kl_early_stop and kl > self.algo.target_kl:
            return False
        if self.schedule.adaptive:
            self.set_lr(self.schedule.after_kl(kl))
        return True

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.accel.optimizer_state_dict(self.optimizer),
            "schedule": self.schedule.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
            "updates": self.updates,
        }
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.ema is not None:
            # A run that did not use the EMA before starts its average from the loaded weights.
            self.ema.load_state_dict(state.get("ema", state["model"]))
        self.optimizer.load_state_dict(state["optimizer"])
        self.accel.optimizer_loaded()
        self.schedule.load_state_dict(state["schedule"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.updates = int(state["updates"])
        self.set_lr(self.schedule.lr)


def grad_norm(params: list[torch.Tensor]) -> torch.Tensor:
    """The global norm of the parameters' gradients (what clip_grad_norm_ bounds)."""
    norms = [p.grad.norm() for p in params if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())


def observation_layout(model: ActorCritic) -> tuple[int, ...] | dict:
    """What the rollout buffer stores per step: the flat vector, or each key's shape and dtype."""
    space = model.observation_space
    if model.dict_obs:
        return {k: (tuple(s.shape), storage_dtype(s)) for k, s in space.spaces.items()}
    return (model.obs_dim,)


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    a = cfg.algo
    params = [p for p in model.parameters() if p.requires_grad]
    if a.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=a.lr, eps=a.adam_eps, weight_decay=a.weight_decay, foreach=True
        )
    return torch.optim.Adam(params, lr=a.lr, eps=a.adam_eps, foreach=True)
