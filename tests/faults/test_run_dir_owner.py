"""One owner per run directory: a second training or resume on a run dir in use is refused with
one line naming the holder's PID, a new run never overwrites an old one (--overwrite moves it
aside), and a killed owner's lock is gone with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppokit.cli import main
from ppokit.errors import RunDirError
from ppokit.rundir import RunLock
from ppokit.trainer import Trainer
from ppokit_testutil import TINY_FLAGS, cli_env, run_ppokit, tiny_train_config


def ppokit(*args: str, cwd, timeout: float = 300):
    return run_ppokit(*args, cwd=cwd, timeout=timeout)


def start_long_run(tmp_path, run_dir):
    """A `ppokit train` that runs until stopped; returns once it has written its first update."""
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "ppokit", "train", *TINY_FLAGS,
            "--total_steps", "10000000", "--log.checkpoint_every", "1",
            "--run-dir", str(run_dir),
        ],
        cwd=tmp_path, env=cli_env(tmp_path),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "latest.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run wrote no checkpoint in 120 s"
        time.sleep(0.1)
    return proc


@pytest.mark.slow
@pytest.mark.xdist_group("subprocess-runs")
def test_a_second_process_on_a_run_dir_in_use_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    owner = start_long_run(tmp_path, run_dir)
    try:
        for args in (
            ["train", *TINY_FLAGS, "--run-dir", str(run_dir)],  # a new run into it
            ["train", "--resume", str(run_dir)],  # a second resume
        ):
            proc = ppokit(*args, cwd=tmp_path)
            assert proc.returncode == 2, proc.stderr
            lines = proc.stderr.strip().splitlines()
            assert len(lines) == 1, proc.stderr
            assert f"is in use by process {owner.pid}" in lines[0], lines[0]
    finally:
        owner.send_signal(signal.SIGINT)  # Ctrl-C: the owner stops with a checkpoint
        out, err = owner.communicate(timeout=120)
    assert owner.returncode == 130, err
    assert "interrupted: checkpoint written to" in out
    # The owner's rows only: one row per step, steps in order, no second writer's rows.
    steps = [int(line.split(",")[0]) for line in (run_dir / "metrics.csv").read_text().split()[1:]]
    assert steps == sorted(set(steps)) and steps[0] == 32
    # ... and once the owner is gone, the run dir is free: the resume works.
    proc = ppokit(
        "train", "--resume", str(run_dir), "--total_steps", str(steps[-1] + 32), cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr


def test_a_lock_held_in_this_process_refuses_a_trainer(tiny_config, tmp_path):
    run_dir = tmp_path / "run"
    with (
        RunLock(run_dir, "training"),
        pytest.raises(RunDirError, match=rf"in use by process {os.getpid()} \(since "),
    ):
        Trainer(tiny_config(), run_dir=run_dir)
    Trainer(tiny_config(), run_dir=run_dir).train()  # released: it trains


def test_a_new_run_into_a_finished_run_is_refused_and_overwrite_moves_it_aside(tmp_path):
    run_dir = tmp_path / "run"
    cfg = tiny_train_config(tmp_path)
    Trainer(cfg, run_dir=run_dir).train()
    before = run_files(run_dir)
    with pytest.raises(RunDirError, match="already holds a run; continue it with --resume"):
        Trainer(cfg, run_dir=run_dir)
    assert run_files(run_dir) == before  # untouched
    fresh = Trainer(cfg, run_dir=run_dir, overwrite=True)
    (aside,) = tmp_path.glob("run.old-*")
    assert run_files(aside) == before
    fresh.train()
    assert len((run_dir / "metrics.csv").read_text().split()) == 1 + 4  # the new run's 4 rows


def run_files(run_dir: Path) -> dict[Path, bytes]:
    """The run's files and their bytes, less the lock file: whoever takes the lock (even a trainer
    that is then refused) writes its pid and the time, to the second, into it."""
    return {
        p.relative_to(run_dir): p.read_bytes()
        for p in run_dir.rglob("*")
        if p.is_file() and p.name != ".lock"
    }


def cli(capsys, *args) -> tuple[int, str, str]:
    """`ppokit ARGS` in this process (what the command runs), its exit code and output."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_the_cli_refuses_and_overwrites(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", *TINY_FLAGS, "--total_steps", "64", "--run-dir", str(run_dir)]
    assert cli(capsys, *args)[0] == 0
    code, _, err = cli(capsys, *args)
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: run directory {str(run_dir)!r} already holds a run; continue it with --resume"
        f" {run_dir}, replace it with --overwrite (the old run is moved aside, not deleted), or"
        " choose another --run-dir"
    ]
    code, out, err = cli(capsys, *args, "--overwrite")
    assert code == 0, err
    assert "--overwrite: the old run in" in out
    assert len(list(tmp_path.glob("run.old-*"))) == 1


def test_resume_of_a_finished_run_says_there_is_nothing_to_do(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["train", *TINY_FLAGS, "--total_steps", "64", "--run-dir", str(run_dir)]
    args[args.index("--eval.episodes") + 1] = "1"
    assert cli(capsys, *args)[0] == 0
    rows = (run_dir / "metrics.csv").read_text()
    for total in ("64", "32"):  # the same length, or less than is done
        code, _, err = cli(capsys, "train", "--resume", str(run_dir), "--total_steps", total)
        assert code == 2
        assert "nothing left to train; extend it with --total_steps above 64" in err
    assert (run_dir / "metrics.csv").read_text() == rows  # no evaluation re-run, no row added


def test_a_killed_owner_leaves_no_stale_lock(tmp_path):
    run_dir = tmp_path / "run"
    script = (
        "import sys, time; from ppokit.rundir import RunLock;"
        f" lock = RunLock(__import__('pathlib').Path({str(run_dir)!r})); print('held', flush=True);"
        " time.sleep(600)"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirError, match=f"process {holder.pid}"):
        RunLock(run_dir)
    holder.kill()
    holder.wait()
    RunLock(run_dir).release()  # the OS dropped the lock with the process
