"""Recurrent PPO: the rollout carries, resets and stores the memory state; the update re-runs
sequences from the stored states and reproduces the stored log-probs and values exactly before
its first gradient step; padded steps never reach the loss; privileged critic inputs never reach
the actor; and the configurations that cannot work are one-line errors."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppokit.algo.ppo as ppo_module
from ppokit.algo.accel.numpy_act import NumpyAct
from ppokit.algo.loss import ppo_loss
from ppokit.algo.ppo import PPO
from ppokit.algo.rollout import Minibatch
from ppokit.config import PolicyConfig, TrainConfig, load_config, validate
from ppokit.envs.base import StepResult
from ppokit.errors import ConfigError
from ppokit.nn.actor_critic import ActorCritic
from ppokit.trainer import Trainer

DICT_SPACE = gym.spaces.Dict(
    {
        "proprio": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
        "command": gym.spaces.Box(-1, 1, (2,), np.float32),
        "privileged": gym.spaces.Box(-np.inf, np.inf, (3,), np.float32),
        "depth": gym.spaces.Box(0, 255, (1, 10, 10), np.uint8),
    }
)
SMALL_CNN = {"type": "cnn", "channels": [4], "kernels": [3], "strides": [2], "out": 8}


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: more threads only add contention (several times slower on a busy CI box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def policy(memory: str = "gru", **kwargs) -> PolicyConfig:
    base = {"actor_hidden": [16], "critic_hidden": [16], "memory": memory, "memory_hidden": 8}
    return PolicyConfig(**{**base, **kwargs})


def make_ppo(
    pol: PolicyConfig,
    obs_space: gym.Space | None = None,
    action_space: gym.Space | None = None,
    num_envs: int = 3,
    num_steps: int = 12,
    **algo,
) -> PPO:
    cfg = TrainConfig()
    cfg.env.num_envs = num_envs
    cfg.policy = pol
    cfg.algo.num_steps = num_steps
    cfg.algo.bptt_length = algo.pop("bptt_length", 4)
    cfg.algo.num_minibatches = algo.pop("num_minibatches", 3)
    for key, value in algo.items():
        setattr(cfg.algo, key, value)
    validate(cfg)
    obs_space = obs_space or gym.spaces.Box(-np.inf, np.inf, (3,), np.float32)
    action_space = action_space or gym.spaces.Box(-1, 1, (2,), np.float32)
    model = ActorCritic(obs_space, action_space, pol)
    return PPO(model, cfg, torch.device("cpu"), 10)


def random_obs(space: gym.Space, n: int):
    if isinstance(space, gym.spaces.Dict):
        return {k: random_obs(s, n) for k, s in space.spaces.items()}
    if space.dtype == np.uint8:
        return torch.randint(0, 256, (n, *space.shape), dtype=torch.uint8)
    return torch.randn(n, *space.shape) * 2 + 1


def rollout(ppo: PPO, ends: dict | None = None, seed: int = 0) -> dict:
    """Fill the buffer. `ends` maps (t, env) to "terminated"/"truncated"; otherwise episodes end
    at random (p = 0.25). Returns the observations fed in and the states seen by act."""
    g = torch.Generator().manual_seed(seed)
    space = ppo.model.observation_space
    N = ppo.num_envs
    obs = random_obs(space, N)
    log = {"states": [], "final_obs": [], "obs": []}
    for t in range(ppo.buffer.num_steps):
        log["states"].append(ppo.memory_state.clone())
        log["obs"].append(obs)
        ppo.act(obs)
        terminated = torch.zeros(N, dtype=torch.bool)
        truncated = torch.zeros(N, dtype=torch.bool)
        if ends is None:
            ended = torch.rand(N, generator=g) < 0.25
            kind = torch.rand(N, generator=g) < 0.5
            terminated, truncated = ended & kind, ended & ~kind
        else:
            for (tt, n), kind in ends.items():
                if tt == t:
                    (terminated if kind == "terminated" else truncated)[n] = True
        next_obs = random_obs(space, N)
        final = random_obs(space, N) if (terminated | truncated).any() else None
        log["final_obs"].append(final)
        ppo.record(StepResult(next_obs, torch.randn(N, generator=g), terminated, truncated, final))
        obs = next_obs
    log["next_obs"] = obs
    ppo.finish_rollout(obs)
    return log


# --------------------------------------------------------------------------------------------
# The rollout: state carried per env, reset where an episode ended, stored per step
# --------------------------------------------------------------------------------------------


def test_state_is_stored_per_step_and_reset_where_episodes_end():
    ppo = make_ppo(policy("gru"), num_steps=6, num_minibatches=1, num_epochs=1)
    ends = {(1, 0): "terminated", (3, 2): "truncated"}
    log = rollout(ppo, ends)
    states = ppo.buffer.states
    for t in range(6):
        assert torch.equal(states[t], log["states"][t])
    assert torch.equal(states[0], torch.zeros_like(states[0]))  # fresh start
    assert states[2, 0].abs().sum() == 0  # env 0 terminated at t=1
    assert states[4, 2].abs().sum() == 0  # env 2 truncated at t=3
    assert states[2, 1].abs().sum() > 0 and states[4, 0].abs().sum() > 0  # others remember
    # The state carries over into the next rollout (it is not reset by the update).
    carried = ppo.memory_state.clone()
    ppo.update()
    assert torch.equal(ppo.memory_state, carried)
    ppo.reset_memory()
    assert ppo.memory_state.abs().sum() == 0


@pytest.mark.parametrize("critic_memory", ["shared", "separate"])
def test_truncation_bootstraps_from_the_state_of_that_step(critic_memory):
    ppo = make_ppo(policy("lstm", critic_memory=critic_memory), num_steps=5)
    log = rollout(ppo, {(2, 1): "truncated", (3, 0): "terminated"})
    b = ppo.buffer
    model = ppo.model
    # Re-run env 1 from its stored state at t=2 (before the step): the state after step 2 is the
    # one V(final observation) must be computed from.
    with torch.no_grad():
        obs_t = model.normalize(_rows(_obs_at(b, 2), [1]))
        _, _, after = model.step(obs_t, b.states[2, 1:2])
        final = _rows(log["final_obs"][2], [1])
        _, expected, _ = model.step(model.normalize(final), after)
    torch.testing.assert_close(b.bootstrap_values[2, 1:2], expected, rtol=0, atol=1e-6)


def _obs_at(b, t):
    return {k: v[t] for k, v in b.obs.items()} if isinstance(b.obs, dict) else b.obs[t]


def _rows(obs, rows):
    return {k: v[rows] for k, v in obs.items()} if isinstance(obs, dict) else obs[rows]


# --------------------------------------------------------------------------------------------
# The update: recomputed log-probs and values equal the stored ones before the first step
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("memory", ["gru", "lstm"])
@pytest.mark.parametrize(
    ("critic_memory", "num_steps", "bptt", "action_space", "dict_obs"),
    [
        ("shared", 12, 4, None, False),
        ("separate", 10, 4, None, False),  # padded: 10 steps = 4 + 4 + 2 (+2 padding)
        ("none", 12, 6, gym.spaces.Discrete(3), False),
        ("shared", 9, 3, None, True),
        ("separate", 7, 3, gym.spaces.MultiDiscrete([2, 3]), True),  # padded
    ],
)
def test_recomputed_log_probs_and_values_equal_stored_before_first_step(
    monkeypatch, memory, critic_memory, num_steps, bptt, action_space, dict_obs
):
    kwargs = {}
    if dict_obs:
        kwargs = {
            "encoders": {"depth": SMALL_CNN},
            "actor_keys": ["proprio", "command", "depth"],
            "critic_keys": ["proprio", "command", "depth", "privileged"],
        }
    pol = policy(memory, critic_memory=critic_memory, memory_layers=2, **kwargs)
    num_minibatches = 3 if -(-num_steps // bptt) * 3 % 3 == 0 else 1
    ppo = make_ppo(
        pol,
        obs_space=DICT_SPACE if dict_obs else None,
        action_space=action_space,
        num_steps=num_steps,
        bptt_length=bptt,
        num_minibatches=num_minibatches,
        num_epochs=1,  # only the first minibatch is checked
    )
    # Non-trivial normalizer statistics, frozen during the rollout and the first minibatch.
    ppo.model.obs_normalizer.update(random_obs(ppo.model.observation_space, 64))
    rollout(ppo)
    b = ppo.buffer
    dones = b.dones
    # Episodes end in the middle of sequences, not only at their borders.
    inside = dones[:-1].clone()
    inside[bptt - 1 :: bptt] = False
    assert inside.any()

    # Every stored step, re-run as the update does (all sequences at once).
    with torch.no_grad():
        seq = b.sequences(ppo.model.normalize(b.flat_obs()), b.advantages.flatten(), bptt)
        log_probs, _, values = ppo.model.evaluate_sequence(
            seq.obs, seq.actions, seq.states, seq.resets
        )
    real = seq.mask if seq.mask is not None else torch.ones_like(log_probs, dtype=torch.bool)
    assert (num_steps % bptt != 0) == (seq.mask is not None)
    assert int(real.sum()) == num_steps * ppo.num_envs
    assert (log_probs - seq.log_probs)[real].abs().max() <= 1e-6
    assert (values - seq.values)[real].abs().max() <= 1e-6

    # And inside the update: the first minibatch's loss sees ratio 1 and the stored values.
    seen = []

    def spy(model, mb, **kwargs):
        if not seen:
            with torch.no_grad():
                lp, _, v = model.evaluate_sequence(mb.obs, mb.actions, mb.states, mb.resets)
            m = mb.mask if mb.mask is not None else torch.ones_like(lp, dtype=torch.bool)
            seen.append(((lp - mb.log_probs)[m].abs().max(), (v - mb.values)[m].abs().max()))
        terms = ppo_loss(model, mb, **kwargs)
        seen.append(terms.approx_kl)
        return terms

    monkeypatch.setattr(ppo_module, "ppo_loss", spy)
    ppo.update()
    assert seen[0][0] <= 1e-6 and seen[0][1] <= 1e-6
    assert abs(float(seen[1])) <= 1e-6


def test_sequences_are_cut_per_env_with_resets_and_padding():
    ppo = make_ppo(policy("gru"), num_envs=2, num_steps=5, bptt_length=2, num_minibatches=1)
    rollout(ppo, {(0, 1): "terminated", (2, 0): "truncated"})
    b = ppo.buffer
    b.rewards.zero_()
    seq = b.sequences(b.flat_obs(), torch.arange(10.0), 2)
    # 3 chunks x 2 envs; sequence c * 2 + n holds env n's steps 2c, 2c + 1.
    assert seq.obs.shape == (2, 6, 3) and seq.states.shape == (6, b.states.shape[-1])
    for c in range(3):
        for n in range(2):
            s = c * 2 + n
            assert torch.equal(seq.states[s], b.states[2 * c, n])
            for i in range(2):
                t = 2 * c + i
                if t < 5:
                    assert torch.equal(seq.obs[i, s], b.obs[t, n])
                    assert seq.advantages[i, s] == t * 2 + n
                    assert bool(seq.mask[i, s])
                else:
                    assert not bool(seq.mask[i, s])  # the padding
    # resets[i, s]: the episode ended at the step before, inside the sequence. Env 1 ended at
    # t=0: reset before t=1 (chunk 0, sequence 1, step 1). Env 0 ended at t=2: reset before t=3
    # (chunk 1, sequence 2, step 1). Nothing else.
    expected = torch.zeros(2, 6, dtype=torch.bool)
    expected[1, 1] = expected[1, 2] = True
    assert torch.equal(seq.resets, expected)


def test_padding_never_reaches_the_loss():
    ppo = make_ppo(policy("gru"), num_envs=2, num_steps=5, bptt_length=3, num_minibatches=1)
    rollout(ppo)
    b = ppo.buffer
    seq = b.sequences(ppo.model.normalize(b.flat_obs()), b.advantages.flatten() * 3 + 1, 3)
    assert seq.mask is not None and (~seq.mask).any()
    kwargs = {"clip_coef": 0.2, "value_clip_coef": 0.2, "vf_coef": 0.5, "ent_coef": 0.01}
    with torch.no_grad():
        for p in ppo.model.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # ratios != 1, clipping active
    terms = ppo_loss(ppo.model, seq, normalize_minibatch_advantages=True, **kwargs)
    # Garbage in the padded steps changes nothing.
    garbage = Minibatch(**{**seq.__dict__})
    pad = ~seq.mask
    garbage.advantages = torch.where(pad, 1e6, seq.advantages)
    garbage.returns = torch.where(pad, -1e6, seq.returns)
    garbage.log_probs = torch.where(pad, -50.0, seq.log_probs)
    garbage.values = torch.where(pad, 1e3, seq.values)
    terms2 = ppo_loss(ppo.model, garbage, normalize_minibatch_advantages=True, **kwargs)
    for a, b2 in zip(
        (terms.loss, terms.policy_loss, terms.value_loss, terms.entropy, terms.approx_kl),
        (terms2.loss, terms2.policy_loss, terms2.value_loss, terms2.entropy, terms2.approx_kl),
    ):
        torch.testing.assert_close(a, b2)
    # ...and the loss equals the same terms computed over the real steps only.
    with torch.no_grad():
        lp, ent, v = ppo.model.evaluate_sequence(seq.obs, seq.actions, seq.states, seq.resets)
    m = seq.mask
    adv = seq.advantages[m]
    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    ratio = (lp[m] - seq.log_probs[m]).exp()
    policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(0.8, 1.2)).mean()
    torch.testing.assert_close(terms.policy_loss, policy_loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms.entropy, ent[m].mean())


def test_gradient_steps_count_sequences():
    ppo = make_ppo(
        policy("gru"), num_envs=4, num_steps=12, bptt_length=4, num_minibatches=3, num_epochs=2
    )
    rollout(ppo)
    sizes = []
    real = ppo_module.ppo_loss

    def spy(model, mb, **kwargs):
        sizes.append(tuple(mb.log_probs.shape))
        return real(model, mb, **kwargs)

    ppo_module.ppo_loss = spy
    try:
        ppo.update()
    finally:
        ppo_module.ppo_loss = real
    # 3 chunks x 4 envs = 12 sequences, 3 minibatches of 4 sequences of 4 steps, 2 epochs.
    assert sizes == [(4, 4)] * 6


# --------------------------------------------------------------------------------------------
# Observation groups: a privileged critic
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("memory", ["none", "gru"])
@pytest.mark.parametrize("critic_memory", ["shared", "separate"])
def test_actor_outputs_do_not_depend_on_critic_only_keys(memory, critic_memory):
    pol = policy(
        memory,
        critic_memory=critic_memory,
        encoders={"depth": SMALL_CNN},
        actor_keys=["proprio", "command"],
        critic_keys=["proprio", "command", "privileged", "depth"],
    )
    model = ActorCritic(DICT_SPACE, gym.spaces.Box(-1, 1, (2,), np.float32), pol)
    with torch.no_grad():
        for p in model.actor.parameters():
            p.mul_(50)  # a head of gain 0.01 would hide differences
    T, B = 5, 4
    obs = {k: v.view(T, B, *v.shape[1:]) for k, v in random_obs(DICT_SPACE, T * B).items()}
    other = dict(obs)
    other["privileged"] = obs["privileged"] + 5
    other["depth"] = 255 - obs["depth"]

    def run(o):
        flat = {k: v.flatten(0, 1) for k, v in o.items()}
        norm = {k: v.view(T, B, *v.shape[1:]) for k, v in model.normalize(flat).items()}
        with torch.no_grad():
            if model.recurrent:
                state = torch.randn(B, model.state_size)
                torch.manual_seed(0)
                params, values, _ = model.unroll(norm, state, torch.rand(T, B) < 0.2)
                return params, values
            return model.actor(model._actor_features(model.normalize(flat))), model.value(
                model.normalize(flat)
            )

    torch.manual_seed(1)
    params, values = run(obs)
    torch.manual_seed(1)
    params2, values2 = run(other)
    assert torch.equal(params, params2)
    assert not torch.allclose(values, values2)
    assert "privileged" not in model.actor_encoder.keys


def test_observation_groups_default_to_all_keys_and_critic_follows_actor():
    model = ActorCritic(
        DICT_SPACE, gym.spaces.Discrete(2), policy("none", encoders={"depth": SMALL_CNN})
    )
    assert model.actor_keys == sorted(DICT_SPACE.spaces) == model.critic_keys
    model = ActorCritic(
        DICT_SPACE,
        gym.spaces.Discrete(2),
        policy(
            "gru",
            critic_memory="shared",
            actor_keys=["proprio"],
            critic_keys=["proprio", "command"],
        ),
    )
    # A shared core encodes the actor's keys; the critic adds an encoder for its extra keys.
    assert model.critic_encoder.keys == ["command"]


# --------------------------------------------------------------------------------------------
# What cannot work: one-line errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pol", "message"),
    [
        (
            {"actor_keys": ["proprio", "height"]},
            r"no observation key 'height' \(its keys: command, depth, privileged, proprio\)",
        ),
        ({"critic_keys": ["priviledged"]}, "no observation key 'priviledged'"),
        ({"encoders": {"camera": {"type": "cnn"}}}, "no observation key 'camera'"),
        ({"actor_keys": []}, "is empty"),
    ],
)
def test_unknown_observation_keys_list_the_keys_the_env_has(pol, message):
    with pytest.raises(ConfigError, match=message) as info:
        ActorCritic(DICT_SPACE, gym.spaces.Discrete(2), policy("gru", **pol))
    assert "\n" not in str(info.value)


def test_observation_groups_need_a_dict_space():
    with pytest.raises(ConfigError, match="needs a Dict observation space"):
        ActorCritic(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Discrete(2), policy(actor_keys=["a"]))


def test_image_key_with_an_unsupported_shape():
    space = gym.spaces.Dict({"video": gym.spaces.Box(0, 255, (2, 3, 8, 8), np.uint8)})
    with pytest.raises(Exception, match=r"'video' has shape \(2, 3, 8, 8\)"):
        ActorCritic(space, gym.spaces.Discrete(2), policy())
    space = gym.spaces.Dict({"wide": gym.spaces.Box(0, 255, (8, 8, 8), np.uint8)})
    with pytest.raises(ConfigError, match="1-4 channels"):
        ActorCritic(space, gym.spaces.Discrete(2), policy())


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {"algo.num_steps": 16, "algo.bptt_length": 32},
            "bptt_length 32 is longer than the rollout",
        ),
        ({"algo.compile": True}, "compile does not support recurrent"),
        ({"algo.act_backend": "numpy"}, "numpy runs flat MLP policies only"),
        (
            {"algo.num_minibatches": 3},
            "must divide the batch size 16 .16 sequences of algo.bptt_length",
        ),
    ],
)
def test_recurrent_config_errors(overrides, message):
    base = {
        "policy.memory": "gru",
        "algo.num_steps": 32,
        "algo.bptt_length": 16,
        "env.num_envs": 8,
        "algo.num_minibatches": 4,
    }
    with pytest.raises(ConfigError, match=message) as info:
        load_config(overrides={**base, **overrides})
    assert "\n" not in str(info.value)


def test_numpy_act_step_is_for_flat_mlp_policies_only():
    box = gym.spaces.Box(-1, 1, (3,), np.float32)
    act = gym.spaces.Box(-1, 1, (2,), np.float32)
    assert NumpyAct.supports(ActorCritic(box, act, policy("none")))
    assert not NumpyAct.supports(ActorCritic(box, act, policy("gru")))
    assert not NumpyAct.supports(ActorCritic(box, act, policy("lstm")))
    dict_model = ActorCritic(DICT_SPACE, act, policy("none", encoders={"depth": SMALL_CNN}))
    assert not NumpyAct.supports(dict_model)
    ppo = make_ppo(policy("gru"))
    assert ppo.paths.act == "torch" and ppo.paths.act_why == "recurrent policy"


# --------------------------------------------------------------------------------------------
# End to end
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("memory", ["gru", "lstm"])
def test_single_env_training_and_recurrent_evaluation(tiny_config, memory):
    cfg = tiny_config()
    cfg.env.id = "ppokit/CartPoleNoVel-v1"
    cfg.env.num_envs = 1
    cfg.env.max_episode_steps = None
    cfg.algo.num_steps = 20
    cfg.algo.bptt_length = 8  # 3 sequences, the last padded
    cfg.algo.num_minibatches = 3
    cfg.policy.memory = memory
    cfg.policy.memory_hidden = 8
    cfg.total_steps = 60
    trainer = Trainer(cfg)
    result = trainer.train()
    assert result.updates == 3 and result.global_step == 60
    evaluation = trainer.evaluate(episodes=2)
    assert evaluation["episodes"] == 2 and evaluation["mean_return"] > 0
