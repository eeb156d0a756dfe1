"""ppo_loss on a model whose outputs are fixed by hand, so every term is computed on paper."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.algo.loss import explained_variance, ppo_loss
from ppokit.algo.rollout import Minibatch
from ppokit.config import PolicyConfig
from ppokit.nn.actor_critic import ActorCritic

# The model below outputs, for every observation, mean (0.1, -0.2), std (0.5, 1.0), value 2.0.
# Its log-density is then C - 0.5 * |z|^2 with z = ((a0 - 0.1) / 0.5, (a1 + 0.2) / 1) and
# C = -(log 0.5 + log 1) - 2 * 0.5 * log(2 pi) = log 2 - log(2 pi) = -log(pi).
C = -math.log(math.pi)
ACTIONS = [[0.1, -0.2], [0.6, -0.2], [0.1, 0.8], [-0.4, 1.8], [0.35, -1.2], [0.1, 0.3]]
# z = (0,0), (1,0), (0,1), (-1,2), (0.5,-1), (0,0.5)  ->  0.5|z|^2 = 0, .5, .5, 2.5, .625, .125
NEW_LOG_PROBS = [C, C - 0.5, C - 0.5, C - 2.5, C - 0.625, C - 0.125]
# Stored (old) log-probs are chosen so that ratio = new / old probability is:
RATIOS = [1.5, 0.5, 1.1, 0.9, 1.3, 1.0]
ADVANTAGES = [1.0, 1.0, -2.0, 2.0, -1.0, 0.5]
OLD_VALUES = [2.0, 1.5, 2.5, 2.1, 1.0, 3.0]
RETURNS = [3.0, 1.5, 1.0, 2.0, 4.0, 2.5]
# Entropy of N(mu, diag(0.25, 1)): sum over dims of 0.5 + 0.5 log(2 pi) + log std = 1 + log(pi).
ENTROPY = 1.0 + math.log(math.pi)


def _fixed_model() -> ActorCritic:
    model = ActorCritic(
        gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        gym.spaces.Box(-1, 1, (2,), np.float32),
        PolicyConfig(actor_hidden=[4], critic_hidden=[4]),
    )
    with torch.no_grad():
        model.actor.layers[-1].weight.zero_()
        model.actor.layers[-1].bias.copy_(torch.tensor([0.1, -0.2]))
        model.critic.layers[-1].weight.zero_()
        model.critic.layers[-1].bias.fill_(2.0)
        model.distribution.log_std.copy_(torch.tensor([0.5, 1.0]).log())
    return model


def _minibatch(ratios=RATIOS, advantages=ADVANTAGES) -> Minibatch:
    new_lp = torch.tensor(NEW_LOG_PROBS)
    return Minibatch(
        obs=torch.randn(6, 3),
        actions=torch.tensor(ACTIONS),
        log_probs=new_lp - torch.tensor(ratios).log(),
        values=torch.tensor(OLD_VALUES),
        advantages=torch.tensor(advantages),
        returns=torch.tensor(RETURNS),
    )


def test_model_outputs_are_the_hand_computed_ones():
    model, mb = _fixed_model(), _minibatch()
    log_probs, entropy, values = model.evaluate(mb.obs, mb.actions)
    torch.testing.assert_close(log_probs, torch.tensor(NEW_LOG_PROBS))
    torch.testing.assert_close(entropy, torch.full((6,), ENTROPY))
    torch.testing.assert_close(values, torch.full((6,), 2.0))


def test_clipped_loss_terms_equal_hand_computation():
    terms = ppo_loss(
        _fixed_model(), _minibatch(), clip_coef=0.2, value_clip_coef=0.2, vf_coef=0.5, ent_coef=0.01
    )
    # Surrogate per sample, max(-A r, -A clip(r, 0.8, 1.2)):
    #   s0 A=1  r=1.5: max(-1.5, -1.2) = -1.2   (clipped)
    #   s1 A=1  r=0.5: max(-0.5, -0.8) = -0.5   (pessimistic side: not clipped)
    #   s2 A=-2 r=1.1: max( 2.2,  2.2) =  2.2
    #   s3 A=2  r=0.9: max(-1.8, -1.8) = -1.8
    #   s4 A=-1 r=1.3: max( 1.3,  1.2) =  1.3   (pessimistic side: not clipped)
    #   s5 A=.5 r=1.0:                   -0.5
    #   mean = (-1.2 - 0.5 + 2.2 - 1.8 + 1.3 - 0.5) / 6 = -0.5 / 6
    policy_loss = -0.5 / 6
    # Value, V_new = 2 everywhere, clipped V = old + clamp(2 - old, -0.2, 0.2):
    #   s0 old 2.0 R 3.0: unclipped 1.00, clipped V 2.0 -> 1.00; max 1.00
    #   s1 old 1.5 R 1.5: unclipped 0.25, clipped V 1.7 -> 0.04; max 0.25
    #   s2 old 2.5 R 1.0: unclipped 1.00, clipped V 2.3 -> 1.69; max 1.69
    #   s3 old 2.1 R 2.0: unclipped 0.00, clipped V 2.0 -> 0.00; max 0.00
    #   s4 old 1.0 R 4.0: unclipped 4.00, clipped V 1.2 -> 7.84; max 7.84
    #   s5 old 3.0 R 2.5: unclipped 0.25, clipped V 2.8 -> 0.09; max 0.25
    #   value_loss = 0.5 * (1 + .25 + 1.69 + 0 + 7.84 + .25) / 6 = 0.5 * 11.03 / 6
    value_loss = 0.5 * 11.03 / 6
    assert terms.policy_loss.item() == pytest.approx(policy_loss, abs=1e-6)
    assert terms.value_loss.item() == pytest.approx(value_loss, abs=1e-6)
    assert terms.entropy.item() == pytest.approx(ENTROPY, abs=1e-6)
    assert terms.loss.item() == pytest.approx(
        policy_loss + 0.5 * value_loss - 0.01 * ENTROPY, abs=1e-6
    )
    r = np.array(RATIOS)
    assert terms.approx_kl.item() == pytest.approx(np.mean((r - 1) - np.log(r)), abs=1e-6)
    # |r - 1| > 0.2 for s0, s1, s4.
    assert terms.clip_fraction.item() == pytest.approx(0.5)


def test_unclipped_value_loss_when_value_clip_is_none():
    terms = ppo_loss(
        _fixed_model(), _minibatch(), clip_coef=0.2, value_clip_coef=None, vf_coef=2.0, ent_coef=0
    )
    # 0.5 * mean((2 - R)^2) = 0.5 * (1 + 0.25 + 1 + 0 + 4 + 0.25) / 6
    value_loss = 0.5 * 6.5 / 6
    assert terms.value_loss.item() == pytest.approx(value_loss, abs=1e-6)
    assert terms.loss.item() == pytest.approx(-0.5 / 6 + 2.0 * value_loss, abs=1e-6)


def test_per_minibatch_advantage_normalization():
    terms = ppo_loss(
        _fixed_model(),
        _minibatch(),
        clip_coef=0.2,
        value_clip_coef=None,
        vf_coef=0.0,
        ent_coef=0.0,
        normalize_minibatch_advantages=True,
    )
    a = np.array(ADVANTAGES)
    a = (a - a.mean()) / (a.std(ddof=1) + 1e-8)
    r = np.array(RATIOS)
    expected = np.maximum(-a * r, -a * np.clip(r, 0.8, 1.2)).mean()
    assert terms.policy_loss.item() == pytest.approx(expected, abs=1e-6)
    assert terms.policy_loss.item() != pytest.approx(-0.5 / 6, abs=1e-3)


def test_small_ratios_give_the_plain_surrogate():
    ratios = [1.01, 0.99, 1.05, 0.97, 1.0, 1.1]
    terms = ppo_loss(
        _fixed_model(),
        _minibatch(ratios=ratios),
        clip_coef=0.2,
        value_clip_coef=None,
        vf_coef=0,
        ent_coef=0,
    )
    assert terms.policy_loss.item() == pytest.approx(
        -np.mean(np.array(ratios) * np.array(ADVANTAGES)), abs=1e-6
    )
    assert terms.clip_fraction.item() == 0.0


def test_clipped_samples_pass_no_policy_gradient():
    # Every sample beyond the clip range on the side the objective would push further:
    # A > 0 with r > 1.2 and A < 0 with r < 0.8. The clipped surrogate is then constant.
    model = _fixed_model()
    mb = _minibatch(
        ratios=[1.5, 1.3, 0.5, 1.4, 0.7, 2.0], advantages=[1.0, 2.0, -1.0, 0.5, -3.0, 1.0]
    )
    terms = ppo_loss(model, mb, clip_coef=0.2, value_clip_coef=None, vf_coef=0.0, ent_coef=0.0)
    terms.loss.backward()
    actor_grads = [p.grad for p in model.actor.parameters()] + [model.distribution.log_std.grad]
    for g in actor_grads:
        assert g is None or torch.count_nonzero(g) == 0
    # ...whereas inside the clip range the policy does get a gradient.
    model.zero_grad()
    mb = _minibatch(ratios=[1.1] * 6)
    ppo_loss(model, mb, clip_coef=0.2, value_clip_coef=None, vf_coef=0, ent_coef=0).loss.backward()
    assert torch.count_nonzero(model.distribution.log_std.grad) > 0


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(target, target).item() == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), target).item() == pytest.approx(0.0)
    predicted = torch.tensor([1.5, 2.0, 2.5, 4.0])
    t, p = target.numpy(), predicted.numpy()
    expected = 1 - np.var(t - p, ddof=1) / np.var(t, ddof=1)
    assert explained_variance(predicted, target).item() == pytest.approx(expected, abs=1e-6)
