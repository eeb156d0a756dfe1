"""The Ant velocity-command task: dict observation layout, ray-cast height scan over the
heightfield, commands resampled per episode, the tracking reward, termination; the depth variant
renders headless."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import ppokit.envs  # noqa: F401  (registers the ids)
from ppokit.envs.locomotion import ANT_LOCOMOTION, ANT_LOCOMOTION_DEPTH, NOMINAL_HEIGHT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture
def env():
    e = gym.make(ANT_LOCOMOTION, terrain_seed=3)
    yield e
    e.close()


def test_observation_is_a_dict_matching_its_space(env):
    obs, _ = env.reset(seed=0)
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert set(obs) == {"proprioception", "privileged", "commands", "height_scan"}
    assert obs["proprioception"].shape == (30,) and obs["height_scan"].shape == (63,)
    assert space.contains(obs)
    for _ in range(5):
        obs, *_ = env.step(env.action_space.sample())
        assert space.contains(obs)


def test_height_scan_reads_the_heightfield_by_ray_casts(env):
    env.reset(seed=1)
    u = env.unwrapped
    # Straight-down rays hit the terrain at its heightfield height (bilinear between cells).
    for x, y in [(0.0, 0.0), (3.1, -2.7), (-5.5, 4.2)]:
        n = u._heights.shape[0]
        col = (x + 12.0) / 24.0 * (n - 1)
        row = (y + 12.0) / 24.0 * (n - 1)
        nearest = u._heights[int(round(row)), int(round(col))]
        assert abs(u.terrain_height(x, y) - nearest) < 0.02
    # The scan is the torso height above each point minus the nominal height.
    obs = u._get_obs()
    pos = u.data.xpos[u._torso]
    expected_center = pos[2] - NOMINAL_HEIGHT - u.terrain_height(pos[0], pos[1])
    center = obs["height_scan"].reshape(9, 7)[3, 3]  # the grid point under the torso
    assert center == pytest.approx(expected_center, abs=0.01)
    # Lifting the robot by 0.1 m raises every scan value by 0.1 (the terrain stays put).
    qpos = u.data.qpos.copy()
    qpos[2] += 0.1
    u.set_state(qpos, u.data.qvel.copy())
    np.testing.assert_allclose(u._get_obs()["height_scan"], obs["height_scan"] + 0.1, atol=2e-3)


def test_commands_are_resampled_per_episode_within_range(env):
    commands = []
    for seed in range(6):
        obs, _ = env.reset(seed=seed)
        commands.append(obs["commands"])
    commands = np.array(commands)
    assert len({tuple(c) for c in commands}) == 6
    low, high = env.observation_space["commands"].low, env.observation_space["commands"].high
    assert (commands >= low).all() and (commands <= high).all()


def test_commands_are_resampled_every_resample_every_steps():
    env = gym.make(ANT_LOCOMOTION, terrain_seed=0, resample_every=3)
    try:
        obs, _ = env.reset(seed=0)
        seen = [obs["commands"]]
        for _ in range(4):
            obs, *_ = env.step(np.zeros(8))
            seen.append(obs["commands"])
        # The command of the reset holds for 3 steps; the observation after the 3rd shows the
        # next command (which the 4th step is rewarded for), and that one holds on.
        assert np.array_equal(seen[0], seen[1]) and np.array_equal(seen[0], seen[2])
        assert not np.array_equal(seen[2], seen[3])
        assert np.array_equal(seen[3], seen[4])
    finally:
        env.close()


def test_reward_tracks_the_command(env):
    env.reset(seed=0)
    u = env.unwrapped
    u.command = np.zeros(3)
    _, reward, *_, info = env.step(np.zeros(8))
    # Standing still on a zero command: tracking terms near their maxima (1 + 0.5).
    assert info["tracking_lin_vel"] > 0.8 and info["tracking_ang_vel"] > 0.4
    u.command = np.array([1.0, 0.0, 0.0])
    _, _, *_, info2 = env.step(np.zeros(8))
    assert info2["tracking_error_xy"] > 0.8 and info2["tracking_lin_vel"] < 0.1


def test_falling_over_terminates(env):
    env.reset(seed=0)
    u = env.unwrapped
    qpos, qvel = u.data.qpos.copy(), u.data.qvel.copy()
    qpos[3:7] = [0.0, 1.0, 0.0, 0.0]  # upside down
    u.set_state(qpos, qvel)
    *_, terminated, truncated, _ = env.step(np.zeros(8))
    assert terminated and not truncated


@pytest.mark.slow
def test_depth_variant_renders_headless():
    env = gym.make(ANT_LOCOMOTION_DEPTH, terrain_seed=0)
    try:
        obs, _ = env.reset(seed=0)
        depth = obs["depth"]
        assert depth.shape == (1, 24, 32) and depth.dtype == np.float32
        assert env.observation_space.contains(obs)
        # The camera looks forward and down: the ground is near at the bottom, far at the top.
        assert depth[0, -1].mean() < depth[0, 8].mean() <= 4.0
        assert 0.2 < depth.min() < 1.5
    finally:
        env.close()


@pytest.mark.parametrize(
    "preset",
    [
        "ant-locomotion",
        "ant-locomotion-gru",
        "ant-locomotion-depth-gru",
        "cartpole-masked-gru",
        "pendulum-masked-gru",
    ],
)
def test_presets_build_their_model_and_act(preset):
    import torch

    from ppokit.algo.ppo import PPO
    from ppokit.config import load_config
    from ppokit.envs import GymVecEnv
    from ppokit.nn.actor_critic import ActorCritic

    overrides = {"env.num_envs": 2, "algo.num_minibatches": 1, "algo.minibatch_size": None}
    cfg = load_config(preset, overrides=overrides)
    env = GymVecEnv.from_config(cfg.env)
    try:
        model = ActorCritic(env.observation_space, env.action_space, cfg.policy)
        ppo = PPO(model, cfg, torch.device("cpu"), 10)
        obs = env.reset(seed=0)
        step = env.step(ppo.act(obs))
        ppo.record(step)
        assert ppo.buffer.step == 1
    finally:
        env.close()
