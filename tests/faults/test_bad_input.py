"""Mistakes on the command line: each is one `error:` line naming the problem and the fix (no
traceback), exit code 2, and nothing written. Run through ppokit.cli.main in this process (what
the `ppokit` command calls), so the cases cost milliseconds."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from ppokit.cli import main

BASE = ["train", "--total_steps", "64", "--env.num_envs", "2", "--algo.num_steps", "16"]


def run(capsys, *args) -> str:
    code = main([*BASE, *args])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--device", "gpu"], "device 'gpu' is not a torch device; use auto, cpu, cuda or cuda:N"),
        (["--env.max_episode_steps", "0"], "env.max_episode_steps: 0 in command-line overrides"),
        (["--log.checkpoint_every", "-1"], "must be >= 0"),
        (["--eval.episodes", "-1"], "eval.episodes: -1 in command-line overrides is out of range"),
        (["--algo.clip_coef", "-1"], "algo.clip_coef: -1.0 in command-line overrides"),
        (["--algo.max_grad_norm", "-3"], "algo.max_grad_norm: -3.0 in command-line overrides"),
        (["--algo.target_kl", "-0.1"], "algo.target_kl: -0.1 in command-line overrides"),
        (["--env.kwargs", "[1, 2]"], "env.kwargs: expected a mapping, got [1, 2]"),
        (
            ["--env.kwargs", "{bogus: 1}"],
            "cannot build environment 'Pendulum-v1': PendulumEnv.__init__() got an unexpected"
            " keyword argument 'bogus'",
        ),
        (
            ["--env.id", "CartPole-v1", "--policy.init_noise_std", "0.3"],
            "policy.init_noise_std 0.3 only applies to continuous (Box) actions, and"
            " 'CartPole-v1' has Discrete(2) actions: remove it",
        ),
        (["--env.step_timeout", "-1"], "env.step_timeout: -1.0 in command-line overrides"),
    ],
)
def test_bad_values_are_one_line_errors(capsys, tmp_path, args, expected):
    line = run(capsys, "--log.root", str(tmp_path), *args)
    assert expected in line, line
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_config_that_is_a_directory_or_empty(capsys, tmp_path):
    assert "is a directory; give a YAML file" in run(capsys, "--config", str(tmp_path))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert "is empty: it sets no config key" in run(capsys, "--config", str(empty))


def test_a_missing_or_corrupt_checkpoint(capsys, tmp_path):
    assert "does not exist" in run(capsys, "--resume", str(tmp_path / "nope.pt"))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 truncated")
    assert "is corrupt or not a torch file" in run(capsys, "--resume", str(bad))
    foreign = tmp_path / "foreign.pt"
    import torch

    torch.save({"state_dict": {}}, foreign)  # a torch file, not a ppokit checkpoint
    assert "is not a ppokit checkpoint" in run(capsys, "--resume", str(foreign))


@pytest.mark.skipif(sys.platform != "linux" or os.geteuid() != 0, reason="mounts a tmpfs (root)")
def test_a_read_only_run_dir(capsys, tmp_path):
    disk = tmp_path / "ro"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(disk)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        line = run(capsys, "--run-dir", str(disk / "run"))
        assert (
            line
            == f"error: cannot write run directory {str(disk / 'run')!r}: Read-only file system"
        )
    finally:
        subprocess.run(["umount", str(disk)])


def test_debug_prints_the_traceback_too(capsys):
    code = main([*BASE, "--device", "gpu", "--debug"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback (most recent call last)" in err
    assert err.strip().splitlines()[-1].startswith("error: device 'gpu' is not a torch device")
