"""`ppokit train` end to end, through the real command in a subprocess."""

from __future__ import annotations

import csv
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ppokit import checkpoint as ckpt
from ppokit import config as C
from ppokit_testutil import TINY_FLAGS, cli_env, run_ppokit

METRIC_COLUMNS = [
    "global_step",
    "losses/policy_loss",
    "losses/value_loss",
    "losses/entropy",
    "losses/approx_kl",
    "losses/clip_fraction",
    "losses/explained_variance",
    "charts/learning_rate",
    "charts/action_std",
    "charts/SPS",
    "charts/episode_return",
    "charts/episode_length",
]


def ppokit(*args: str, cwd, timeout: float = 120):
    return run_ppokit(*args, cwd=cwd, timeout=timeout)


def read_metrics(run_dir: Path) -> tuple[list[str], list[dict]]:
    with (run_dir / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def run_directory(stdout: str) -> Path:
    match = re.search(r"^run directory: (.+)$", stdout, re.MULTILINE)
    assert match, stdout
    return Path(match.group(1))


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr
    assert "Traceback" not in err and "Traceback" not in proc.stdout
    assert err.startswith("error: ") and err.endswith("\n") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert "run directory:" not in proc.stdout
    return err


TINY_UPDATES = 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """One tiny Pendulum run through the CLI: 4 updates of 2 envs x 16 steps."""
    cwd = tmp_path_factory.mktemp("tiny")
    proc = ppokit(
        "train",
        *TINY_FLAGS,
        "--total_steps", str(TINY_UPDATES * 32),
        "--log.root", str(cwd / "runs"),
        "--log.run_name", "tiny",
        "--log.checkpoint_every", "2",
        "--seed", "3",
        cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return cwd / "runs" / "tiny", proc


def test_tiny_run_writes_every_output(tiny_run):
    run_dir, proc = tiny_run
    assert run_directory(proc.stdout).resolve() == run_dir.resolve()
    assert "Traceback" not in proc.stderr
    # The fully resolved config: preset values, flags on top.
    cfg = C.load_config(config_file=run_dir / "config.yaml")
    preset = C.load_config(preset="pendulum")
    assert cfg.preset == "pendulum" and cfg.env.id == "Pendulum-v1"
    assert cfg.env.num_envs == 2 and cfg.algo.num_steps == 16 and cfg.seed == 3  # flags
    assert cfg.policy.actor_hidden == [16] and cfg.algo.num_epochs == 2  # flags
    assert cfg.algo.gamma == preset.algo.gamma and cfg.algo.lr == preset.algo.lr  # preset
    columns, rows = read_metrics(run_dir)
    for column in METRIC_COLUMNS:
        assert column in columns, column
    assert [int(r["global_step"]) for r in rows] == [32 * k for k in range(1, TINY_UPDATES + 1)]
    # Episodes (20 steps) finish within the run, so the return is logged.
    assert float(rows[-1]["charts/episode_return"]) < 0
    assert float(rows[0]["charts/learning_rate"]) == pytest.approx(cfg.algo.lr)
    assert float(rows[0]["charts/SPS"]) > 0
    assert list(run_dir.glob("events.out.tfevents.*"))
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["global_step"] == TINY_UPDATES * 32 and state["ppo"]["updates"] == TINY_UPDATES
    assert (run_dir / "checkpoints" / "update_000002.pt").is_file()
    assert str(run_dir) in proc.stdout.splitlines()[-1]


def test_tensorboard_events_hold_the_metrics(tiny_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = tiny_run
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"losses/approx_kl", "charts/learning_rate", "charts/episode_return"} <= tags
    assert [e.step for e in events.Scalars("losses/approx_kl")] == [32, 64, 96, 128]


def test_help_documents_every_config_field(tmp_path):
    # Also the check that `python -m ppokit` works (every test here runs it that way).
    proc = ppokit("train", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    squashed = "".join(proc.stdout.split())  # immune to line wrapping
    for name, _, f in C.iter_fields():
        if name in ("preset",):  # set with --preset, which is documented itself
            assert "--preset" in proc.stdout
            continue
        assert f"--{name} " in proc.stdout or f"--{name}\n" in proc.stdout, name
        assert "".join(C.field_help(f).split()) in squashed, name
    assert "--resume" in proc.stdout and "--config" in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--algo.lrr", "1e-3"], ["unknown config key 'algo.lrr'", "did you mean algo.lr"]),
        (["--env.num_envs", "two"], ["env.num_envs: expected an integer, got 'two'"]),
        (["--env", "Pendulm-v1"], ["unknown environment id 'Pendulm-v1'", "Pendulum-v1"]),
        (["--preset", "pendulm"], ["unknown preset 'pendulm'", "available: ", "pendulum"]),
        (
            ["--env", "ppokit_test_envs:ppokit-test/MatrixAction-v0"],
            ["Box action space of shape (2, 2) is not supported"],
        ),
        (["--resume", "missing-run"], ["does not exist"]),
    ],
    ids=[
        "unknown-flag",
        "wrong-type",
        "unknown-env",
        "unknown-preset",
        "unsupported-box",
        "missing-checkpoint",
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, args, fragments):
    proc = ppokit("train", *TINY_FLAGS, "--log.root", str(tmp_path / "runs"), *args, cwd=tmp_path)
    assert_clean_error(proc, *fragments)
    assert not (tmp_path / "runs").exists()  # nothing half-made on disk


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"\x80\x02not a checkpoint at all" * 10)
    assert_clean_error(ppokit("train", "--resume", str(path), cwd=tmp_path), "corrupt")


def test_resume_with_incompatible_config_is_a_one_line_error(tiny_run, tmp_path):
    run_dir, _ = tiny_run
    before = sorted(p.name for p in run_dir.rglob("*"))
    proc = ppokit(
        "train", "--resume", str(run_dir), "--policy.actor_hidden", "[32,32]", cwd=tmp_path
    )
    assert_clean_error(proc, "incompatible", "policy.actor_hidden")
    assert sorted(p.name for p in run_dir.rglob("*")) == before


@pytest.mark.slow
def test_resume_continues_the_run(tiny_run, tmp_path):
    import shutil

    run_dir = tmp_path / "tiny"
    shutil.copytree(tiny_run[0], run_dir)
    _, rows_before = read_metrics(run_dir)
    proc = ppokit("train", "--resume", str(run_dir), "--total_steps", str(8 * 32), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert run_directory(proc.stdout).resolve() == run_dir.resolve()
    state = ckpt.load_checkpoint(run_dir)
    assert state["global_step"] == 8 * 32 and state["ppo"]["updates"] == 8
    cfg = C.load_config(config_file=run_dir / "config.yaml")
    assert cfg.total_steps == 8 * 32 and cfg.env.num_envs == 2  # saved config + the new flag
    _, rows = read_metrics(run_dir)
    assert rows[:TINY_UPDATES] == rows_before  # earlier rows kept
    assert [int(r["global_step"]) for r in rows] == [32 * k for k in range(1, 9)]
    # The linear schedule goes on from the last update's LR (progress 3/4 of the 4-update
    # run), stretched over the 4 new updates: no jump back up, no drop to 0.
    assert cfg.algo.lr_schedule == "linear" and TINY_UPDATES == 4
    lrs = [float(r["charts/learning_rate"]) for r in rows]
    assert lrs[4] == pytest.approx(lrs[3]) and lrs[3] == pytest.approx(cfg.algo.lr * 0.25)
    assert lrs[4:] == pytest.approx([cfg.algo.lr * 0.25 * (1 - j / 4) for j in range(4)])


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "runs" / "long"
    proc = subprocess.Popen(
        [
            sys.executable, "-m", "ppokit", "train", *TINY_FLAGS,
            "--total_steps", "10000000",
            "--log.root", str(tmp_path / "runs"),
            "--log.run_name", "long",
            "--log.checkpoint_every", "0",
        ],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            metrics = run_dir / "metrics.csv"
            if metrics.is_file() and len(metrics.read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        else:
            pytest.fail(f"no metrics row before the deadline: {proc.communicate()}")
        rows_at_signal = len(metrics.read_text().splitlines()) - 1
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stdout
    assert "Traceback" not in stderr
    state = ckpt.load_checkpoint(run_dir)
    updates = state["ppo"]["updates"]
    assert updates >= 1 and state["global_step"] == updates * 32
    # It stopped at the next step boundary, not at the end of the 10M-step run (312,500 updates;
    # a few updates of 32 steps may finish between reading the rows and the signal arriving).
    assert updates <= rows_at_signal + 50
    _, rows = read_metrics(run_dir)
    assert int(rows[-1]["global_step"]) == state["global_step"]
    assert not list(run_dir.glob("checkpoints/.*.tmp"))


@pytest.mark.slow
def test_wandb_offline(tmp_path):
    pytest.importorskip("wandb")
    proc = ppokit(
        "train",
        *TINY_FLAGS,
        "--total_steps", "64",
        "--log.root", str(tmp_path / "runs"),
        "--log.run_name", "wb",
        "--log.wandb", "true",
        "--log.wandb_mode", "offline",
        cwd=tmp_path,
        timeout=180,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    offline = list(tmp_path.rglob("offline-run-*"))
    assert offline and all(p.is_dir() for p in offline), sorted(tmp_path.rglob("*"))
    assert any(offline[0].rglob("*.wandb"))
    assert (tmp_path / "runs" / "wb" / "metrics.csv").is_file()
    assert torch.load(tmp_path / "runs" / "wb" / "checkpoints" / "latest.pt", weights_only=False)


def test_eval_during_training_keeps_best_and_eval_export_take_it(tmp_path):
    root = tmp_path / "runs"
    proc = ppokit(
        "train", *TINY_FLAGS, "--total_steps", "100", "--eval.every", "2",
        "--eval.periodic_episodes", "2", "--log.root", str(root), "--log.run_name", "best",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    # 100 steps are not whole updates of 32: the run says what it trains instead.
    assert "total_steps 100 is not a multiple of the 32 steps per update" in proc.stdout
    assert "training runs 4 updates = 128 steps" in proc.stdout
    run_dir = root / "best"
    best = ckpt.load_checkpoint(ckpt.resolve_checkpoint(run_dir, "best"))
    proc = ppokit("eval", str(run_dir), "--checkpoint", "best", "--episodes", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "best_policy.pt"
    proc = ppokit(
        "export", str(run_dir), "--checkpoint", "best", "--format", "torchscript", "--out", str(out),
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0 and out.is_file(), proc.stderr
    assert best["global_step"] in (64, 128)
    proc = ppokit("eval", str(run_dir), "--checkpoint", "update_9", cwd=tmp_path)
    assert_clean_error(proc, "has no checkpoint 'update_9'", "best, latest")


def no_wandb_key_env(tmp_path: Path) -> dict:
    """A subprocess environment in which wandb finds no API key: HOME (netrc, settings) is an
    empty directory and no W&B credential or mode variable is inherited."""
    env = cli_env(tmp_path)
    for key in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_MODE", "NETRC"):
        env.pop(key, None)
    home = tmp_path / "home"
    home.mkdir()
    env.update(HOME=str(home), WANDB_CONFIG_DIR=str(home / ".config" / "wandb"))
    return env


WANDB_RUN_FLAGS = [
    *TINY_FLAGS,
    "--total_steps", "64",
    "--log.run_name", "wb",
    "--log.wandb", "true",
]  # fmt: skip


def test_wandb_online_without_an_api_key_is_a_one_line_error(tmp_path):
    """Online mode with no key stops before anything is written, and says how to go on."""
    pytest.importorskip("wandb")
    proc = subprocess.run(
        [sys.executable, "-m", "ppokit", "train", *WANDB_RUN_FLAGS, "--log.root", str(tmp_path / "runs")],
        cwd=tmp_path,
        env=no_wandb_key_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert_clean_error(proc, "needs an API key", "wandb login", "--log.wandb_mode offline")
    assert not (tmp_path / "runs").exists()
    assert not list(tmp_path.rglob("wandb"))  # nor a W&B run directory


def test_wandb_missing_package_names_the_extra(tmp_path):
    """Without the wandb package (None in sys.modules: `import wandb` fails as if it were not
    installed), --log.wandb names the extra, before anything is written."""
    blocked = (
        "import sys; sys.modules['wandb'] = None; from ppokit.cli import main; sys.exit(main())"
    )
    proc = subprocess.run(
        [sys.executable, "-c", blocked, "train", *WANDB_RUN_FLAGS, "--log.wandb_mode", "offline",
         "--log.root", str(tmp_path / "runs")],
        cwd=tmp_path,
        env=no_wandb_key_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert_clean_error(proc, '--log.wandb needs the wandb package: pip install "ppokit[wandb]"')
    assert not (tmp_path / "runs").exists()
