"""GymVecEnv: termination vs truncation, auto-reset, final observations, data checks, env ids;
and, end to end, that a truncated step bootstraps from V(final observation) in training."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from ppokit.algo.gae import compute_gae
from ppokit.config import EnvConfig, TrainConfig
from ppokit.envs import GymVecEnv, check_env_id, make_env
from ppokit.errors import EnvError
from ppokit.trainer import Trainer
from ppokit_test_envs import COUNTDOWN, COUNTDOWN_MAX_STEPS

SEED = 10  # env i is reset with seed SEED + i, which Countdown reports in obs[1]


def make_countdown(vectorization: str, num_envs: int = 2, **kwargs) -> GymVecEnv:
    max_steps = kwargs.pop("max_episode_steps", None)
    # The async workers build the env by id; the module prefix makes them import (register) it.
    env_id = f"ppokit_test_envs:{COUNTDOWN}" if vectorization == "async" else COUNTDOWN
    cfg = EnvConfig(
        id=env_id,
        num_envs=num_envs,
        vectorization=vectorization,
        max_episode_steps=max_steps,
        kwargs=kwargs,
    )
    return GymVecEnv.from_config(cfg)


def run(env: GymVecEnv, steps: int) -> list:
    actions = torch.zeros(env.num_envs, 1)
    return [env.step(actions) for _ in range(steps)]


@pytest.fixture(params=["sync", "async"])
def vectorization(request) -> str:
    return request.param


def test_termination_is_reported_as_terminated_not_truncated(vectorization):
    env = make_countdown(vectorization, terminate_at=3)
    try:
        env.reset(seed=SEED)
        results = run(env, 4)
    finally:
        env.close()
    terminated = torch.stack([r.terminated for r in results])
    truncated = torch.stack([r.truncated for r in results])
    assert terminated.dtype == torch.bool and truncated.dtype == torch.bool
    assert terminated.tolist() == [[False, False], [False, False], [True, True], [False, False]]
    assert not truncated.any()


def test_time_limit_is_reported_as_truncated_not_terminated(vectorization):
    env = make_countdown(vectorization)
    try:
        env.reset(seed=SEED)
        results = run(env, COUNTDOWN_MAX_STEPS + 1)
    finally:
        env.close()
    truncated = torch.stack([r.truncated for r in results])
    terminated = torch.stack([r.terminated for r in results])
    expected = [[t == COUNTDOWN_MAX_STEPS] * 2 for t in range(1, COUNTDOWN_MAX_STEPS + 2)]
    assert truncated.tolist() == expected
    assert not terminated.any()


def test_max_episode_steps_overrides_the_registered_time_limit():
    env = make_countdown("sync", max_episode_steps=2)
    try:
        env.reset(seed=SEED)
        results = run(env, 4)
    finally:
        env.close()
    assert [r.truncated.all().item() for r in results] == [False, True, False, True]
    assert results[1].final_obs[:, 0].tolist() == [2.0, 2.0]


def test_termination_at_the_time_limit_reports_both_flags():
    env = make_countdown("sync", terminate_at=COUNTDOWN_MAX_STEPS)
    try:
        env.reset(seed=SEED)
        last = run(env, COUNTDOWN_MAX_STEPS)[-1]
    finally:
        env.close()
    assert last.terminated.all() and last.truncated.all()


def test_auto_reset_and_final_observations(vectorization):
    # stagger: env 0 (seed 10) terminates at t=3, env 1 (seed 11) at t=4.
    env = make_countdown(vectorization, terminate_at=3, stagger=True)
    try:
        first = env.reset(seed=SEED)
        results = run(env, 5)
    finally:
        env.close()
    assert first.tolist() == [[0.0, 10.0], [0.0, 11.0]]
    assert first.dtype == torch.float32
    r1, r2, r3, r4, r5 = results
    # Nothing ended: no final observations.
    assert r1.final_obs is None and r2.final_obs is None and r5.final_obs is None
    assert r2.obs.tolist() == [[2.0, 10.0], [2.0, 11.0]]
    # Env 0 ended at t=3: its returned obs is the reset obs, its final obs the true last one;
    # env 1 did not end, so its final_obs row repeats its obs.
    assert r3.terminated.tolist() == [True, False]
    assert r3.obs.tolist() == [[0.0, 10.0], [3.0, 11.0]]
    assert r3.final_obs.tolist() == [[3.0, 10.0], [3.0, 11.0]]
    assert torch.equal(r3.final_obs[1], r3.obs[1])
    # Env 1 ended at t=4 while env 0 runs its next episode.
    assert r4.terminated.tolist() == [False, True]
    assert r4.obs.tolist() == [[1.0, 10.0], [0.0, 11.0]]
    assert r4.final_obs.tolist() == [[1.0, 10.0], [4.0, 11.0]]
    assert r5.obs.tolist() == [[2.0, 10.0], [1.0, 11.0]]
    assert all(r.rewards.tolist() == [1.0, 1.0] for r in results)


def test_final_observation_of_a_truncated_episode(vectorization):
    env = make_countdown(vectorization)
    try:
        env.reset(seed=SEED)
        last = run(env, COUNTDOWN_MAX_STEPS)[-1]
    finally:
        env.close()
    assert last.truncated.all()
    assert last.obs.tolist() == [[0.0, 10.0], [0.0, 11.0]]
    assert last.final_obs.tolist() == [[6.0, 10.0], [6.0, 11.0]]


@pytest.mark.parametrize("where", ["obs", "reward"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_data_raises_env_error_naming_index_and_step(where, value):
    # Only env 1 (seed 11) produces the bad value, at its 2nd step.
    env = make_countdown("sync", nan_at=2, nan_in=where, nan_seed=SEED + 1, nan_value=value)
    try:
        env.reset(seed=SEED)
        env.step(torch.zeros(2, 1))
        with pytest.raises(EnvError) as info:
            env.step(torch.zeros(2, 1))
    finally:
        env.close()
    message = str(info.value)
    assert ("observation" if where == "obs" else "reward") in message
    assert "step 2" in message
    assert "env index [1]" in message
    assert "\n" not in message


def test_non_finite_observation_raises_in_async_mode():
    env = make_countdown("async", nan_at=1, nan_seed=SEED)
    try:
        env.reset(seed=SEED)
        with pytest.raises(EnvError, match=r"step 1 in env index \[0\]"):
            env.step(torch.zeros(2, 1))
    finally:
        env.close()


def test_non_finite_final_observation_raises():
    # NaN on the step the episode is truncated: it appears only in the final observation.
    env = make_countdown("sync", nan_at=COUNTDOWN_MAX_STEPS, nan_seed=SEED)
    try:
        env.reset(seed=SEED)
        run(env, COUNTDOWN_MAX_STEPS - 1)
        with pytest.raises(EnvError, match=r"final observation .* env index \[0\]"):
            env.step(torch.zeros(2, 1))
    finally:
        env.close()


def test_unknown_env_id_suggests_close_matches():
    with pytest.raises(EnvError) as info:
        check_env_id("Pendulm-v1")
    assert "'Pendulm-v1'" in str(info.value)
    assert "did you mean Pendulum-v1" in str(info.value)
    with pytest.raises(EnvError, match="did you mean.*CartPole-v1"):
        make_env(EnvConfig(id="CartPole-v9", num_envs=1))


def test_env_id_with_module_prefix_imports_the_module():
    # gym.make("module:id") imports the module (which registers the id); so must the check.
    check_env_id("gymnasium.envs.classic_control:Pendulum-v1")
    check_env_id(f"ppokit_test_envs:{COUNTDOWN}")
    with pytest.raises(EnvError, match="no_such_module_xyz"):
        check_env_id("no_such_module_xyz:Pendulum-v1")


# ---------------------------------------------------------------------------------------------
# End to end: the trainer's rollout bootstraps truncated steps from V(final observation)
# ---------------------------------------------------------------------------------------------


def countdown_config(tmp_path, **env_kwargs) -> TrainConfig:
    cfg = TrainConfig()
    cfg.env = replace(cfg.env, id=COUNTDOWN, num_envs=2, kwargs=dict(env_kwargs))
    cfg.algo = replace(
        cfg.algo,
        num_steps=16,
        num_minibatches=2,
        num_epochs=1,
        gamma=0.9,
        lam=0.8,
        scale_rewards=False,
    )
    cfg.total_steps = 64
    cfg.seed = 3
    cfg.device = "cpu"
    cfg.eval.episodes = 0
    cfg.log = replace(cfg.log, root=str(tmp_path), progress=False)
    return cfg


@torch.no_grad()
def test_truncated_steps_bootstrap_from_final_observation(tmp_path):
    cfg = countdown_config(tmp_path)
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    try:
        ppo, model, b = trainer.ppo, trainer.model, trainer.ppo.buffer
        obs = trainer.collect(trainer.env.reset(seed=cfg.seed))
        assert ppo.rollout_full
        T = cfg.algo.num_steps

        def value(raw: torch.Tensor) -> torch.Tensor:
            return model.value(model.normalize(raw))

        # Countdown truncates at t=6, 12: buffer steps 5 and 11 of both envs.
        truncated_steps = [t for t in range(T) if b.truncated[t].any()]
        assert truncated_steps == [5, 11]
        assert b.truncated[truncated_steps].all() and not b.terminated.any()
        seeds = torch.tensor([cfg.seed, cfg.seed + 1], dtype=torch.float32)
        final_obs = torch.stack([torch.full((2,), 6.0), seeds], dim=1)  # [t=6, seed] per env
        reset_obs = torch.stack([torch.zeros(2), seeds], dim=1)
        v_final, v_reset = value(final_obs), value(reset_obs)
        assert (v_final - v_reset).abs().min() > 1e-4, "test needs V(final) != V(reset)"
        for t in truncated_steps:
            torch.testing.assert_close(b.bootstrap_values[t], v_final)
            assert torch.equal(b.obs[t + 1], reset_obs)  # the next stored obs is the reset one

        ppo.finish_rollout(obs)
        values = value(b.obs.flatten(0, 1)).view(T, 2)
        next_values = torch.cat([values[1:], value(obs).unsqueeze(0)])
        for t in truncated_steps:
            next_values[t] = v_final
        expected_adv, expected_ret = compute_gae(
            b.rewards, values, next_values, b.terminated, b.dones, cfg.algo.gamma, cfg.algo.lam
        )
        torch.testing.assert_close(b.values, values)
        torch.testing.assert_close(b.advantages, expected_adv)
        torch.testing.assert_close(b.returns, expected_ret)
        # At a truncated step (episode cut, no recursion across it): A = r + gamma V(final) - V.
        t = truncated_steps[0]
        torch.testing.assert_close(
            b.advantages[t], b.rewards[t] + cfg.algo.gamma * v_final - values[t]
        )
    finally:
        trainer.env.close()


@torch.no_grad()
def test_terminated_steps_do_not_bootstrap(tmp_path):
    cfg = countdown_config(tmp_path, terminate_at=4)
    trainer = Trainer(cfg, run_dir=tmp_path / "run")
    try:
        b = trainer.ppo.buffer
        obs = trainer.collect(trainer.env.reset(seed=cfg.seed))
        terminated_steps = [t for t in range(cfg.algo.num_steps) if b.terminated[t].any()]
        assert terminated_steps == [3, 7, 11, 15]
        assert not b.truncated.any()
        trainer.ppo.finish_rollout(obs)
        for t in terminated_steps:
            torch.testing.assert_close(b.advantages[t], b.rewards[t] - b.values[t])
    finally:
        trainer.env.close()
