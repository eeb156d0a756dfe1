"""RunningMeanStd and ObservationNormalizer against numpy re-computations (reward scaling, which
is PPO's: tests/unit/test_gae.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.config import PolicyConfig
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.normalization import ObservationNormalizer, RunningMeanStd

# --------------------------------------------------------------------------------------------
# RunningMeanStd
# --------------------------------------------------------------------------------------------


def test_running_mean_std_merges_batches_exactly():
    gen = np.random.default_rng(0)
    rms = RunningMeanStd((4,))
    batches = [
        gen.normal(loc=[5.0, -3.0, 0.0, 1e3], scale=[1.0, 0.1, 7.0, 2.0], size=(n, 4))
        for n in (1, 7, 100, 3, 50, 1)
    ]
    for b in batches:
        rms.update(torch.as_tensor(b))
    data = np.concatenate(batches)
    assert rms.count.item() == len(data)
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-12, atol=1e-12)
    # Population variance (ddof=0), not the unbiased estimate.
    np.testing.assert_allclose(rms.var.numpy(), data.var(0, ddof=0), rtol=1e-10, atol=1e-12)
    assert rms.mean.dtype == rms.var.dtype == torch.float64


def test_running_mean_std_multidim_shape_and_float32_input():
    gen = np.random.default_rng(1)
    rms = RunningMeanStd((2, 3))
    batches = [gen.normal(size=(n, 2, 3)).astype(np.float32) * 3 + 1 for n in (5, 11, 2)]
    for b in batches:
        rms.update(torch.as_tensor(b))
    data = np.concatenate(batches).astype(np.float64)
    np.testing.assert_allclose(rms.mean.numpy(), data.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rms.var.numpy(), data.var(0), rtol=1e-10, atol=1e-12)


def test_running_mean_std_merge_of_statistics_and_empty_batch():
    gen = np.random.default_rng(2)
    a, b = gen.normal(size=(13,)), gen.normal(size=(29,)) + 4
    rms = RunningMeanStd(())
    rms.update(torch.as_tensor(a))
    rms.update(torch.zeros(0))  # an empty batch changes nothing
    rms.merge(torch.tensor(b.mean()), torch.tensor(b.var()), torch.tensor(29.0))
    both = np.concatenate([a, b])
    assert rms.count.item() == 42
    assert rms.mean.item() == pytest.approx(both.mean(), rel=1e-12)
    assert rms.var.item() == pytest.approx(both.var(), rel=1e-12)


# --------------------------------------------------------------------------------------------
# ObservationNormalizer
# --------------------------------------------------------------------------------------------


def _fitted_normalizer(clip: float = 10.0) -> tuple[ObservationNormalizer, np.ndarray]:
    gen = np.random.default_rng(3)
    data = gen.normal(loc=[2.0, -1.0, 10.0], scale=[0.5, 3.0, 0.01], size=(200, 3))
    norm = ObservationNormalizer((3,), clip=clip)
    norm.update(torch.as_tensor(data[:120], dtype=torch.float32))
    norm.update(torch.as_tensor(data[120:], dtype=torch.float32))
    return norm, data.astype(np.float32).astype(np.float64)


def test_observation_normalizer_forward_uses_the_statistics():
    norm, data = _fitted_normalizer()
    x = np.array([[2.0, -1.0, 10.0], [2.5, 2.0, 10.005], [1.0, -7.0, 9.99]])
    out = norm(torch.as_tensor(x, dtype=torch.float32)).numpy()
    expected = (x - data.mean(0)) / np.sqrt(data.var(0) + 1e-8)
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
    # forward never updates the statistics.
    assert norm.rms.count.item() == 200


def test_observation_normalizer_clips():
    norm, data = _fitted_normalizer(clip=5.0)
    std = data.std(0)
    x = torch.as_tensor(data.mean(0) + np.array([100.0, -100.0, 2.0]) * std, dtype=torch.float32)
    out = norm(x.unsqueeze(0))[0]
    assert out[0].item() == 5.0
    assert out[1].item() == -5.0
    assert out[2].item() == pytest.approx(2.0, abs=1e-2)  # within range: not clipped


def test_observation_normalizer_state_dict_round_trip_restores_forward():
    norm, _ = _fitted_normalizer()
    state = norm.state_dict()
    # The float32 working copies are derived, so they are not part of the state.
    assert not any("32" in key for key in state)
    fresh = ObservationNormalizer((3,), clip=10.0)
    x = torch.randn(5, 3) * 3 + torch.tensor([2.0, -1.0, 10.0])
    assert not torch.allclose(fresh(x), norm(x))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(x), norm(x), rtol=0, atol=0)
    assert fresh.rms.count.item() == 200


def test_normalizer_inside_model_is_refreshed_on_model_load():
    spaces = (
        gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        gym.spaces.Box(-1, 1, (2,), np.float32),
    )
    a = ActorCritic(*spaces, PolicyConfig(actor_hidden=[8], critic_hidden=[8]))
    b = ActorCritic(*spaces, PolicyConfig(actor_hidden=[8], critic_hidden=[8]))
    a.obs_normalizer.update(torch.randn(64, 3) * 4 + 7)
    b.load_state_dict(a.state_dict())
    x = torch.randn(6, 3) * 4 + 7
    torch.testing.assert_close(b.normalize(x), a.normalize(x), rtol=0, atol=0)
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


def test_disabled_normalizer_is_identity():
    norm = ObservationNormalizer((3,), clip=1.0, enabled=False)
    norm.update(torch.randn(50, 3) * 10 + 5)
    assert norm.rms.count.item() == 0
    x = torch.tensor([[100.0, -50.0, 0.3]])
    assert torch.equal(norm(x), x)
