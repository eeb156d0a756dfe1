"""algo.compile (an accelerator) against its reference, the eager minibatch step
(`PPO._reference_step`: ppo_loss, backward, clip_grad_norm_, torch.optim.Adam/AdamW): the same
loss terms, parameters and optimizer state step for step, the same reports to update observers,
and a compilation failure that falls back to the reference once, with one warning."""

from __future__ import annotations

import copy
import os
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.algo.ppo import PPO
from ppokit.algo.rollout import Minibatch
from ppokit.config import TrainConfig
from ppokit_testutil import failing_compile

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("compile")]


def _ppo(compile_: bool, **algo) -> PPO:
    torch.manual_seed(0)
    cfg = TrainConfig()
    cfg.env.num_envs, cfg.algo.num_steps, cfg.algo.num_minibatches = 1, 32, 1
    cfg.algo.compile = compile_
    for key, value in algo.items():
        setattr(cfg.algo, key, value)
    from ppokit.nn.actor_critic import ActorCritic

    model = ActorCritic(
        gym.spaces.Box(-np.inf, np.inf, (5,)), gym.spaces.Box(-1, 1, (2,)), cfg.policy
    )
    return PPO(model, cfg, torch.device("cpu"), total_updates=10)


def _minibatches(n: int) -> list[Minibatch]:
    g = torch.Generator().manual_seed(1)
    B = 32
    return [
        Minibatch(
            torch.randn(B, 5, generator=g),
            torch.randn(B, 2, generator=g),
            torch.randn(B, generator=g) - 3,
            torch.randn(B, generator=g),
            torch.randn(B, generator=g),
            torch.randn(B, generator=g),
        )
        for _ in range(n)
    ]


@pytest.mark.parametrize(
    "algo",
    [
        {},
        {"optimizer": "adamw", "weight_decay": 0.01, "clip_value_loss": False, "ent_coef": 0.01},
        {"lr_schedule": "adaptive", "target_kl": 0.001, "max_grad_norm": 0.0},
    ],
    ids=["adam", "adamw-unclipped-value", "adaptive-lr-kl-path"],
)
def test_compiled_step_matches_eager(algo):
    eager, compiled = _ppo(False, **algo), _ppo(True, **algo)
    assert compiled.paths.update == "compiled", "torch.compile unavailable: cannot test it here"
    assert eager.paths.update == "eager" and eager.accel.update is None
    check_kl = bool(algo.get("target_kl"))
    for mb in _minibatches(6):
        terms_eager = eager.minibatch_step(mb, check_kl)
        terms_compiled = compiled.minibatch_step(mb, check_kl)
        torch.testing.assert_close(terms_compiled, terms_eager, rtol=1e-5, atol=1e-6)
    for p_eager, p_compiled in zip(eager.params, compiled.params):
        torch.testing.assert_close(p_compiled, p_eager, rtol=1e-5, atol=1e-6)
    s_eager, s_compiled = eager.optimizer.state_dict(), compiled.optimizer.state_dict()
    for key, state in s_eager["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            torch.testing.assert_close(
                s_compiled["state"][key][name], state[name], rtol=1e-5, atol=1e-7
            )
    assert eager.schedule.lr == compiled.schedule.lr


def test_compiled_state_survives_a_checkpoint_round_trip():
    source = _ppo(True)
    for mb in _minibatches(3):
        source.minibatch_step(mb)
    state = source.state_dict()
    resumed, reference = _ppo(True), _ppo(False)
    # Like a checkpoint file: each loader gets its own copy (load_state_dict may alias tensors).
    resumed.load_state_dict(copy.deepcopy(state))
    reference.load_state_dict(copy.deepcopy(state))
    for mb in _minibatches(2):
        resumed.minibatch_step(mb)
        reference.minibatch_step(mb)
    for a, b in zip(resumed.params, reference.params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_the_inductor_cache_is_kept_apart_per_cpu_capability(monkeypatch, tmp_path):
    """torch's cache key leaves out ATEN_CPU_CAPABILITY; a kernel cached under AVX-512 served to
    an AVX2 process computed NaNs. ppokit keeps one cache directory per capability, and leaves a
    directory the user chose alone."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    from ppokit.algo.accel.compiled import cache_per_cpu_capability

    capability = torch.backends.cpu.get_cpu_capability().lower()
    for preset in (None, default_cache_dir()):  # unset, or torch's own default written at import
        if preset is None:
            monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
        else:
            monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", preset)
        cache_per_cpu_capability()
        assert os.environ["TORCHINDUCTOR_CACHE_DIR"].endswith(f"-{capability}")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    cache_per_cpu_capability()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path)


@pytest.mark.parametrize("early_stop", [False, True], ids=["steps", "kl-stop"])
def test_observers_see_the_same_steps_as_on_the_reference(early_stop):
    """With observers the compiled update splits gradient and step (like a KL check) and shows
    the clipped gradient it applies, as the reference shows the one it steps with."""
    algo = {"lr_schedule": "adaptive", "target_kl": 0.001, "kl_early_stop": early_stop}
    eager, compiled = _ppo(False, **algo), _ppo(True, **algo)
    reports: dict[str, list] = {"eager": [], "compiled": []}
    for mb in _minibatches(3):
        for name, ppo in (("eager", eager), ("compiled", compiled)):
            ppo.minibatch_step(mb, True, observers=[reports[name].append])
    # These minibatches' KL is far above the target: the early stop refuses every step.
    assert [r.stepped for r in reports["eager"]] == [not early_stop] * 3
    assert [r.stepped for r in reports["compiled"]] == [not early_stop] * 3
    for ours, ref in zip(reports["compiled"], reports["eager"]):
        torch.testing.assert_close(ours.terms, ref.terms, rtol=1e-5, atol=1e-6)
        if ref.stepped:
            torch.testing.assert_close(ours.grad_norm, ref.grad_norm, rtol=1e-5, atol=1e-6)
            assert float(ref.grad_norm) <= 0.5 * (1 + 1e-5)  # max_grad_norm
        else:
            assert ours.grad_norm is None and ref.grad_norm is None
    for p_eager, p_compiled in zip(eager.params, compiled.params):
        torch.testing.assert_close(p_compiled, p_eager, rtol=1e-5, atol=1e-6)


def test_a_failed_compilation_falls_back_to_the_reference_once(monkeypatch):
    """Compilation errors surface at the first call: one warning, then the reference step, with
    the optimizer's per-parameter step counters un-shared again."""
    import ppokit.algo.accel as accel

    monkeypatch.setattr(accel, "compile_available", lambda device: (True, ""))
    monkeypatch.setattr(torch, "compile", failing_compile)
    failing, reference = _ppo(True), _ppo(False)
    assert failing.paths.update == "compiled"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for mb in _minibatches(3):
            torch.testing.assert_close(failing.minibatch_step(mb), reference.minibatch_step(mb))
    messages = [str(w.message) for w in caught if "algo.compile" in str(w.message)]
    assert len(messages) == 1 and "compilation failed (RuntimeError: no backend)" in messages[0]
    assert failing.accel.update is None
    for a, b in zip(failing.params, reference.params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    steps = [failing.optimizer.state[p]["step"] for p in failing.params]
    assert len({id(s) for s in steps}) == len(steps) and all(float(s) == 3 for s in steps)
