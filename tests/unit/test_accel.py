"""The one selection point of the accelerators (`choose_paths`), the line it gives the Trainer,
and the compiled act step against its reference, `ActorCritic.act`."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppokit
import ppokit.algo.accel as accel
from ppokit.algo.accel import NUMPY_MAX_ENVS, choose_paths
from ppokit.config import PolicyConfig, TrainConfig
from ppokit.errors import ConfigError
from ppokit.nn.actor_critic import ActorCritic
from ppokit_testutil import failing_compile, tiny_train_config

OBS = gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
ACT = gym.spaces.Box(-1, 1, (2,), np.float32)
CPU = torch.device("cpu")


def _choose(num_envs=8, memory="none", activation="tanh", precision="fp32", **algo):
    cfg = TrainConfig(precision=precision)
    cfg.env.num_envs = num_envs
    for key, value in algo.items():
        setattr(cfg.algo, key, value)
    policy = PolicyConfig(actor_hidden=[8], critic_hidden=[8], memory=memory, activation=activation)
    return choose_paths(cfg, ActorCritic(OBS, ACT, policy), CPU)


def test_each_choice_is_described_with_its_reason(monkeypatch):
    monkeypatch.setattr(accel, "compile_available", lambda device: (True, ""))
    cases = {
        "update: eager (the reference); act: numpy (8 envs <= 16, flat MLP on the CPU)": {},
        f"update: eager (the reference); act: torch ({NUMPY_MAX_ENVS + 1} envs > 16)": {
            "num_envs": NUMPY_MAX_ENVS + 1
        },
        "update: eager (the reference); act: torch (algo.act_backend torch)": {
            "act_backend": "torch"
        },
        "update: eager (the reference); act: torch (recurrent policy)": {"memory": "gru"},
        "update: eager (the reference); act: torch (gelu activation)": {"activation": "gelu"},
        "update: compiled (algo.compile); act: numpy (algo.act_backend numpy)": {
            "compile": True,
            "act_backend": "numpy",
            "num_envs": 64,
        },
        "update: eager (the reference), bf16 autocast (precision bf16); act: compiled"
        " (algo.compile_act)": {"precision": "bf16", "compile_act": True, "num_envs": 64},
        "update: eager (the reference); act: torch (recurrent policy; algo.compile_act: not for"
        " recurrent policies)": {"memory": "gru", "compile_act": True},
    }
    for line, kwargs in cases.items():
        assert _choose(**kwargs).describe() == line, kwargs


def test_impossible_requests_are_config_errors():
    with pytest.raises(ConfigError, match=r"act_backend numpy .* \(recurrent policy\)"):
        _choose(memory="gru", act_backend="numpy")
    with pytest.raises(ConfigError, match="algo.compile does not support recurrent"):
        _choose(memory="gru", compile=True)


def test_a_missing_compiler_is_announced_and_the_reference_runs(monkeypatch):
    monkeypatch.setattr(accel, "compile_available", lambda device: (False, "no C++ compiler"))
    with pytest.warns(UserWarning, match="algo.compile: no C\\+\\+ compiler; running eagerly"):
        paths = _choose(compile=True)
    assert paths.update == "eager" and paths.update_why == "algo.compile: no C++ compiler"


def test_the_trainer_says_which_paths_run(tmp_path, capsys):
    ppokit.train(tiny_train_config(tmp_path))
    out = capsys.readouterr().out.splitlines()
    line = "update: eager (the reference); act: numpy (2 envs <= 16, flat MLP on the CPU)"
    assert out.count(line) == 1


@pytest.mark.slow
@pytest.mark.xdist_group("compile")
def test_compiled_act_equals_the_reference():
    """algo.compile_act: `ActorCritic.act` through torch.compile computes what the eager act
    computes. Inductor draws its own random numbers, so the samples are compared with inductor's
    `fallback_random` (eager's generator); with its own draws each sample is still scored by the
    reference as the compiled act scored it."""
    import torch._dynamo
    import torch._inductor.config

    from ppokit.algo.accel.compiled import compile_available, compiled_act

    assert compile_available(CPU)[0], "torch.compile unavailable: cannot test it here"
    torch.manual_seed(0)
    model = ActorCritic(OBS, ACT, PolicyConfig(actor_hidden=[16], critic_hidden=[16]))
    model.obs_normalizer.update(torch.randn(64, 3) * 2 + 1)
    state = model.initial_state(32)
    obs = [torch.randn(32, 3) * 3 for _ in range(3)]
    torch._dynamo.reset()
    with torch._inductor.config.patch(fallback_random=True), torch.no_grad():
        fast = compiled_act(model)
        for seed, x in enumerate(obs):
            torch.manual_seed(seed)
            ours = fast(x, state)
            torch.manual_seed(seed)
            ref = model.act(x, state)
            for name in ("env_actions", "actions", "log_probs"):
                torch.testing.assert_close(getattr(ours, name), getattr(ref, name))
    torch._dynamo.reset()
    with torch.no_grad():
        fast = compiled_act(model)
        for x in obs:
            ours = fast(x, state)
            mean = model.actor(model.normalize(x))
            scored = model.distribution.log_prob(mean, ours.actions)
            torch.testing.assert_close(ours.log_probs, scored, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(ours.env_actions, model.to_env(ours.actions))
    torch._dynamo.reset()


def test_a_failed_act_compilation_falls_back_to_the_reference_once(monkeypatch):
    from ppokit_testutil import tiny_train_config as cfg_of

    monkeypatch.setattr(accel, "compile_available", lambda device: (True, ""))
    monkeypatch.setattr(torch, "compile", failing_compile)
    cfg = cfg_of(None)
    cfg.algo.compile_act, cfg.algo.act_backend = True, "torch"
    from ppokit.algo.ppo import PPO

    model = ActorCritic(OBS, ACT, cfg.policy)
    ppo = PPO(model, cfg, CPU, total_updates=1)
    assert ppo.paths.act == "compiled"
    obs = torch.randn(cfg.env.num_envs, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.manual_seed(1)
        first = ppo.act(obs)
        torch.manual_seed(1)
        again = ppo.act(obs)
    messages = [str(w.message) for w in caught if "algo.compile_act" in str(w.message)]
    assert len(messages) == 1 and "compilation failed" in messages[0]
    assert ppo.accel.act is None and torch.equal(first, again)
