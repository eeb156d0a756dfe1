"""JaxVecEnv against a fake JAX simulator: NumPy arrays speak DLPack as JAX arrays do."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.envs.jax_dlpack import JaxVecEnv, brax_observation_space, to_torch
from ppokit.errors import EnvError


class FakeBraxEnv:
    """A Brax training-wrapped env in NumPy: batched reset over keys [N, 2], State with obs
    (a dict, as MuJoCo Playground's), reward, done and info["truncation"] as float32 arrays;
    episodes last 3 steps (time limit) unless obs[0] leaves [-2, 2] (termination)."""

    observation_size = {"state": 4, "privileged_state": (6,)}
    action_size = 2

    def reset(self, keys):
        n = keys.shape[0]
        self.n = n
        state = np.zeros((n, 4), np.float32)
        return self._state(
            state,
            np.zeros(n, np.float32),
            np.zeros(n, np.float32),
            np.zeros(n, np.float32),
            np.zeros(n, np.float32),
        )

    def _state(self, x, reward, done, truncation, steps):
        obs = {"state": x, "privileged_state": np.concatenate([x, x[:, :2]], 1)}
        info = {"truncation": truncation, "steps": steps}
        return SimpleNamespace(obs=obs, reward=reward, done=done, info=info, x=x)

    def step(self, state, action):
        assert isinstance(action, np.ndarray) and action.shape == (self.n, 2)
        x = state.x + np.concatenate([action, action], 1)
        steps = state.info["steps"] + 1
        terminated = np.abs(x[:, 0]) > 2
        time_limit = (steps >= 3) & ~terminated
        done = terminated | time_limit
        x = np.where(done[:, None], 0.0, x).astype(np.float32)
        steps = np.where(done, 0, steps).astype(np.float32)
        reward = -np.abs(x).sum(1).astype(np.float32)
        return self._state(x, reward, done.astype(np.float32), time_limit.astype(np.float32), steps)


@pytest.fixture
def fake_jax(monkeypatch):
    """The few jax functions from_brax calls, in NumPy."""
    random = SimpleNamespace(
        PRNGKey=lambda seed: np.array([0, seed], np.uint32),
        split=lambda key, n: np.stack([key + i for i in range(n)]),
    )
    module = SimpleNamespace(jit=lambda f: f, random=random)
    monkeypatch.setitem(sys.modules, "jax", module)
    return module


def test_dlpack_shares_memory():
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    tensor = to_torch(array)
    assert tensor.data_ptr() == array.ctypes.data  # no copy
    assert np.from_dlpack(tensor).ctypes.data == tensor.data_ptr()


def test_from_brax_groups_flags_and_actions(fake_jax):
    env = JaxVecEnv.from_brax(FakeBraxEnv(), num_envs=4, obs_groups="state", to_jax=np.from_dlpack)
    assert env.device == torch.device("cpu") and env.num_envs == 4
    assert env.observation_space.shape == (4,)
    assert env.action_space == gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    obs = env.reset(seed=0)
    assert obs.shape == (4, 4) and obs.dtype == torch.float32
    actions = torch.tensor([[2.5, 0.0], [0.1, 0.0], [0.1, 0.0], [0.1, 0.0]])
    step = env.step(actions)
    assert step.terminated.tolist() == [True, False, False, False]
    assert not step.truncated.any() and step.bootstrap_pre_step and step.final_obs is None
    for _ in range(2):
        step = env.step(actions * 0.1)
    assert step.truncated.tolist() == [False, True, True, True]
    assert not step.terminated.any()
    torch.testing.assert_close(step.obs[1:], torch.zeros(3, 4))


def test_dict_groups_and_spaces():
    space = brax_observation_space(FakeBraxEnv.observation_size)
    assert space["privileged_state"].shape == (6,) and space["state"].shape == (4,)
    fake = FakeBraxEnv()
    env = JaxVecEnv(
        lambda seed: fake.reset(np.zeros((3, 2))),
        fake.step,
        3,
        space,
        gym.spaces.Box(-1, 1, (2,), np.float32),
        to_jax=np.from_dlpack,
    )
    obs = env.reset(seed=1)
    assert set(obs) == {"state", "privileged_state"} and obs["privileged_state"].shape == (3, 6)


def test_step_before_reset_is_an_error():
    fake = FakeBraxEnv()
    env = JaxVecEnv(
        lambda seed: fake.reset(np.zeros((2, 2))),
        fake.step,
        2,
        brax_observation_space(FakeBraxEnv.observation_size),
        gym.spaces.Box(-1, 1, (2,), np.float32),
        device="cpu",
        to_jax=np.from_dlpack,
    )
    with pytest.raises(EnvError, match="before reset"):
        env.step(torch.zeros(2, 2))
