"""--precision bf16 (an accelerator): the update's forward and backward under bfloat16 autocast,
fp32 weights; the same update as the reference (fp32) up to bf16 rounding."""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ppokit.algo.accel.precision import autocast, check_precision
from ppokit.algo.ppo import PPO
from ppokit.config import PolicyConfig, TrainConfig, validate
from ppokit.errors import ConfigError
from ppokit.nn.actor_critic import ActorCritic


def test_autocast_contexts():
    x, w = torch.randn(4, 3), torch.randn(5, 3)
    with autocast("fp32", torch.device("cpu")):
        assert F.linear(x, w).dtype == torch.float32
    with autocast("bf16", torch.device("cpu")):
        assert F.linear(x, w).dtype == torch.bfloat16
    with pytest.raises(ConfigError, match="CUDA and CPU"):
        check_precision("bf16", torch.device("meta"))
    with pytest.raises(ConfigError, match="not one of"):
        check_precision("fp16", torch.device("cpu"))


def _spy_linear_dtypes(monkeypatch) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    real = F.linear

    def linear(x, weight, bias=None):
        out = real(x, weight, bias)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(F, "linear", linear)
    return seen


def _ppo(memory: str, precision: str) -> PPO:
    cfg = TrainConfig(precision=precision)
    cfg.env.num_envs = 4
    cfg.algo.num_steps, cfg.algo.num_minibatches, cfg.algo.bptt_length = 8, 2, 4
    cfg.policy = PolicyConfig(actor_hidden=[16], critic_hidden=[16], memory=memory, memory_hidden=8)
    validate(cfg)
    torch.manual_seed(0)
    model = ActorCritic(
        gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        gym.spaces.Box(-1, 1, (2,), np.float32),
        cfg.policy,
    )
    return PPO(model, cfg, torch.device("cpu"), total_updates=4)


@pytest.mark.parametrize("memory", ["none", "gru"])
def test_bf16_update_keeps_fp32_master_weights(collect, monkeypatch, memory):
    fp32, bf16 = _ppo(memory, "fp32"), _ppo(memory, "bf16")
    assert bf16.paths.precision == "bf16" and fp32.paths.precision == "fp32"
    torch.manual_seed(3)
    log = collect(fp32)
    torch.manual_seed(3)
    collect(bf16)
    fp32.finish_rollout(log["next_obs"])
    bf16.finish_rollout(log["next_obs"])
    # The rollout's inference stays fp32: stored log-probs and GAE targets are identical.
    assert torch.equal(fp32.buffer.log_probs, bf16.buffer.log_probs)
    torch.testing.assert_close(fp32.buffer.returns, bf16.buffer.returns)
    before = copy.deepcopy(bf16.model.state_dict())
    torch.manual_seed(4)
    fp32.update()
    seen = _spy_linear_dtypes(monkeypatch)
    torch.manual_seed(4)
    metrics = bf16.update()
    assert seen and set(seen) == {torch.bfloat16}  # every layer of the loss ran in bf16
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    for state in bf16.optimizer.state.values():
        assert state["exp_avg"].dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    changed = [not torch.equal(before[k], v) for k, v in bf16.model.state_dict().items()]
    assert any(changed)
    # Same direction as the fp32 update, within bf16 rounding.
    for (name, a), b in zip(fp32.model.named_parameters(), bf16.model.parameters()):
        delta_a, delta_b = a - before[name], b - before[name]
        if delta_a.norm() > 1e-6:
            cosine = F.cosine_similarity(delta_a.flatten(), delta_b.flatten(), dim=0)
            assert cosine > 0.9, name
