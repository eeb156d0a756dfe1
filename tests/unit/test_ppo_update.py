"""PPO.finish_rollout and PPO.update: KL early stop, advantage normalization, gradient clipping,
optimizer settings, the KL-adaptive LR, and the observation-normalizer update."""

from __future__ import annotations

import inspect

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppokit.algo.ppo as ppo_module
from ppokit.algo.gae import RewardScaler
from ppokit_testutil import naive_gae


class LossSpy:
    """Wraps ppo_loss (as the update looks it up) and records what each call saw and returned."""

    def __init__(self, monkeypatch, before=None):
        self.calls: list[dict] = []
        self.before = before
        self.real = ppo_module.ppo_loss
        monkeypatch.setattr(ppo_module, "ppo_loss", self)

    def __call__(self, model, mb, *args, **kwargs):
        bound = inspect.signature(self.real).bind(model, mb, *args, **kwargs)
        bound.apply_defaults()
        record = {"mb": mb, "arguments": bound.arguments}
        if self.before is not None:
            self.before(model, mb, record)
        terms = self.real(model, mb, *args, **kwargs)
        record["terms"] = terms
        self.calls.append(record)
        return terms


def _record_step_lrs(ppo) -> list[float]:
    lrs: list[float] = []
    real_step = ppo.optimizer.step

    def step(*args, **kwargs):
        lrs.append(ppo.optimizer.param_groups[0]["lr"])
        return real_step(*args, **kwargs)

    ppo.optimizer.step = step
    return lrs


def _adam_steps(ppo) -> set[float]:
    return {float(ppo.optimizer.state[p]["step"]) for p in ppo.model.parameters()}


def _ready(make_ppo, collect, normalizer_data: torch.Tensor | None = None, **kwargs):
    kwargs = {"num_envs": 4, "num_steps": 8, "num_minibatches": 4, **kwargs}
    ppo = make_ppo(**kwargs)
    if normalizer_data is not None:
        ppo.model.obs_normalizer.update(normalizer_data)
    log = collect(ppo, obs_mean=3.0, obs_std=2.0)
    ppo.finish_rollout(log["next_obs"])
    return ppo, log


