"""Kill -9 a `ppokit train` over and over (tests/faults/test_interrupts.py runs this script).

Each life of the run is a fork of this process, which imported ppokit, torch and Gymnasium once,
so a life starts in milliseconds instead of seconds and twenty kills fit a test's budget; the
child then runs `ppokit train` exactly as the command line does (ppokit.cli.main). Usage:
    python kill_loop.py RUN_DIR KILLS SEED -- TRAIN_FLAGS...
Prints one line per life: `<life> <pid> <when killed: startup|training> <delay s>`.
"""

from __future__ import annotations

import os
import random
import signal
import sys
import time
from pathlib import Path

import gymnasium  # noqa: F401  (imported before forking, so each life starts at once)
import torch  # noqa: F401

import ppokit.algo.ppo  # noqa: F401
import ppokit.checkpoint  # noqa: F401
import ppokit.envs  # noqa: F401
from ppokit.cli import main
from ppokit.trainer import Trainer  # noqa: F401


def life(args: list[str]) -> int:
    pid = os.fork()
    if pid == 0:  # the child: one `ppokit train`, then out without running the parent's atexit
        os.setpgid(0, 0)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        code = 1
        try:
            code = main(args)
        finally:
            os._exit(code)
    return pid


def owns(run_dir: Path, pid: int) -> bool:
    lock = run_dir / ".lock"
    try:
        return lock.read_text().startswith(f"{pid} ")
    except OSError:
        return False


def run(run_dir: Path, kills: int, seed: int, flags: list[str]) -> None:
    rng = random.Random(seed)
    for i in range(kills):
        resumable = (run_dir / "checkpoints" / "latest.pt").exists()
        args = (
            ["train", "--resume", str(run_dir)]
            if resumable
            else ["train", *flags, "--run-dir", str(run_dir)]
        )
        if not resumable and (run_dir / "metrics.csv").exists():
            args.append("--overwrite")  # killed before its first checkpoint: nothing to keep
        t0 = time.monotonic()
        pid = life(args)
        when = "startup" if i % 4 == 3 else "training"
        if when == "training":  # once this life owns the run dir
            deadline = time.monotonic() + 120
            while not owns(run_dir, pid):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    raise SystemExit(f"life {i} ended before training (status {status})")
                if time.monotonic() > deadline:
                    raise SystemExit(f"life {i} did not start training in 120 s")
                time.sleep(0.01)
        delay = rng.uniform(0.0, 1.0)
        time.sleep(delay)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise SystemExit(f"life {i} ended by itself (status {status}) before its kill")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        print(f"{i} {pid} {when} {delay:.3f} {time.monotonic() - t0:.2f}", flush=True)


if __name__ == "__main__":
    split = sys.argv.index("--")
    run_dir, kills, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    run(run_dir, kills, seed, sys.argv[split + 1 :])
