"""TorchVecEnv: batched tensor simulators behind VecEnv, with no host reads per step."""

from __future__ import annotations

import csv
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from ppokit.algo.accel import NUMPY_MAX_ENVS
from ppokit.algo.ppo import PPO
from ppokit.config import EnvConfig, TrainConfig, validate
from ppokit.envs import make_env
from ppokit.envs.reference import POINT_MASS_ID
from ppokit.envs.torch_env import SingleEnvView, TorchVecEnv
from ppokit.errors import EnvError
from ppokit.nn.actor_critic import ActorCritic


class FakeSim:
    """A TensorSim with awkward dtypes: float64 obs groups, long flags, [N, 1] rewards.

    Every env's episode lasts `length` steps and ends as a truncation (time-out); obs carry the
    step count. `final` controls whether extras carry final observations; `rsl_rl` returns the
    4-tuple (obs, rewards, dones, extras["time_outs"])."""

    def __init__(self, num_envs=4, length=3, final=True, rsl_rl=False, nan_at=None):
        self.num_envs, self.device, self.length = num_envs, "cpu", length
        self.final, self.rsl_rl, self.nan_at = final, rsl_rl, nan_at
        self.single_observation_space = gym.spaces.Dict(
            {
                "policy": gym.spaces.Box(-np.inf, np.inf, (2,), np.float32),
                "critic": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
            }
        )
        self.single_action_space = gym.spaces.Box(-1, 1, (1,), np.float32)
        self.t = torch.zeros(num_envs, dtype=torch.float64)
        self.calls = 0

    def _obs(self, t):
        return {
            "policy": torch.stack([t, -t], 1),
            "critic": torch.stack([t, t, t], 1),
        }

    def reset(self, seed=None):
        self.t = torch.zeros(self.num_envs, dtype=torch.float64)
        return self._obs(self.t), {}

    def step(self, actions):
        self.calls += 1
        t = self.t + 1
        ended = t >= self.length
        final = self._obs(t)
        self.t = torch.where(ended, 0.0, t)
        obs = self._obs(self.t)
        if self.nan_at is not None and self.calls == self.nan_at:
            obs["policy"][2, 0] = float("nan")
        rewards = torch.ones(self.num_envs, 1, dtype=torch.float64)
        extras = {"final_obs": final} if self.final else {}
        if self.rsl_rl:
            extras["time_outs"] = ended
            return obs, rewards, ended.long(), extras
        return obs, rewards, torch.zeros_like(ended).long(), ended.long(), extras


def test_groups_dtypes_and_final_observations():
    env = TorchVecEnv(FakeSim(), obs_groups="policy")
    assert env.observation_space == FakeSim().single_observation_space["policy"]
    obs = env.reset(seed=0)
    assert obs.dtype == torch.float32 and obs.shape == (4, 2)
    for _ in range(2):
        step = env.step(torch.zeros(4, 1))
    step = env.step(torch.zeros(4, 1))
    assert step.rewards.shape == (4,) and step.rewards.dtype == torch.float32
    assert step.truncated.dtype == torch.bool and step.truncated.all()
    assert not step.terminated.any()
    assert torch.equal(step.obs, torch.zeros(4, 2))  # auto-reset
    assert torch.equal(step.final_obs, torch.tensor([[3.0, -3.0]] * 4))
    assert not step.bootstrap_pre_step

    both = TorchVecEnv(FakeSim(), obs_groups=["policy", "critic"])
    assert isinstance(both.observation_space, gym.spaces.Dict)
    obs = both.reset()
    assert set(obs) == {"policy", "critic"} and obs["critic"].shape == (4, 3)


def test_unknown_group_is_named():
    with pytest.raises(EnvError, match="no observation group 'actor'.*critic, policy"):
        TorchVecEnv(FakeSim(), obs_groups="actor")


def test_without_final_observations_the_step_asks_for_the_pre_step_bootstrap():
    env = TorchVecEnv(FakeSim(final=False), obs_groups="policy")
    env.reset()
    step = env.step(torch.zeros(4, 1))
    assert step.final_obs is None and step.bootstrap_pre_step


