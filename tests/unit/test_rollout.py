"""RolloutBuffer: storage, fullness, and minibatches that cover every sample once per epoch."""

from __future__ import annotations

import pytest
import torch

from ppokit.algo.rollout import RolloutBuffer

T, N = 5, 3


def _filled(action_shape=(4,), action_dtype=torch.float32) -> RolloutBuffer:
    """Every field of sample (t, n) encodes its flat index i = t * N + n, so rows can be traced."""
    b = RolloutBuffer(T, N, (2,), action_shape, action_dtype, torch.device("cpu"))
    for t in range(T):
        i = torch.arange(N, dtype=torch.float32) + t * N
        obs = torch.stack([i, -i], dim=1)
        actions = i.view(N, *([1] * len(action_shape))).expand(N, *action_shape) * 10
        b.add_action(obs, actions.to(action_dtype), log_probs=-i)
        b.add_outcome(i * 0.5, terminated=i % 4 == 0, truncated=i % 5 == 0)
    i = torch.arange(T * N, dtype=torch.float32).view(T, N)
    b.values.copy_(i + 1000)
    b.returns.copy_(i + 2000)
    b.advantages.copy_(i + 3000)  # minibatches must use the advantages passed in, not these
    return b


def test_storage_and_fullness():
    b = _filled()
    assert b.full and b.step == T
    assert b.obs.shape == (T, N, 2) and b.actions.shape == (T, N, 4)
    i = torch.arange(T * N, dtype=torch.float32).view(T, N)
    assert torch.equal(b.obs[..., 0], i) and torch.equal(b.log_probs, -i)
    assert torch.equal(b.rewards, i * 0.5)
    assert torch.equal(b.dones, (i % 4 == 0) | (i % 5 == 0))
    with pytest.raises(RuntimeError, match="full"):
        b.add_action(torch.zeros(N, 2), torch.zeros(N, 4), torch.zeros(N))
    b.reset()
    assert b.step == 0 and not b.full
    b.add_action(torch.ones(N, 2), torch.zeros(N, 4), torch.zeros(N))
    b.add_outcome(
        torch.zeros(N), torch.zeros(N, dtype=torch.bool), torch.zeros(N, dtype=torch.bool)
    )
    assert b.step == 1 and torch.equal(b.obs[0], torch.ones(N, 2))


@pytest.mark.parametrize("minibatch_size", [1, 3, 5, 15])
def test_minibatches_cover_every_sample_once(minibatch_size):
    b = _filled()
    flat = torch.arange(T * N, dtype=torch.float32)
    obs = b.obs.flatten(0, 1) * 2  # stands in for normalized observations
    advantages = flat + 5000
    orders = []
    for _ in range(3):  # epochs
        batches = list(b.minibatches(obs, advantages, minibatch_size))
        assert len(batches) == T * N // minibatch_size
        for mb in batches:
            assert mb.obs.shape == (minibatch_size, 2)
            assert mb.actions.shape == (minibatch_size, 4)
            for x in (mb.log_probs, mb.values, mb.advantages, mb.returns):
                assert x.shape == (minibatch_size,)
            idx = mb.obs[:, 0] / 2
            # All fields of a row belong to the same sample.
            assert torch.equal(mb.obs[:, 1], -2 * idx)
            assert torch.equal(mb.actions, (idx * 10).unsqueeze(1).expand(-1, 4))
            assert torch.equal(mb.log_probs, -idx)
            assert torch.equal(mb.values, idx + 1000)
            assert torch.equal(mb.returns, idx + 2000)
            assert torch.equal(mb.advantages, idx + 5000)
        order = torch.cat([mb.obs[:, 0] / 2 for mb in batches])
        assert torch.equal(order.sort().values, flat)  # each sample exactly once
        orders.append(order)
    # Shuffled anew each epoch.
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    assert not torch.equal(orders[0], flat)


def test_discrete_actions_keep_their_dtype():
    b = _filled(action_shape=(), action_dtype=torch.long)
    assert b.actions.shape == (T, N) and b.actions.dtype == torch.long
    mb = next(b.minibatches(b.obs.flatten(0, 1), b.advantages.flatten(), 5))
    assert mb.actions.dtype == torch.long and mb.actions.shape == (5,)
    assert torch.equal(mb.actions, (mb.obs[:, 0] * 10).long())
