"""`ppokit eval` end to end, through the real command in a subprocess."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from ppokit.recording import video_info
from ppokit_runs import (
    PENDULUM_NO_RENDER,
    assert_main_error,
    assert_one_line_error,
    ppokit_cli,
    run_main,
    train_tiny,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def pendulum_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("eval") / "runs", "pendulum")


def test_eval_prints_and_writes_json(pendulum_run, tmp_path):
    out = tmp_path / "out" / "eval.json"  # parent made on demand
    proc = ppokit_cli(
        "eval", pendulum_run, "--episodes", "3", "--seed", "5", "--json", out, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    line = re.search(
        r"eval Pendulum-v1 \(3 episodes, deterministic, seed 5\): return (-?[\d.]+) \+- ([\d.]+),"
        r" length 20 \+- 0",
        proc.stdout,
    )
    assert line, proc.stdout
    report = json.loads(out.read_text())
    assert report["episodes"] == 3 and len(report["returns"]) == 3
    assert report["lengths"] == [20, 20, 20]  # the run's max_episode_steps
    assert report["kind"] == "checkpoint" and report["env"] == "Pendulum-v1"
    assert report["mean_return"] == pytest.approx(np.mean(report["returns"]))
    assert float(line.group(1)) == pytest.approx(report["mean_return"], abs=0.06)
    assert report["deterministic"] is True and report["seed"] == 5


def test_eval_matches_the_library_evaluation(pendulum_run, tmp_path):
    """The CLI's numbers are evaluate_policy's with the same seed (one evaluation loop)."""
    import ppokit
    from ppokit.config import EnvConfig
    from ppokit.evaluate import evaluate_policy

    out = tmp_path / "eval.json"
    proc = ppokit_cli(
        "eval",
        pendulum_run / "checkpoints" / "latest.pt",
        "--episodes",
        "2",
        "--json",
        out,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    policy = ppokit.load_policy(pendulum_run)
    expected = evaluate_policy(policy, EnvConfig(**policy.metadata["env"]), episodes=2, seed=0)
    assert json.loads(out.read_text())["returns"] == pytest.approx(expected["returns"], abs=1e-9)


def assert_no_renderer_noise(stderr: str) -> None:
    """Headless recording succeeded quietly: no `error: ...` line from SDL/libwayland (e.g.
    `error: XDG_RUNTIME_DIR is invalid or not set in the environment.`) after ppokit's output."""
    lines = stderr.splitlines()
    noise = [
        line for line in lines if "XDG_RUNTIME_DIR" in line or line.lower().startswith("error")
    ]
    assert not noise, stderr