# --------------------------------------------------------------------------------------------
# finish_rollout and the stored log-probs
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scale_rewards", [False, True])
def test_finish_rollout_bootstraps_truncation_from_final_obs(make_ppo, collect, scale_rewards):
    ppo = make_ppo(num_envs=4, num_steps=10, num_minibatches=5, scale_rewards=scale_rewards)
    ppo.model.obs_normalizer.update(torch.randn(40, 3) * 2 + 3)
    log = collect(ppo, obs_mean=3.0, obs_std=2.0, end_prob=0.3)
    b = ppo.buffer
    assert b.truncated.any() and b.terminated.any()
    ppo.finish_rollout(log["next_obs"])

    def value(x):
        with torch.no_grad():
            return ppo.model.value(ppo.model.normalize(x)).double().numpy()

    T, N = 10, 4
    v = np.stack([value(o) for o in log["obs"]])
    v_next = np.stack([value(o) for o in log["obs"][1:]] + [value(log["next_obs"])])
    truncated, terminated = b.truncated.numpy(), b.terminated.numpy()
    for t in range(T):
        if truncated[t].any():
            v_next[t] = np.where(truncated[t], value(log["final_obs"][t]), v_next[t])
    rewards = b.rewards.clone()
    if scale_rewards:
        rewards = RewardScaler(N, 0.99).scale_rollout(rewards, b.dones)
    rewards = rewards.double().numpy()
    # gamma 0.99 / lam 0.95: the defaults.
    expected = naive_gae(rewards, v, v_next, terminated, terminated | truncated, 0.99, 0.95)
    np.testing.assert_allclose(b.values.numpy(), v, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.advantages.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.returns.numpy(), expected + v, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("discrete", [False, True])
def test_recomputed_log_probs_equal_stored_before_first_step(
    make_ppo, collect, monkeypatch, discrete
):
    space = gym.spaces.Discrete(5) if discrete else None
    ppo, _ = _ready(
        make_ppo, collect, normalizer_data=torch.randn(50, 3) * 2 + 3, action_space=space
    )
    b = ppo.buffer
    with torch.no_grad():
        obs = ppo.model.normalize(b.obs.flatten(0, 1))
        log_probs, _, _ = ppo.model.evaluate(obs, b.actions.flatten(0, 1))
    assert (log_probs - b.log_probs.flatten()).abs().max().item() <= 1e-6

    def check(model, mb, record):
        if not spy.calls:
            with torch.no_grad():
                lp, _, _ = model.evaluate(mb.obs, mb.actions)
            record["max_diff"] = (lp - mb.log_probs).abs().max().item()

    spy = LossSpy(monkeypatch, before=check)
    ppo.update()
    assert spy.calls[0]["max_diff"] <= 1e-6
    assert spy.calls[0]["terms"].approx_kl.abs().item() <= 1e-6


# --------------------------------------------------------------------------------------------
# KL early stop
# --------------------------------------------------------------------------------------------


def test_kl_early_stop_is_checked_before_the_step_and_ends_the_update(
    make_ppo, collect, monkeypatch
):
    # The first minibatch sees the collecting policy (KL ~ 0 <= target): it steps. The step
    # (lr 0.05) moves the policy far, so the second minibatch's KL exceeds 1e-4: the update stops
    # before stepping on it, and no further minibatch or epoch runs.
    ppo, _ = _ready(make_ppo, collect, num_epochs=3, lr=0.05, target_kl=1e-4, kl_early_stop=True)
    spy = LossSpy(monkeypatch)
    metrics = ppo.update()
    kls = [c["terms"].approx_kl.item() for c in spy.calls]
    assert len(kls) == 2
    assert kls[0] <= 1e-4 < kls[1]
    assert _adam_steps(ppo) == {1.0}
    assert metrics["losses/epochs_run"] == 1.0
    assert metrics["losses/early_stopped"] == 1.0
    assert metrics["losses/approx_kl"] == pytest.approx(kls[0], abs=1e-9)
    assert ppo.buffer.step == 0  # the rollout is consumed even when stopped early


def test_without_early_stop_every_minibatch_steps(make_ppo, collect):
    ppo, _ = _ready(make_ppo, collect, num_epochs=3, lr=0.05, target_kl=1e-4)
    metrics = ppo.update()
    assert _adam_steps(ppo) == {12.0}  # 3 epochs x 4 minibatches
    assert metrics["losses/epochs_run"] == 3.0
    assert metrics["losses/early_stopped"] == 0.0


# --------------------------------------------------------------------------------------------
# Advantage normalization
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", ["batch", "minibatch"])
def test_advantage_normalization_scope(make_ppo, collect, monkeypatch, scope):
    ppo, _ = _ready(make_ppo, collect, num_epochs=2, advantage_norm_scope=scope)
    b = ppo.buffer
    raw = b.advantages.flatten().double().clone()
    flat_returns = b.returns.flatten().clone()
    assert abs(raw.mean().item()) > 0.05  # normalization visibly changes the values
    batch_normalized = (raw - raw.mean()) / (raw.std() + 1e-8)

    def expected_policy_loss(model, mb, record):
        # Which buffer samples this minibatch holds (returns are distinct random floats).
        match = mb.returns.unsqueeze(1) == flat_returns.unsqueeze(0)
        assert (match.sum(1) == 1).all()
        idx = match.float().argmax(1)
        record["idx"] = idx
        if scope == "batch":
            adv = batch_normalized[idx]
        else:
            adv = (raw[idx] - raw[idx].mean()) / (raw[idx].std() + 1e-8)
        with torch.no_grad():
            lp, _, _ = model.evaluate(mb.obs, mb.actions)
        r = (lp - mb.log_probs).exp().double()
        record["expected"] = torch.max(-adv * r, -adv * r.clamp(0.8, 1.2)).mean().item()

    spy = LossSpy(monkeypatch, before=expected_policy_loss)
    ppo.update()
    assert len(spy.calls) == 8
    for call in spy.calls:
        passed = call["mb"].advantages.double()
        if scope == "batch":
            torch.testing.assert_close(passed, batch_normalized[call["idx"]], rtol=0, atol=1e-5)
            assert (
                call["arguments"]["normalize_minibatch_advantages"] is False
            )  # no second normalization in the loss
        else:
            torch.testing.assert_close(passed, raw[call["idx"]], rtol=0, atol=0)
            assert call["arguments"]["normalize_minibatch_advantages"] is True
        assert call["terms"].policy_loss.item() == pytest.approx(call["expected"], abs=1e-5)
    # One epoch covers every sample exactly once.
    first_epoch = torch.cat([c["idx"] for c in spy.calls[:4]])
    assert torch.equal(first_epoch.sort().values, torch.arange(32))


def test_no_advantage_normalization(make_ppo, collect, monkeypatch):
    ppo, _ = _ready(make_ppo, collect, num_epochs=1, normalize_advantages=False)
    raw = ppo.buffer.advantages.flatten().clone()
    spy = LossSpy(monkeypatch)
    ppo.update()
    seen = torch.cat([c["mb"].advantages for c in spy.calls])
    assert torch.equal(seen.sort().values, raw.sort().values)
    assert all(c["arguments"]["normalize_minibatch_advantages"] is False for c in spy.calls)


# --------------------------------------------------------------------------------------------
# Gradient clipping and the optimizer
# --------------------------------------------------------------------------------------------


def test_gradient_clipping(make_ppo, collect, monkeypatch):
    max_norm = 0.05
    ppo, _ = _ready(make_ppo, collect, num_epochs=2, max_grad_norm=max_norm)
    seen: list[tuple[list[torch.Tensor], list[torch.Tensor], float]] = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm_arg, *args, **kwargs):
        params = list(params)
        before = [p.grad.clone() for p in params]
        out = real_clip(params, max_norm_arg, *args, **kwargs)
        seen.append((before, [p.grad.clone() for p in params], max_norm_arg))
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    ppo.update()
    assert len(seen) == 8

    def norm(grads):
        return torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item()

    for before, after, arg in seen:
        assert arg == max_norm
        pre = norm(before)
        assert pre > max_norm  # the clip is active in this set-up
        assert norm(after) <= max_norm * (1 + 1e-5)
        # One global factor for all parameters: directions are preserved.
        factor = max_norm / (pre + 1e-6)
        for g0, g1 in zip(before, after):
            torch.testing.assert_close(g1, g0 * factor, rtol=1e-5, atol=1e-9)
    # The optimizer stepped on the clipped gradients (grads are left in place after the step).
    for p, g in zip(ppo.model.parameters(), seen[-1][1]):
        assert torch.equal(p.grad, g)


