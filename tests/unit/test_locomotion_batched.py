"""ppokit/AntLocomotionBatched-v0 against a plain one-env reference, step by step.

`OneAnt` below is the task written for one env, the way a reader would write it: its own MjData
stepped by `mj_step`, the torso's frame from `mj_kinematics`, the terrain by `mj_ray` straight
down, every reward term as scalar code. From the same state (MuJoCo's state row of env i, its
model with the friction and mass drawn for it, the command and the bookkeeping), it must give the
batched env's observation and reward at every step. Then: time-outs and terminations with final
observations and auto-reset, command resampling with standing commands, the curriculum, and the
terrain lookup against MuJoCo's ray casts.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np
import pytest
import torch

from ppokit.config import EnvConfig
from ppokit.envs import make_env
from ppokit.envs.locomotion_batched import (
    ANT_LOCOMOTION_BATCHED,
    NOMINAL_HEIGHT,
    TERRAIN_GROUP,
    AntLocomotionBatched,
)
from ppokit.errors import EnvError

NUM_ENVS = 4
# noise and pushes off (they draw from the batch's generators, which one env cannot replay); the
# friction and mass drawn per env stay on, so the reference checks they reach the physics
EXACT = {
    "randomization": {"noise_level": 0.0, "push_interval": 0.0},
    "commands": {"resample_time": 1000.0},
    "terrain": {"fixed_levels": [0, 2, 4, 5]},
}


class OneAnt:
    """Env `i` of a batched env, continued on its own (see the module doc)."""

    def __init__(self, env: AntLocomotionBatched, i: int) -> None:
        self.cfg, self.dt, self.frame_skip = env.cfg, env.dt, env.cfg.frame_skip
        self.model = env.batch.get_model(i)
        self.data = mujoco.MjData(self.model)
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        mujoco.mj_setState(self.model, self.data, env.batch.state[i].copy(), spec)
        mujoco.mj_kinematics(self.model, self.data)  # places the terrain for mj_ray
        self.torso = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "torso")
        self.base_mass = env.torso_mass
        self.command = env.commands[i].copy()
        self.last_action = env.last_actions[i].copy()
        self.last_dof_vel = env.last_dof_vel[i].copy()
        self.air_time = env.feet_air_time[i].copy()
        self.last_contact = env.last_contacts[i].copy()
        self.sensor = {
            self.model.sensor(k).name: k for k in range(self.model.nsensor)
        }  # name -> index
        self.geomgroup = np.zeros(6, dtype=np.uint8)
        self.geomgroup[TERRAIN_GROUP] = 1
        self.default_dof_pos = env.default_dof_pos

    def ground(self, x: float, y: float) -> float:
        top = 10.0
        geom = np.zeros(1, dtype=np.int32)
        start, down = np.array([x, y, top]), np.array([0.0, 0.0, -1.0])
        dist = mujoco.mj_ray(self.model, self.data, start, down, self.geomgroup, 1, -1, geom)
        return top - dist

    def frame(self) -> tuple[np.ndarray, float]:
        mujoco.mj_kinematics(self.model, self.data)
        rot = self.data.xmat[self.torso].reshape(3, 3).copy()
        return rot, math.atan2(rot[1, 0], rot[0, 0])

    def observe(self) -> dict[str, np.ndarray]:
        rot, yaw = self.frame()
        d = self.data
        x, y, z = d.qpos[0:3]
        scan = []
        for px in np.linspace(-0.6, 1.0, 9):
            for py in np.linspace(-0.6, 0.6, 7):
                wx = x + math.cos(yaw) * px - math.sin(yaw) * py
                wy = y + math.sin(yaw) * px + math.cos(yaw) * py
                scan.append(min(max(z - NOMINAL_HEIGHT - self.ground(wx, wy), -1.0), 1.0))
        v_body = rot.T @ d.qvel[0:3]
        return {
            "proprioception": np.concatenate(
                [
                    rot.T @ np.array([0.0, 0.0, -1.0]),
                    d.qvel[3:6],
                    d.qpos[7:],
                    d.qvel[6:],
                    self.last_action,
                ]
            ),
            "base_velocity": v_body,
            "commands": self.command.copy(),
            "height_scan": np.array(scan),
            "privileged": np.array(
                [
                    *v_body,
                    z - self.ground(x, y),
                    self.model.geom_friction[0, 0],
                    self.model.body_mass[self.torso] - self.base_mass,
                ]
            ),
        }

    def step(self, action: np.ndarray) -> tuple[dict, float, bool]:
        r, c = self.cfg.rewards, self.cfg.control
        action = np.clip(action, -1.0, 1.0)
        if c.type == "position":  # PD to a target in the joint's range, written out by hand
            joint = self.model.actuator_trnid[:, 0]
            lo, hi = self.model.jnt_range[joint].T
            target = (lo + hi) / 2 + (hi - lo) / 2 * c.action_scale * action
            self.data.ctrl[:] = target
            qadr, vadr = self.model.jnt_qposadr[joint], self.model.jnt_dofadr[joint]
        else:
            self.data.ctrl[:] = action
        for _ in range(self.frame_skip):
            if c.type == "position":  # the torque of this physics step, from its start state
                pd = (
                    c.stiffness * (target - self.data.qpos[qadr]) - c.damping * self.data.qvel[vadr]
                )
                torque = np.clip(pd, -150.0, 150.0)
            else:
                torque = 150.0 * action
            mujoco.mj_step(self.model, self.data)
        touch = self.data.sensordata.copy()  # computed in the last substep, as the batch's
        rot, yaw = self.frame()
        d = self.data
        v_world, w_body = d.qvel[0:3], d.qvel[3:6]
        v_body = rot.T @ v_world
        v_heading = np.array(
            [
                math.cos(yaw) * v_world[0] + math.sin(yaw) * v_world[1],
                -math.sin(yaw) * v_world[0] + math.cos(yaw) * v_world[1],
            ]
        )
        yaw_rate = (rot @ w_body)[2]
        self.velocity = np.array([*v_heading, yaw_rate])  # what the command is held to
        gravity = rot.T @ np.array([0.0, 0.0, -1.0])
        height = d.qpos[2] - self.ground(d.qpos[0], d.qpos[1])
        q, dq = d.qpos[7:], d.qvel[6:]
        feet = np.array([touch[self.sensor[f"foot_{k}"]] > 1.0 for k in range(4)])
        hit = [
            v > 0.1 for name, v in zip(self.sensor, touch, strict=True) if name.startswith("body_")
        ]
        moving = np.linalg.norm(self.command[:2]) > 0.1
        speed = np.linalg.norm(self.command[:2])
        along = v_heading @ self.command[:2] / speed if speed > 0 else 0.0
        progress = min(max(along, -speed), speed)
        lo, hi = self.model.jnt_range[1:, 0], self.model.jnt_range[1:, 1]
        mid, half = (lo + hi) / 2, (hi - lo) / 2 * r.soft_dof_pos_limit
        terms = {
            "tracking_lin_vel": math.exp(-np.sum((self.command[:2] - v_heading) ** 2) / 0.25),
            "tracking_ang_vel": math.exp(-((self.command[2] - yaw_rate) ** 2) / 0.25),
            "lin_vel_progress": progress,
            "lin_vel_z": v_body[2] ** 2,
            "ang_vel_xy": w_body[0] ** 2 + w_body[1] ** 2,
            "orientation": gravity[0] ** 2 + gravity[1] ** 2,
            "base_height": (height - r.base_height_target) ** 2,
            "torques": np.sum(torque**2),
            "dof_acc": np.sum(((dq - self.last_dof_vel) / self.dt) ** 2),
            "action_rate": np.sum((action - self.last_action) ** 2),
            "dof_pos_limits": np.sum(np.maximum(mid - half - q, 0) + np.maximum(q - mid - half, 0)),
            "collision": float(sum(hit)),
            "feet_air_time": moving
            * sum(
                (self.air_time[k] + self.dt - 0.5)
                for k in range(4)
                if self.air_time[k] > 0 and (feet[k] or self.last_contact[k])
            ),
            "stand_still": (not moving) * np.sum(np.abs(q - self.default_dof_pos)),
        }
        reward = sum(getattr(r, name) * self.dt * value for name, value in terms.items())
        reward = max(reward, 0.0) if r.only_positive_rewards else reward
        touching = feet | self.last_contact
        self.air_time = (self.air_time + self.dt) * ~touching
        self.last_contact = feet
        self.last_action = action
        self.last_dof_vel = dq.copy()
        terminated = rot[2, 2] <= 0 or not 0.2 <= height <= 1.0
        return self.observe(), reward, terminated


def build(num_envs: int = NUM_ENVS, max_steps: int | None = 1000, **kwargs):
    kw = {**EXACT, **kwargs}
    return AntLocomotionBatched(num_envs, max_episode_steps=max_steps, **kw)


def random_actions(steps: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(n, 8, generator=g) * 2.4 - 1.2 for _ in range(steps)]  # some clipped


POSITION_CONTROL = {"type": "position", "stiffness": 400.0, "damping": 20.0}


@pytest.mark.parametrize(
    "control",
    [{}, POSITION_CONTROL, {**POSITION_CONTROL, "action_scale": 0.5}],
    ids=["torque", "position", "position-half-scale"],
)
def test_steps_match_the_one_env_reference(control):
    env = build(control=control)
    env.reset(seed=3)
    actions = random_actions(60, NUM_ENVS)
    for a in actions[:10]:  # away from the reset pose: feet on the ground, air times running
        env.step(a)
    refs = [OneAnt(env, i) for i in range(NUM_ENVS)]
    live = [True] * NUM_ENVS  # compared until its episode ends (then the batch resets it)
    landings = compared = 0
    for t, a in enumerate(actions[10:]):
        obs, rewards, terminated, truncated, extras = env.step(a)
        landings += int((extras["terms"]["feet_air_time"] != 0).sum())
        for i, ref in enumerate(refs):
            if not live[i]:
                continue
            ref_obs, ref_reward, ref_terminated = ref.step(a[i].double().numpy())
            assert bool(terminated[i]) == ref_terminated, (i, t)
            assert not truncated[i]
            seen = extras["final_obs"] if ref_terminated else obs
            for key, value in ref_obs.items():
                np.testing.assert_allclose(
                    seen[key][i].numpy(), value, atol=2e-5, err_msg=f"{key}, env {i}, step {t}"
                )
            assert rewards[i].item() == pytest.approx(ref_reward, rel=1e-5, abs=1e-7), (i, t)
            np.testing.assert_allclose(extras["velocity"][i], ref.velocity, atol=1e-9)
            live[i] = not ref_terminated
            compared += 1
    assert compared > 100 and landings > 0  # the air-time term was exercised


def test_every_term_is_exercised_and_a_zero_scale_is_not_computed():
    env = build(rewards={"stand_still": 0.0, "torques": 0.0})
    env.reset(seed=3)
    seen = set()
    for a in random_actions(30, NUM_ENVS):
        *_, extras = env.step(a)
        seen |= {k for k, v in extras["terms"].items() if np.any(v != 0)}
    assert "torques" not in extras["terms"] and "stand_still" not in extras["terms"]
    for term in ("tracking_lin_vel", "lin_vel_progress", "lin_vel_z", "ang_vel_xy", "dof_acc"):
        assert term in seen


def test_each_terms_share_of_the_reward_is_logged_and_they_sum_to_the_reward():
    """infos["log"] carries reward_<term>: the term's scale x dt x value, averaged over the
    envs; without only_positive_rewards' clipping they add up to the mean reward."""
    rewards = {"only_positive_rewards": False, "termination": -2.0, "stand_still": 0.0}
    env = build(rewards=rewards)
    env.reset(seed=4)
    env.qpos[2, 3:7] = [0.0, 1.0, 0.0, 0.0]  # env 2 upside down: one termination to log
    for t, a in enumerate(random_actions(12, NUM_ENVS)):
        _, reward, terminated, _, extras = env.step(a)
        log = extras["log"]
        shares = {k: v for k, v in log.items() if k.startswith("reward_")}
        assert "reward_stand_still" not in shares  # a term that is off is not logged
        assert sum(shares.values()) == pytest.approx(reward.mean().item(), rel=1e-6, abs=1e-9)
        # the tracking kernel from the command and the velocity the step reports
        cmd, vel = extras["command"], extras["velocity"]
        kernel = np.exp(-np.sum((cmd[:, :2] - vel[:, :2]) ** 2, axis=1) / 0.25)
        assert log["reward_tracking_lin_vel"] == pytest.approx(env.dt * kernel.mean(), rel=1e-9)
        expected = -2.0 * env.dt * terminated.double().mean().item()
        assert log["reward_termination"] == pytest.approx(expected, abs=1e-12)
        if t == 0:
            assert terminated[2] and log["reward_termination"] < 0


