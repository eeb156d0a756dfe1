"""Seeded learning thresholds of the massively-parallel recipes on the CPU: the batched reference
task at 4096 envs (the Isaac-Lab-style preset, unchanged from CUDA), the EMA rollout agent, and
bf16 training on CartPole."""

from __future__ import annotations

import pytest

from ppokit.config import load_config
from ppokit.trainer import Trainer

pytestmark = [
    pytest.mark.learning,
    pytest.mark.slow,
    pytest.mark.xdist_group("learning-gpu-recipes"),
]


def train_and_evaluate(preset: str, tmp_path, **overrides) -> dict:
    cfg = load_config(
        preset,
        overrides={
            "log.root": str(tmp_path),
            "log.progress": False,
            "log.checkpoint_every": 0,
            "eval.episodes": 0,
            "device": "cpu",
            **overrides,
        },
    )
    trainer = Trainer(cfg)
    trainer.train()
    return trainer.evaluate(episodes=20, deterministic=True)


def test_point_mass_at_4096_envs_reaches_50_within_1m_steps(tmp_path):
    # An untrained policy scores about 5 (it stays where it starts); the optimum is about 85.
    result = train_and_evaluate("pointmass-4096", tmp_path, seed=1)
    assert result["mean_return"] >= 50, result


def test_point_mass_with_the_ema_agent_reaches_50_within_1m_steps(tmp_path):
    result = train_and_evaluate("pointmass-4096", tmp_path, seed=1, **{"ema.decay": 0.5})
    assert result["mean_return"] >= 50, result


def test_cartpole_in_bf16_reaches_475_within_100k_steps(tmp_path):
    result = train_and_evaluate("cartpole", tmp_path, seed=1, precision="bf16")
    assert result["mean_return"] >= 475, result