def test_gradient_clipping_disabled(make_ppo, collect, monkeypatch):
    ppo, _ = _ready(make_ppo, collect, num_epochs=1, max_grad_norm=0.0)
    calls = []
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a))
    ppo.update()
    assert calls == []


def test_adam_eps_is_1e5(make_ppo):
    ppo = make_ppo(lr=1e-3)
    opt = ppo.optimizer
    assert type(opt) is torch.optim.Adam
    group = opt.param_groups[0]
    assert group["eps"] == 1e-5 and group["weight_decay"] == 0 and group["lr"] == 1e-3
    assert {id(p) for p in group["params"]} == {id(p) for p in ppo.model.parameters()}
    # First Adam step moves by lr * g / (|g| + eps): with |g| = eps that is half of lr.
    params = list(ppo.model.parameters())
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.full_like(p, 1e-5)
    opt.step()
    for p, p0 in zip(params, before):
        torch.testing.assert_close(p.detach() - p0, torch.full_like(p, -0.5e-3), rtol=1e-3, atol=0)


def test_adamw_carries_decoupled_weight_decay(make_ppo):
    ppo = make_ppo(optimizer="adamw", weight_decay=0.1, lr=1e-2)
    opt = ppo.optimizer
    assert type(opt) is torch.optim.AdamW
    assert opt.param_groups[0]["weight_decay"] == 0.1 and opt.param_groups[0]["eps"] == 1e-5
    # With zero gradients only the decoupled decay acts: p <- p * (1 - lr * wd).
    params = list(ppo.model.parameters())
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    for p, p0 in zip(params, before):
        torch.testing.assert_close(p.detach(), p0 * (1 - 1e-2 * 0.1))


# --------------------------------------------------------------------------------------------
# KL-adaptive learning rate
# --------------------------------------------------------------------------------------------


def test_adaptive_lr_follows_minibatch_kl(make_ppo, collect, monkeypatch):
    target, factor, min_lr, max_lr = 1e-3, 2.0, 1e-3, 4e-3
    ppo, _ = _ready(
        make_ppo,
        collect,
        num_epochs=4,
        lr=2e-3,
        lr_schedule="adaptive",
        target_kl=target,
        lr_factor=factor,
        min_lr=min_lr,
        max_lr=max_lr,
    )
    spy = LossSpy(monkeypatch)
    step_lrs = _record_step_lrs(ppo)
    metrics = ppo.update()
    kls = [c["terms"].approx_kl.item() for c in spy.calls]
    assert len(kls) == len(step_lrs) == 16
    # Replay the rule: each minibatch's KL sets the LR used for that minibatch's step.
    lr, expected = 2e-3, []
    for kl in kls:
        if kl > 2 * target:
            lr = max(min_lr, lr / factor)
        elif kl < target / 2:
            lr = min(max_lr, lr * factor)
        expected.append(lr)
    assert step_lrs == pytest.approx(expected, rel=1e-12)
    assert metrics["charts/learning_rate"] == pytest.approx(expected[-1])
    # The set-up exercises both directions and both bounds.
    assert max(step_lrs) == max_lr and min(step_lrs) == min_lr
    assert any(b < a for a, b in zip(step_lrs, step_lrs[1:]))
    assert all(min_lr <= x <= max_lr for x in step_lrs)


