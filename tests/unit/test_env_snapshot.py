"""Env state for an exact resume (ppokit.envs.snapshot, GymVecEnv/TorchVecEnv.get_state): an env
restored from a snapshot into a freshly built, differently seeded env continues bit for bit as
the original did, across episode ends (autoreset draws from the restored RNGs)."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch

from ppokit.config import EnvConfig
from ppokit.envs import TorchVecEnv, make_env
from ppokit.envs.reference import PENDULUM_ID, POINT_MASS_ID, TorchPointMass
from ppokit.envs.snapshot import env_state, load_env_state, load_vec_env_state, vec_env_state
from ppokit.errors import EnvError, EnvStateUnsupported

NUM_ENVS = 3
BEFORE = 7  # steps before the snapshot
AFTER = 30  # steps compared after it; every case's time limit ends episodes within them

# (env id, max_episode_steps, must some episode terminate (not only truncate) after the snapshot)
CASES = [
    ("CartPole-v1", 25, False),
    ("Pendulum-v1", 12, False),
    ("MountainCarContinuous-v0", 12, False),
    ("HalfCheetah-v5", 12, False),
    ("Hopper-v5", 200, True),  # random actions make it fall: termination, then a reset
    ("ppokit/CartPoleNoVel-v1", 25, False),
    (PENDULUM_ID, 12, False),
    (POINT_MASS_ID, 12, False),
    ("ppokit/AntLocomotion-v0", 10, False),
    ("ppokit/AntLocomotionBatched-v0", 10, False),
]


def build(env_id: str, max_steps: int, vectorization: str = "sync"):
    cfg = EnvConfig(
        id=env_id, num_envs=NUM_ENVS, vectorization=vectorization, max_episode_steps=max_steps
    )
    return make_env(cfg)


def random_actions(space: gym.Space, steps: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if isinstance(space, gym.spaces.Discrete):
        return list(torch.randint(int(space.n), (steps, NUM_ENVS), generator=g))
    low = torch.as_tensor(space.low, dtype=torch.float32)
    high = torch.as_tensor(space.high, dtype=torch.float32)
    u = torch.rand(steps, NUM_ENVS, *space.shape, generator=g)
    return list(low + (high - low) * u)


def run(env, actions: list[torch.Tensor]) -> list[tuple]:
    out = []
    for a in actions:
        r = env.step(a)
        out.append((r.obs, r.rewards, r.terminated, r.truncated, r.final_obs))
    return out


def same(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if a is None or b is None:
        return a is None and b is None
    return a.dtype == b.dtype and torch.equal(a, b)


def assert_same_steps(expected: list[tuple], got: list[tuple]) -> None:
    names = ("obs", "rewards", "terminated", "truncated", "final_obs")
    for t, (e, g) in enumerate(zip(expected, got, strict=True)):
        for name, x, y in zip(names, e, g, strict=True):
            assert same(x, y), f"{name} differs at step {t} after the restore"


def pickled(state: dict) -> dict:
    """The state through torch.save/torch.load, as a checkpoint holds it."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def snapshot_and_continue(env_id: str, max_steps: int):
    """(state after BEFORE steps, the AFTER steps the original took from it, their actions)."""
    env = build(env_id, max_steps)
    try:
        actions = random_actions(env.action_space, BEFORE + AFTER)
        env.reset(seed=1)
        run(env, actions[:BEFORE])
        state = env.get_state()
        expected = run(env, actions[BEFORE:])
    finally:
        env.close()
    # Serialised only now: a state holding views of the env's buffers would have moved on.
    return pickled(state), expected, actions[BEFORE:]


def restored_run(
    env_id: str, max_steps: int, state: dict, actions: list, reset: bool = True, after=None
) -> list[tuple]:
    env = build(env_id, max_steps)
    try:
        if reset:
            env.reset(seed=12345)  # a different seed: everything must come from the state
        env.set_state(state)
        if after is not None:
            after(env)
        return run(env, actions)
    finally:
        env.close()


@pytest.mark.parametrize(("env_id", "max_steps", "terminates"), CASES, ids=[c[0] for c in CASES])
def test_restored_env_continues_bit_for_bit(env_id, max_steps, terminates):
    state, expected, actions = snapshot_and_continue(env_id, max_steps)
    ended = torch.stack([e[2] | e[3] for e in expected])
    assert ended.any(), "no episode ended after the snapshot: autoreset is not exercised"
    if terminates:
        assert torch.stack([e[2] for e in expected]).any(), "no episode terminated"
    assert state["steps"] == BEFORE
    assert_same_steps(expected, restored_run(env_id, max_steps, state, actions))


def without(state: dict, attr: str) -> dict:
    """The state of a GymVecEnv with `attr` dropped from every env's layers."""
    for env in state["envs"]:
        for layer in env["layers"]:
            layer["attrs"].pop(attr, None)
            layer.pop(attr, None)
    return state


@pytest.mark.parametrize(
    ("env_id", "max_steps", "drop"),
    [
        ("CartPole-v1", 25, "_np_random"),  # the resets after the snapshot draw differently
        ("Pendulum-v1", 12, "_elapsed_steps"),  # the time limit ends episodes elsewhere
        ("HalfCheetah-v5", 12, "mujoco"),  # the physics continues from the other reset
        ("ppokit/AntLocomotion-v0", 10, "own"),  # the terrain (and command) of another env
    ],
)
def test_negative_control_a_state_without_a_part_does_not_continue(env_id, max_steps, drop):
    """The comparison above can fail: leaving one part out of the state changes the outputs."""
    state, expected, actions = snapshot_and_continue(env_id, max_steps)
    got = restored_run(env_id, max_steps, without(state, drop), actions)
    with pytest.raises(AssertionError, match="differs"):
        assert_same_steps(expected, got)


