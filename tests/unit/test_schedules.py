"""LRSchedule: constant, linear, cosine, KL-adaptive, state round trip, and its use by PPO.update."""

from __future__ import annotations

import math

import pytest

from ppokit.algo.schedules import LRSchedule
from ppokit.config import AlgoConfig


def _schedule(total: int = 100, **kwargs) -> LRSchedule:
    return LRSchedule(AlgoConfig(**{"lr": 1e-3, **kwargs}), total)


def test_constant():
    s = _schedule(lr_schedule="constant")
    assert [s.at_update(u) for u in (0, 1, 50, 99, 100, 500)] == [1e-3] * 6
    assert not s.adaptive


def test_linear_cleanrl_convention():
    # CleanRL: lr * (1 - (iteration - 1) / num_iterations) with 1-based iterations, i.e.
    # lr * (1 - update / total) with 0-based updates: the first update uses the full lr.
    s = _schedule(lr_schedule="linear")
    assert s.at_update(0) == pytest.approx(1e-3)
    assert s.at_update(1) == pytest.approx(0.99e-3)
    assert s.at_update(50) == pytest.approx(0.5e-3)
    assert s.at_update(99) == pytest.approx(0.01e-3)
    assert s.at_update(100) == pytest.approx(0.0)
    assert s.at_update(150) == pytest.approx(0.0)  # never negative past the end
    assert s.lr == pytest.approx(0.0)


def test_cosine_to_floor():
    s = _schedule(lr_schedule="cosine", lr_floor=0.1)
    floor = 1e-4
    assert s.at_update(0) == pytest.approx(1e-3)
    # Middle: halfway between lr and lr * lr_floor.
    assert s.at_update(50) == pytest.approx((1e-3 + floor) / 2)
    # A quarter: floor + (lr - floor) * (1 + cos(pi / 4)) / 2.
    assert s.at_update(25) == pytest.approx(floor + 0.9e-3 * (1 + math.cos(math.pi / 4)) / 2)
    assert s.at_update(100) == pytest.approx(floor)
    assert s.at_update(130) == pytest.approx(floor)
    values = [s.at_update(u) for u in range(101)]
    assert all(a > b for a, b in zip(values, values[1:]))


def test_adaptive_band_and_clamps():
    s = _schedule(lr_schedule="adaptive", target_kl=0.01, lr_factor=1.5, min_lr=1e-4, max_lr=2e-3)
    assert s.adaptive
    assert s.after_kl(0.03) == pytest.approx(1e-3 / 1.5)  # > 2 x target: down
    s.lr = 1e-3
    assert s.after_kl(0.004) == pytest.approx(1.5e-3)  # < target / 2: up
    s.lr = 1e-3
    # Inside the band [target/2, 2 target] (ends included) nothing changes.
    for kl in (0.005, 0.01, 0.02):
        assert s.after_kl(kl) == pytest.approx(1e-3)
    # Clamped at max_lr and at min_lr exactly.
    for _ in range(5):
        s.after_kl(0.0)
    assert s.lr == 2e-3
    for _ in range(20):
        s.after_kl(1.0)
    assert s.lr == 1e-4
    # A time-based call does not move the adaptive LR.
    assert s.at_update(50) == 1e-4


def test_state_dict_round_trip():
    s = _schedule(lr_schedule="adaptive", target_kl=0.01, min_lr=1e-5, max_lr=1e-2)
    s.after_kl(0.5)
    s.after_kl(0.5)
    restored = _schedule(lr_schedule="adaptive", target_kl=0.01, min_lr=1e-5, max_lr=1e-2)
    restored.load_state_dict(s.state_dict())
    assert restored.lr == s.lr == pytest.approx(1e-3 / 1.5**2)
    assert restored.after_kl(0.001) == s.after_kl(0.001)

    linear = _schedule(total=40, lr_schedule="linear")
    linear.at_update(10)
    other = _schedule(total=999, lr_schedule="linear")
    other.load_state_dict(linear.state_dict())
    assert other.lr == linear.lr == pytest.approx(0.75e-3)
    assert other.at_update(30) == pytest.approx(linear.at_update(30)) == pytest.approx(0.25e-3)


def test_ppo_update_uses_the_time_based_schedule(make_ppo, collect):
    ppo = make_ppo(
        num_envs=2,
        num_steps=4,
        num_minibatches=2,
        num_epochs=1,
        lr_schedule="linear",
        lr=1e-3,
        total_updates=4,
    )
    used = []
    real_step = ppo.optimizer.step

    def step(*args, **kwargs):
        used.append(ppo.optimizer.param_groups[0]["lr"])
        return real_step(*args, **kwargs)

    ppo.optimizer.step = step
    metrics = []
    for _ in range(3):
        log = collect(ppo)
        ppo.finish_rollout(log["next_obs"])
        metrics.append(ppo.update()["charts/learning_rate"])
    # Update k (0-based) uses lr * (1 - k / 4) for both of its minibatches.
    assert used == pytest.approx([1e-3, 1e-3, 0.75e-3, 0.75e-3, 0.5e-3, 0.5e-3])
    assert metrics == pytest.approx([1e-3, 0.75e-3, 0.5e-3])
