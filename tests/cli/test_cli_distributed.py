"""`torchrun --nproc_per_node=2 -m ppokit train ...` on the CPU (gloo): the real launch path.

What the ranks compute together is tested in tests/unit/test_distributed.py; here: one run
directory written by rank 0, resume, a stop asked on one rank only, a failure on one rank.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from ppokit import checkpoint as ckpt
from ppokit_distributed_util import FAIL_ON_RANK_1, assert_succeeded, torchrun_command
from ppokit_testutil import TINY_FLAGS, cli_env

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("distributed")]

RANKS = 2
STEPS_PER_UPDATE = 2 * 16 * RANKS  # TINY_FLAGS: 2 envs x 16 steps, on each rank


def torchrun(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        torchrun_command(*args),
        cwd=cwd,
        env=cli_env(cwd),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def metrics_rows(run_dir: Path) -> list[dict]:
    with (run_dir / "metrics.csv").open() as f:
        return list(csv.DictReader(f))


def worker_tracebacks(output: str) -> list[str]:
    """Lines of Python tracebacks printed by the workers (torchrun prefixes them [rankN]:)."""
    return [line for line in output.splitlines() if "Traceback" in line and "[rank" in line]


def test_two_ranks_write_one_run_and_resume_it(tmp_path):
    run_dir = tmp_path / "runs" / "two"
    common = ["--log.root", str(tmp_path / "runs"), "--log.checkpoint_every", "2"]
    proc = torchrun(
        "train", *TINY_FLAGS, *common, "--log.run_name", "two",
        "--total_steps", str(4 * STEPS_PER_UPDATE), cwd=tmp_path,
    )  # fmt: skip
    assert_succeeded(proc)
    assert "outlived destroy_process_group" not in proc.stderr  # ranks could abort at exit
    assert proc.stdout.count("run directory:") == 1  # rank 0 alone reports
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["two"]
    rows = metrics_rows(run_dir)
    assert [int(r["global_step"]) for r in rows] == [STEPS_PER_UPDATE * k for k in range(1, 5)]
    state = ckpt.load_checkpoint(run_dir)
    assert state["ppo"]["updates"] == 4 and len(state["rng_ranks"]) == RANKS
    assert state["ppo"]["model"]["obs_normalizer.rms.count"] == 4 * STEPS_PER_UPDATE

    proc = torchrun(
        "train", "--resume", str(run_dir), "--total_steps", str(6 * STEPS_PER_UPDATE), cwd=tmp_path
    )
    assert_succeeded(proc)
    state = ckpt.load_checkpoint(run_dir)
    assert state["ppo"]["updates"] == 6 and state["global_step"] == 6 * STEPS_PER_UPDATE
    rows = metrics_rows(run_dir)
    assert [int(r["global_step"]) for r in rows] == [STEPS_PER_UPDATE * k for k in range(1, 7)]
    assert state["ppo"]["model"]["obs_normalizer.rms.count"] == 6 * STEPS_PER_UPDATE
    assert not torch.equal(state["rng_ranks"][0]["torch"], state["rng_ranks"][1]["torch"])


def _rank_pids(parent: int) -> dict[int, int]:
    """{rank: pid} of torchrun's workers, from their environment."""
    found = {}
    for child in Path(f"/proc/{parent}/task/{parent}/children").read_text().split():
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        for item in environ:
            if item.startswith(b"RANK="):
                found[int(item[5:])] = int(child)
    return found


def test_a_stop_asked_on_one_rank_stops_every_rank_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "runs" / "long"
    proc = subprocess.Popen(
        torchrun_command(
            "train", *TINY_FLAGS, "--total_steps", "10000000",
            "--log.root", str(tmp_path / "runs"), "--log.run_name", "long",
            "--log.checkpoint_every", "0",
        ),
        cwd=tmp_path, env=cli_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = run_dir / "metrics.csv"
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no metrics row before the deadline: {proc.communicate()}")
        os.kill(_rank_pids(proc.pid)[1], signal.SIGINT)  # rank 1 only: rank 0 learns it by the
        sent = time.monotonic()  # collective at the end of the update
        output, _ = proc.communicate(timeout=60)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert elapsed < 20, output
    assert "interrupted: checkpoint written" in output, output
    assert "exitcode  : 130" in output  # torchrun's report: both ranks exited as interrupted
    assert not worker_tracebacks(output), output
    state = ckpt.load_checkpoint(run_dir)
    updates = state["ppo"]["updates"]
    assert updates >= 1 and state["global_step"] == updates * STEPS_PER_UPDATE
    assert int(metrics_rows(run_dir)[-1]["global_step"]) == state["global_step"]


def test_a_failure_on_one_rank_ends_every_rank_with_the_error_shown(tmp_path):
    started = time.monotonic()
    proc = torchrun(
        "train", *TINY_FLAGS, "--env", f"ppokit_distributed_util:{FAIL_ON_RANK_1}",
        "--total_steps", "10000000", "--log.root", str(tmp_path / "runs"),
        cwd=tmp_path, timeout=120,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert time.monotonic() - started < 90
    assert "RuntimeError: injected failure on rank 1" in output, output  # rank 1's own error
    # Rank 0 stops at its next collective with one line naming the cause, not a hang.
    assert "error: rank 0:" in output and "another rank stopped or crashed" in output, output
