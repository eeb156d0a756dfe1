"""The EMA rollout agent (algo/ema.py): the average acts, the trained model learns, and the
update weighs each sample by pi_prox / pi_behaviour with the proximal policy the trained model
at the start of the update (PPO-EWMA, Hilton et al. 2021)."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.algo.ema import EmaPolicy, behaviour_weights
from ppokit.algo.loss import ppo_loss
from ppokit.algo.ppo import PPO
from ppokit.algo.rollout import Minibatch
from ppokit.config import TrainConfig, validate
from ppokit.envs.base import StepResult
from ppokit.errors import ConfigError
from ppokit.nn.actor_critic import ActorCritic

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def ema_ppo(decay=0.9, num_envs=4, act_backend="torch", **algo) -> PPO:
    cfg = TrainConfig()
    cfg.env.num_envs = num_envs
    cfg.algo.num_steps, cfg.algo.num_minibatches, cfg.algo.num_epochs = 8, 2, 2
    cfg.algo.act_backend = act_backend
    for key, value in algo.items():
        setattr(cfg.algo, key, value)
    cfg.ema.decay = decay
    cfg.policy.actor_hidden = cfg.policy.critic_hidden = [16, 16]
    validate(cfg)
    model = ActorCritic(OBS, ACT, cfg.policy)
    return PPO(model, cfg, torch.device("cpu"), total_updates=10)


def fill(ppo: PPO) -> torch.Tensor:
    N = ppo.num_envs
    obs = torch.randn(N, 3)
    while not ppo.rollout_full:
        ppo.act(obs)
        obs = torch.randn(N, 3)
        ended = torch.rand(N) < 0.2
        ppo.record(StepResult(obs, torch.randn(N), ended, torch.zeros(N, dtype=torch.bool)))
    return obs


def perturb(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))


def test_average_of_parameters_and_copy_of_buffers():
    model = ActorCritic(OBS, ACT, TrainConfig().policy)
    ema = EmaPolicy(model, 0.75)
    before = [p.clone() for p in ema.model.parameters()]
    perturb(model)
    model.obs_normalizer.update(torch.randn(100, 3) + 5.0)
    ema.update(model)
    for old, new, target in zip(before, ema.model.parameters(), model.parameters()):
        torch.testing.assert_close(new, 0.75 * old + 0.25 * target)
        assert not new.requires_grad
    for ours, theirs in zip(ema.model.buffers(), model.buffers()):
        assert torch.equal(ours, theirs)


@pytest.mark.parametrize("act_backend", ["torch", "numpy"])
def test_the_average_acts_and_the_trained_policy_is_the_proximal_one(act_backend):
    ppo = ema_ppo(act_backend=act_backend)
    assert ppo.acting_model is ppo.ema.model
    if act_backend == "numpy":
        assert ppo.accel.act.model is ppo.ema.model  # the NumPy act step
    perturb(ppo.model)  # the trained policy has moved away from its average
    next_obs = fill(ppo)
    b = ppo.buffer
    obs = b.flat_obs()
    actions = b.actions.flatten(0, 1)
    with torch.no_grad():
        behaviour = ppo.ema.model.evaluate(obs, actions)[0].view(8, 4)
        proximal, _, values = ppo.model.evaluate(obs, actions)
    torch.testing.assert_close(b.log_probs, behaviour, rtol=1e-5, atol=1e-5)  # what acted
    ppo.finish_rollout(next_obs)
    torch.testing.assert_close(b.log_probs, proximal.view(8, 4), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.values, values.view(8, 4))
    torch.testing.assert_close(
        b.weights, (proximal.view(8, 4) - behaviour).exp(), rtol=1e-4, atol=1e-5
    )
    assert not torch.allclose(b.weights, torch.ones_like(b.weights))
    # Before the first gradient step the ratio to the proximal policy is exactly PPO's: 1.
    mb = next(b.minibatches(ppo.model.normalize(obs), b.advantages.flatten(), 16))
    terms = ppo_loss(ppo.model, mb, **ppo.loss_kwargs)
    assert float(terms.approx_kl) < 1e-6 and float(terms.clip_fraction) == 0.0


def test_weighted_surrogate():
    ppo = ema_ppo()
    perturb(ppo.model)
    ppo.finish_rollout(fill(ppo))
    b = ppo.buffer
    obs = ppo.model.normalize(b.flat_obs())
    mb = next(b.minibatches(obs, b.advantages.flatten(), 32))
    assert mb.weights is not None and mb.weights.shape == (32,)
    kwargs = {**ppo.loss_kwargs, "clip_coef": 0.2}
    weighted = ppo_loss(ppo.model, mb, **kwargs).policy_loss
    per_sample = torch.stack(
        [ppo_loss(ppo.model, _row(mb, i), **kwargs).policy_loss * mb.weights[i] for i in range(32)]
    )
    torch.testing.assert_close(weighted, per_sample.mean())


def _row(mb: Minibatch, i: int) -> Minibatch:
    return Minibatch(
        mb.obs[i : i + 1],
        *(
            x[i : i + 1] for x in (mb.actions, mb.log_probs, mb.values, mb.advantages, mb.returns)
        ),  # fmt: skip
    )


def test_update_moves_the_average_towards_the_trained_weights():
    ppo = ema_ppo(decay=0.8)
    before = [p.clone() for p in ppo.ema.model.parameters()]
    ppo.finish_rollout(fill(ppo))
    metrics = ppo.update()
    for old, new, target in zip(before, ppo.ema.model.parameters(), ppo.model.parameters()):
        torch.testing.assert_close(new, 0.8 * old + 0.2 * target)
    assert metrics["charts/ema_weight_mean"] == pytest.approx(1.0)  # first rollout: ema == model
    assert ppo.buffer.weights is None


def test_checkpoint_carries_the_average():
    ppo = ema_ppo()
    perturb(ppo.ema.model)
    state = copy.deepcopy(ppo.state_dict())
    fresh = ema_ppo()
    fresh.load_state_dict(state)
    for a, b in zip(fresh.ema.model.parameters(), ppo.ema.model.parameters()):
        assert torch.equal(a, b)
    del state["ema"]  # a run that did not use the EMA: the average starts from the model
    fresh.load_state_dict(state)
    for a, b in zip(fresh.ema.model.parameters(), ppo.model.parameters()):
        assert torch.equal(a, b)


def test_ema_refuses_recurrent_policies_and_bad_decays():
    cfg = TrainConfig()
    cfg.ema.decay = 0.9
    cfg.policy.memory = "gru"
    cfg.algo.num_minibatches = 1
    with pytest.raises(ConfigError, match="ema.decay does not support recurrent"):
        validate(cfg)
    cfg = TrainConfig()
    cfg.ema.decay = 1.0
    with pytest.raises(ConfigError, match=r"ema.decay: 1.0 is out of range: must be in \[0, 1\)"):
        validate(cfg)


def test_behaviour_weights():
    torch.testing.assert_close(
        behaviour_weights(torch.tensor([0.0, -1.0]), torch.tensor([0.0, 0.0])),
        torch.tensor([1.0, np.exp(-1.0)], dtype=torch.float32),
    )


def test_the_compiled_step_passes_the_weights_to_the_loss():
    """algo.compile calls ppo_loss through _Loss(*CompiledStep._tensors(mb)); the EMA weights
    must survive that flattening (checked eagerly: the graph is the same function)."""
    from ppokit.algo.accel.compiled import CompiledStep, _Loss

    ppo = ema_ppo()
    perturb(ppo.model)
    ppo.finish_rollout(fill(ppo))
    b = ppo.buffer
    mb = next(b.minibatches(ppo.model.normalize(b.flat_obs()), b.advantages.flatten(), 32))
    loss, aux = _Loss(ppo.model, ppo_loss, ppo.loss_kwargs)(*CompiledStep._tensors(mb))
    expected = ppo_loss(ppo.model, mb, **ppo.loss_kwargs)
    torch.testing.assert_close(loss, expected.loss)
    unweighted = ppo_loss(ppo.model, Minibatch(*CompiledStep._tensors(mb)[:6]), **ppo.loss_kwargs)
    assert not torch.allclose(unweighted.policy_loss, expected.policy_loss)
