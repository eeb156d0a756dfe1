"""ActorCritic and the MLP encoder: initialisation, action-space handling, env-action mapping."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch import distributions as D
from torch import nn

from ppokit.config import PolicyConfig
from ppokit.errors import EnvError
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.encoders import mlp

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
# Half ranges (2, 1, 2) and centers (0, 0, 2).
ACT = gym.spaces.Box(np.array([-2.0, -1.0, 0.0], np.float32), np.array([2.0, 1.0, 4.0], np.float32))


def _policy(**kwargs) -> PolicyConfig:
    return PolicyConfig(**{"actor_hidden": [64, 32], "critic_hidden": [48, 48], **kwargs})


def _linears(net: nn.Module) -> list[nn.Linear]:
    return [m for m in net.modules() if isinstance(m, nn.Linear)]


def test_orthogonal_initialisation():
    model = ActorCritic(OBS, ACT, _policy())
    for net, head_gain, sizes in (
        (model.actor, 0.01, [(5, 64), (64, 32), (32, 3)]),
        (model.critic, 1.0, [(5, 48), (48, 48), (48, 1)]),
    ):
        layers = _linears(net)
        assert [(lin.in_features, lin.out_features) for lin in layers] == sizes
        for i, lin in enumerate(layers):
            gain = head_gain if i == len(layers) - 1 else math.sqrt(2)
            singular = torch.linalg.svdvals(lin.weight.detach().double())
            assert len(singular) == min(lin.weight.shape)
            torch.testing.assert_close(
                singular, torch.full_like(singular, gain), rtol=1e-5, atol=1e-7
            )
            assert torch.count_nonzero(lin.bias) == 0


def test_mlp_activation_and_structure():
    net = mlp(4, [8, 8], 2, "elu", out_gain=0.5)
    assert [(lin.in_features, lin.out_features) for lin in net.layers] == [(4, 8), (8, 8), (8, 2)]
    # The forward is Linear -> ELU -> Linear -> ELU -> Linear, checked against nn modules.
    reference = nn.Sequential(net.layers[0], nn.ELU(), net.layers[1], nn.ELU(), net.layers[2])
    x = torch.randn(5, 4)
    torch.testing.assert_close(net(x), reference(x))
    # Output layer of a wide-to-narrow shape: rows are orthonormal times the gain.
    w = net.layers[-1].weight.detach().double()
    torch.testing.assert_close(w @ w.T, 0.25 * torch.eye(2, dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "expected_policy_std"),
    [
        # absolute std 0.5 in env units, divided by the half range (2, 1, 2)
        ({"init_noise_std": 0.5, "noise_std_relative": False}, [0.25, 0.5, 0.25]),
        # no rescaling: the policy acts in env units
        (
            {"init_noise_std": 0.5, "noise_std_relative": False, "rescale_actions": False},
            [0.5, 0.5, 0.5],
        ),
        # fraction 0.1 of (high - low) = (0.4, 0.2, 0.4) in env units -> 0.2 normalized
        ({"init_noise_std": 0.1, "noise_std_relative": True}, [0.2, 0.2, 0.2]),
        (
            {"init_noise_std": 0.1, "noise_std_relative": True, "rescale_actions": False},
            [0.4, 0.2, 0.4],
        ),
    ],
)
def test_initial_log_std(kwargs, expected_policy_std):
    model = ActorCritic(OBS, ACT, _policy(**kwargs))
    torch.testing.assert_close(
        model.distribution.log_std.detach(), torch.tensor(expected_policy_std).log()
    )
    if kwargs.get("noise_std_relative"):
        expected_env_std = [0.1 * 4, 0.1 * 2, 0.1 * 4]
    else:
        expected_env_std = [0.5, 0.5, 0.5]
    torch.testing.assert_close(model.action_std(), torch.tensor(expected_env_std))


def test_unbounded_box_keeps_env_units_and_counts_as_unit_range_for_relative_std():
    unbounded = gym.spaces.Box(-np.inf, np.inf, (2,), np.float32)
    model = ActorCritic(OBS, unbounded, _policy(init_noise_std=0.7, noise_std_relative=False))
    torch.testing.assert_close(model.distribution.std(), torch.full((2,), 0.7))
    a = torch.tensor([[5.0, -30.0]])
    torch.testing.assert_close(model.to_env(a), a)
    # Relative (the default): an unbounded dimension counts as [-1, 1], so 0.35 of it is 0.7.
    relative = ActorCritic(OBS, unbounded, _policy(init_noise_std=0.35))
    torch.testing.assert_close(relative.distribution.std(), torch.full((2,), 0.7))
    half = gym.spaces.Box(np.array([-np.inf, -3.0]), np.array([np.inf, 3.0]), (2,), np.float32)
    mixed = ActorCritic(OBS, half, _policy(init_noise_std=0.1))
    torch.testing.assert_close(mixed.action_std(), torch.tensor([0.2, 0.6]))


def test_to_env_rescales_and_clips():
    model = ActorCritic(OBS, ACT, _policy())
    actions = torch.tensor(
        [
            [-1.0, -1.0, -1.0],  # low
            [0.0, 0.0, 0.0],  # center
            [1.0, 1.0, 1.0],  # high
            [0.5, -0.25, 0.75],  # inside
            [3.0, -2.0, 1.5],  # outside: clipped to the bounds
        ]
    )
    expected = torch.tensor(
        [
            [-2.0, -1.0, 0.0],
            [0.0, 0.0, 2.0],
            [2.0, 1.0, 4.0],
            [1.0, -0.25, 3.5],
            [2.0, -1.0, 4.0],
        ]
    )
    torch.testing.assert_close(model.to_env(actions), expected)
    no_rescale = ActorCritic(OBS, ACT, _policy(rescale_actions=False))
    torch.testing.assert_close(
        no_rescale.to_env(actions[3:]), torch.tensor([[0.5, -0.25, 0.75], [2.0, -1.0, 1.5]])
    )


def test_evaluate_and_forward():
    model = ActorCritic(OBS, ACT, _policy(init_noise_std=0.3))
    model.obs_normalizer.update(torch.randn(100, 5) * 2 + 1)
    raw = torch.randn(7, 5) * 2 + 1
    obs = model.normalize(raw)
    actions = torch.randn(7, 3)
    log_prob, entropy, value = model.evaluate(obs, actions)
    mean = model.actor(obs)
    ref = D.Normal(mean, model.distribution.std())
    torch.testing.assert_close(log_prob, ref.log_prob(actions).sum(-1))
    torch.testing.assert_close(entropy, ref.entropy().sum(-1))
    torch.testing.assert_close(value, model.critic(obs)[:, 0])
    # Inference: raw obs -> normalized -> mean action -> env units, clipped.
    expected = torch.clamp(
        mean * torch.tensor([2.0, 1.0, 2.0]) + torch.tensor([0.0, 0.0, 2.0]),
        torch.tensor([-2.0, -1.0, 0.0]),
        torch.tensor([2.0, 1.0, 4.0]),
    )
    torch.testing.assert_close(model(raw), expected)


def test_ppo_act_stores_unclipped_sample_and_returns_clipped_env_action(make_ppo):
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    ppo = make_ppo(
        obs_dim=3,
        action_space=space,
        num_envs=64,
        policy=PolicyConfig(init_noise_std=10.0, noise_std_relative=False),
    )
    obs = torch.randn(64, 3)
    env_actions = ppo.act(obs)
    stored = ppo.buffer.actions[0]
    # std 10 in env units = 5 and 20 in policy units: samples leave [-1, 1] almost surely.
    assert (stored.abs() > 1).float().mean() > 0.5
    half, center = torch.tensor([2.0, 0.5]), torch.tensor([0.0, 0.5])
    expected_env = torch.clamp(
        stored * half + center, torch.tensor([-2.0, 0.0]), torch.tensor([2.0, 1.0])
    )
    torch.testing.assert_close(env_actions, expected_env)
    at_bound = (env_actions == torch.tensor([-2.0, 0.0])) | (
        env_actions == torch.tensor([2.0, 1.0])
    )
    assert at_bound.float().mean() > 0.5
    # The stored log-prob is that of the raw sample, not of the clipped action.
    mean = ppo.model.actor(ppo.model.normalize(obs))
    ref = D.Normal(mean, ppo.model.distribution.std()).log_prob(stored).sum(-1)
    torch.testing.assert_close(ppo.buffer.log_probs[0], ref, rtol=0, atol=1e-4)
    torch.testing.assert_close(ppo.buffer.obs[0], obs)


def test_discrete_action_space(make_ppo):
    model = ActorCritic(OBS, gym.spaces.Discrete(4), _policy())
    assert _linears(model.actor)[-1].out_features == 4
    assert model.action_std() is None
    raw = torch.randn(9, 5)
    step = model.act(raw)
    actions, log_prob, obs = step.actions, step.log_probs, model.normalize(raw)
    assert actions.dtype == torch.long and actions.shape == (9,)
    assert int(actions.min()) >= 0 and int(actions.max()) < 4
    assert torch.equal(step.env_actions, actions) and step.values is None
    ref = D.Categorical(logits=model.actor(obs))
    torch.testing.assert_close(log_prob, ref.log_prob(actions))
    lp, ent, _ = model.evaluate(obs, actions)
    torch.testing.assert_close(lp, ref.log_prob(actions))
    torch.testing.assert_close(ent, ref.entropy())
    assert torch.equal(model.to_env(actions), actions)

    ppo = make_ppo(obs_dim=5, action_space=gym.spaces.Discrete(4), num_envs=3)
    env_actions = ppo.act(torch.randn(3, 5))
    assert ppo.buffer.actions.shape == (8, 3) and ppo.buffer.actions.dtype == torch.long
    assert torch.equal(ppo.buffer.actions[0], env_actions)


def test_multidiscrete_action_space(make_ppo):
    space = gym.spaces.MultiDiscrete([3, 5])
    model = ActorCritic(OBS, space, _policy())
    assert _linears(model.actor)[-1].out_features == 8
    raw = torch.randn(11, 5)
    step = model.act(raw)
    actions, log_prob, obs = step.actions, step.log_probs, model.normalize(raw)
    assert actions.shape == (11, 2) and actions.dtype == torch.long
    assert int(actions[:, 0].max()) < 3 and int(actions[:, 1].max()) < 5
    logits = model.actor(obs)
    ref = D.Categorical(logits=logits[:, :3]).log_prob(actions[:, 0]) + D.Categorical(
        logits=logits[:, 3:]
    ).log_prob(actions[:, 1])
    torch.testing.assert_close(log_prob, ref)
    ppo = make_ppo(obs_dim=5, action_space=space, num_envs=3)
    ppo.act(torch.randn(3, 5))
    assert ppo.buffer.actions.shape == (8, 3, 2)


@pytest.mark.parametrize(
    ("obs_space", "action_space", "message"),
    [
        (OBS, gym.spaces.Tuple((gym.spaces.Discrete(2), gym.spaces.Discrete(3))), "supported"),
        (OBS, gym.spaces.Box(-1, 1, (2, 3), np.float32), "flatten"),
        (OBS, gym.spaces.MultiDiscrete(np.array([[2, 3], [4, 5]])), "1-D"),
        (OBS, gym.spaces.MultiBinary(3), "Discrete"),
        (
            gym.spaces.Tuple((gym.spaces.Box(-1, 1, (2,)), gym.spaces.Box(-1, 1, (2,)))),
            gym.spaces.Discrete(2),
            "FlattenObservation",
        ),
        # Dict observations are supported, with Box keys only.
        (
            gym.spaces.Dict({"a": gym.spaces.Discrete(3)}),
            gym.spaces.Discrete(2),
            "Box keys only",
        ),
    ],
)
def test_unsupported_spaces_raise_env_error(obs_space, action_space, message):
    with pytest.raises(EnvError, match=message):
        ActorCritic(obs_space, action_space, _policy())
