"""The NumPy act step must sample from exactly the distribution the torch model evaluates."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.config import PolicyConfig
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.numpy_explorer import NumpyExplorer

OBS = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
BOX = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))


def _model(action_space: gym.Space, **policy) -> ActorCritic:
    torch.manual_seed(0)
    model = ActorCritic(OBS, action_space, PolicyConfig(actor_hidden=[16, 16], **policy))
    # Non-trivial statistics and log-std, so every term of the computation matters.
    model.obs_normalizer.update(torch.randn(100, 5) * 3 + 1)
    if model.continuous:
        with torch.no_grad():
            model.distribution.log_std.copy_(torch.tensor([-0.3, 0.4]))
            for layer in model.actor.layers:
                layer.weight.mul_(5)  # a head with gain 0.01 would make the mean ~0
    return model


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_gaussian_samples_are_scored_identically_by_torch(activation):
    model = _model(BOX, activation=activation)
    explorer = NumpyExplorer(model)
    explorer.sync(seed=3)
    obs = torch.randn(64, 5) * 4
    actions, log_probs, env_actions = explorer(obs)
    with torch.no_grad():
        mean = model.actor(model.normalize(obs))
        expected_log_probs = model.distribution.log_prob(mean, actions)
    torch.testing.assert_close(log_probs, expected_log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(env_actions, model.to_env(actions), rtol=0, atol=1e-6)
    assert (env_actions[:, 0].abs() <= 2).all() and (
        (env_actions[:, 1] >= 0) & (env_actions[:, 1] <= 1)
    ).all()


def test_gaussian_noise_has_the_models_std():
    model = _model(BOX)
    explorer = NumpyExplorer(model)
    explorer.sync(seed=0)
    obs = torch.zeros(20_000, 5)
    actions, _, _ = explorer(obs)
    with torch.no_grad():
        mean = model.actor(model.normalize(obs))
    residual = (actions - mean).numpy()
    np.testing.assert_allclose(residual.std(axis=0), np.exp([-0.3, 0.4]), rtol=0.03)
    np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=0.03)


def test_categorical_log_probs_and_frequencies():
    model = _model(gym.spaces.Discrete(4))
    with torch.no_grad():
        model.actor.layers[-1].weight.mul_(100)  # spread the probabilities apart
    explorer = NumpyExplorer(model)
    explorer.sync(seed=1)
    obs = torch.randn(1, 5).expand(40_000, 5).contiguous()
    actions, log_probs, env_actions = explorer(obs)
    assert actions.dtype == torch.int64 and torch.equal(actions, env_actions)
    with torch.no_grad():
        log_p = torch.log_softmax(model.actor(model.normalize(obs[:1])), -1)[0]
    torch.testing.assert_close(log_probs, log_p[actions], rtol=1e-5, atol=1e-5)
    frequencies = torch.bincount(actions, minlength=4).double() / len(actions)
    torch.testing.assert_close(frequencies, log_p.exp().double(), rtol=0, atol=0.01)


def test_seeded_and_synced_per_rollout():
    model = _model(BOX)
    explorer = NumpyExplorer(model)
    obs = torch.randn(8, 5)
    explorer.sync(seed=7)
    first = explorer(obs)[0]
    explorer.sync(seed=7)
    assert torch.equal(explorer(obs)[0], first)
    explorer.sync(seed=8)
    assert not torch.equal(explorer(obs)[0], first)
    # sync picks up new weights
    with torch.no_grad():
        model.actor.layers[-1].bias.add_(1.0)
    explorer.sync(seed=7)
    torch.testing.assert_close(explorer(obs)[0], first + 1.0, rtol=0, atol=1e-5)


def test_supports_only_what_it_implements():
    assert NumpyExplorer.supports(_model(BOX))
    assert not NumpyExplorer.supports(_model(BOX, activation="gelu"))
    assert not NumpyExplorer.supports(_model(gym.spaces.MultiDiscrete([2, 3])))