def test_time_out_truncates_with_the_final_observation_and_resets():
    env = build(max_steps=5)
    env.reset(seed=1)
    refs = [OneAnt(env, i) for i in range(NUM_ENVS)]
    actions = random_actions(5, NUM_ENVS)
    for t, a in enumerate(actions):
        obs, _, terminated, truncated, extras = env.step(a)
        expected = [ref.step(a[i].double().numpy())[0] for i, ref in enumerate(refs)]
        if t < 4:
            assert not truncated.any() and extras["final_obs"] is None
    assert truncated.all() and not terminated.any()
    for i in range(NUM_ENVS):
        for key in ("proprioception", "privileged"):
            np.testing.assert_allclose(
                extras["final_obs"][key][i].numpy(), expected[i][key], atol=2e-5
            )
    # the returned observation is a new episode's: zero previous action, counters reset
    assert torch.all(obs["proprioception"][:, -8:] == 0)
    assert (env.episode_steps == 0).all()


def test_falling_over_terminates_and_only_that_env_resets():
    env = build()
    env.reset(seed=2)
    env.qpos[1, 3:7] = [0.0, 1.0, 0.0, 0.0]  # env 1 upside down
    before = env.qpos.copy()
    obs, _, terminated, truncated, extras = env.step(torch.zeros(NUM_ENVS, 8))
    assert terminated.tolist() == [False, True, False, False] and not truncated.any()
    assert extras["final_obs"]["proprioception"][1, 2] > 0  # gravity points up in the body
    assert obs["proprioception"][1, 2] < 0  # the new episode starts upright
    assert np.linalg.norm(env.qpos[1, :2] - before[1, :2]) > 0.0