def test_rsl_rl_dones_and_time_outs_become_truncations():
    env = TorchVecEnv(FakeSim(rsl_rl=True, final=False), obs_groups="policy")
    env.reset()
    steps = [env.step(torch.zeros(4, 1)) for _ in range(3)]
    assert not any(s.terminated.any() for s in steps)
    assert [bool(s.truncated.all()) for s in steps] == [False, False, True]


def test_nan_is_reported_once_per_rollout_with_env_and_step():
    env = TorchVecEnv(FakeSim(nan_at=2), obs_groups="policy", name="fake")
    env.reset()
    for _ in range(4):
        env.step(torch.zeros(4, 1))  # no host read: nothing raised yet
    with pytest.raises(
        EnvError, match=r"fake contain NaN/inf \(first at vector step 2, in env index \[2\]\)"
    ):
        env.check_finite()
    env.check_finite()  # cleared


class HostReads(TorchFunctionMode):
    """Counts the tensor operations that read a tensor on the host. On CUDA each one is a
    host-device synchronisation; on the CPU this finds them all the same."""

    READS = {"item", "tolist", "numpy", "cpu", "nonzero", "__bool__", "__float__", "__int__",
             "__index__", "argwhere", "masked_select", "unique"}  # fmt: skip

    def __init__(self) -> None:
        super().__init__()
        self.reads: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.READS:
            self.reads.append(name)
        if name == "__getitem__" and any(
            isinstance(a, torch.Tensor) and a.dtype == torch.bool for a in _flat(args[1:])
        ):
            self.reads.append("boolean-mask indexing")
        return func(*args, **(kwargs or {}))


def _flat(items):
    for item in items:
        if isinstance(item, (tuple, list)):
            yield from _flat(item)
        else:
            yield item


def reference_ppo(num_envs: int, device: str = "cpu", **env_kwargs) -> tuple[PPO, TorchVecEnv]:
    cfg = TrainConfig()
    cfg.env.id, cfg.env.num_envs, cfg.env.kwargs = POINT_MASS_ID, num_envs, env_kwargs
    cfg.algo.num_steps, cfg.algo.num_minibatches = 8, 2
    validate(cfg)
    env = make_env(cfg.env, device)
    model = ActorCritic(env.observation_space, env.action_space, cfg.policy).to(device)
    return PPO(model, cfg, torch.device(device), total_updates=2), env


def test_host_reads_are_counted():
    x = torch.arange(4.0)
    with HostReads() as mode:
        x.sum().item()
        if x.sum() > 0:
            x[x > 1]
    assert mode.reads == ["item", "__bool__", "boolean-mask indexing"]


def test_the_rollout_loop_reads_nothing_on_the_host():
    ppo, env = reference_ppo(64)
    obs = env.reset(seed=1)
    with HostReads() as mode:
        while not ppo.rollout_full:
            step = env.step(ppo.act(obs))
            ppo.record(step)
            obs = step.obs
    assert mode.reads == []
    env.check_finite()  # the one read per rollout
    ppo.finish_rollout(obs)
    ppo.update()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (sync debug mode)")
def test_the_rollout_loop_does_not_synchronise_on_cuda():
    ppo, env = reference_ppo(4096, device="cuda")
    obs = env.reset(seed=1)
    ppo.act(obs)  # warm-up: lazy CUDA initialisation may synchronise once
    ppo.buffer.reset()
    torch.cuda.set_sync_debug_mode("error")
    try:
        while not ppo.rollout_full:
            step = env.step(ppo.act(obs))
            ppo.record(step)
            obs = step.obs
    finally:
        torch.cuda.set_sync_debug_mode("default")
    env.check_finite()
    ppo.finish_rollout(obs)
    ppo.update()


def test_auto_act_backend_is_torch_for_batched_envs():
    ppo, _ = reference_ppo(NUMPY_MAX_ENVS + 1)
    assert (ppo.paths.act, ppo.paths.act_why) == ("torch", f"{NUMPY_MAX_ENVS + 1} envs > 16")
    assert ppo.accel.act is None  # the reference: ActorCritic.act
    ppo, _ = reference_ppo(NUMPY_MAX_ENVS)
    assert ppo.paths.act == "numpy" and ppo.accel.act is not None


