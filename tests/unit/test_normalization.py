"""RunningMeanStd, ObservationNormalizer and RewardScaler against numpy re-computations."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.config import PolicyConfig
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.normalization import ObservationNormalizer, RewardScaler, RunningMeanStd

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


# --------------------------------------------------------------------------------------------
# RewardScaler
# --------------------------------------------------------------------------------------------


class NumpyRewardScaler:
    """Return-based reward scaling, written independently with a per-step loop in float64."""

    def __init__(self, num_envs: int, gamma: float, clip: float, eps: float = 1e-8) -> None:
        self.gamma, self.clip, self.eps = gamma, clip, eps
        self.running = np.zeros(num_envs)
        self.seen: list[np.ndarray] = []

    def scale_rollout(self, rewards: np.ndarray, dones: np.ndarray) -> np.ndarray:
        for t in range(len(rewards)):
            self.running = self.gamma * self.running + rewards[t]
            self.seen.append(self.running.copy())
            self.running = np.where(dones[t], 0.0, self.running)  # a new episode starts
        var = np.concatenate(self.seen).var()
        scaled = rewards / np.sqrt(var + self.eps)
        return np.clip(scaled, -self.clip, self.clip) if self.clip > 0 else scaled


def _reward_rollout(gen, T, N, outlier=False):
    rewards = gen.normal(loc=1.0, scale=1.0, size=(T, N)).astype(np.float32)
    if outlier:
        rewards[3, 1] = 60.0
    dones = gen.random((T, N)) < 0.08
    return rewards, dones


@pytest.mark.parametrize("clip", [0.0, 2.0])
def test_reward_scaler_matches_numpy_across_rollouts(clip):
    gen = np.random.default_rng(4)
    T, N, gamma = 25, 3, 0.9
    scaler = RewardScaler(N, gamma, clip=clip)
    reference = NumpyRewardScaler(N, gamma, clip=clip)
    rollouts = [_reward_rollout(gen, T, N), _reward_rollout(gen, T, N, outlier=True)]
    # Episodes span the rollout boundary (no env is done at the last step of rollout 1).
    rollouts[0][1][-1] = False
    for rewards, dones in rollouts:
        out = scaler.scale_rollout(torch.as_tensor(rewards), torch.as_tensor(dones))
        expected = reference.scale_rollout(rewards.astype(np.float64), dones)
        np.testing.assert_allclose(out.numpy(), expected, rtol=2e-5, atol=1e-6)
        # The per-env running returns are carried into the next rollout.
        np.testing.assert_allclose(scaler.returns.numpy(), reference.running, rtol=1e-5)
        assert out.dtype == torch.float32
    assert scaler.rms.count.item() == 2 * T * N
    if clip:
        assert (np.abs(expected) == clip).any() and (np.abs(expected) < clip).any()


def test_reward_scaler_carry_matters():
    # A scaler that forgot the returns between rollouts would see different returns in rollout 2.
    gen = np.random.default_rng(5)
    T, N, gamma = 20, 2, 0.99
    first = _reward_rollout(gen, T, N)
    first[1][:] = False
    second = _reward_rollout(gen, T, N)
    second[1][:] = False
    carried = RewardScaler(N, gamma, clip=0.0)
    carried.scale_rollout(torch.as_tensor(first[0]), torch.as_tensor(first[1]))
    forgetful = NumpyRewardScaler(N, gamma, clip=0.0)
    forgetful.scale_rollout(first[0].astype(np.float64), first[1])
    forgetful.running[:] = 0.0
    out = carried.scale_rollout(torch.as_tensor(second[0]), torch.as_tensor(second[1]))
    wrong = forgetful.scale_rollout(second[0].astype(np.float64), second[1])
    assert not np.allclose(out.numpy(), wrong, rtol=1e-3)


def test_reward_scaler_reset_and_disabled():
    scaler = RewardScaler(2, 0.9, clip=0.0)
    rewards = torch.ones(4, 2)
    scaler.scale_rollout(rewards, torch.zeros(4, 2, dtype=torch.bool))
    # returns after 4 steps of reward 1: 1 + 0.9 + 0.81 + 0.729
    torch.testing.assert_close(scaler.returns, torch.full((2,), 3.439))
    count = scaler.rms.count.item()
    scaler.reset()
    assert torch.equal(scaler.returns, torch.zeros(2))
    assert scaler.rms.count.item() == count  # statistics are kept

    off = RewardScaler(2, 0.9, enabled=False)
    r = torch.randn(5, 2) * 100
    assert torch.equal(off.scale_rollout(r, torch.zeros(5, 2, dtype=torch.bool)), r)
    assert off.rms.count.item() == 0
