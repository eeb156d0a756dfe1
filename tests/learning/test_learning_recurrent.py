"""Memory must be used: on CartPole with its velocities hidden, the GRU preset reaches eval 475
within its budget while the same budget with an MLP (same preset, policy.memory none) stays
below 200, each on the median of three seeds. A recurrent PPO that leaks no information through
its state, resets it wrongly or trains sequences from the wrong states does not reach the first
threshold."""

from __future__ import annotations

import pytest

from ppokit.config import load_config
from ppokit_learning import (
    assert_median_at_least,
    assert_median_below,
    over_seeds,
    train_and_evaluate,
)

pytestmark = [
    pytest.mark.learning,
    pytest.mark.slow,
    pytest.mark.xdist_group("learning-recurrent"),
]

PRESET = "cartpole-masked-gru"


def test_masked_cartpole_gru_reaches_475_where_an_mlp_stays_below_200(tmp_path):
    assert load_config(PRESET).total_steps <= 100_000
    gru = over_seeds(lambda seed: train_and_evaluate(PRESET, seed, tmp_path / f"gru{seed}"))
    mlp = over_seeds(
        lambda seed: train_and_evaluate(
            PRESET, seed, tmp_path / f"mlp{seed}", **{"policy.memory": "none"}
        )
    )
    assert_median_at_least(gru, 475)
    assert_median_below(mlp, 200)
