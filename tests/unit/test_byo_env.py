"""Bring your own env: `ppokit.train(cfg, env=...)` with a gymnasium.Env instance, a callable
that makes one, a gymnasium VectorEnv (SAME_STEP), and the one-line errors for what does not fit;
the final evaluation on rebuilt envs, or skipped with the reason printed."""

from __future__ import annotations

from dataclasses import replace

import gymnasium as gym
import pytest
import torch
from gymnasium.envs.classic_control.pendulum import PendulumEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from gymnasium.wrappers import TimeLimit

import ppokit
from ppokit.errors import ConfigError, EnvError
from ppokit.trainer import Trainer
from ppokit_test_envs import COUNTDOWN_MAX_STEPS, Countdown

SAME_STEP = {"autoreset_mode": AutoresetMode.SAME_STEP}


def pendulum() -> gym.Env:
    return gym.make("Pendulum-v1", max_episode_steps=20)


def config(tiny_config, num_envs: int, eval_episodes: int = 0, updates: int = 2):
    cfg = tiny_config()
    cfg.env = replace(cfg.env, num_envs=num_envs)
    cfg.eval = replace(cfg.eval, episodes=eval_episodes)
    cfg.total_steps = updates * num_envs * cfg.algo.num_steps
    return cfg


def one_line(e: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(e.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


def test_an_env_instance_trains_as_one_env(tiny_config):
    env = pendulum()
    result = ppokit.train(config(tiny_config, num_envs=1), env=env)
    assert result.updates == 2 and result.global_step == 2 * 16
    assert result.run_dir.name.startswith("Pendulum-v1_s7_")  # named after the env's spec id
    assert (result.run_dir / "checkpoints" / "latest.pt").is_file()


@pytest.mark.parametrize("vectorization", ["sync", "async"])
def test_a_callable_makes_num_envs_envs_and_the_final_evaluation(tiny_config, vectorization):
    calls = []

    def make() -> gym.Env:
        calls.append(1)
        return pendulum()

    cfg = config(tiny_config, num_envs=2, eval_episodes=3)
    cfg.env = replace(cfg.env, vectorization=vectorization)
    trainer = Trainer(cfg, env=make)
    assert trainer.env.num_envs == 2 and trainer.env.env_id == "Pendulum-v1"
    if vectorization == "sync":
        assert len(calls) == 2  # the training envs (async: made in the worker processes)
    result = trainer.train()
    assert result.updates == 2
    assert result.run_dir.name.startswith("Pendulum-v1_s7_")
    # The final evaluation ran on new envs from the same callable (20-step episodes).
    assert result.eval["episodes"] == 3 and result.eval["lengths"] == [20, 20, 20]
    assert (result.run_dir / "eval.json").is_file()
    if vectorization == "sync":
        assert len(calls) == 2 + 3


def test_a_same_step_vector_env_trains_and_its_spec_rebuilds_one_env(tiny_config):
    vec = gym.make_vec(
        "Pendulum-v1", 2, vectorization_mode="sync", vector_kwargs=SAME_STEP, max_episode_steps=20
    )
    trainer = Trainer(config(tiny_config, num_envs=2, eval_episodes=2), env=vec)
    assert trainer.env.env is vec  # wrapped as is
    result = trainer.train()
    assert result.updates == 2 and result.run_dir.name.startswith("Pendulum-v1_s7_")
    assert result.eval["lengths"] == [20, 20]  # one env of the make_vec spec, its time limit kept


def test_a_next_step_vector_env_is_a_one_line_error_naming_the_fix(tiny_config):
    vec = gym.make_vec("Pendulum-v1", 2, vectorization_mode="sync")
    with pytest.raises(EnvError) as e:
        Trainer(config(tiny_config, num_envs=2), env=vec)
    one_line(
        e,
        "autoresets in NEXT_STEP mode",
        "needs SAME_STEP",
        "gym.make_vec('Pendulum-v1', 2, vector_kwargs={'autoreset_mode':"
        " gym.vector.AutoresetMode.SAME_STEP})",
        "SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)",
    )
    # Without a spec the fix names the constructor's argument (and make_vec with a placeholder).
    with pytest.raises(EnvError) as e:
        Trainer(config(tiny_config, num_envs=2), env=SyncVectorEnv([pendulum, pendulum]))
    one_line(e, "NEXT_STEP", "gym.make_vec(ID, 2,", "SyncVectorEnv(fns, autoreset_mode=")


def test_an_instance_with_num_envs_8_is_a_one_line_error_naming_both_fixes(tiny_config):
    with pytest.raises(ConfigError) as e:
        Trainer(config(tiny_config, num_envs=8), env=pendulum())
    one_line(e, "one env but env.num_envs is 8", "pass a callable", "set env.num_envs 1")


def test_counts_and_kinds_that_do_not_fit_are_one_line_errors(tiny_config):
    vec = gym.make_vec("Pendulum-v1", 2, vectorization_mode="sync", vector_kwargs=SAME_STEP)
    with pytest.raises(ConfigError) as e:
        Trainer(config(tiny_config, num_envs=4), env=vec)
    one_line(e, "the env has 2 envs but env.num_envs is 4", "--env.num_envs 2")
    with pytest.raises(EnvError) as e:
        Trainer(config(tiny_config, num_envs=1), env="Pendulum-v1")
    one_line(e, "object of type str", "callable", "gymnasium.Env instance", "VectorEnv", "VecEnv")
    with pytest.raises(EnvError) as e:
        Trainer(config(tiny_config, num_envs=1), env=lambda: "not an env")
    one_line(e, "returned str, not a gymnasium.Env")


@torch.no_grad()
def test_a_callable_built_env_bootstraps_truncation_from_the_final_observation(tiny_config):
    cfg = config(tiny_config, num_envs=2)
    cfg.algo = replace(cfg.algo, scale_rewards=False)
    trainer = Trainer(cfg, env=lambda: TimeLimit(Countdown(), COUNTDOWN_MAX_STEPS))
    try:
        assert trainer.env.env_id == "Countdown"  # no spec: the class name
        model, b = trainer.model, trainer.ppo.buffer
        trainer.collect(trainer.env.reset(seed=cfg.seed))
        truncated_steps = [t for t in range(cfg.algo.num_steps) if b.truncated[t].any()]
        assert truncated_steps == [5, 11] and not b.terminated.any()
        seeds = torch.tensor([cfg.seed, cfg.seed + 1], dtype=torch.float32)
        final_obs = torch.stack([torch.full((2,), 6.0), seeds], dim=1)  # [t=6, seed] per env
        reset_obs = torch.stack([torch.zeros(2), seeds], dim=1)
        v_final = model.value(model.normalize(final_obs))
        v_reset = model.value(model.normalize(reset_obs))
        assert (v_final - v_reset).abs().min() > 1e-4, "test needs V(final) != V(reset)"
        for t in truncated_steps:
            torch.testing.assert_close(b.bootstrap_values[t], v_final)
            assert torch.equal(b.obs[t + 1], reset_obs)
    finally:
        trainer.env.close()


def test_non_finite_observations_of_a_callable_built_env_are_caught(tiny_config):
    trainer = Trainer(config(tiny_config, num_envs=2), env=lambda: Countdown(nan_at=3))
    try:
        with pytest.raises(EnvError) as e:
            trainer.collect(trainer.env.reset(seed=0))
        one_line(e, "observation from env 'Countdown' contains NaN/inf at vector step 3")
    finally:
        trainer.env.close()


def test_evaluation_is_skipped_with_the_reason_for_an_instance_without_spec(tiny_config, capsys):
    trainer = Trainer(config(tiny_config, num_envs=1, eval_episodes=2), env=PendulumEnv())
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert out.startswith("final evaluation will be skipped: the PendulumEnv instance has no spec")
    with pytest.raises(EnvError, match="no spec"):
        trainer.evaluate(2)
    result = trainer.train()
    assert result.eval is None and not (result.run_dir / "eval.json").exists()
    assert result.run_dir.name.startswith("PendulumEnv_s7_")  # no spec: the class name