def test_record_and_analyze_value(pendulum_run, tmp_path):
    """Headless (no display, no XDG_RUNTIME_DIR): Pendulum draws its frames with pygame."""
    videos, png, out = tmp_path / "videos", tmp_path / "value.png", tmp_path / "eval.json"
    proc = _run_with_env(
        {},
        "eval", pendulum_run,
        "--episodes", "3",
        "--max-episode-steps", "12",
        "--record", videos,
        "--record-episodes", "2",
        "--analyze-value", png,
        "--json", out,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert_no_renderer_noise(proc.stderr)
    assert sorted(p.name for p in videos.iterdir()) == ["episode_000.mp4", "episode_001.mp4"]
    for video in videos.iterdir():
        # One frame per step: the state each action was chosen in. Pendulum renders 500x500.
        assert video_info(video) == (12, (500, 500))
    report = json.loads(out.read_text())
    assert report["lengths"] == [12, 12, 12]
    assert [v["frames"] for v in report["videos"]] == [12, 12]
    assert "video: " in proc.stdout and "value analysis: explained variance" in proc.stdout
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000
    va = report["value_analysis"]
    assert va["steps"] == 36 and va["gamma"] == pytest.approx(0.99)  # the run's algo.gamma
    assert len(va["per_episode"]) == 3
    assert all(np.isfinite(e["bias"]) for e in va["per_episode"])
    assert np.isfinite(va["explained_variance"]) and va["explained_variance"] <= 1.0
    # Episode 2 was not recorded, its value trace was: the hooks are independent.
    assert va["per_episode"][2]["length"] == 12


@pytest.mark.slow
def test_record_halfcheetah_headless(tmp_path):
    """MuJoCo renders with no display and no GPU (EGL/OSMesa picked automatically); the MP4
    decodes to one frame per step at the env's render size."""
    import os

    run = train_tiny(tmp_path / "runs", "cheetah", env_id="HalfCheetah-v5", total_steps=32)
    env = {
        k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "MUJOCO_GL")
    }
    videos = tmp_path / "videos"
    proc = _run_with_env(
        env,
        "eval",
        run,
        "--episodes",
        "1",
        "--max-episode-steps",
        "15",
        "--record",
        videos,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert_no_renderer_noise(proc.stderr)
    assert video_info(videos / "episode_000.mp4") == (15, (480, 480))


@pytest.mark.slow
def test_record_batched_locomotion_with_env_kwargs(tmp_path):
    """A batched torch task records through its one-env view (the camera follows the torso),
    and --env-kwargs reaches the env: an unknown key there is the env's one-line error."""
    run = train_tiny(
        tmp_path / "runs", "ant", env_id="ppokit/AntLocomotionBatched-v0", total_steps=32
    )
    videos = tmp_path / "videos"
    kwargs = "{commands: {resample_time: 0.04}, terrain: {fixed_levels: [3]}}"
    args = ("eval", run, "--episodes", "1", "--max-episode-steps", "6", "--record", videos)
    proc = _run_with_env({}, *args, "--env-kwargs", kwargs, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert_no_renderer_noise(proc.stderr)
    assert video_info(videos / "episode_000.mp4") == (6, (360, 480))
    bad = ppokit_cli(*args, "--env-kwargs", "{terrain: {level: 3}}", cwd=tmp_path)
    assert_one_line_error(bad, "unexpected key 'level' in terrain", "fixed_levels")


def _run_with_env(env: dict, *args, cwd: Path):
    """`ppokit ARGS` headless: no display, no XDG_RUNTIME_DIR, and no SDL or MuJoCo GL choice,
    except what `env` sets."""
    import subprocess
    import sys

    from ppokit_testutil import cli_env

    full = {**cli_env(cwd), **env}
    headless = ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "SDL_VIDEODRIVER")
    for key in (*headless, "MUJOCO_GL", "PYOPENGL_PLATFORM"):
        if key not in env:
            full.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "ppokit", *map(str, args)],
        cwd=cwd,
        env=full,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("make_args", "fragments"),
    [
        (lambda run, tmp: [tmp / "empty"], ["has no checkpoint", "checkpoints/latest.pt"]),
        (
            lambda run, tmp: [run, "--env", "CartPole-v1"],
            ["does not fit the policy", "observations Box(4,) vs Box(3,)", "Discrete(2)"],
        ),
        (
            lambda run, tmp: [run, "--env", f"ppokit_runs:{PENDULUM_NO_RENDER}", "--record", tmp / "v"],
            ["--record needs an env with render mode 'rgb_array'", "declares: none"],
        ),
        (
            lambda run, tmp: [run, "--env-kwargs", "[1, 2]"],
            ["--env-kwargs must be a mapping", "[1, 2]"],
        ),
        (
            lambda run, tmp: [run, "--env-kwargs", "{g: [1"],
            ["--env-kwargs is not valid YAML"],
        ),
        (
            lambda run, tmp: [run, "--json", tmp / "afile" / "eval.json"],
            ["cannot write eval JSON", "afile", "is a file, not a directory"],
        ),
    ],
    ids=[
        "no-checkpoint", "spaces-differ", "no-rgb-array", "kwargs-not-a-mapping",
        "kwargs-not-yaml", "unwritable-output",
    ],
)  # fmt: skip
def test_bad_input_is_a_one_line_error(pendulum_run, tmp_path, make_args, fragments):
    """The issue's four kinds of bad input, each through the real command."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("a file, not a directory")
    proc = ppokit_cli("eval", *make_args(pendulum_run, tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, *fragments)
    assert not (tmp_path / "v").exists()  # nothing half-made


@pytest.mark.parametrize(
    ("make_args", "fragments"),
    [
        (lambda run, tmp: [run, "--record", tmp / "afile"], ["cannot write videos", "afile"]),
        (lambda run, tmp: [run, "--analyze-value", tmp / "v.jpg"], ["give a .png path"]),
        (lambda run, tmp: [run, "--render"], ["--render needs a display", "--record DIR"]),
        (lambda run, tmp: [run, "--render", "--record", tmp / "v"], ["cannot be combined"]),
        (lambda run, tmp: [run, "--episodes", "0"], ["--episodes must be >= 1"]),
        (lambda run, tmp: [run, "--episodes", "two"], ["invalid int value: 'two'"]),
        (lambda run, tmp: [run, "--env", "Pendulm-v1"], ["unknown environment id", "Pendulum-v1"]),
        (lambda run, tmp: [tmp / "missing.onnx"], ["does not exist"]),
    ],
    ids=[
        "unwritable-dir", "not-png", "no-display", "render-and-record", "zero-episodes",
        "not-a-number", "unknown-env", "missing-file",
    ],
)  # fmt: skip
def test_more_bad_input(pendulum_run, tmp_path, capsys, monkeypatch, make_args, fragments):
    """Further one-line errors, through the command's `main` in this process (no start-up)."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    (tmp_path / "afile").write_text("a file, not a directory")
    result = run_main(capsys, "eval", *make_args(pendulum_run, tmp_path))
    assert_main_error(result, *fragments)
    assert not (tmp_path / "v").exists()


def test_analyze_value_needs_a_checkpoint(pendulum_run, tmp_path):
    from ppokit.export import export_policy

    exported = export_policy(pendulum_run, "torchscript", tmp_path / "p.pt").path
    proc = ppokit_cli("eval", exported, "--analyze-value", tmp_path / "v.png", cwd=tmp_path)
    assert_one_line_error(proc, "--analyze-value needs the critic", "torchscript")


@pytest.mark.slow
def test_dict_observations(tmp_path, capsys):
    """A dict-observation policy (image + vectors): evaluation with the value analysis, and
    the exported ONNX file (one named input per key) evaluates to the same returns."""
    from ppokit_test_envs import DICT_OBS

    run = train_tiny(tmp_path / "runs", "dict", env_id=DICT_OBS)
    first, second = tmp_path / "ckpt.json", tmp_path / "onnx.json"
    args = ("--episodes", "3", "--max-episode-steps", "7")
    code, out, err = run_main(
        capsys, "eval", run, *args, "--json", first, "--analyze-value", tmp_path / "v.png"
    )
    assert code == 0, err
    assert "value analysis: explained variance" in out
    assert run_main(capsys, "export", run, "--format", "onnx")[0] == 0
    code, _, err = run_main(capsys, "eval", run / "policy.onnx", *args, "--json", second)
    assert code == 0, err
    a, b = json.loads(first.read_text()), json.loads(second.read_text())
    assert a["returns"] == b["returns"] and a["lengths"] == [7, 7, 7]
    assert len(a["value_analysis"]["per_episode"]) == 3
