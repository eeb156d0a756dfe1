"""PPO: the loss, and the algorithm's public steps (act, record, finish_rollout, update).

This is the one place the PPO math lives. The trainer, the node executor and user loops all call
these steps; none of them re-implements any of it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ppokit.algo.compiled_step import CompiledStep, compile_available
from ppokit.algo.ema import EmaPolicy, behaviour_weights
from ppokit.algo.gae import compute_gae
from ppokit.algo.rollout import Minibatch, RolloutBuffer
from ppokit.algo.schedules import LRSchedule
from ppokit.config import TrainConfig, minibatch_size
from ppokit.distributed import LocalSync
from ppokit.envs.base import StepResult
from ppokit.errors import ConfigError
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.normalization import RewardScaler
from ppokit.nn.numpy_explorer import NumpyExplorer
from ppokit.observations import Obs, storage_dtype
from ppokit.precision import autocast, check_precision

ADV_EPS = 1e-8
# `algo.act_backend auto` acts in NumPy up to this many envs: beyond, torch's per-op overhead is
# amortised and its kernels win (measured: benchmarks/RESULTS.md, "Batched torch envs").
NUMPY_MAX_ENVS = 16


@dataclass
class LossTerms:
    loss: torch.Tensor
    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor
    approx_kl: torch.Tensor
    clip_fraction: torch.Tensor


def normalize_advantages(
    advantages: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Zero mean, unit std; over the entries where `mask` is true when given (padding)."""
    if mask is None:
        return (advantages - advantages.mean()) / (advantages.std() + ADV_EPS)
    real = advantages[mask]
    return (advantages - real.mean()) / (real.std() + ADV_EPS)


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

    `value_clip_coef` None means an unclipped value loss. A minibatch of sequences (recurrent
    policies: `mb.states` set) is re-run through the memory from its stored initial states; its
    padded steps (`mb.mask` false) are left out of every term and statistic. With `mb.weights`
    (an EMA agent collected the data) each sample's clipped surrogate is weighted by
    pi_prox / pi_behaviour, and `mb.log_probs` are the proximal policy's (algo/ema.py).
    """
    if mb.states is not None:
        log_probs, entropy, values = model.evaluate_sequence(
            mb.obs, mb.actions, mb.states, mb.resets
        )
    else:
        log_probs, entropy, values = model.evaluate(mb.obs, mb.actions)
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


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - Var[target - predicted] / Var[target] (nan when the target is constant)."""
    var_target = target.var()
    return 1.0 - (target - predicted).var() / var_target


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
        self.model = model
        self.cfg = cfg
        self.algo = cfg.algo
        self.device = device
        self.num_envs = cfg.env.num_envs
        self.minibatch_size = minibatch_size(cfg)
        self.schedule = LRSchedule(cfg.algo, total_updates)
        self.optimizer = make_optimizer(model, cfg)
        self.reward_scaler = RewardScaler(
            self.num_envs, cfg.algo.gamma, clip=cfg.algo.reward_clip, enabled=cfg.algo.scale_rewards
        ).to(device)
        dist = model.distribution
        self.recurrent = model.recurrent
        self.buffer = RolloutBuffer(
            cfg.algo.num_steps,
            self.num_envs,
            observation_layout(model),
            dist.action_shape,
            dist.action_dtype,
            device,
            state_size=model.state_size,
        )
        self.memory_state = model.initial_state(self.num_envs, device)
        # The finished rollout's GAE inputs, kept for recomputing advantages between epochs.
        self.scaled_rewards: torch.Tensor | None = None
        self.last_values: torch.Tensor | None = None
        self.next_obs: Obs | None = None
        self.params = [p for p in model.parameters() if p.requires_grad]
        a = cfg.algo
        self.loss_kwargs = {
            "clip_coef": a.clip_coef,
            "value_clip_coef": (a.value_clip_coef if a.value_clip_coef is not None else a.clip_coef)
            if a.clip_value_loss
            else None,
            "vf_coef": a.vf_coef,
            "ent_coef": a.ent_coef,
            "normalize_minibatch_advantages": a.normalize_advantages
            and a.advantage_norm_scope == "minibatch",
        }
        check_precision(cfg.precision, device)
        self.precision = cfg.precision
        self.finite_horizon = cfg.env.finite_horizon
        # The policy that acts in rollouts: the model, or an EMA of it (algo/ema.py).
        self.ema: EmaPolicy | None = None
        if cfg.ema.decay > 0:  # feedforward only: config.validate refuses it for memory
            self.ema = EmaPolicy(model, cfg.ema.decay)
        self.acting_model = self.ema.model if self.ema is not None else model
        self.compiled: CompiledStep | None = None
        self._numpy_explorer: NumpyExplorer | None = None
        if a.act_backend == "numpy" and not NumpyExplorer.supports(model):
            raise ConfigError(
                "algo.act_backend numpy runs flat MLP policies (Box observations, no memory,"
                " tanh/relu/elu, Gaussian or Categorical actions) on the CPU; use auto or torch"
            )
        if a.act_backend == "numpy" or (
            a.act_backend == "auto"
            and self.num_envs <= NUMPY_MAX_ENVS
            and NumpyExplorer.supports(model)
        ):
            self._numpy_explorer = NumpyExplorer(self.acting_model)
        if a.compile:  # flat MLPs only: config.validate refuses it for memory
            self._build_compiled()
        self._explore = self.acting_model.explore
        self._explore_compiled = False
        if a.compile_act and self._numpy_explorer is None and not self.recurrent:
            ok, why = compile_available(device)
            if ok:
                self._explore = torch.compile(self.acting_model.explore, dynamic=False)
                self._explore_compiled = True
            else:
                warnings.warn(f"algo.compile_act: {why}; acting eagerly", stacklevel=2)
        self.updates = 0

    def _build_compiled(self) -> None:
        """torch.compile the minibatch step; eager if the compiler is missing.

        The act step is not compiled: at rollout batch sizes the compiled region's call overhead
        (guards, wrappers) costs more than the eager ops it replaces (measured in benchmarks/).
        """
        ok, why = compile_available(self.device)
        if not ok:
            warnings.warn(f"algo.compile: {why}; training eagerly", stacklevel=3)
            return
        self.compiled = CompiledStep(
            self.model, self.optimizer, self._loss, self.loss_kwargs, self.algo.max_grad_norm
        )

    def _loss(self, model: ActorCritic, mb: Minibatch, **kwargs: object) -> LossTerms:
        """ppo_loss under the configured precision (bf16: autocast; the backward follows)."""
        with autocast(self.precision, self.device):
            return ppo_loss(model, mb, **kwargs)

    def _compile_failed(self, error: Exception) -> None:
        warnings.warn(
            f"algo.compile: compilation failed ({type(error).__name__}: {error}); training eagerly",
            stacklevel=3,
        )
        self.compiled = None

    # --- rollout -------------------------------------------------------------------------------
    @property
    def rollout_full(self) -> bool:
        return self.buffer.full

    def reset_memory(self) -> None:
        """Zero every env's memory state (the envs were reset)."""
        self.memory_state.zero_()

    def act(self, obs: Obs) -> torch.Tensor:
        """Sample actions for raw observations, store them in the rollout, return env actions."""
        if self.recurrent:
            # Values come from the same step: a recurrent critic needs the state of this step.
            with torch.no_grad():
                params, values, next_state = self.model.step(
                    self.model.normalize(obs), self.memory_state
                )
                actions, log_probs = self.model.distribution.sample(params)
            self.buffer.add_action(obs, actions, log_probs, self.memory_state, values)
            self.memory_state = next_state
            return self.model.to_env(actions)
        if self._numpy_explorer is not None:
            if self.buffer.step == 0:
                # Weights and statistics change only between rollouts: copy them once per rollout.
                self._numpy_explorer.sync(int(torch.randint(2**62, ())))
            actions, log_probs, env_actions = self._numpy_explorer(obs)
        else:
            with torch.no_grad():
                actions, log_probs, env_actions = self._act_torch(obs)
        self.buffer.add_action(obs, actions, log_probs)
        return env_actions

    def _act_torch(self, obs: Obs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The torch act step, compiled with algo.compile_act (eager if compilation fails)."""
        if not self._explore_compiled:
            return self._explore(obs)
        try:
            return self._explore(obs)
        except Exception as e:  # compilation errors surface on the first call
            warnings.warn(
                f"algo.compile_act: compilation failed ({type(e).__name__}: {e}); acting eagerly",
                stacklevel=3,
            )
            self._explore, self._explore_compiled = self.acting_model.explore, False
            return self._explore(obs)

    def _values(self, raw_obs: Obs) -> torch.Tensor:
        """V(raw_obs) where raw_obs follows the last step acted on (recurrent: from the state
        that step left)."""
        obs = self.model.normalize(raw_obs)
        if self.recurrent:
            return self.model.step(obs, self.memory_state)[1]
        return self.model.value(obs)

    def record(self, step: StepResult) -> None:
        """Store the outcome of the actions returned by the last `act`.

        Reads nothing on the host: on a batched torch env this is a few device ops per step.
        """
        if step.final_obs is not None:
            # V(final observation) for envs whose episode ended now; used where it was truncated.
            with torch.no_grad():
                self.buffer.bootstrap_values[self.buffer.step] = self._values(step.final_obs)
        elif step.bootstrap_pre_step:
            # No final observations from this simulator: V(obs acted on), set in finish_rollout.
            self.buffer.pre_step_bootstrap.append(self.buffer.step)
        terminated = step.terminated
        if self.finite_horizon:  # the time limit is part of the task: no bootstrap past it
            terminated = terminated | step.truncated
        self.buffer.add_outcome(step.rewards, terminated, step.truncated)
        if self.recurrent:
            # A new episode starts from a zero state (terminated and truncated alike).
            ended = (step.terminated | step.truncated).unsqueeze(1)
            self.memory_state = self.memory_state.masked_fill(ended, 0.0)

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
        T, N = b.num_steps, b.num_envs
        if not self.recurrent:
            obs = self.model.normalize(b.flat_obs())
            if self.ema is None:
                b.values.copy_(self.model.value(obs).view(T, N))
            else:
                # One pass for values and the proximal log-probs; the stored ones are the EMA's.
                log_probs, _, values = self.model.evaluate(obs, b.actions.flatten(0, 1))
                b.values.copy_(values.view(T, N))
                b.weights = behaviour_weights(log_probs.view(T, N), b.log_probs)
                b.log_probs.copy_(log_probs.view(T, N))
        for t in b.pre_step_bootstrap:  # rsl_rl's bootstrap: V(s_t) for a truncation at t
            b.bootstrap_values[t].copy_(b.values[t])
        self.scaled_rewards = self.reward_scaler.scale_rollout(b.rewards, b.dones, self.sync)
        self.last_values = self._values(next_obs)
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
        """The rollout's advantages, flat, normalized over the whole batch when configured
        (across every rank's rollout when distributed)."""
        a = self.algo
        advantages = self.buffer.advantages.flatten()
        if a.normalize_advantages and a.advantage_norm_scope == "batch":
            if self.sync.distributed:  # mean and std of every rank's advantages
                mean, var, n = self.sync.moments(advantages)
                std = (var * n / (n - 1)).sqrt().to(advantages.dtype)
                return (advantages - mean.to(advantages.dtype)) / (std + ADV_EPS)
            return normalize_advantages(advantages)
        return advantages

    # --- update ---------------------------------------------------------------------------------
    def update(self) -> dict[str, float]:
        """Epochs x minibatches of PPO on the finished rollout; returns metrics for logging."""
        a = self.algo
        b = self.buffer
        if not self.schedule.adaptive:
            self.set_lr(self.schedule.at_update(self.updates))
        with torch.no_grad():
            obs = self.model.normalize(b.flat_obs())
            advantages = self._batch_advantages()
            sequences = b.sequences(obs, advantages, a.bptt_length) if self.recurrent else None
        recompute = a.recompute_advantages and not self.recurrent
        if recompute:  # explained variance is reported for the rollout's own returns
            rollout_returns = b.returns.clone()
        check_kl = a.kl_early_stop or self.schedule.adaptive
        sums = torch.zeros(5, device=self.device)  # policy, value, entropy, kl, clipfrac
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
                terms = self._minibatch_step(mb, check_kl)
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
        means = (sums / max(steps, 1)).tolist()
        values = b.values.flatten()
        returns = (rollout_returns if recompute else b.returns).flatten()
        if self.sync.distributed:  # over every rank's rollout
            _, var, _ = self.sync.moments(torch.stack([returns - values, returns], 1))
            explained = float(1.0 - var[0] / var[1])
        else:
            explained = float(explained_variance(values, returns))
        metrics = {
            "losses/policy_loss": means[0],
            "losses/value_loss": means[1],
            "losses/entropy": means[2],
            "losses/approx_kl": epoch_kls[-1] if epoch_kls else float("nan"),
            "losses/clip_fraction": means[4],
            "losses/explained_variance": explained,
            "losses/epochs_run": float(len(epoch_kls)),
            "losses/early_stopped": float(stopped_early),
            "charts/learning_rate": self.schedule.lr,
        }
        std = self.model.action_std()
        if std is not None:
            metrics["charts/action_std"] = float(std.detach().mean())
        if b.weights is not None:
            w_mean, w_max = torch.stack([b.weights.mean(), b.weights.max()]).tolist()
            metrics["charts/ema_weight_mean"], metrics["charts/ema_weight_max"] = w_mean, w_max
            b.weights = None
        self.last_epoch_kls = epoch_kls
        return metrics

    def metric_names(self) -> list[str]:
        """The keys `update()` returns, in its order (metrics.csv declares its columns up front)."""
        names = [
            "losses/policy_loss",
            "losses/value_loss",
            "losses/entropy",
            "losses/approx_kl",
            "losses/clip_fraction",
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

    def _minibatch_step(self, mb: Minibatch, check_kl: bool) -> torch.Tensor | None:
        """One gradient step; None (and no step) when the KL early stop fires.

        Returns the stacked (policy loss, value loss, entropy, approx KL, clip fraction).
        Across data-parallel ranks the gradient and these terms are averaged in one all-reduce
        before the KL decision and the step, so every rank decides and steps the same.
        """
        a = self.algo
        distributed = self.sync.distributed
        if self.compiled is not None:
            try:
                if not check_kl and not distributed:
                    return torch.stack(self.compiled.step(mb, self.schedule.lr))
                grads, aux = self.compiled.gradients(mb)
            except (
                Exception
            ) as e:  # compilation errors surface on the first call, before any update
                if self.compiled.calls > 0:
                    raise
                self._compile_failed(e)
                return self._minibatch_step(mb, check_kl)
            terms = torch.stack(aux)
            if distributed:
                grads, terms = self.sync.average_flat(grads, terms)
            if check_kl and not self._kl_allows_step(float(terms[3])):
                return None
            self.compiled.apply(grads, self.schedule.lr)
            return terms
        terms = self._loss(self.model, mb, **self.loss_kwargs)
        if distributed:
            # Backward before the KL decision: gradients and loss terms share one all-reduce.
            self.optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            stacked = self.sync.average_gradients(self.params, _stack_terms(terms))
            if check_kl and not self._kl_allows_step(float(stacked[3])):
                return None
        else:
            if check_kl and not self._kl_allows_step(float(terms.approx_kl)):
                return None
            self.optimizer.zero_grad(set_to_none=True)
            terms.loss.backward()
            stacked = _stack_terms(terms)
        if a.max_grad_norm > 0:
            nn.utils.clip_grad_norm_(self.params, a.max_grad_norm, foreach=True)
        self.optimizer.step()
        return stacked

    def _kl_allows_step(self, kl: float) -> bool:
        """KL early stop (False: end the update) and the adaptive LR, before the optimizer step."""
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
            "optimizer": _optimizer_state(self.optimizer),
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
        if self.compiled is not None:
            self.compiled.refresh()
        self.schedule.load_state_dict(state["schedule"])
        self.reward_scaler.load_state_dict(state["reward_scaler"])
        self.updates = int(state["updates"])
        self.set_lr(self.schedule.lr)


def _stack_terms(terms: LossTerms) -> torch.Tensor:
    """(policy loss, value loss, entropy, approx KL, clip fraction) as one tensor."""
    return torch.stack(
        [terms.policy_loss, terms.value_loss, terms.entropy, terms.approx_kl, terms.clip_fraction]
    )


def observation_layout(model: ActorCritic) -> tuple[int, ...] | dict:
    """What the rollout buffer stores per step: the flat vector, or each key's shape and dtype."""
    space = model.observation_space
    if model.dict_obs:
        return {k: (tuple(s.shape), storage_dtype(s)) for k, s in space.spaces.items()}
    return (model.obs_dim,)


def _optimizer_state(optimizer: torch.optim.Optimizer) -> dict:
    """optimizer.state_dict() with a separate `step` tensor per parameter.

    The compiled step keeps one step counter shared by all parameters; a checkpoint must not
    carry that aliasing into an eager optimizer, which increments each parameter's counter.
    """
    state = optimizer.state_dict()
    state["state"] = {
        key: {**value, "step": value["step"].clone()} if "step" in value else value
        for key, value in state["state"].items()
    }
    return state


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    a = cfg.algo
    params = [p for p in model.parameters() if p.requires_grad]
    if a.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=a.lr, eps=a.adam_eps, weight_decay=a.weight_decay, foreach=True
        )
    return torch.optim.Adam(params, lr=a.lr, eps=a.adam_eps, foreach=True)
