"""EpisodeTracker.add_rollout against a naive per-step loop, over consecutive rollouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppokit.episodes import EpisodeTracker


class NaiveTracker:
    """Step by step, env by env: add the reward, count the step, close the episode on done."""

    def __init__(self, num_envs: int) -> None:
        self.ret = [0.0] * num_envs
        self.length = [0] * num_envs

    def add_rollout(self, rewards: np.ndarray, dones: np.ndarray) -> tuple[list, list]:
        returns, lengths = [], []
        T, N = rewards.shape
        for t in range(T):
            for n in range(N):
                self.ret[n] += float(rewards[t, n])
                self.length[n] += 1
                if dones[t, n]:
                    returns.append(self.ret[n])
                    lengths.append(self.length[n])
                    self.ret[n], self.length[n] = 0.0, 0
        return returns, lengths


def _rollouts(gen, count, T, N):
    out = []
    for _ in range(count):
        rewards = gen.normal(loc=0.5, scale=2.0, size=(T, N)).astype(np.float32)
        dones = gen.random((T, N)) < 0.2
        out.append((rewards, dones))
    # Edge cases: a done on the last step of a rollout and on the first step of the next one,
    # and env 2 running through two whole rollouts without an episode end.
    out[0][1][-1, 0] = True
    out[1][1][0, 0] = True
    out[1][1][0, 1] = True
    out[0][1][:, 2] = False
    out[1][1][:, 2] = False
    out[2][1][3, 2] = True
    return out


def test_add_rollout_matches_naive_loop():
    gen = np.random.default_rng(11)
    T, N = 7, 4
    tracker = EpisodeTracker(N, window=5, device=torch.device("cpu"))
    naive = NaiveTracker(N)
    all_returns: list[float] = []
    for rewards, dones in _rollouts(gen, 6, T, N):
        got_r, got_l = tracker.add_rollout(torch.as_tensor(rewards), torch.as_tensor(dones))
        want_r, want_l = naive.add_rollout(rewards, dones)
        assert got_l == want_l
        assert got_r == pytest.approx(want_r, rel=1e-9, abs=1e-9)
        assert all(isinstance(x, int) for x in got_l)
        # The unfinished episode of each env is carried into the next rollout.
        assert tracker.partial_return.tolist() == pytest.approx(naive.ret, rel=1e-9, abs=1e-9)
        assert tracker.partial_length.tolist() == naive.length
        all_returns += want_r
    assert tracker.total_episodes == len(all_returns) > 10
    # Statistics over the rolling window of the last 5 episodes.
    assert list(tracker.returns) == pytest.approx(all_returns[-5:], rel=1e-9, abs=1e-9)
    assert tracker.mean_return() == pytest.approx(np.mean(all_returns[-5:]), rel=1e-9)


def test_episode_spanning_three_rollouts():
    tracker = EpisodeTracker(1, window=10, device=torch.device("cpu"))
    ones, no = torch.ones(4, 1), torch.zeros(4, 1, dtype=torch.bool)
    assert tracker.add_rollout(ones, no) == ([], [])
    assert tracker.add_rollout(ones * 2, no) == ([], [])
    end = torch.tensor([[False], [True], [False], [False]])
    # 4 * 1 + 4 * 2 + 3 + 3 = 18 over 4 + 4 + 2 = 10 steps; then 2 steps of a new episode.
    assert tracker.add_rollout(ones * 3, end) == ([18.0], [10])
    assert tracker.partial_return.tolist() == [6.0] and tracker.partial_length.tolist() == [2]
    assert tracker.mean_length() == 10


def test_reset_partial_and_state_dict():
    gen = np.random.default_rng(12)
    T, N = 6, 3
    tracker = EpisodeTracker(N, window=100, device=torch.device("cpu"))
    naive = NaiveTracker(N)
    (r1, d1), (r2, d2) = _rollouts(gen, 3, T, N)[:2]
    tracker.add_rollout(torch.as_tensor(r1), torch.as_tensor(d1))
    naive.add_rollout(r1, d1)
    tracker.reset_partial()
    naive.ret, naive.length = [0.0] * N, [0] * N
    got = tracker.add_rollout(torch.as_tensor(r2), torch.as_tensor(d2))
    want = naive.add_rollout(r2, d2)
    assert got[1] == want[1] and got[0] == pytest.approx(want[0], rel=1e-9, abs=1e-9)

    restored = EpisodeTracker(N, window=100, device=torch.device("cpu"))
    restored.load_state_dict(tracker.state_dict())
    assert list(restored.returns) == list(tracker.returns)
    assert list(restored.lengths) == list(tracker.lengths)
    assert restored.total_episodes == tracker.total_episodes
    assert EpisodeTracker(N, 3, torch.device("cpu")).mean_return() is None
