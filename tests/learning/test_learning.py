"""Seeded learning thresholds on the shipped presets. A broken PPO (sign error, no bootstrap,
wrong advantages, mis-scaled actions) does not reach them within the budget."""

from __future__ import annotations

import pytest

from ppokit.config import load_config
from ppokit.trainer import Trainer

pytestmark = [pytest.mark.learning, pytest.mark.slow]


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
    assert cfg.total_steps <= 100_000
    trainer = Trainer(cfg)
    trainer.train()
    return trainer.evaluate(episodes=20, deterministic=True)


@pytest.mark.xdist_group("learning-cartpole")
def test_cartpole_reaches_475_within_100k_steps(tmp_path):
    result = train_and_evaluate("cartpole", seed=1, tmp_path=tmp_path)
    assert result["episodes"] == 20
    assert result["mean_return"] >= 475, result


@pytest.mark.xdist_group("learning-pendulum")
def test_pendulum_reaches_minus_250_within_100k_steps(tmp_path):
    result = train_and_evaluate("pendulum", seed=1, tmp_path=tmp_path)
    assert result["episodes"] == 20
    assert result["mean_return"] >= -250, result
