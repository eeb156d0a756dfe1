"""The NumPy act step (an accelerator) against its reference, `ActorCritic.act`: given the same
noise both compute the same actions, log-probabilities and env actions, and its samples come
from exactly the distribution the torch model evaluates."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.algo.accel.numpy_act import NumpyAct
from ppokit.config import PolicyConfig
from ppokit.nn.actor_critic import ActorCritic

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


def _reference_with_noise(monkeypatch, model, obs, noise: np.ndarray):
    """`ActorCritic.act` (the reference) sampling with `noise` in place of torch's draw."""
    name = "randn_like" if model.continuous else "rand_like"
    monkeypatch.setattr(torch, name, lambda like: torch.from_numpy(noise).to(like.dtype))
    with torch.no_grad():
        step = model.act(obs)
    monkeypatch.undo()
    return step


@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_gaussian_step_equals_the_reference_given_its_noise(monkeypatch, activation):
    model = _model(BOX, activation=activation)
    explorer = NumpyAct(model)
    explorer.sync(seed=3)
    obs = torch.randn(64, 5) * 4
    ours = explorer(obs)
    noise = np.random.default_rng(3).standard_normal((64, 2), dtype=np.float32)
    ref = _reference_with_noise(monkeypatch, model, obs, noise)
    torch.testing.assert_close(ours.actions, ref.actions, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.log_probs, ref.log_probs, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.env_actions, ref.env_actions, rtol=1e-5, atol=1e-5)
    assert ours.values is None and ref.values is None
    # ... and the torch model scores the NumPy samples with the log-probabilities stored.
    with torch.no_grad():
        mean = model.actor(model.normalize(obs))
        scored = model.distribution.log_prob(mean, ours.actions)
    torch.testing.assert_close(ours.log_probs, scored, rtol=1e-5, atol=1e-5)
    env = ours.env_actions
    assert (env[:, 0].abs() <= 2).all() and ((env[:, 1] >= 0) & (env[:, 1] <= 1)).all()


def test_categorical_step_equals_the_reference_given_its_noise(monkeypatch):
    model = _model(gym.spaces.Discrete(4))
    with torch.no_grad():
        model.actor.layers[-1].weight.mul_(20)  # spread the probabilities apart
    explorer = NumpyAct(model)
    explorer.sync(seed=5)
    obs = torch.randn(256, 5)
    ours = explorer(obs)
    uniform = np.random.default_rng(5).random((256, 4), dtype=np.float32)
    ref = _reference_with_noise(monkeypatch, model, obs, uniform)
    assert torch.equal(ours.actions, ref.actions) and torch.equal(ours.env_actions, ref.actions)
    torch.testing.assert_close(ours.log_probs, ref.log_probs, rtol=1e-5, atol=1e-5)


def test_gaussian_noise_has_the_models_std():
    model = _model(BOX)
    explorer = NumpyAct(model)
    explorer.sync(seed=0)
    obs = torch.zeros(20_000, 5)
    actions = explorer(obs).actions
    with torch.no_grad():
        mean = model.actor(model.normalize(obs))
    residual = (actions - mean).numpy()
    np.testing.assert_allclose(residual.std(axis=0), np.exp([-0.3, 0.4]), rtol=0.03)
    np.testing.assert_allclose(residual.mean(axis=0), 0.0, atol=0.03)


def test_categorical_log_probs_and_frequencies():
    model = _model(gym.spaces.Discrete(4))
    with torch.no_grad():
        model.actor.layers[-1].weight.mul_(100)  # spread the probabilities apart
    explorer = NumpyAct(model)
    explorer.sync(seed=1)
    obs = torch.randn(1, 5).expand(40_000, 5).contiguous()
    step = explorer(obs)
    actions, log_probs = step.actions, step.log_probs
    assert actions.dtype == torch.int64 and torch.equal(actions, step.env_actions)
    with torch.no_grad():
        log_p = torch.log_softmax(model.actor(model.normalize(obs[:1])), -1)[0]
    torch.testing.assert_close(log_probs, log_p[actions], rtol=1e-5, atol=1e-5)
    frequencies = torch.bincount(actions, minlength=4).double() / len(actions)
    torch.testing.assert_close(frequencies, log_p.exp().double(), rtol=0, atol=0.01)


def test_seeded_and_synced_per_rollout():
    model = _model(BOX)
    explorer = NumpyAct(model)
    obs = torch.randn(8, 5)
    explorer.sync(seed=7)
    first = explorer(obs).actions
    explorer.sync(seed=7)
    assert torch.equal(explorer(obs).actions, first)
    explorer.sync(seed=8)
    assert not torch.equal(explorer(obs).actions, first)
    # sync picks up new weights
    with torch.no_grad():
        model.actor.layers[-1].bias.add_(1.0)
    explorer.sync(seed=7)
    torch.testing.assert_close(explorer(obs).actions, first + 1.0, rtol=0, atol=1e-5)


def test_supports_only_what_it_implements():
    assert NumpyAct.supports(_model(BOX))
    assert NumpyAct.unsupported(_model(BOX, activation="gelu")) == "gelu activation"
    multi = _model(gym.spaces.MultiDiscrete([2, 3]))
    assert NumpyAct.unsupported(multi) == "MultiCategorical actions"
