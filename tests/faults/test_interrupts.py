"""Ctrl-C (SIGINT) at every phase of a run, and kill -9 at random points: nothing is lost that
was complete, nothing is left that cannot be resumed.

- start-up: before training exists (exit 130, one line) or after its run dir does (an update-0
  checkpoint, so `--resume` works and a plain rerun is not refused);
- rollout, update: the run stops at the next boundary with the last complete update saved;
- final evaluation: the trained policy is saved, the evaluation is skipped with one line;
- kill -9 (slow suite): ≥ 20 kills at random moments of start-up, rollouts, updates and
  checkpoint writes; every checkpoint left loads, and the final resume's metrics.csv holds each
  step exactly once.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ppokit import checkpoint as ckpt
from ppokit.algo.ppo import PPO
from ppokit.faults import HeldInterrupt
from ppokit.trainer import Trainer
from ppokit_testutil import TINY_FLAGS, cli_env

KILL_LOOP = Path(__file__).with_name("kill_loop.py")


def sigint_self() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_an_update_finishes_it_and_saves_it(tiny_config, tmp_path, monkeypatch):
    update = PPO.update

    def update_interrupted(self, *args, **kwargs):
        if self.updates == 2:  # during the third update
            sigint_self()
        return update(self, *args, **kwargs)

    monkeypatch.setattr(PPO, "update", update_interrupted)
    cfg = tiny_config(total_steps=8 * 32)
    result = Trainer(cfg, run_dir=tmp_path / "run").train()
    assert result.interrupted and result.updates == 3
    assert ckpt.load_checkpoint(tmp_path / "run")["ppo"]["updates"] == 3


def test_ctrl_c_during_a_rollout_saves_the_last_complete_update(tiny_config, tmp_path):
    cfg = tiny_config(total_steps=8 * 32)
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    step, count = trainer.env.step, {"n": 0}

    def step_interrupted(actions):
        count["n"] += 1
        if count["n"] == 16 * 2 + 7:  # 7 steps into the third rollout
            sigint_self()
        return step(actions)

    trainer.env.step = step_interrupted
    result = trainer.train()
    assert result.interrupted and result.updates == 2 and result.global_step == 64
    assert ckpt.load_checkpoint(tmp_path / "run")["global_step"] == 64


def test_ctrl_c_during_the_final_evaluation_keeps_the_trained_policy(tiny_config, tmp_path, capsys):
    cfg = tiny_config()
    cfg.eval.episodes = 2
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    evaluate = trainer.evaluate

    def evaluate_interrupted(*args, **kwargs):
        sigint_self()  # the default handler again: KeyboardInterrupt inside the evaluation
        return evaluate(*args, **kwargs)

    trainer.evaluate = evaluate_interrupted
    # what a `ppokit train` process has before training: Python's default Ctrl-C handler (a test
    # worker's handler could be another one)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = trainer.train()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.interrupted and result.updates == 4 and result.eval is None
    assert ckpt.load_checkpoint(tmp_path / "run")["ppo"]["updates"] == 4
    assert "final evaluation interrupted; the trained policy is saved" in capsys.readouterr().out
    assert not (tmp_path / "run" / "eval.json").exists()


def test_ctrl_c_as_training_starts_leaves_a_resumable_run(tiny_config, tmp_path, monkeypatch):
    """Ctrl-C while the logger opens (TensorBoard's import is slow): an update-0 checkpoint."""
    import ppokit.trainer as trainer_module

    logger = trainer_module.RunLogger

    def logger_interrupted(*args, **kwargs):
        sigint_self()
        return logger(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "RunLogger", logger_interrupted)
    result = Trainer(tiny_config(), run_dir=tmp_path / "run").train()
    monkeypatch.undo()
    assert result.interrupted and result.updates == 0
    assert Trainer(tiny_config(), resume=tmp_path / "run").train().updates == 4


def test_held_interrupt_holds_the_first_ctrl_c_and_raises_the_second():
    before = signal.getsignal(signal.SIGINT)
    with HeldInterrupt() as held:
        sigint_self()
        assert held.interrupted  # held: the code in the block went on
        with pytest.raises(KeyboardInterrupt):
            sigint_self()
    assert signal.getsignal(signal.SIGINT) is before
    with HeldInterrupt() as quiet:
        pass
    assert not quiet.interrupted


def test_ctrl_c_while_the_trainer_builds_stops_at_update_0(tmp_path, monkeypatch, capsys):
    """`ppokit train` holds a Ctrl-C that comes while torch/MuJoCo import and the envs build
    (where an extension can swallow it or abort on it), then stops at the first step boundary:
    exit 130, an update-0 checkpoint, and `--resume` finishes the run."""
    from ppokit import cli
    from ppokit import trainer as trainer_module

    build = trainer_module.Trainer.__init__

    def build_interrupted(self, *args, **kwargs):
        sigint_self()  # mid-construction: held, not raised here
        build(self, *args, **kwargs)

    monkeypatch.setattr(trainer_module.Trainer, "__init__", build_interrupted)
    run_dir = tmp_path / "run"
    args = ["train", *TINY_FLAGS, "--total_steps", "128", "--run-dir", str(run_dir)]
    assert cli.main(args) == 130
    assert "interrupted:" in capsys.readouterr().out
    assert ckpt.load_checkpoint(run_dir)["ppo"]["updates"] == 0
    monkeypatch.undo()
    assert cli.main(["train", "--resume", str(run_dir)]) == 0
    assert ckpt.load_checkpoint(run_dir)["ppo"]["updates"] == 4


def test_ppokit_train_loads_torch_only_inside_the_start_up_hold(tmp_path):
    """A Ctrl-C that lands in torch's import can be swallowed there (the run then trains on as if
    none had come: CI saw exit 0); so `ppokit train` may load torch only once the hold is on."""
    probe = (
        "import sys\n"
        "import ppokit.faults as faults\n"
        "enter = faults.HeldInterrupt.__enter__\n"
        "def report(self):\n"
        "    print('torch before the hold:', 'torch' in sys.modules)\n"
        "    return enter(self)\n"
        "faults.HeldInterrupt.__enter__ = report\n"
        "from ppokit.cli import main\n"
        "sys.exit(main(['train', '--print-config']))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=cli_env(tmp_path),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "torch before the hold: False" in proc.stdout


@pytest.mark.slow
def test_ctrl_c_during_start_up_prints_one_line(tmp_path):
    """SIGINT while `ppokit train` imports and builds: exit 130, `interrupted`, no traceback,
    and the run dir (if it got one) does not block the next run."""
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "ppokit", "train", *TINY_FLAGS, "--total_steps", "64"]
    proc = subprocess.Popen(
        [*args, "--run-dir", str(run_dir)],
        cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(0.8)  # importing: long before training starts
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    # before the Trainer is built: one line on stderr; while it builds or trains: it stops at a
    # step boundary and says so on stdout
    assert err.strip().splitlines()[-1:] == ["interrupted"] or "interrupted:" in out
    again = subprocess.run(
        [*args, "--run-dir", str(run_dir)], cwd=tmp_path, env=cli_env(tmp_path),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if again.returncode == 2:  # the first got as far as an update-0 checkpoint: resume it
        assert "already holds a run" in again.stderr
        again = subprocess.run(
            [sys.executable, "-m", "ppokit", "train", "--resume", str(run_dir)],
            cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    assert again.returncode == 0, again.stderr


@pytest.mark.slow
@pytest.mark.xdist_group("subprocess-runs")
def test_twenty_kill_9s_lose_nothing_complete(tmp_path):
    run_dir = tmp_path / "run"
    flags = [
        *TINY_FLAGS, "--total_steps", "10000000", "--log.checkpoint_every", "1",
        "--log.keep_checkpoints", "3",
    ]  # fmt: skip
    loop = subprocess.run(
        [sys.executable, str(KILL_LOOP), str(run_dir), "20", "14", "--", *flags],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert loop.returncode == 0, loop.stdout + loop.stderr
    lives = loop.stdout.strip().splitlines()
    assert len(lives) == 20 and sum(" startup " in line for line in lives) == 5
    for path in (run_dir / "checkpoints").glob("*.pt"):
        ckpt.load_checkpoint(path)  # every checkpoint the kills left is whole
    done = ckpt.load_checkpoint(run_dir)["global_step"]
    assert done > 0, "no life of the run got as far as a checkpoint"
    final = subprocess.run(
        [sys.executable, "-m", "ppokit", "train", "--resume", str(run_dir),
         "--total_steps", str(done + 3 * 32)],
        cwd=tmp_path, env=cli_env(tmp_path), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert final.returncode == 0, final.stderr
    assert ckpt.load_checkpoint(run_dir)["global_step"] == done + 3 * 32
    with (run_dir / "metrics.csv").open() as f:
        steps = [int(r["global_step"]) for r in csv.DictReader(f)]
    # each step once, in order: rows written after a kill's last checkpoint were dropped
    assert steps == list(range(32, done + 3 * 32 + 1, 32))
    assert not list(run_dir.rglob(".*.tmp"))  # half-written files were cleaned up