def test_pre_step_bootstrap_uses_the_value_of_the_observation_acted_on():
    cfg = TrainConfig()
    cfg.env.num_envs, cfg.algo.scale_rewards, cfg.policy.normalize_obs = 4, False, False
    cfg.algo.num_steps, cfg.algo.num_minibatches = 3, 1
    cfg.algo.gamma, cfg.algo.lam = 0.9, 1.0
    env = TorchVecEnv(FakeSim(final=False), obs_groups="policy")
    model = ActorCritic(env.observation_space, env.action_space, cfg.policy)
    ppo = PPO(model, cfg, torch.device("cpu"), total_updates=1)
    obs = env.reset()
    while not ppo.rollout_full:
        step = env.step(ppo.act(obs))
        ppo.record(step)
        obs = step.obs
    ppo.finish_rollout(obs)
    b = ppo.buffer
    # Every env is truncated at step 2 (length 3): A_2 = r_2 + gamma V(s_2) - V(s_2).
    expected = 1.0 + 0.9 * b.values[2] - b.values[2]
    torch.testing.assert_close(b.advantages[2], expected)
    assert b.truncated[2].all() and not b.terminated.any()


def test_finite_horizon_turns_truncation_into_termination():
    ppo, env = reference_ppo(8)
    ppo.finite_horizon = True
    obs = env.reset()
    env.sim.elapsed.fill_(99)  # every episode hits its time limit on the next step
    step = env.step(ppo.act(obs))
    ppo.record(step)
    assert step.truncated.any()
    assert torch.equal(ppo.buffer.terminated[0], step.terminated | step.truncated)


def test_make_env_builds_registered_tasks_on_the_device():
    env = make_env(EnvConfig(id=POINT_MASS_ID, num_envs=5, max_episode_steps=7), "cpu")
    assert isinstance(env, TorchVecEnv) and env.num_envs == 5
    assert env.sim.max_episode_steps == 7
    with pytest.raises(EnvError, match="cannot build"):
        make_env(EnvConfig(id=POINT_MASS_ID, num_envs=2, kwargs={"colour": 1}), "cpu")


def test_single_env_view_is_a_gymnasium_env_ending_on_the_final_observation():
    env = gym.make(POINT_MASS_ID, max_episode_steps=5)
    assert isinstance(env.unwrapped, SingleEnvView)
    obs, _ = env.reset(seed=3)
    assert obs.shape == (6,) and obs.dtype == np.float32
    for _ in range(5):
        obs, reward, terminated, truncated, _ = env.step(np.zeros(2, np.float32))
    assert truncated and not terminated and 0 < reward <= 1
    assert np.allclose(obs[2:4], 0.0)  # zero force from rest: still at rest, not reset
    assert gym.spec(POINT_MASS_ID).max_episode_steps == 100


class LoggingSim(FakeSim):
    """FakeSim reporting extras["log"]: the step count (a tensor), its half (a float), and a
    nested group that is not a scalar."""

    def step(self, actions):
        out = super().step(actions)
        n = float(self.calls)
        out[-1]["log"] = {"calls": torch.full((self.num_envs,), n), "half": n / 2, "group": {}}
        return out


def test_env_log_values_are_logged_as_means_over_each_rollout(tiny_config, tmp_path):
    """infos["log"] (Isaac Lab's extras["log"]) becomes env/<name> in metrics.csv: the mean of
    what the steps of that update's rollout reported (steps 1..16, then 17..32, ...)."""
    from ppokit.trainer import Trainer

    cfg = tiny_config(total_steps=4 * 2 * 16)  # 4 updates of 2 envs x 16 steps
    cfg.env = dataclasses.replace(cfg.env, id="fake", num_envs=2)
    sim = LoggingSim(num_envs=2, length=5)
    Trainer(cfg, run_dir=tmp_path / "run", env=TorchVecEnv(sim, obs_groups="policy")).train()
    with open(tmp_path / "run" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["env/calls"]) for r in rows] == [8.5, 24.5, 40.5, 56.5]
    assert [float(r["env/half"]) for r in rows] == [4.25, 12.25, 20.25, 28.25]
    assert "env/group" not in rows[0]
