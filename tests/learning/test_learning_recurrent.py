"""Memory must be used: on CartPole with its velocities hidden, the GRU preset reaches eval 475
within its budget while the same budget with an MLP (same preset, policy.memory none) stays
below 200. A recurrent PPO that leaks no information through its state, resets it wrongly or
trains sequences from the wrong states does not reach the first threshold."""

from __future__ import annotations

import pytest

from ppokit.config import load_config
from ppokit.trainer import Trainer

pytestmark = [
    pytest.mark.learning,
    pytest.mark.slow,
    pytest.mark.xdist_group("learning-recurrent"),
]


def train_and_evaluate(preset: str, seed: int, tmp_path, **overrides) -> dict:
    cfg = load_config(
        preset,
        overrides={
            "seed": seed,
            "log.root": str(tmp_path),
            "log.progress": False,
            "log.checkpoint_every": 0,
            "eval.episodes": 0,
            **overrides,
        },
    )
    assert cfg.total_steps <= 150_000
    trainer = Trainer(cfg)
    trainer.train()
    return trainer.evaluate(episodes=20, deterministic=True)


def test_masked_cartpole_gru_reaches_475_where_an_mlp_stays_below_200(tmp_path):
    gru = train_and_evaluate("cartpole-masked-gru", seed=1, tmp_path=tmp_path / "gru")
    mlp = train_and_evaluate(
        "cartpole-masked-gru", seed=1, tmp_path=tmp_path / "mlp", **{"policy.memory": "none"}
    )
    assert gru["episodes"] == mlp["episodes"] == 20
    assert gru["mean_return"] >= 475, (gru, mlp)
    assert mlp["mean_return"] < 200, (gru, mlp)