def test_an_env_that_falls_changes_no_other_envs_commands():
    """Two policies evaluated from one seed follow the same commands: an env that falls and
    restarts draws its next command early, and the other envs' sequences stay as they were."""
    kwargs = {"commands": {"resample_time": 0.1, "standing_share": 0.25}}
    steady, falling = build(**kwargs), build(**kwargs)
    steady.reset(seed=5)
    falling.reset(seed=5)
    np.testing.assert_array_equal(steady.commands, falling.commands)
    falling.qpos[1, 3:7] = [0.0, 1.0, 0.0, 0.0]  # env 1 upside down: it falls on this step
    zeros = torch.zeros(NUM_ENVS, 8)
    history = {"steady": [], "falling": []}
    for _ in range(4 * steady.command_resample_steps):
        _, _, terminated, _, _ = falling.step(zeros)
        steady.step(zeros)
        history["steady"].append(steady.commands.copy())
        history["falling"].append(falling.commands.copy())
        assert not terminated[[0, 2, 3]].any()
    a, b = np.array(history["steady"]), np.array(history["falling"])  # [T, N, 3]
    np.testing.assert_array_equal(a[:, [0, 2, 3]], b[:, [0, 2, 3]])
    assert len({tuple(c) for c in a[:, 0]}) == 5  # the others resampled: 4 commands after the first
    # env 1 restarted at once: its next command is the one the steady env 1 reaches later
    np.testing.assert_array_equal(b[0, 1], a[steady.command_resample_steps - 1, 1])


