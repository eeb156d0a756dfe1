"""Trained runs and extra envs for the eval/plot/export tests (importable: tests/ is on sys.path).

Importing this module registers the ``ppokit-eval/`` envs; CLI subprocesses reach them as
``--env ppokit_runs:ppokit-eval/PendulumNoRender-v1``.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.pendulum import PendulumEnv

from ppokit_testutil import cli_env, tiny_train_config

PENDULUM_NO_RENDER = "ppokit-eval/PendulumNoRender-v1"
MULTI_DISCRETE = "ppokit-eval/MultiDiscrete-v0"


class PendulumNoRender(PendulumEnv):
    """Pendulum's spaces and dynamics, but no render modes."""

    metadata = {"render_modes": [], "render_fps": 30}


class MultiDiscreteTarget(gym.Env):
    """MultiDiscrete([3, 4]) actions: reward 1 per component equal to round(obs) (bounded obs)."""

    metadata = {"render_modes": []}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 3.0, (2,), np.float32)
        self.action_space = gym.spaces.MultiDiscrete([3, 4])
        self.t = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.t = 0
        return self.np_random.uniform(0.0, 3.0, 2).astype(np.float32), {}

    def step(self, action):
        self.t += 1
        obs = self.np_random.uniform(0.0, 3.0, 2).astype(np.float32)
        return obs, float(np.sum(np.asarray(action) == np.round(obs))), False, self.t >= 10, {}


for _id, _entry in (
    (PENDULUM_NO_RENDER, PendulumNoRender),
    (MULTI_DISCRETE, MultiDiscreteTarget),
):
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry, max_episode_steps=200)


def train_tiny(
    root: Path,
    name: str,
    env_id: str = "Pendulum-v1",
    seed: int = 7,
    policy: dict | None = None,
    algo: dict | None = None,
    **top,
) -> Path:
    """A 4-update run (2 envs x 16 steps, 20-step episodes) trained in this process."""
    import ppokit

    cfg = tiny_train_config(root, seed=seed, **top)
    cfg.env = replace(cfg.env, id=env_id)
    cfg.policy = replace(cfg.policy, **(policy or {}))
    cfg.algo = replace(cfg.algo, **(algo or {}))
    cfg.log = replace(cfg.log, run_name=name)
    ppokit.train(cfg)
    return Path(root) / name


def ppokit_cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """`python -m ppokit ARGS` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ppokit", *map(str, args)],
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    """Exit code 2, `error: ...` on one line of stderr, no traceback, and each fragment in it."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr
    err = errors[0]
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    return err


def run_main(capsys, *args: object) -> tuple[int, str, str]:
    """`ppokit ARGS` in this process (the same `main` as the command; no interpreter start-up):
    (exit code, stdout, stderr). For the many bad-input cases; the main flows use `ppokit_cli`."""
    from ppokit.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as e:  # argparse errors
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def assert_main_error(result: tuple[int, str, str], *fragments: str) -> str:
    """`run_main`'s result is exit code 2 with one `error: ...` line holding each fragment."""
    code, out, err = result
    return assert_one_line_error(subprocess.CompletedProcess([], code, out, err), *fragments)
