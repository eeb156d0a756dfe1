"""ppokit verify: rows computed from the real objects; breaking a detail fails its row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import ppokit.algo.ppo as ppo_module
from ppokit.cli import main
from ppokit.config import load_config
from ppokit.verify import build, check, format_table, verify

PRESETS = sorted(p.stem for p in (Path(__file__).parents[2] / "configs").glob("*.yaml"))
# Rendering a depth image costs ~20 ms on a CPU: this preset's rollout is cut to 4 envs x 24 steps
# (one BPTT sequence each, one per minibatch). Every other preset runs as it is (at most ~3 s).
SHORTER = {"ant-locomotion-depth-gru": ["--env.num_envs", "4", "--algo.num_steps", "24"]}


def cartpole(**overrides):
    return load_config("cartpole", overrides={"device": "cpu", **overrides})


def by_detail(rows):
    return {row.detail: row for row in rows}


def failing(rows):
    return [row.detail for row in rows if not row.ok]


def test_every_row_passes_on_a_preset():
    rows = verify(cartpole())
    assert failing(rows) == [], format_table(rows)
    details = set(by_detail(rows))
    assert {
        "Adam epsilon (PPO: 1e-5)",
        "orthogonal init, hidden layers (gain sqrt 2)",
        "orthogonal init, policy head",
        "orthogonal init, value head",
        "observation normalization inside the model",
        "minibatches",
        "gradient clipping (global norm)",
        "value loss clipping",
        "truncated episodes",
        "learning-rate schedule",
        "KL early stop",
        "rollout policy",
        "precision (fp32)",
    } <= details


def test_recipes_and_a_continuous_batched_task():
    cfg = load_config(
        "pointmass-4096",
        overrides={
            "env.num_envs": 64,
            "ema.decay": 0.9,
            "precision": "bf16",
            "env.finite_horizon": True,
            "algo.kl_early_stop": True,
            "algo.advantage_norm_scope": "minibatch",
            "device": "cpu",
        },
    )
    rows = verify(cfg)
    assert failing(rows) == [], format_table(rows)
    found = by_detail(rows)
    assert "d = 0.9" in found["EMA rollout agent (ema = d ema + (1 - d) weights)"].found
    assert "bfloat16" in found["precision (bf16)"].found
    assert found["initial action std, env units (0.15 x (high - low))"].found == "0.3, 0.3"


@pytest.mark.parametrize(
    "detail, breaks",
    [
        ("Adam epsilon (PPO: 1e-5)", lambda o: o.ppo.optimizer.param_groups[0].update(eps=1e-8)),
        (
            "orthogonal init, policy head",
            lambda o: torch.nn.init.orthogonal_(o.fresh_model.actor.layers[-1].weight, 1.0),
        ),
        ("value loss clipping", lambda o: o.ppo.loss_kwargs.update(value_clip_coef=0.5)),
        ("truncated episodes", lambda o: setattr(o.ppo, "finite_horizon", True)),
        ("KL early stop", lambda o: setattr(o.ppo, "kl_allows_step", lambda kl: kl < 0.01)),
    ],
)
def test_breaking_one_detail_fails_its_row(detail, breaks):
    objects = build(cartpole(**{"algo.target_kl": 0.02}))
    breaks(objects)
    rows = check(objects)
    assert failing(rows) == [detail], format_table(rows)


def test_the_command_prints_the_table_and_exits_non_zero_on_a_failure(capsys, monkeypatch):
    assert main(["verify", "--preset", "cartpole", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "detail" in out and "expected" in out and "found" in out
    assert "all " in out and "checks passed" in out

    real = ppo_module.make_optimizer

    def wrong_eps(model, cfg):
        optimizer = real(model, cfg)
        optimizer.param_groups[0]["eps"] = 1e-8
        return optimizer

    monkeypatch.setattr(ppo_module, "make_optimizer", wrong_eps)
    assert main(["verify", "--preset", "cartpole", "--device", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "1 of" in out and "Adam epsilon" in out.splitlines()[-1]


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_passes_ppokit_verify(preset, capsys):
    """The real command on every preset in configs/, recurrent ones included (their value-clip
    and gradient-clip probes run sequence minibatches through the memory, as the update does)."""
    code = main(["verify", "--preset", preset, "--device", "cpu", *SHORTER.get(preset, [])])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out and "checks passed" in out.splitlines()[-1]
