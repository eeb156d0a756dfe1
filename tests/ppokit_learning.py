"""The learning tests' one recipe (importable: tests/ is on sys.path): train a preset on several
seeds, evaluate each deterministically over 20 episodes, and hold the threshold on the median.

A threshold on one seed is a coin that another CPU re-tosses: a different vector ISA (AVX-512,
AVX2, SSE) rounds differently and the run diverges into another sample of the same distribution.
The median of three seeds clears the threshold when two of them do, which a sound PPO does on any
CPU (benchmarks/learning_isa.py measures every case over seeds and ISAs; benchmarks/RESULTS.md)
and a broken one does on none.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from ppokit.config import load_config
from ppokit.trainer import Trainer

SEEDS = (1, 2, 3)
EVAL_EPISODES = 20


def train_and_evaluate(preset: str, seed: int, root: Path, **overrides) -> dict:
    """`preset` trained with `seed` in this process, then a deterministic 20-episode evaluation
    (the same as `ppokit train --preset P --seed S --eval.episodes 20` prints)."""
    cfg = load_config(
        preset,
        overrides={
            "seed": seed,
            "log.root": str(root),
            "log.progress": False,
            "log.checkpoint_every": 0,
            "eval.episodes": 0,
            **overrides,
        },
    )
    trainer = Trainer(cfg)
    trainer.train()
    result = trainer.evaluate(episodes=EVAL_EPISODES, deterministic=True)
    assert result["episodes"] == EVAL_EPISODES
    return result


def over_seeds(run: Callable[[int], dict], seeds: Sequence[int] = SEEDS) -> list[float]:
    """Each seed's evaluation mean return."""
    return [float(run(seed)["mean_return"]) for seed in seeds]


def describe(returns: Sequence[float], seeds: Sequence[int] = SEEDS) -> str:
    per_seed = ", ".join(f"seed {s}: {r:.1f}" for s, r in zip(seeds, returns, strict=True))
    return f"{per_seed} (median {statistics.median(returns):.1f}; CPU capability {torch.backends.cpu.get_cpu_capability()})"


def assert_median_at_least(returns: Sequence[float], threshold: float) -> None:
    assert statistics.median(returns) >= threshold, describe(returns)


def assert_median_below(returns: Sequence[float], threshold: float) -> None:
    assert statistics.median(returns) < threshold, describe(returns)
