"""compute_gae: hand-computed cases and a naive per-env reference implementation; RewardScaler
against a NumPy re-computation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppokit.algo.gae import RewardScaler, compute_gae
from ppokit_testutil import naive_gae


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_hand_computed_terminated_truncated_and_bootstrap():
    # gamma = 0.5, lam = 0.5, so gamma * lam = 0.25. T = 3 steps (rows), N = 3 envs (columns).
    #
    # env 0: TERMINATED at t=1 (no bootstrap there, recursion cut), bootstraps at the end.
    #   r = [1, 2, 3], V = [0.5, 1, 2], next_values = [1, 2 (V of the reset obs: ignored), 4]
    #   delta_2 = 3 + 0.5*4 - 2 = 3           A_2 = 3
    #   delta_1 = 2 + 0       - 1 = 1         A_1 = 1            (done at 1: A_2 not added)
    #   delta_0 = 1 + 0.5*1   - 0.5 = 1       A_0 = 1 + 0.25*1 = 1.25
    #   returns = A + V = [1.75, 2, 5]
    # env 1: TRUNCATED at t=1: bootstraps from V(final obs) = 6, not from V[2] = 3; recursion cut.
    #   r = [0, 1, 1], V = [1, 2, 3], next_values = [2, 6, 2]
    #   delta_2 = 1 + 0.5*2 - 3 = -1          A_2 = -1
    #   delta_1 = 1 + 0.5*6 - 2 = 2           A_1 = 2            (done at 1: A_2 not added)
    #   delta_0 = 0 + 0.5*2 - 1 = 0           A_0 = 0 + 0.25*2 = 0.5
    #   returns = [1.5, 4, 2]
    # env 2: no episode end: plain recursion, bootstrap V(s_3) = 2 at the end of the rollout.
    #   r = [1, 0, 2], V = [1, 1, 1], next_values = [1, 1, 2]
    #   delta_2 = 2 + 0.5*2 - 1 = 2           A_2 = 2
    #   delta_1 = 0 + 0.5*1 - 1 = -0.5        A_1 = -0.5 + 0.25*2 = 0
    #   delta_0 = 1 + 0.5*1 - 1 = 0.5         A_0 = 0.5 + 0.25*0 = 0.5
    #   returns = [1.5, 1, 3]
    rewards = _t([[1, 0, 1], [2, 1, 0], [3, 1, 2]])
    values = _t([[0.5, 1, 1], [1, 2, 1], [2, 3, 1]])
    next_values = _t([[1, 2, 1], [2, 6, 1], [4, 2, 2]])
    terminated = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)
    truncated = torch.tensor([[0, 0, 0], [0, 1, 0], [0, 0, 0]], dtype=torch.bool)
    adv, ret = compute_gae(
        rewards, values, next_values, terminated, terminated | truncated, gamma=0.5, lam=0.5
    )
    expected_adv = _t([[1.25, 0.5, 0.5], [1, 2, 0], [3, -1, 2]])
    expected_ret = _t([[1.75, 1.5, 1.5], [2, 4, 1], [5, 2, 3]])
    torch.testing.assert_close(adv, expected_adv, rtol=0, atol=1e-12)
    torch.testing.assert_close(ret, expected_ret, rtol=0, atol=1e-12)
    assert adv.shape == ret.shape == (3, 3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_rollout_matches_naive_implementation(dtype):
    gen = np.random.default_rng(3)
    T, N, gamma, lam = 37, 6, 0.99, 0.95
    rewards = gen.normal(size=(T, N))
    values = gen.normal(size=(T, N))
    next_values = gen.normal(size=(T, N))
    terminated = gen.random((T, N)) < 0.1
    truncated = (gen.random((T, N)) < 0.1) & ~terminated
    dones = terminated | truncated
    assert terminated.any() and truncated.any()

    def tt(x):
        return torch.as_tensor(x, dtype=dtype)

    adv, ret = compute_gae(
        tt(rewards),
        tt(values),
        tt(next_values),
        torch.as_tensor(terminated),
        torch.as_tensor(dones),
        gamma,
        lam,
    )
    expected = naive_gae(rewards, values, next_values, terminated, dones, gamma, lam)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    np.testing.assert_allclose(adv.double().numpy(), expected, rtol=tol, atol=tol)
    # returns == advantages + values, exactly the sum of the two tensors.
    torch.testing.assert_close(ret, adv + tt(values), rtol=0, atol=0)
    assert adv.dtype == ret.dtype == dtype


def test_lambda_one_gives_discounted_return_to_go():
    # With lam = 1 the return is the discounted sum of rewards up to the episode end, plus the
    # discounted bootstrap where the episode was not terminated (truncation / rollout end).
    gen = np.random.default_rng(5)
    T, N, gamma = 12, 3, 0.9
    rewards = gen.normal(size=(T, N))
    values = gen.normal(size=(T, N))
    # As in a real rollout, next_values[t] = V(s_{t+1}) within an episode (so the deltas
    # telescope); elsewhere (episode ends, last step) it is an unrelated value.
    next_values = gen.normal(size=(T, N))
    next_values[:-1] = values[1:]
    next_values[6, 1] = 5.0  # V(final obs) of the truncated episode
    terminated = np.zeros((T, N), bool)
    truncated = np.zeros((T, N), bool)
    terminated[4, 0] = True
    truncated[6, 1] = True
    dones = terminated | truncated
    _, ret = compute_gae(
        torch.tensor(rewards),
        torch.tensor(values),
        torch.tensor(next_values),
        torch.tensor(terminated),
        torch.tensor(dones),
        gamma,
        1.0,
    )
    for n in range(N):
        for t in range(T):
            g, discount, k = 0.0, 1.0, t
            while True:
                g += discount * rewards[k, n]
                if terminated[k, n]:
                    break
                if truncated[k, n] or k == T - 1:
                    g += discount * gamma * next_values[k, n]
                    break
                discount *= gamma
                k += 1
            assert ret[t, n].item() == pytest.approx(g, rel=1e-10, abs=1e-10)


def test_lambda_zero_gives_one_step_td_errors():
    gen = np.random.default_rng(7)
    T, N, gamma = 9, 4, 0.97
    r, v, nv = (torch.tensor(gen.normal(size=(T, N))) for _ in range(3))
    terminated = torch.tensor(gen.random((T, N)) < 0.2)
    dones = terminated | torch.tensor(gen.random((T, N)) < 0.2)
    adv, _ = compute_gae(r, v, nv, terminated, dones, gamma, 0.0)
    expected = r + gamma * nv * (~terminated).double() - v
    torch.testing.assert_close(adv, expected, rtol=0, atol=1e-12)


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