# --------------------------------------------------------------------------------------------
# Observation normalizer
# --------------------------------------------------------------------------------------------


def test_normalizer_updated_with_raw_rollout_obs_after_the_update(make_ppo, collect, monkeypatch):
    prior = torch.randn(50, 3) * 2 + 3
    ppo, log = _ready(make_ppo, collect, normalizer_data=prior, num_epochs=2)
    rms = ppo.model.obs_normalizer.rms
    during = []
    spy = LossSpy(monkeypatch, before=lambda m, mb, rec: during.append(rms.count.item()))
    ppo.update()
    assert during == [50.0] * 8 and len(spy.calls) == 8  # frozen during the gradient steps
    everything = torch.cat([prior, torch.cat(log["obs"])]).double().numpy()
    assert rms.count.item() == 50 + 32
    np.testing.assert_allclose(rms.mean.numpy(), everything.mean(0), rtol=1e-10)
    np.testing.assert_allclose(rms.var.numpy(), everything.var(0), rtol=1e-10)
    # ...and the forward pass uses the new statistics right away.
    x = torch.randn(4, 3)
    expected = (x.double().numpy() - everything.mean(0)) / np.sqrt(everything.var(0) + 1e-8)
    np.testing.assert_allclose(ppo.model.normalize(x).numpy(), expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Recomputed advantages
# --------------------------------------------------------------------------------------------


def test_recompute_advantages_uses_the_current_critic_before_each_epoch(
    make_ppo, collect, monkeypatch
):
    T, N, gamma, lam = 10, 4, 0.99, 0.95
    ppo = make_ppo(
        num_envs=N,
        num_steps=T,
        num_minibatches=4,
        num_epochs=3,
        recompute_advantages=True,
        lr=3e-2,  # the critic moves visibly between epochs
        scale_rewards=True,
    )
    ppo.model.obs_normalizer.update(torch.randn(40, 3) * 2 + 3)
    log = collect(ppo, obs_mean=3.0, obs_std=2.0, end_prob=0.3)
    b = ppo.buffer
    assert b.truncated.any() and b.terminated.any()
    ppo.finish_rollout(log["next_obs"])
    rewards = RewardScaler(N, gamma).scale_rollout(b.rewards.clone(), b.dones).double().numpy()
    terminated, truncated = b.terminated.numpy(), b.truncated.numpy()
    stale_bootstrap = b.bootstrap_values.double().numpy().copy()
    flat_log_probs = b.log_probs.flatten().clone()
    rollout_values = b.values.flatten().clone()

    def value(model, x):
        with torch.no_grad():
            return model.value(model.normalize(x)).double().numpy()

    def expected_advantages(model):
        v = np.stack([value(model, o) for o in log["obs"]])
        v_next = np.stack(
            [value(model, o) for o in log["obs"][1:]] + [value(model, log["next_obs"])]
        )
        v_next = np.where(
            truncated, stale_bootstrap, v_next
        )  # V(final obs) of the rollout's critic
        adv = naive_gae(rewards, v, v_next, terminated, terminated | truncated, gamma, lam)
        return adv.reshape(-1), v.reshape(-1)

    expectations: list[tuple[np.ndarray, np.ndarray]] = []

    def check(model, mb, record):
        if len(spy.calls) % 4 == 0:  # first minibatch of an epoch: nothing stepped since recompute
            expectations.append(expected_advantages(model))
        adv, v = expectations[-1]
        match = mb.log_probs.unsqueeze(1) == flat_log_probs.unsqueeze(0)
        assert (match.sum(1) == 1).all()
        idx = match.float().argmax(1).numpy()
        normalized = (adv - adv.mean()) / (adv.std(ddof=1) + 1e-8)
        np.testing.assert_allclose(mb.advantages.double().numpy(), normalized[idx], atol=2e-5)
        np.testing.assert_allclose(
            mb.returns.double().numpy(), (adv + v)[idx], rtol=1e-4, atol=2e-5
        )
        # Value clipping stays relative to the values the rollout was collected with.
        torch.testing.assert_close(mb.values, rollout_values[torch.as_tensor(idx)])

    spy = LossSpy(monkeypatch, before=check)
    ppo.update()
    assert len(spy.calls) == 12 and len(expectations) == 3
    # The recomputation is not a no-op: each epoch's advantages differ from the last.
    for before, after in zip(expectations, expectations[1:]):
        assert np.abs(before[0] - after[0]).max() > 1e-3
