"""Seeded learning thresholds on the shipped presets, held by the median of three seeds
(tests/ppokit_learning.py). A broken PPO (sign error, no bootstrap, wrong advantages, mis-scaled
actions) does not reach them within the budget on any seed."""

from __future__ import annotations

import pytest

from ppokit.config import load_config
from ppokit_learning import assert_median_at_least, over_seeds, train_and_evaluate

pytestmark = [pytest.mark.learning, pytest.mark.slow]


@pytest.mark.xdist_group("learning-cartpole")
def test_cartpole_reaches_475_within_100k_steps(tmp_path):
    assert load_config("cartpole").total_steps <= 100_000
    returns = over_seeds(lambda seed: train_and_evaluate("cartpole", seed, tmp_path / f"s{seed}"))
    assert_median_at_least(returns, 475)


@pytest.mark.xdist_group("learning-pendulum")
def test_pendulum_reaches_minus_250_within_100k_steps(tmp_path):
    assert load_config("pendulum").total_steps <= 100_000
    returns = over_seeds(lambda seed: train_and_evaluate("pendulum", seed, tmp_path / f"s{seed}"))
    assert_median_at_least(returns, -250)
