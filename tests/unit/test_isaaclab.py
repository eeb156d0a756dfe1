"""IsaacLabVecEnv against a fake with Isaac Lab's shapes (Isaac Lab cannot be installed here)."""

from __future__ import annotations

from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.config import TrainConfig, validate
from ppokit.envs.isaaclab import IsaacLabVecEnv
from ppokit.errors import ConfigError, EnvError
from ppokit.trainer import Trainer


class FakeIsaacLabEnv:
    """ManagerBasedRLEnv's interface: obs groups {"policy": [N, 48], "critic": [N, 60]}, an
    unbounded Box action space [12], time-outs as `truncated`, no final observations, extras
    with episode logs. The dynamics are a damped linear system driven by the actions."""

    def __init__(self, num_envs=16, episode_length=5, finite_horizon=False):
        self.unwrapped = self
        self.num_envs, self.device = num_envs, "cpu"
        self.cfg = SimpleNamespace(is_finite_horizon=finite_horizon)
        self.spec = SimpleNamespace(id="Isaac-Fake-v0")
        self.single_observation_space = gym.spaces.Dict(
            {
                "policy": gym.spaces.Box(-np.inf, np.inf, (48,), np.float32),
                "critic": gym.spaces.Box(-np.inf, np.inf, (60,), np.float32),
            }
        )
        self.single_action_space = gym.spaces.Box(-np.inf, np.inf, (12,), np.float32)
        self.episode_length_buf = torch.zeros(num_envs, dtype=torch.long)
        self.max_episode_length = episode_length
        self.state = torch.zeros(num_envs, 48)
        self.seeds: list[int | None] = []
        self.closed = False

    def _obs(self):
        return {
            "policy": self.state.clone(),
            "critic": torch.cat([self.state, self.state[:, :12]], 1),
        }

    def reset(self, seed=None, options=None):
        self.seeds.append(seed)
        generator = torch.Generator().manual_seed(seed or 0)
        self.state = torch.randn(self.num_envs, 48, generator=generator)
        self.episode_length_buf.zero_()
        return self._obs(), {}

    def step(self, action):
        assert action.shape == (self.num_envs, 12) and action.device.type == "cpu"
        self.state = 0.9 * self.state + 0.1 * action.repeat(1, 4)
        reward = -self.state.square().mean(1)
        self.episode_length_buf += 1
        time_outs = self.episode_length_buf >= self.max_episode_length
        fell = self.state[:, 0].abs() > 3.0
        ended = time_outs | fell
        self.state = torch.where(ended.unsqueeze(1), torch.zeros_like(self.state), self.state)
        self.episode_length_buf = torch.where(ended, 0, self.episode_length_buf)
        extras = {"log": {"Episode_Reward/track": reward.mean()}}
        return self._obs(), reward, fell & ~time_outs, time_outs & ~fell, extras

    def close(self):
        self.closed = True


def test_policy_group_by_default_and_shapes():
    env = IsaacLabVecEnv(FakeIsaacLabEnv())
    assert env.num_envs == 16 and env.device == torch.device("cpu")
    assert env.observation_space.shape == (48,) and env.name == "Isaac-Fake-v0"
    obs = env.reset(seed=3)
    assert obs.shape == (16, 48) and env.sim.env.seeds == [3]
    for _ in range(5):
        step = env.step(torch.zeros(16, 12))
    assert step.truncated.all() and not step.terminated.any()
    assert step.final_obs is None and step.bootstrap_pre_step  # rsl_rl's bootstrap
    assert "log" in step.infos
    env.close()
    assert env.sim.env.closed


def test_groups_clip_actions_and_finite_horizon():
    env = IsaacLabVecEnv(
        FakeIsaacLabEnv(finite_horizon=True), obs_groups=["policy", "critic"], clip_actions=1.0
    )
    assert set(env.observation_space.spaces) == {"policy", "critic"}
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (12,), np.float32)
    assert env.finite_horizon


def test_not_an_isaac_lab_env():
    with pytest.raises(EnvError, match="not an Isaac Lab vector env"):
        IsaacLabVecEnv(gym.make("Pendulum-v1"))


def _config(tmp_path, **changes) -> TrainConfig:
    cfg = TrainConfig()
    cfg.env.id, cfg.env.num_envs = "Isaac-Fake-v0", 16
    cfg.algo.num_steps, cfg.algo.num_minibatches, cfg.algo.num_epochs = 8, 2, 2
    cfg.policy.actor_hidden = cfg.policy.critic_hidden = [32]
    cfg.log.root, cfg.log.progress, cfg.log.checkpoint_every = str(tmp_path), False, 0
    cfg.total_steps, cfg.device = 3 * 8 * 16, "cpu"
    for key, value in changes.items():
        section, _, name = key.rpartition(".")
        setattr(getattr(cfg, section) if section else cfg, name, value)
    validate(cfg)
    return cfg


def test_trains_through_the_trainer_with_a_privileged_critic(tmp_path):
    env = IsaacLabVecEnv(FakeIsaacLabEnv(), obs_groups=["policy", "critic"])
    identity = {"type": "identity"}
    cfg = _config(
        tmp_path,
        **{
            "policy.actor_keys": ["policy"],
            "policy.critic_keys": ["policy", "critic"],
            "policy.encoders": {"policy": identity, "critic": identity},
        },
    )
    trainer = Trainer(cfg, env=env)
    assert trainer.model.actor.layers[0].in_features == 48
    assert trainer.model.critic.layers[0].in_features == 108
    result = trainer.train()
    assert result.updates == 3 and result.eval is None  # the final evaluation is skipped
    assert (result.run_dir / "checkpoints" / "latest.pt").is_file()


def test_trainer_refuses_mismatches(tmp_path):
    with pytest.raises(ConfigError, match="finite_horizon=True.*--env.finite_horizon true"):
        Trainer(_config(tmp_path), env=IsaacLabVecEnv(FakeIsaacLabEnv(finite_horizon=True)))
    with pytest.raises(ConfigError, match="has 16 envs.*--env.num_envs 16"):
        Trainer(_config(tmp_path, **{"env.num_envs": 8}), env=IsaacLabVecEnv(FakeIsaacLabEnv()))