def test_negative_control_a_torch_task_without_its_generator_does_not_continue():
    state, expected, actions = snapshot_and_continue(POINT_MASS_ID, 12)
    got = restored_run(
        POINT_MASS_ID, 12, state, actions, after=lambda env: env.sim.generator.manual_seed(5)
    )
    with pytest.raises(AssertionError, match="differs"):
        assert_same_steps(expected, got)


@pytest.mark.parametrize("env_id", ["CartPole-v1", "HalfCheetah-v5", POINT_MASS_ID])
def test_a_state_loads_into_an_env_never_reset(env_id):
    state, expected, actions = snapshot_and_continue(env_id, 12)
    assert_same_steps(expected, restored_run(env_id, 12, state, actions, reset=False))


def test_torch_task_state_is_copies_and_restores_the_generator():
    env = build(POINT_MASS_ID, 12)
    env.reset(seed=3)
    state = env.get_state()
    position = state["sim"]["position"].clone()
    run(env, random_actions(env.action_space, 5))
    assert torch.equal(state["sim"]["position"], position), "the state is a view"
    assert isinstance(env, TorchVecEnv) and env.steps == 5
    env.set_state(state)
    assert env.steps == 0
    assert torch.equal(env.sim.position, position)


def test_wrapper_counters_deques_and_statistics_are_saved():
    """Wrappers with episode statistics (deques, counters), running normalization statistics
    and a function (code, skipped) resume as the original continues."""

    def make() -> gym.Env:
        env = gym.make("CartPole-v1", max_episode_steps=10)
        env = gym.wrappers.NormalizeObservation(env)
        env = gym.wrappers.NormalizeReward(env)
        env = gym.wrappers.TransformObservation(env, lambda o: 2 * o, env.observation_space)
        return gym.wrappers.RecordEpisodeStatistics(env, buffer_length=5)

    def episodes(env, steps):
        out = []
        for _ in range(steps):
            obs, reward, term, trunc, info = env.step(1)
            out.append((obs.tolist(), reward))
            if term or trunc:
                out.append((info["episode"]["r"], info["episode"]["l"]))
                env.reset()
        return out

    env = make()
    env.reset(seed=0)
    episodes(env, 13)
    state = pickled(env_state(env))
    expected = (episodes(env, 40), list(env.return_queue), env.episode_count)
    fresh = make()
    fresh.reset(seed=7)
    load_env_state(fresh, state)
    assert (episodes(fresh, 40), list(fresh.return_queue), fresh.episode_count) == expected
    assert fresh.return_queue.maxlen == 5


def test_async_envs_raise_a_one_line_reason():
    env = build("CartPole-v1", 25, vectorization="async")
    try:
        with pytest.raises(EnvStateUnsupported, match="subprocesses") as e:
            env.get_state()
        assert "\n" not in e.value.reason and "CartPole-v1" in e.value.reason
        with pytest.raises(EnvStateUnsupported):
            env.set_state({"steps": 0, "envs": []})
    finally:
        env.close()


def test_unsupported_simulators_and_attributes_raise_naming_them():
    class NoStateSim(TorchPointMass):
        state_dict = None  # a simulator without the protocol

    sim = TorchVecEnv(NoStateSim(num_envs=2), name="my/Sim-v0")
    with pytest.raises(EnvStateUnsupported, match="'my/Sim-v0'.*NoStateSim"):
        sim.get_state()

    class UserVecEnv:  # a VecEnv of the user's, without get_state/set_state
        pass

    with pytest.raises(EnvStateUnsupported, match="UserVecEnv"):
        vec_env_state(UserVecEnv())
    with pytest.raises(EnvStateUnsupported, match="UserVecEnv"):
        load_vec_env_state(UserVecEnv(), {})

    env = gym.make("CartPole-v1")
    env.unwrapped.handle = object()  # e.g. a socket to an external simulator
    with pytest.raises(EnvStateUnsupported, match=r"CartPoleEnv\.handle is a builtins\.object"):
        env_state(env)


def test_a_state_of_another_env_is_refused():
    state = env_state(gym.make("CartPole-v1"))
    with pytest.raises(EnvError, match="CartPoleEnv.*PendulumEnv"):
        load_env_state(gym.make("Pendulum-v1"), state)
    vec = build("CartPole-v1", 25)
    vec.reset(seed=0)
    with pytest.raises(EnvError, match="holds 2 envs"):
        vec.set_state({"steps": 0, "envs": vec.get_state()["envs"][:2]})


def test_one_env_view_of_a_torch_task_saves_its_task():
    """The Gymnasium view of a batched task (evaluation's env) saves the task's state_dict."""

    def steps(env, n):
        return [env.step(np.array([0.5, -0.3], dtype=np.float32))[:4] for _ in range(n)]

    env = gym.make(POINT_MASS_ID, max_episode_steps=5)
    env.reset(seed=0)
    steps(env, 3)
    state = pickled(env_state(env))
    expected = steps(env, 4) + [env.reset()[0]] + steps(env, 2)
    fresh = gym.make(POINT_MASS_ID, max_episode_steps=5)
    fresh.reset(seed=9)
    load_env_state(fresh, state)
    got = steps(fresh, 4) + [fresh.reset()[0]] + steps(fresh, 2)
    for e, g in zip(expected, got, strict=True):
        assert all(np.array_equal(a, b) for a, b in zip(e, g, strict=True))
