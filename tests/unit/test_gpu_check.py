"""benchmarks/gpu_check.sh's CPU dry run (`--device cpu --quick`): the script the GPU machine
runs, exercised end to end so that it is known to work before a GPU is there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_gpu_check_dry_run_prints_every_row():
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick"],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    table = proc.stdout[proc.stdout.index("| check | result | notes |") :]
    for row in (
        "batched torch env, 256 envs",
        "pointmass-4096 learning",
        "update fp32, compile off",
        "update bf16, compile off",
        "update bf16, compile on, 256 envs | skipped",
        "data-parallel, 2 processes (NCCL), pointmass-4096 | skipped",
    ):
        assert row in table, table
    assert "SPS" in table and "refused" not in table and "failed" not in table
