"""Seeded learning thresholds of the massively-parallel recipes on the CPU, each on the median of
three seeds: the batched reference task at 4096 envs (the Isaac-Lab-style preset, unchanged from
CUDA), the EMA rollout agent, and bf16 training on CartPole."""

from __future__ import annotations

import pytest

from ppokit_learning import assert_median_at_least, over_seeds, train_and_evaluate

pytestmark = [
    pytest.mark.learning,
    pytest.mark.slow,
    pytest.mark.xdist_group("learning-gpu-recipes"),
]


def test_point_mass_at_4096_envs_reaches_50_within_1m_steps(tmp_path):
    # An untrained policy scores about 5 (it stays where it starts); the optimum is about 85.
    returns = over_seeds(
        lambda seed: train_and_evaluate("pointmass-4096", seed, tmp_path / f"s{seed}", device="cpu")
    )
    assert_median_at_least(returns, 50)


def test_point_mass_with_the_ema_agent_reaches_50_within_1m_steps(tmp_path):
    returns = over_seeds(
        lambda seed: train_and_evaluate(
            "pointmass-4096", seed, tmp_path / f"s{seed}", device="cpu", **{"ema.decay": 0.5}
        )
    )
    assert_median_at_least(returns, 50)


def test_cartpole_in_bf16_reaches_475_within_100k_steps(tmp_path):
    returns = over_seeds(
        lambda seed: train_and_evaluate(
            "cartpole", seed, tmp_path / f"s{seed}", device="cpu", precision="bf16"
        )
    )
    assert_median_at_least(returns, 475)