def test_a_saved_state_without_the_command_and_noise_streams_is_refused():
    env = build()
    env.reset(seed=0)
    state = env.state_dict()
    del state["noise_rng"], state["command_key"]
    with pytest.raises(EnvError, match="no noise_rng, command_key .*the episodes restart"):
        env.load_state_dict(state)


def test_a_simulation_that_blows_up_terminates():
    env = build()
    env.reset(seed=2)
    env.qvel[2] = 1e12  # MuJoCo resets it to the initial pose and warns
    _, _, terminated, _, _ = env.step(torch.zeros(NUM_ENVS, 8))
    assert terminated.tolist() == [False, False, True, False]


def test_commands_resample_with_a_share_standing():
    env = build(
        num_envs=256, commands={"resample_time": 0.1, "standing_share": 0.25, "min_speed": 0.0}
    )
    env.reset(seed=0)
    first = env.commands.copy()
    for _ in range(int(round(0.1 / env.dt))):
        obs, *_ = env.step(torch.zeros(256, 8))
    assert not np.array_equal(env.commands, first)
    np.testing.assert_allclose(obs["commands"].numpy(), env.commands, atol=1e-6)
    standing = np.all(env.commands == 0, axis=1).mean()
    assert 0.15 < standing < 0.35
    low, high = (-0.5, -0.5, -0.5), (1.0, 0.5, 0.5)
    assert (env.commands >= low).all() and (env.commands <= high).all()


