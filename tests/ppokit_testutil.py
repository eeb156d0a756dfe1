"""Helpers shared by the env/config/checkpoint/CLI tests (importable: tests/ is on sys.path).

Imported by module name rather than from ``conftest``, which pytest may resolve to another
folder's conftest.py.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ppokit.config import TrainConfig

TESTS_DIR = Path(__file__).resolve().parent

# Command-line flags of a tiny Pendulum run: 2 envs x 16 steps = 32 steps per update.
TINY_FLAGS = [
    "--env.num_envs", "2",
    "--env.max_episode_steps", "20",
    "--algo.num_steps", "16",
    "--algo.num_epochs", "2",
    "--algo.num_minibatches", "2",
    "--policy.actor_hidden", "[16]",
    "--policy.critic_hidden", "[16]",
    "--eval.episodes", "0",
    "--log.progress", "false",
    "--device", "cpu",
]  # fmt: skip


def tiny_train_config(root, **top) -> TrainConfig:
    """The config of TINY_FLAGS on defaults (4 updates), logging under `root`."""
    cfg = TrainConfig()
    cfg.env = replace(cfg.env, id="Pendulum-v1", num_envs=2, max_episode_steps=20)
    cfg.algo = replace(cfg.algo, num_steps=16, num_epochs=2, num_minibatches=2)
    cfg.policy = replace(cfg.policy, actor_hidden=[16], critic_hidden=[16])
    cfg.log = replace(cfg.log, root=str(root), progress=False, checkpoint_every=2)
    cfg.eval = replace(cfg.eval, episodes=0)
    cfg.total_steps = 4 * 2 * 16
    cfg.seed = 7
    cfg.device = "cpu"
    for key, value in top.items():
        setattr(cfg, key, value)
    return cfg


def cli_env(tmp_path) -> dict:
    """Environment of a `python -m ppokit` subprocess: test envs importable, W&B kept local."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])])
    env["WANDB_DIR"] = str(tmp_path)
    env["WANDB_SILENT"] = "true"
    env["WANDB_MODE"] = "offline"
    return env


def naive_gae(rewards, values, next_values, terminated, dones, gamma, lam):
    """Per env, per step, in Python floats: the textbook recursion written independently."""
    T, N = rewards.shape
    adv = np.zeros((T, N))
    for n in range(N):
        running = 0.0
        for t in reversed(range(T)):
            bootstrap = 0.0 if terminated[t, n] else gamma * next_values[t, n]
            delta = rewards[t, n] + bootstrap - values[t, n]
            if dones[t, n]:
                running = 0.0  # the next step belongs to another episode
            running = delta + gamma * lam * running
            adv[t, n] = running
    return adv


def failing_compile(fn, **kwargs):
    """A stand-in for torch.compile whose compiled function fails at its first call, as real
    compilation errors do."""

    def call(*args, **kw):
        raise RuntimeError("no backend")

    return call


def run_ppokit(*args: str, cwd, timeout: float = 300):
    """`python -m ppokit ARGS` in `cwd` with cli_env: the completed process, output as text."""
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "ppokit", *args],
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
