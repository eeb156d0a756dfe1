"""The CartPole learning threshold under 2 data-parallel ranks (torchrun, gloo, CPU), on the median
of three seeds.

The `cartpole` preset with half its envs on each rank (2 x 4 envs x 32 steps = the preset's
batch of 256 per update), so the run makes the preset's 391 updates (100,096 steps, total_steps
100,000 as in the single-process test) and differs from a single process only in the ranks'
sampling streams. Each run is deterministic (two ranks' gradients summed in a fixed order). With
the preset's 8 envs on each rank (a batch of 512, half the updates) seed 1 reaches only 106: that
is a different training budget, not the same one split across processes.
"""

from __future__ import annotations

import json
import math
import subprocess

import pytest

from ppokit import checkpoint as ckpt
from ppokit.config import load_config
from ppokit_distributed_util import assert_succeeded, torchrun_command
from ppokit_learning import EVAL_EPISODES, assert_median_at_least, over_seeds
from ppokit_testutil import cli_env

pytestmark = [pytest.mark.learning, pytest.mark.slow, pytest.mark.xdist_group("distributed")]


def test_cartpole_reaches_475_within_100k_steps_on_two_ranks(tmp_path):
    preset = load_config("cartpole")
    assert preset.env.num_envs % 2 == 0 and preset.total_steps <= 100_000
    updates = math.ceil(preset.total_steps / (preset.env.num_envs * preset.algo.num_steps))

    def run(seed: int) -> dict:
        proc = subprocess.run(
            torchrun_command(
                "train", "--preset", "cartpole", "--env.num_envs", str(preset.env.num_envs // 2),
                "--seed", str(seed), "--eval.episodes", str(EVAL_EPISODES), "--log.progress", "false",
                "--log.checkpoint_every", "0", "--log.root", str(tmp_path), "--log.run_name", f"s{seed}",
            ),
            cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert_succeeded(proc)
        run_dir = tmp_path / f"s{seed}"
        assert ckpt.load_checkpoint(run_dir)["ppo"]["updates"] == updates  # the preset's batch
        return json.loads((run_dir / "eval.json").read_text())

    assert_median_at_least(over_seeds(run), 475)
