"""Helpers of the torchrun tests (importable: tests/ is on sys.path): the launch command, and an
env that fails on rank 1 (CLI subprocesses reach it as
``--env ppokit_distributed_util:ppokit-dist/FailOnRank1-v0``)."""

from __future__ import annotations

import os
import socket
import sys

import gymnasium as gym
from gymnasium.envs.classic_control.pendulum import PendulumEnv

FAIL_ON_RANK_1 = "ppokit-dist/FailOnRank1-v0"
FAIL_AT_STEP = 40  # the failing env's step count (its second rollout in the tiny runs)


class FailOnRank1(PendulumEnv):
    """Pendulum that raises at step FAIL_AT_STEP in the process whose torchrun RANK is 1."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.steps = 0

    def step(self, action):
        self.steps += 1
        if self.steps == FAIL_AT_STEP and os.environ.get("RANK") == "1":
            raise RuntimeError("injected failure on rank 1")
        return super().step(action)


if FAIL_ON_RANK_1 not in gym.registry:
    gym.register(FAIL_ON_RANK_1, entry_point=FailOnRank1, max_episode_steps=200)


def torchrun_command(*args: str, ranks: int = 2) -> list[str]:
    """`torchrun --nproc_per_node=ranks -m ppokit ARGS`, rendezvous on a free loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", "1", f"--nproc_per_node={ranks}",
        "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
        "-m", "ppokit", *args,
    ]  # fmt: skip


def assert_succeeded(proc) -> None:
    """Exit code 0; otherwise fail with the ends of both streams in full (pytest shortens a
    tuple of long strings to its first characters, hiding what a worker printed as it died)."""
    assert proc.returncode == 0, (
        f"exit code {proc.returncode}\n--- stdout (end) ---\n{proc.stdout[-3000:]}\n"
        f"--- stderr (end) ---\n{proc.stderr[-6000:]}"
    )