def test_curriculum_promotes_and_demotes_by_tracking_success():
    env = build(terrain={"curriculum": True, "levels": 6})
    env.reset(seed=0)
    env.levels[:] = [2, 2, 5, 0]
    env.track_steps[:] = 100  # steps with a moving command
    env.track_sum[:] = [95.0, 10.0, 95.0, 10.0]  # success 0.95, 0.1, 0.95 (top), 0.1 (bottom)
    env._update_levels(np.arange(NUM_ENVS))
    assert env.levels[0] == 3 and env.levels[1] == 1 and env.levels[3] == 0
    assert 0 <= env.levels[2] <= 5  # mastered the top level: a random level
    # an episode of standing commands only is not judged
    env.levels[:] = 2
    env.track_steps[:] = 0
    env._update_levels(np.arange(NUM_ENVS))
    assert (env.levels == 2).all()


def test_terrain_lookup_equals_mujoco_ray_casts():
    env = build()
    env.reset(seed=0)
    ref = OneAnt(env, 0)
    rng = np.random.default_rng(0)
    t = env.cfg.terrain
    x = rng.uniform(-2.0, t.levels * t.tile_size + 2.0, 300)
    y = rng.uniform(-2.0, 3 * t.tile_size + 2.0, 300)
    rays = np.array([ref.ground(a, b) for a, b in zip(x, y, strict=True)])
    np.testing.assert_allclose(env.terrain.height(x, y), rays, atol=1e-6)
    assert rays.max() > 0.3  # the hard levels are not flat


