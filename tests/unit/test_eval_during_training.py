"""Evaluation during training (eval.every): eval/* metrics, checkpoints/best.pt holding the best
evaluation's weights, the early stops (target return, patience), callbacks that log and stop,
and metrics.csv columns declared up front."""

from __future__ import annotations

import csv
import math
from dataclasses import replace

import pytest
import torch

import ppokit
from ppokit import checkpoint as ckpt
from ppokit.config import validate
from ppokit.errors import ConfigError
from ppokit.evaluate import evaluate_policy, policy_fn
from ppokit.policy import model_from_checkpoint
from ppokit.trainer import Trainer
from ppokit_testutil import tiny_train_config


def config(tmp_path, name: str, updates: int = 8, **eval_fields):
    cfg = tiny_train_config(tmp_path, total_steps=updates * 32)
    cfg.log = replace(cfg.log, run_name=name, checkpoint_every=0)
    cfg.eval = replace(cfg.eval, **{"periodic_episodes": 3, **eval_fields})
    validate(cfg)
    return cfg


def read_csv(run_dir) -> tuple[list[str], list[dict]]:
    with (run_dir / "metrics.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return list(reader.fieldnames or []), rows


def eval_returns(rows) -> list[tuple[int, float]]:
    return [
        (int(r["global_step"]), float(r["eval/mean_return"])) for r in rows if r["eval/mean_return"]
    ]


def test_best_checkpoint_holds_the_best_evaluations_weights(tmp_path):
    result = ppokit.train(config(tmp_path, "run", every=2))
    columns, rows = read_csv(result.run_dir)
    evals = eval_returns(rows)
    assert [step for step, _ in evals] == [64, 128, 192, 256]  # every 2 updates of 32 steps
    best_return = max(ret for _, ret in evals)
    best_step = next(step for step, ret in evals if ret == best_return)  # the first of equals
    state = ckpt.load_checkpoint(ckpt.resolve_checkpoint(result.run_dir, "best"))
    assert state["global_step"] == best_step
    assert state["best_eval"]["result"]["mean_return"] == pytest.approx(best_return, abs=1e-4)
    assert result.best_eval["global_step"] == best_step
    # Its weights give that evaluation again (same episodes: same seed, deterministic policy).
    model = model_from_checkpoint(state)
    cfg = config(tmp_path, "run", every=2)
    again = evaluate_policy(policy_fn(model), cfg.env, 3, cfg.seed + 10_000)
    assert again["mean_return"] == pytest.approx(best_return, abs=1e-3)
    # eval/best_return is the running maximum.
    running = -math.inf
    for row in rows:
        if row["eval/mean_return"]:
            running = max(running, float(row["eval/mean_return"]))
            assert float(row["eval/best_return"]) == pytest.approx(running, abs=1e-4)


def test_evaluating_during_training_does_not_change_the_training(tmp_path):
    plain = ppokit.train(config(tmp_path, "plain"))
    evaluated = ppokit.train(config(tmp_path, "evaluated", every=1))
    a = ckpt.load_checkpoint(plain.run_dir)["ppo"]["model"]
    b = ckpt.load_checkpoint(evaluated.run_dir)["ppo"]["model"]
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_every_steps_rounds_up_to_whole_updates(tmp_path):
    result = ppokit.train(config(tmp_path, "steps", every_steps=70))  # 70 steps -> 3 updates
    _, rows = read_csv(result.run_dir)
    assert [step for step, _ in eval_returns(rows)] == [96, 192]


def test_target_return_stops_at_the_first_evaluation_that_reaches_it(tmp_path):
    result = ppokit.train(config(tmp_path, "target", updates=20, every=2, target_return=-1e9))
    assert result.stop_reason is not None and "eval.target_return" in result.stop_reason
    assert not result.interrupted
    assert result.updates == 2 and result.global_step == 64
    assert ckpt.load_checkpoint(result.run_dir)["ppo"]["updates"] == 2  # final checkpoint


def test_patience_stops_after_that_many_evaluations_without_a_new_best(tmp_path):
    result = ppokit.train(config(tmp_path, "patience", updates=40, every=1, patience=2))
    _, rows = read_csv(result.run_dir)
    returns = [ret for _, ret in eval_returns(rows)]
    # Recompute where the rule stops: the first evaluation that is the 2nd since the best.
    best, since, stop_at = -math.inf, 0, None
    for i, ret in enumerate(returns):
        best, since = (ret, 0) if ret > best else (best, since + 1)
        if since >= 2:
            stop_at = i + 1
            break
    assert stop_at is not None, returns  # Pendulum's tiny runs do not improve every update
    assert result.updates == stop_at and len(returns) == stop_at
    assert "eval.patience" in result.stop_reason


def test_a_resumed_run_keeps_its_best_evaluation(tmp_path):
    first = ppokit.train(config(tmp_path, "resume", updates=4, every=2))
    cfg = config(tmp_path, "resume", updates=8, every=2)
    resumed = Trainer(cfg, resume=first.run_dir)
    assert resumed.best_eval == first.best_eval
    result = resumed.train()
    assert result.best_eval["mean_return"] >= first.best_eval["mean_return"]


def test_callbacks_log_a_metric_and_stop_training(tmp_path):
    seen = []

    def log_lr_ratio(trainer, metrics):
        metrics["custom/lr_ratio"] = metrics["charts/learning_rate"] / trainer.cfg.algo.lr

    def stop_after_three(trainer, metrics):
        seen.append(trainer.ppo.updates)
        if trainer.ppo.updates == 3:
            trainer.stop_training("three updates are enough")

    cfg = config(tmp_path, "callbacks")
    result = Trainer(cfg, callbacks=[log_lr_ratio, stop_after_three]).train()
    assert seen == [1, 2, 3] and result.updates == 3
    assert result.stop_reason == "three updates are enough" and not result.interrupted
    columns, rows = read_csv(result.run_dir)
    assert columns[-1] == "custom/lr_ratio"
    assert [float(r["custom/lr_ratio"]) for r in rows] == [1.0, 1.0, 1.0]  # constant schedule


def test_metrics_csv_columns_are_declared_up_front_in_a_fixed_order(tmp_path):
    # Episodes of 20 steps end in the first rollout; of 200 steps, only in the 7th update.
    short = config(tmp_path, "short")
    long = config(tmp_path, "long")
    long.env = replace(long.env, max_episode_steps=200)
    columns = []
    for cfg in (short, long):
        trainer = Trainer(cfg)
        header, rows = read_csv(trainer.train().run_dir)
        assert header == ["global_step", *trainer.metric_names()]
        columns.append(header)
    assert columns[0] == columns[1]
    assert header.index("charts/episode_return") < header.index("charts/SPS")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"every": 2, "every_steps": 64}, "not both"),
        ({"target_return": 100.0}, "set eval.every"),
        ({"patience": 3}, "set eval.every"),
        ({"every": -1}, "eval.every: -1 is out of range: must be >= 0"),
        ({"periodic_episodes": 0}, "eval.periodic_episodes: 0 is out of range: must be >= 1"),
    ],
)
def test_bad_eval_settings_are_config_errors(tmp_path, fields, message):
    with pytest.raises(ConfigError, match=message):
        config(tmp_path, "bad", **fields)
