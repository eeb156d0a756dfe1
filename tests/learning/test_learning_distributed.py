"""The CartPole learning threshold under 2 data-parallel ranks (torchrun, gloo, CPU).

The `cartpole` preset as it is, on each rank: 2 x 8 envs x 32 steps = 512 steps per update (twice
the single-process batch), total_steps 100,000 as in the single-process test (196 updates, 100,352
steps; the single-process run takes 391 x 256 = 100,096). The run is deterministic (two ranks'
gradients summed in a fixed order). Seeds 1-5 reach 500, 452.8, 500, 500, 500; like the
single-process preset (seeds 2, 3, 4: 286.9, 500, 440.2, docs/graphs.md) the result is sensitive
to any change of the trajectory: with total_steps 99,840 (195 updates) seed 1 reaches 324.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from ppokit import checkpoint as ckpt
from ppokit_distributed_util import torchrun_command
from ppokit_testutil import cli_env

pytestmark = [pytest.mark.learning, pytest.mark.slow, pytest.mark.xdist_group("distributed")]


def test_cartpole_reaches_475_within_100k_steps_on_two_ranks(tmp_path):
    proc = subprocess.run(
        torchrun_command(
            "train", "--preset", "cartpole", "--seed", "1",
            "--eval.episodes", "20", "--log.progress", "false", "--log.checkpoint_every", "0",
            "--log.root", str(tmp_path), "--log.run_name", "cartpole",
        ),
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    run_dir = tmp_path / "cartpole"
    state = ckpt.load_checkpoint(run_dir)
    assert state["config"]["total_steps"] <= 100_000 and state["ppo"]["updates"] == 196
    result = json.loads((run_dir / "eval.json").read_text())
    assert result["episodes"] == 20
    assert result["mean_return"] >= 475, result
