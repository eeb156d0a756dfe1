"""Misbehaving envs and failed writes: every one stops training with one line naming the env,
the env index, the vector step and the exception's own message, saves the last complete
update (even with periodic checkpoints off) and writes the traceback to <run dir>/error.log.

The env (tests/ppokit_test_envs.py Faulty) misbehaves from its 40th step on, in env index 1
of 2: with 16 steps per rollout, during the third rollout, after 2 complete updates.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from ppokit import checkpoint as ckpt
from ppokit.config import TrainConfig
from ppokit.errors import OutputError, TrainingStopped
from ppokit.logging import RunLogger
from ppokit.trainer import Trainer
from ppokit_test_envs import FAULTY
from ppokit_testutil import cli_env

FAULT_AT = 40  # the env's step; vector steps 0..39 are fine
DONE_UPDATES = 2  # complete before the fault (16 steps per rollout)


def faulty_config(tmp_path, fault: str, **env) -> TrainConfig:
    cfg = TrainConfig()
    kwargs = {"fault": fault, "at": FAULT_AT, "seed_of": 1 + 1, **env.pop("kwargs", {})}
    cfg.env = replace(cfg.env, id=FAULTY, num_envs=2, kwargs=kwargs, **env)
    cfg.algo = replace(cfg.algo, num_steps=16, num_epochs=1, num_minibatches=1)
    cfg.policy = replace(cfg.policy, actor_hidden=[8], critic_hidden=[8])
    # Periodic checkpoints off: whatever is saved, the fault saved it.
    cfg.log = replace(cfg.log, root=str(tmp_path), progress=False, checkpoint_every=0)
    cfg.eval = replace(cfg.eval, episodes=0)
    cfg.total_steps = 10 * 16 * 2
    cfg.seed = 1  # env index 1 is seeded 2: the faulty one
    cfg.device = "cpu"
    return cfg


def stop(cfg: TrainConfig, run_dir) -> str:
    trainer = Trainer(cfg, run_dir=run_dir)
    with pytest.raises(TrainingStopped) as info:
        trainer.train()
    return str(info.value)


def assert_saved(run_dir, updates: int = DONE_UPDATES) -> None:
    state = ckpt.load_checkpoint(run_dir)
    assert state["ppo"]["updates"] == updates
    assert state["global_step"] == updates * 32
    log = (run_dir / "error.log").read_text()
    assert "Traceback (most recent call last)" in log


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("raise", "raised ValueError at vector step 39: simulated physics blew up at step 40"),
        ("nan_obs", "observation from env 'ppokit-test/Faulty-v0' contains NaN/inf at vector step"),
        ("inf_reward", "reward from env 'ppokit-test/Faulty-v0' contains NaN/inf at vector step"),
        ("wrong_shape", "env index 1 returned an observation that does not fit its observation"),
        ("wrong_dtype", "env index 1 returned an observation that does not fit its observation"),
    ],
)
def test_a_misbehaving_env_stops_with_one_line_and_the_last_update_saved(tmp_path, fault, expected):
    message = stop(faulty_config(tmp_path, fault), tmp_path / "run")
    assert "\n" not in message
    assert expected in message, message
    assert "env index 1" in message or "env index [1]" in message, message
    assert f"the last complete update ({DONE_UPDATES}, step 64) is saved in" in message
    assert "traceback in" in message and "error.log" in message
    assert_saved(tmp_path / "run")


def test_the_saved_update_resumes(tmp_path):
    """After the env is fixed (here: its kwargs), the run resumes from the update the fault
    saved; the saved env state is of envs made another way, so episodes restart (one line)."""
    cfg = faulty_config(tmp_path, "raise")
    stop(cfg, tmp_path / "run")
    fixed = replace(cfg, env=replace(cfg.env, kwargs={"fault": "none"}))
    resumed = Trainer(fixed, resume=tmp_path / "run")
    assert resumed.env_unsaved == "the env config changed since the checkpoint (env.kwargs)"
    result = resumed.train()
    assert result.updates == 10 and not result.interrupted


def test_an_env_that_hangs_times_out(tmp_path):
    cfg = faulty_config(tmp_path, "hang", step_timeout=1.0)
    started = time.monotonic()
    message = stop(cfg, tmp_path / "run")
    assert time.monotonic() - started < 30
    assert "EnvStepTimeout" not in message  # ppokit's own error reads as it is
    assert "more than env.step_timeout 1 s" in message and "--env.step_timeout" in message
    assert_saved(tmp_path / "run")


def test_a_slow_env_within_the_timeout_trains(tmp_path):
    cfg = faulty_config(tmp_path, "slow", step_timeout=5.0, kwargs={"seconds": 0.002})
    cfg.total_steps = 2 * 16 * 2
    result = Trainer(cfg, run_dir=tmp_path / "run").train()
    assert result.updates == 2 and not (tmp_path / "run" / "error.log").exists()


def test_an_async_env_error_is_one_line_too(tmp_path):
    cfg = faulty_config(tmp_path, "raise", vectorization="async")
    message = stop(cfg, tmp_path / "run")
    assert "\n" not in message
    assert "(env index 1) raised ValueError at vector step 39: simulated physics blew up" in message
    assert_saved(tmp_path / "run")
    log = (tmp_path / "run" / "error.log").read_text()
    assert "in the env's subprocess worker:" in log and "def step" not in message


def test_an_async_env_that_hangs_times_out_and_its_worker_is_terminated(tmp_path):
    cfg = faulty_config(tmp_path, "hang", vectorization="async", step_timeout=1.0)
    started = time.monotonic()
    message = stop(cfg, tmp_path / "run")
    assert time.monotonic() - started < 30
    assert "more than env.step_timeout 1 s" in message
    assert_saved(tmp_path / "run")


def test_a_failed_metrics_write_saves_the_complete_update(tmp_path, monkeypatch):
    """The logger fails after update 3 completed (a full disk): update 3 is saved."""
    log = RunLogger.log

    def failing_log(self, step, metrics):
        if step == 3 * 32:
            raise OutputError(f"cannot write metrics {str(self.run_dir)!r}: No space left")
        return log(self, step, metrics)

    monkeypatch.setattr(RunLogger, "log", failing_log)
    message = stop(faulty_config(tmp_path, "none"), tmp_path / "run")
    assert message.startswith("training stopped: cannot write metrics")
    assert "the last complete update (3, step 96) is saved" in message
    assert_saved(tmp_path / "run", updates=3)


def test_a_failed_checkpoint_write_names_the_path_and_keeps_the_previous_one(tmp_path, monkeypatch):
    """torch.save failing as on a full disk (RuntimeError from its zip writer) at the second
    periodic checkpoint: one line naming the file and the free space; the first stays."""
    cfg = faulty_config(tmp_path, "none")
    cfg.log = replace(cfg.log, checkpoint_every=2)
    save = torch.save
    calls = {"n": 0}

    def failing_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= 2:
            f.write(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")
        return save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", failing_save)
    message = stop(cfg, tmp_path / "run")
    monkeypatch.undo()
    assert "\n" not in message
    assert "cannot write checkpoint" in message and "update_000004.pt" in message
    assert "(disk full?)" in message and "MB free on" in message
    assert "could not be saved" in message  # the fault's own save failed the same way
    state = ckpt.load_checkpoint(tmp_path / "run")
    assert state["ppo"]["updates"] == 2
    leftovers = [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()]
    assert not [n for n in leftovers if n.endswith(".tmp")]


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounts a tmpfs (root)")
def test_a_really_full_disk(tmp_path):
    """A 400 KB tmpfs: the first checkpoints fit, a later one does not. One line, exit 2, the
    last good checkpoint loads."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        run_dir = disk / "run"
        proc = subprocess.run(
            [
                sys.executable, "-m", "ppokit", "train",
                "--env", "ppokit_test_envs:" + FAULTY,
                "--env.num_envs", "2", "--algo.num_steps", "16",
                "--policy.actor_hidden", "[64, 64]", "--policy.critic_hidden", "[64, 64]",
                "--total_steps", str(40 * 32), "--log.checkpoint_every", "1",
                "--log.keep_checkpoints", "100", "--eval.episodes", "0",
                "--log.progress", "false", "--run-dir", str(run_dir),
            ],
            capture_output=True, text=True, env=cli_env(tmp_path), timeout=300,
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "MB free on" in last, proc.stderr
        assert "Traceback" not in proc.stderr
        state = ckpt.load_checkpoint(run_dir)
        assert state["ppo"]["updates"] >= 1
    finally:
        subprocess.run(["umount", str(disk)])


def test_the_cli_prints_one_line_and_exits_2(tmp_path):
    proc = subprocess.run(
        [
            sys.executable, "-m", "ppokit", "train",
            "--env", "ppokit_test_envs:" + FAULTY,
            "--env.kwargs", "{fault: raise, at: 40, seed_of: 2}",
            "--seed", "1", "--env.num_envs", "2", "--algo.num_steps", "16",
            "--total_steps", "320", "--eval.episodes", "0", "--log.progress", "false",
            "--run-dir", str(tmp_path / "run"),
        ],
        capture_output=True, text=True, env=cli_env(tmp_path), timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        "error: training stopped: env 'ppokit_test_envs:ppokit-test/Faulty-v0' (env index 1)"
    )
    assert "simulated physics blew up at step 40" in lines[0]
    assert_saved(tmp_path / "run")