def test_registered_id_builds_through_make_env_as_a_torch_env():
    env = make_env(EnvConfig(id=ANT_LOCOMOTION_BATCHED, num_envs=2, max_episode_steps=3))
    try:
        obs = env.reset(seed=0)
        assert set(obs) == {
            "proprioception",
            "base_velocity",
            "commands",
            "height_scan",
            "privileged",
        }
        assert obs["height_scan"].shape == (2, 63) and obs["height_scan"].dtype == torch.float32
        for _ in range(3):
            step = env.step(torch.zeros(2, 8))
        assert step.truncated.all() and step.final_obs is not None
        assert not step.bootstrap_pre_step
    finally:
        env.close()


def test_position_control_holds_each_joint_at_its_target():
    # An Ant standing on flat ground, one constant action: every joint settles at the middle of
    # its range + action x half the range (the ankles carry the body: within 0.01 rad).
    env = build(control=POSITION_CONTROL, terrain={"fixed_levels": [0]})
    env.reset(seed=1)
    action = torch.tensor([0.5, 0.2, -0.5, 0.0, 0.3, -0.2, -0.3, 0.1]).repeat(NUM_ENVS, 1)
    for _ in range(100):
        *_, terminated, _, _ = env.step(action)
        assert not terminated.any()
    # ant.xml's actuators, in order: hip_4, ankle_4, hip_1, ankle_1, ..., ankle_3; its ranges
    ranges = np.radians([[-30, 30], [30, 70], [-30, 30], [30, 70],
                         [-30, 30], [-70, -30], [-30, 30], [-70, -30]])  # fmt: skip
    qpos_of = [6, 7, 0, 1, 2, 3, 4, 5]  # the joints' order in qpos: hip_1, ankle_1, ...
    target = ranges.mean(1) + (ranges[:, 1] - ranges[:, 0]) / 2 * action[0].numpy()
    np.testing.assert_allclose(
        env.qpos[:, 7:][:, qpos_of], np.tile(target, (NUM_ENVS, 1)), atol=0.01
    )


def test_unknown_config_keys_are_refused_with_the_valid_ones():
    with pytest.raises(TypeError, match="torques"):
        AntLocomotionBatched(1, rewards={"torque": -1.0})
    with pytest.raises(TypeError, match="rewards"):
        AntLocomotionBatched(1, reward={"torques": -1.0})
    with pytest.raises(ValueError, match="control.type 'pd' is not one of torque, position"):
        AntLocomotionBatched(1, control={"type": "pd"})
    with pytest.raises(ValueError, match=r"control.action_scale 0.0 must be in \(0, 1\]"):
        AntLocomotionBatched(1, control={"type": "position", "action_scale": 0.0})


def test_render_follows_the_torso_and_draws_the_command_in_green():
    """An RGB frame of the env asked for, from a camera that tracks its torso; the command's
    arrows are green, so a command on a standing robot adds green pixels and nothing else."""
    env = AntLocomotionBatched(2, render_mode="rgb_array", **EXACT)
    try:
        env.reset(seed=0)
        env.commands[:] = 0.0
        still = env.render(0)
        assert still.shape == (*env.RENDER_SIZE, 3) and still.dtype == np.uint8
        assert still.std() > 10  # a scene, not a blank buffer
        env.commands[0] = [1.0, 0.0, 0.5]
        commanded = env.render(0)
        changed = np.abs(commanded.astype(int) - still.astype(int)).sum(-1) > 30
        assert changed.sum() > 200
        r, g, b = commanded[changed].astype(int).T
        assert np.median(g - np.maximum(r, b)) > 50  # the new pixels are green
        # env 1 stands elsewhere on the terrain: the camera follows it, the picture differs
        env.commands[1] = env.commands[0]
        assert np.abs(env.render(1).astype(int) - commanded.astype(int)).mean() > 1.0
    finally:
        env.close()


def test_render_mode_other_than_rgb_array_is_refused():
    with pytest.raises(TypeError, match="valid: rgb_array"):
        AntLocomotionBatched(1, render_mode="human")
