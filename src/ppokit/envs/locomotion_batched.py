"""Velocity-command locomotion for the Ant, batched: every env of a process in one MuJoCo `Batch`.

``ppokit/AntLocomotionBatched-v0`` is the task of ``ppokit/AntLocomotion-v0`` rebuilt for speed and
in the legged_gym tradition (Rudin et al. 2021):

- physics: all envs' states are rows of one `mujoco.batch.Batch`, stepped by MuJoCo's own thread
  pool in native code (the GIL released), ``frame_skip`` substeps per call; implicitfast
  integration at 10 ms, control at 50 Hz (``frame_skip=2``), Ant-v5's robot.
- everything else is NumPy over all envs at once: observations, rewards, terminations,
  auto-reset, command resampling, curriculum, noise and pushes. The height scan reads the
  heightfield exactly as MuJoCo's ray casts see it (its two triangles per cell; the tests check
  it against `mj_ray`) for all envs' points in one vectorized lookup, instead of one ray per point.
- terrain: one heightfield of square tiles, a row of tiles per type (rough, slope, stairs) and a
  column per difficulty level; each env starts on a tile of its level. With the curriculum on,
  an env whose episode tracked the command well moves one level up, one that tracked it badly one
  level down, and one that masters the top level goes to a random level (legged_gym's rule).
- reward: a sum of named terms, each `scale * dt * term` and computed only when its scale is not
  0 (`RewardScales`; negative total clipped to 0 as legged_gym's ``only_positive_rewards``).
- commands (vx, vy in the heading frame, yaw rate) resampled at every reset and every
  ``resample_time`` seconds, a share of them standing (all zero).
- domain randomisation: friction and added torso mass drawn per env at `reset(seed)`, velocity
  pushes, and noise on the policy's observations only (the ``privileged`` group is exact).

Observation groups (a dict): ``proprioception`` (30: gravity in the body frame, angular velocity
(a gyro's), joint positions and velocities, previous action), ``base_velocity`` (3: the body's
linear velocity in its own frame, what a state estimator gives a legged robot; noisy),
``commands`` (3), ``height_scan`` (63: 9 x 7 heading-aligned points, torso height above each
minus the nominal height, clipped to +-1), ``privileged`` (6: exact body velocity, height above
the terrain, friction, added mass). Terminated: torso outside 0.2-1.0 m above the terrain,
upside down, or non-finite physics; truncated after ``max_episode_steps`` (1000 = 20 s).

A step's extras carry, per env, the command it was rewarded for (``command``), the ``velocity``
held to it (vx, vy in the heading frame, yaw rate), the ``tracking_error_xy``/``_yaw`` between
them, the ``terrain_level`` and the reward ``terms``; ``log`` their means (see docs/training.md).

`state_dict()`/`load_state_dict()` save and restore everything (MuJoCo's integration state of
every env, the per-env model parameters drawn, counters, commands, levels, RNG) for an exact
resume.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import torch
from mujoco.batch import Batch, SimulationError

from ppokit.envs.offscreen import FollowCamera

ANT_LOCOMOTION_BATCHED = "ppokit/AntLocomotionBatched-v0"
NOMINAL_HEIGHT = 0.55
SCAN_X = np.linspace(-0.6, 1.0, 9).round(9)  # forward, heading frame (0 is a point)
SCAN_Y = np.linspace(-0.6, 0.6, 7).round(9)  # left
TERRAIN_GROUP = 2
PLANE_Z = -0.02  # the ground plane beyond the heightfield
FEET = 4
UNSTABLE = [
    int(mujoco.mjtWarning.mjWARN_BADQPOS),
    int(mujoco.mjtWarning.mjWARN_BADQVEL),
    int(mujoco.mjtWarning.mjWARN_BADQACC),
]
TERRAIN_TYPES = ("rough", "slope", "stairs")


# ----------------------------------------------------------------------------------------------
# The configuration: env.kwargs in a preset, e.g. {rewards: {torques: -2.0e-5}, terrain: {...}}
# ----------------------------------------------------------------------------------------------


@dataclass
class RewardScales:
    """Every reward term and its scale; the step's reward is sum(scale * dt * term) over terms
    whose scale is not 0 (a term at 0 is not computed). Signs are in the scales."""

    tracking_lin_vel: float = 1.0  # exp(-|cmd_xy - v_xy|^2 / tracking_sigma), heading frame
    # exp(-(cmd_yaw - w_z)^2 / tracking_sigma); legged_gym: 0.5, which let the Ant trade yaw for
    # planar speed (its yaw error grew past standing still's; benchmarks/RESULTS.md)
    tracking_ang_vel: float = 1.0
    # not legged_gym's: velocity along the commanded direction, clipped to +-|cmd_xy| (0 for a
    # standing command). The kernels alone give little signal far from the command, and short
    # CPU runs settle on standing still without it (benchmarks/RESULTS.md)
    lin_vel_progress: float = 1.0
    lin_vel_z: float = -0.2  # body-frame vertical velocity^2 (legged_gym: -2; the Ant bounces)
    ang_vel_xy: float = -0.02  # roll and pitch rates^2
    orientation: float = -1.0  # |gravity_xy in the body frame|^2 (0 when level)
    base_height: float = 0.0  # (torso height above the terrain - base_height_target)^2
    torques: float = -1.0e-6  # sum of joint torques^2 (N m) in the step's last physics step
    dof_acc: float = -2.5e-7  # sum of joint accelerations^2
    action_rate: float = -0.01  # |action - previous action|^2
    dof_pos_limits: float = -1.0  # how far joints are beyond their soft limits (rad)
    collision: float = -1.0  # number of torso/hip/upper-leg parts touching anything
    feet_air_time: float = 1.0  # sum over feet landing now of (air time - 0.5 s); 0 if cmd ~ 0
    stand_still: float = 0.0  # sum |q - q_default| when the command is ~ 0
    termination: float = 0.0  # 1 on termination (not on time-outs)
    tracking_sigma: float = 0.25
    base_height_target: float = NOMINAL_HEIGHT
    soft_dof_pos_limit: float = 0.9  # the soft limits: this share of each joint's range
    only_positive_rewards: bool = True  # clip the total (before `termination`) at 0


@dataclass
class CommandConfig:
    """Velocity commands (heading frame) drawn uniformly, resampled every `resample_time` s."""

    lin_vel_x: tuple[float, float] = (-0.5, 1.0)
    lin_vel_y: tuple[float, float] = (-0.5, 0.5)
    ang_vel_yaw: tuple[float, float] = (-0.5, 0.5)
    resample_time: float = 10.0
    standing_share: float = 0.1  # share of commands that are all zero
    min_speed: float = 0.2  # planar commands slower than this are set to 0 (legged_gym)


@dataclass
class TerrainConfig:
    """Tiles of `tile_size` m: one row of tiles per type, one column per level (difficulty)."""

    levels: int = 6
    tile_size: float = 8.0
    resolution: float = 0.2  # m per heightfield cell (MuJoCo's hfield collisions cost ~ cells)
    curriculum: bool = True
    max_init_level: int = 1  # levels drawn in [0, max_init_level] at reset(seed)
    fixed_levels: list | None = None  # env i on level fixed_levels[i % len] (no curriculum)
    # the episode mean of the tracking_lin_vel kernel (0..1) over moving commands; at 0.8 / 0.5
    # the stochastic policy was never promoted in 10M steps (benchmarks/RESULTS.md)
    promote_above: float = 0.7
    demote_below: float = 0.4
    roughness: tuple[float, float] = (0.01, 0.08)  # noise amplitude (m) at level 0 .. top
    slope: tuple[float, float] = (0.0, 0.35)  # pyramid slope (rise / run)
    step_height: tuple[float, float] = (0.0, 0.12)  # stairs (m)
    step_width: float = 0.4
    seed: int = 0  # the terrain's own seed (same terrain for every env and every run)


@dataclass
class RandomizationConfig:
    """Domain randomisation and observation noise (the policy's groups only)."""

    friction: tuple[float, float] | None = (0.5, 1.25)  # None: the model's (1.0)
    added_mass: tuple[float, float] | None = (-0.05, 0.15)  # kg on the torso (0.33 of 0.91 kg)
    push_interval: float = 15.0  # seconds; 0 = no pushes
    max_push_vel: float = 0.5  # m/s added to the body's planar velocity
    noise_level: float = 1.0  # multiplies every noise scale below; 0 = no noise
    noise_gravity: float = 0.05
    noise_ang_vel: float = 0.2
    noise_dof_pos: float = 0.01
    noise_dof_vel: float = 1.5
    noise_lin_vel: float = 0.1
    noise_height: float = 0.1


CONTROL_TYPES = ("torque", "position")


@dataclass
class ControlConfig:
    """How an action in [-1, 1] drives each joint. ``torque``: Ant-v5's motors, 150 N m x action.
    ``position``: legged_gym's PD control, the action sets the joint's target (the middle of its
    range + action x action_scale x half the range) and MuJoCo applies stiffness x (target - q)
    - damping x dq, limited to +-150 N m, at every physics step (the damping implicit, so stiff
    gains stay stable at 10 ms)."""

    type: str = "torque"  # torque | position
    stiffness: float = 400.0  # N m / rad (position); the joints' armature is 1 kg m^2
    damping: float = 20.0  # N m s / rad (position)
    # position: the share of each joint's half range an action of +-1 reaches (legged_gym keeps
    # its targets near the standing pose with a small scale); 1 reaches the range's ends
    action_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.type not in CONTROL_TYPES:
            raise ValueError(f"control.type {self.type!r} is not one of {', '.join(CONTROL_TYPES)}")
        if not 0.0 < self.action_scale <= 1.0:
            raise ValueError(f"control.action_scale {self.action_scale} must be in (0, 1]")


@dataclass
class LocomotionConfig:
    rewards: RewardScales = field(default_factory=RewardScales)
    control: ControlConfig = field(default_factory=ControlConfig)
    commands: CommandConfig = field(default_factory=CommandConfig)
    terrain: TerrainConfig = field(default_factory=TerrainConfig)
    randomization: RandomizationConfig = field(default_factory=RandomizationConfig)
    frame_skip: int = 2
    timestep: float = 0.01
    solver_iterations: int = 10  # MuJoCo's iterations and ls_iterations (its default: 100, 50)
    threads: int = 2  # MuJoCo batch threads (0: every CPU)

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> LocomotionConfig:
        """From env.kwargs: sections as dicts, unknown keys refused with the valid ones named."""
        sections = {f.name: f for f in fields(cls)}
        out = {}
        for key, value in kwargs.items():
            if key not in sections:
                raise TypeError(
                    f"unexpected keyword argument {key!r} (valid: {', '.join(sections)})"
                )
            kind = sections[key].default_factory if isinstance(value, dict) else None
            if kind is not None and kind is not field:
                names = {f.name for f in fields(kind)}
                bad = sorted(set(value) - names)
                if bad:
                    raise TypeError(
                        f"unexpected key {bad[0]!r} in {key} (valid: {', '.join(sorted(names))})"
                    )
                value = kind(**value)
            out[key] = value
        return cls(**out)


# ----------------------------------------------------------------------------------------------
# Model and terrain
# ----------------------------------------------------------------------------------------------


def make_terrain(cfg: TerrainConfig) -> np.ndarray:
    """Heights [rows (y), cols (x)] >= 0: a row of tiles per type, a column per level."""
    rng = np.random.default_rng(cfg.seed)
    n = int(round(cfg.tile_size / cfg.resolution))
    heights = np.zeros((len(TERRAIN_TYPES) * n + 1, cfg.levels * n + 1))
    u = (np.arange(n) + 0.5) / n * cfg.tile_size - cfg.tile_size / 2  # cell centres in a tile
    dist = np.maximum(np.abs(u)[:, None], np.abs(u)[None, :])  # to the tile centre (L-inf)
    for level in range(cfg.levels):
        d = level / max(cfg.levels - 1, 1)

        def lerp(r: tuple[float, float], d: float = d) -> float:
            return r[0] + d * (r[1] - r[0])

        rough = lerp(cfg.roughness)
        for t, kind in enumerate(TERRAIN_TYPES):
            # noise on a 0.2 m grid, repeated to the resolution (no sub-foot spikes)
            coarse = rng.uniform(0, 1, (n // 2 + 1, n // 2 + 1))
            noise = np.repeat(np.repeat(coarse, 2, 0), 2, 1)[:n, :n]
            if kind == "rough":
                tile = rough * noise
            elif kind == "slope":
                tile = lerp(cfg.slope) * (cfg.tile_size / 2 - dist) + 0.3 * rough * noise
            else:
                steps = np.floor((cfg.tile_size / 2 - dist) / cfg.step_width)
                tile = lerp(cfg.step_height) * steps
            heights[t * n : (t + 1) * n, level * n : (level + 1) * n] = tile
    return heights


def ant_xml(terrain: np.ndarray, cfg: LocomotionConfig, resolution: float) -> str:
    """Ant-v5's robot on a heightfield (the plane stays beyond it), with touch sensors: one per
    foot tip, and the parts whose contacts count as collisions (torso, hips, upper legs)."""
    source = Path(gym.__file__).parent / "envs" / "mujoco" / "assets" / "ant.xml"
    xml = source.read_text()
    xml = xml.replace(
        '<option integrator="RK4" timestep="0.01"/>',
        f'<option integrator="implicitfast" timestep="{cfg.timestep}"'
        f' iterations="{cfg.solver_iterations}" ls_iterations="{cfg.solver_iterations}"/>',
    )
    rows, cols = terrain.shape
    half_x, half_y = (cols - 1) * resolution / 2, (rows - 1) * resolution / 2
    top = max(float(terrain.max()), 1e-3)
    floor = re.search(r'<geom[^>]*name="floor"[^>]*/>', xml)
    assert floor is not None, "unexpected ant.xml: no floor geom"
    # the plane beyond the heightfield, 2 cm below it so that the two do not both collide with a
    # foot on the heightfield's flat parts (contacts cost most of a step)
    plane = floor.group(0).replace('name="floor"', f'name="ground" group="{TERRAIN_GROUP}"')
    plane = plane.replace('pos="0 0 0"', f'pos="{half_x} {half_y} {PLANE_Z}"')
    plane = plane.replace('size="40 40 40"', f'size="{half_x + 50} {half_y + 50} 40"')
    xml = xml.replace(
        floor.group(0),
        f'<geom conaffinity="1" condim="3" group="{TERRAIN_GROUP}" hfield="terrain"'
        f' name="floor" pos="{half_x} {half_y} 0" material="terrain" type="hfield"/>\n    ' + plane,
    )
    xml = xml.replace(
        "</asset>",
        f'  <hfield name="terrain" nrow="{rows}" ncol="{cols}"'
        f' size="{half_x} {half_y} {top} 0.1"/>\n'
        # 0.5 m squares, so that slopes, steps and bumps show in videos
        '  <texture name="terrain" type="2d" builtin="checker" width="64" height="64"'
        ' rgb1="0.42 0.52 0.42" rgb2="0.62 0.72 0.62"/>\n'
        '  <material name="terrain" texture="terrain" texuniform="true" texrepeat="1 1"/>\n'
        "  </asset>",
    )
    sensors = []

    def add_site(geom_name: str, site: str, radius: float, whole: bool) -> None:
        nonlocal xml
        geom = re.search(rf'<geom fromto="([^"]+)" name="{geom_name}"[^>]*/>', xml)
        assert geom is not None, f"unexpected ant.xml: no {geom_name}"
        a = np.array(geom.group(1).split(), dtype=float)
        if whole:  # a capsule site over the whole geom
            attrs = f'type="capsule" fromto="{geom.group(1)}" size="{radius}"'
        else:  # a sphere at the geom's far end: the foot tip
            attrs = f'type="sphere" pos="{a[3]} {a[4]} {a[5]}" size="{radius}"'
        xml = xml.replace(geom.group(0), geom.group(0) + f'\n<site name="{site}" {attrs}/>')
        sensors.append(site)

    feet = ("left_ankle_geom", "right_ankle_geom", "third_ankle_geom", "fourth_ankle_geom")
    for i, name in enumerate(feet):
        add_site(name, f"foot_{i}", 0.12, whole=False)
    xml = xml.replace(
        '<geom name="torso_geom" pos="0 0 0" size="0.25" type="sphere"/>',
        '<geom name="torso_geom" pos="0 0 0" size="0.25" type="sphere"/>\n'
        '<site name="body_torso" type="sphere" size="0.27"/>',
    )
    sensors.append("body_torso")
    for i in range(1, 5):
        add_site(f"aux_{i}_geom", f"body_hip_{i}", 0.1, whole=True)
    legs = ("left_leg_geom", "right_leg_geom", "back_leg_geom", "rightback_leg_geom")
    for i, name in enumerate(legs):
        add_site(name, f"body_leg_{i}", 0.1, whole=True)
    touch = "".join(f'<touch name="{s}" site="{s}"/>' for s in sensors)
    if cfg.control.type == "position":  # ctrl is the target angle in rad (set in step())
        c = cfg.control
        # the motor's gear (150 N m at action 1) becomes the PD torque's limit
        xml = re.sub(
            r'<motor ctrllimited="true" ctrlrange="-1.0 1.0" joint="(\w+)" gear="(\d+)"/>',
            rf'<position joint="\1" kp="{c.stiffness}" kv="{c.damping}" ctrllimited="false"'
            r' forcelimited="true" forcerange="-\2 \2"/>',
            xml,
        )
    return xml.replace("</actuator>", f"</actuator>\n  <sensor>{touch}</sensor>")


RANDOM_STREAMS = ("rng", "noise_rng")


def random_streams(seed: int | None) -> tuple[np.random.Generator, np.random.Generator, int]:
    """Generators for everything else and for the observation noise, and the key of the
    commands' per-env streams (`command_stream`)."""
    sequence = np.random.SeedSequence(seed)
    rng, noise = (np.random.default_rng(child) for child in sequence.spawn(2))
    return rng, noise, int(sequence.generate_state(1, np.uint64)[0])


def command_stream(key: int, env: int, draw: int) -> np.random.Generator:
    """The generator of env `env`'s `draw`-th command: a function of the seed, the env and the
    count alone, so that what one env does (a fall, a reset) never changes another's commands."""
    return np.random.default_rng([key, env, draw])


class Terrain:
    """Heights of MuJoCo's heightfield, vectorized: each cell is the two triangles MuJoCo
    collides with and casts rays against (split along the diagonal from (row, col) to (row+1,
    col+1)), so `height(x, y)` equals a vertical `mj_ray` to float precision (tested). Outside
    the heightfield the ground plane is at PLANE_Z."""

    def __init__(self, heights: np.ndarray, resolution: float) -> None:
        self.heights = heights
        self.resolution = resolution
        self.rows, self.cols = heights.shape

    def height(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        c = x / self.resolution
        r = y / self.resolution
        inside = (c >= 0) & (c <= self.cols - 1) & (r >= 0) & (r <= self.rows - 1)
        c0 = np.clip(np.floor(c).astype(np.int64), 0, self.cols - 2)
        r0 = np.clip(np.floor(r).astype(np.int64), 0, self.rows - 2)
        fx, fy = c - c0, r - r0
        h = self.heights
        h00, h01 = h[r0, c0], h[r0, c0 + 1]
        h10, h11 = h[r0 + 1, c0], h[r0 + 1, c0 + 1]
        upper = h00 + fx * (h01 - h00) + fy * (h11 - h01)  # fx >= fy: (00, 01, 11)
        lower = h00 + fy * (h10 - h00) + fx * (h11 - h10)  # fy > fx: (00, 10, 11)
        return np.where(inside, np.where(fx >= fy, upper, lower), PLANE_Z)


def quat_to_mat(q: np.ndarray) -> np.ndarray:
    """[N, 4] (w, x, y, z) unit quaternions -> [N, 3, 3] rotation matrices (body -> world)."""
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        axis=1,
    )


# ----------------------------------------------------------------------------------------------
# The batched task
# ----------------------------------------------------------------------------------------------


class AntLocomotionBatched:
    """N Ants tracking velocity commands, one MuJoCo Batch; a `TensorSim` (see module doc).

    Args:
        num_envs: envs stepped together.
        device: where the returned tensors live (computed on the CPU).
        max_episode_steps: time limit (truncation) in steps; None for none.
        **kwargs: `LocomotionConfig` sections (rewards, commands, terrain, randomization) as
            dicts, and frame_skip, timestep, threads.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 50}  # one frame per control step
    RENDER_SIZE = (360, 480)  # height, width

    # Per-env arrays saved by state_dict (besides MuJoCo's state rows and the RNG).
    STATE_ARRAYS = (
        "commands",
        "command_steps",
        "command_draws",
        "episode_steps",
        "last_actions",
        "last_dof_vel",
        "feet_air_time",
        "last_contacts",
        "levels",
        "tiles",
        "track_sum",
        "track_steps",
        "friction",
        "added_mass",
    )

    def __init__(
        self,
        num_envs: int,
        device: torch.device | str = "cpu",
        max_episode_steps: int | None = 1000,
        render_mode: str | None = None,
        **kwargs: Any,
    ) -> None:
        if render_mode not in (None, "rgb_array"):
            raise TypeError(f"render_mode {render_mode!r} is not supported (valid: rgb_array)")
        self.render_mode = render_mode
        self._camera: FollowCamera | None = None
        self._render_data: mujoco.MjData | None = None
        self.cfg = cfg = LocomotionConfig.from_kwargs(**kwargs)
        self.num_envs = n = int(num_envs)
        self.device = torch.device(device)
        self.max_episode_steps = max_episode_steps
        self.dt = cfg.timestep * cfg.frame_skip
        heights = make_terrain(cfg.terrain)
        self.terrain = Terrain(heights, cfg.terrain.resolution)
        model = mujoco.MjModel.from_xml_string(ant_xml(heights, cfg, cfg.terrain.resolution))
        top = model.hfield_size[0, 2]
        model.hfield_data[:] = (heights / top).ravel()
        self.model = model
        self.batch = Batch(model, n, nthread=cfg.threads)
        self.qpos = self.batch.bind("qpos")
        self.qvel = self.batch.bind("qvel")
        self.ctrl = self.batch.bind("ctrl")
        self.sensordata = self.batch.bind("sensordata")
        self.nu = model.nu
        self.actuator_force = self.batch.bind("actuator_force")
        self.gear = model.actuator_gear[:, 0].copy()
        ranges = model.jnt_range[1:]  # hinge joints in qpos order
        mid, half = ranges.mean(axis=1), (ranges[:, 1] - ranges[:, 0]) / 2
        # ctrl = ctrl_offset + ctrl_scale * action: the motors' torque fraction, or a PD target
        joints = model.actuator_trnid[:, 0] - 1  # the hinge (qpos order) each actuator drives
        if cfg.control.type == "position":
            self.ctrl_offset = mid[joints]
            self.ctrl_scale = cfg.control.action_scale * half[joints]
        else:
            self.ctrl_offset, self.ctrl_scale = np.zeros(model.nu), np.ones(model.nu)
        soft = cfg.rewards.soft_dof_pos_limit
        self.soft_limits = np.stack([mid - soft * half, mid + soft * half], axis=1)
        self.init_qpos = model.qpos0.copy()
        self.init_qpos[7:] = [0.0, 1.0, 0.0, -1.0, 0.0, -1.0, 0.0, 1.0]  # Ant-v5's init_qpos
        self.default_dof_pos = self.init_qpos[7:].copy()
        self.torso_body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "torso")
        self.torso_mass = float(model.body_mass[self.torso_body])
        names = [model.sensor(i).name for i in range(model.nsensor)]
        self.foot_sensors = np.array([names.index(f"foot_{i}") for i in range(FEET)])
        self.collision_sensors = np.array([i for i, s in enumerate(names) if s.startswith("body_")])
        self.friction_geoms = np.arange(model.ngeom)
        sx, sy = np.meshgrid(SCAN_X, SCAN_Y, indexing="ij")
        self.scan_points = np.stack([sx.ravel(), sy.ravel()], axis=1)  # [P, 2], heading frame
        self.scan_center = int(np.flatnonzero((sx.ravel() == 0) & (sy.ravel() == 0))[0])
        self.tile_cells = int(round(cfg.terrain.tile_size / cfg.terrain.resolution))
        self.command_resample_steps = max(int(round(cfg.commands.resample_time / self.dt)), 1)
        rnd = cfg.randomization
        self.push_steps = int(round(rnd.push_interval / self.dt)) if rnd.push_interval else 0
        # The commands and the observation noise have their own random streams, so that two
        # policies evaluated from one seed follow the same commands (each env's own sequence)
        # and, until an env resets early, see the same noise.
        self.rng, self.noise_rng, self.command_key = random_streams(None)
        self.steps = 0
        # per-env state (see STATE_ARRAYS)
        self.commands = np.zeros((n, 3))
        self.command_steps = np.zeros(n, dtype=np.int64)
        self.command_draws = np.zeros(n, dtype=np.int64)
        self.episode_steps = np.zeros(n, dtype=np.int64)
        self.last_actions = np.zeros((n, self.nu))
        self.last_dof_vel = np.zeros((n, model.nv - 6))
        self.feet_air_time = np.zeros((n, FEET))
        self.last_contacts = np.zeros((n, FEET), dtype=bool)
        self.levels = np.zeros(n, dtype=np.int64)
        self.tiles = np.zeros(n, dtype=np.int64)
        self.track_sum = np.zeros(n)
        self.track_steps = np.zeros(n)
        self.friction = np.ones(n)
        self.added_mass = np.zeros(n)
        scales = asdict(cfg.rewards)
        self.scales = {name: float(scales[name]) for name in REWARD_TERMS if scales[name]}
        self.active = list(self.scales)
        rnd = cfg.randomization
        self.noise_scales = rnd.noise_level * np.concatenate(
            [
                np.full(3, rnd.noise_gravity),
                np.full(3, rnd.noise_ang_vel),
                np.full(model.nq - 7, rnd.noise_dof_pos),
                np.full(model.nv - 6, rnd.noise_dof_vel),
                np.zeros(self.nu),
            ]
        )

        proprio = 3 + 3 + 2 * (model.nq - 7) + self.nu
        cmd = cfg.commands
        box = gym.spaces.Box
        self.single_observation_space = gym.spaces.Dict(
            {
                "proprioception": box(-np.inf, np.inf, (proprio,), np.float32),
                "base_velocity": box(-np.inf, np.inf, (3,), np.float32),
                "commands": box(
                    np.array([cmd.lin_vel_x[0], cmd.lin_vel_y[0], cmd.ang_vel_yaw[0]], np.float32),
                    np.array([cmd.lin_vel_x[1], cmd.lin_vel_y[1], cmd.ang_vel_yaw[1]], np.float32),
                    dtype=np.float32,
                ),
                "height_scan": box(-1.0, 1.0, (len(self.scan_points),), np.float32),
                "privileged": box(-np.inf, np.inf, (6,), np.float32),
            }
        )
        self.single_action_space = box(-1.0, 1.0, (self.nu,), np.float32)

    # --- physics parameters per env (domain randomisation) ----------------------------------
    def _apply_parameters(self) -> None:
        """Write each env's friction and torso mass into the batch's per-env model fields."""
        friction = self.batch.expand("geom_friction")
        friction[:, :, 0] = self.friction[:, None]
        mass = self.batch.expand("body_mass")
        mass[:, self.torso_body] = self.torso_mass + self.added_mass
        self.batch.set_const()

    # --- kinematics of the state rows -------------------------------------------------------
    def _kinematics(self, ids: np.ndarray | slice) -> dict[str, np.ndarray]:
        qpos, qvel = self.qpos[ids], self.qvel[ids]
        rot = quat_to_mat(qpos[:, 3:7])  # body -> world
        yaw = np.arctan2(rot[:, 1, 0], rot[:, 0, 0])
        c, s = np.cos(yaw), np.sin(yaw)
        v_world = qvel[:, 0:3]
        w_body = qvel[:, 3:6]  # free joint: angular velocity in the body frame
        v_body = np.einsum("nji,nj->ni", rot, v_world)  # R^T v
        v_heading = np.stack(
            [c * v_world[:, 0] + s * v_world[:, 1], -s * v_world[:, 0] + c * v_world[:, 1]], 1
        )
        yaw_rate = np.einsum("ni,ni->n", rot[:, 2, :], w_body)  # (R w)_z
        gravity = -rot[:, 2, :]  # R^T (0, 0, -1)
        # the terrain at the height scan's points (one lookup for all envs); the torso's own
        # height above the terrain is that at the scan point under it
        pos = qpos[:, 0:3]
        px, py = self.scan_points[:, 0], self.scan_points[:, 1]
        cy, sy = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        ground = self.terrain.height(
            pos[:, 0:1] + cy * px - sy * py, pos[:, 1:2] + sy * px + cy * py
        )
        height = pos[:, 2] - ground[:, self.scan_center]
        return {
            "rot": rot,
            "yaw": yaw,
            "v_body": v_body,
            "w_body": w_body,
            "v_heading": v_heading,
            "yaw_rate": yaw_rate,
            "gravity": gravity,
            "height": height,
            "ground": ground,
            "pos": pos,
            "dof_pos": qpos[:, 7:],
            "dof_vel": qvel[:, 6:],
        }

    def _observe(self, ids: np.ndarray | slice, k: dict | None = None) -> dict[str, np.ndarray]:
        k = self._kinematics(ids) if k is None else k
        scan = np.clip(k["pos"][:, 2:3] - NOMINAL_HEIGHT - k["ground"], -1.0, 1.0)
        proprio = np.concatenate(
            [k["gravity"], k["w_body"], k["dof_pos"], k["dof_vel"], self.last_actions[ids]], 1
        )
        lin_vel = k["v_body"].copy()
        rnd = self.cfg.randomization
        if rnd.noise_level:
            m = len(proprio)
            noise = self.noise_rng
            proprio = proprio + self.noise_scales * noise.uniform(-1, 1, proprio.shape)
            lin_vel += rnd.noise_level * rnd.noise_lin_vel * noise.uniform(-1, 1, (m, 3))
            scan = scan + rnd.noise_level * rnd.noise_height * noise.uniform(-1, 1, scan.shape)
        privileged = np.concatenate(
            [
                k["v_body"],
                k["height"][:, None],
                self.friction[ids][:, None],
                self.added_mass[ids][:, None],
            ],
            1,
        )
        return {
            "proprioception": proprio,
            "base_velocity": lin_vel,
            "commands": self.commands[ids].copy(),
            "height_scan": scan,
            "privileged": privileged,
        }

    # --- rewards ----------------------------------------------------------------------------
    def reward_terms(self, k: dict, actions: np.ndarray, sensors: np.ndarray) -> dict:
        """The unscaled value of every active term, [N] each, and the contact bookkeeping."""
        r = self.cfg.rewards
        out: dict[str, np.ndarray] = {}
        cmd = self.commands
        error_xy = np.sum((cmd[:, :2] - k["v_heading"]) ** 2, axis=1)
        error_yaw = (cmd[:, 2] - k["yaw_rate"]) ** 2
        moving = np.linalg.norm(cmd[:, :2], axis=1) > 0.1
        contacts = sensors[:, self.foot_sensors] > 1.0
        for name in self.active:
            if name == "tracking_lin_vel":
                out[name] = np.exp(-error_xy / r.tracking_sigma)
            elif name == "tracking_ang_vel":
                out[name] = np.exp(-error_yaw / r.tracking_sigma)
            elif name == "lin_vel_progress":
                speed = np.linalg.norm(cmd[:, :2], axis=1)
                along = np.sum(k["v_heading"] * cmd[:, :2], axis=1) / np.maximum(speed, 1e-6)
                out[name] = np.clip(along, -speed, speed)
            elif name == "lin_vel_z":
                out[name] = k["v_body"][:, 2] ** 2
            elif name == "ang_vel_xy":
                out[name] = np.sum(k["w_body"][:, :2] ** 2, axis=1)
            elif name == "orientation":
                out[name] = np.sum(k["gravity"][:, :2] ** 2, axis=1)
            elif name == "base_height":
                out[name] = (k["height"] - r.base_height_target) ** 2
            elif name == "torques":
                out[name] = np.sum((self.actuator_force * self.gear) ** 2, axis=1)
            elif name == "dof_acc":
                out[name] = np.sum(((k["dof_vel"] - self.last_dof_vel) / self.dt) ** 2, axis=1)
            elif name == "action_rate":
                out[name] = np.sum((actions - self.last_actions) ** 2, axis=1)
            elif name == "dof_pos_limits":
                q = k["dof_pos"]
                below = np.clip(self.soft_limits[:, 0] - q, 0, None)
                above = np.clip(q - self.soft_limits[:, 1], 0, None)
                out[name] = np.sum(below + above, axis=1)
            elif name == "collision":
                out[name] = np.sum(sensors[:, self.collision_sensors] > 0.1, axis=1).astype(float)
            elif name == "feet_air_time":  # legged_gym's: feet landing now, after air time
                landing = (self.feet_air_time > 0) & (contacts | self.last_contacts)
                air = self.feet_air_time + self.dt
                out[name] = np.sum((air - 0.5) * landing, axis=1) * moving
            elif name == "stand_still":
                still = np.sum(np.abs(k["dof_pos"] - self.default_dof_pos), axis=1)
                out[name] = still * ~moving
            elif name == "termination":
                out[name] = np.zeros(len(cmd))  # added in step(), where terminations are known
        return out

    def _update_air_time(self, sensors: np.ndarray) -> None:
        contacts = sensors[:, self.foot_sensors] > 1.0
        touching = contacts | self.last_contacts  # filtered: MuJoCo's contacts flicker
        self.feet_air_time += self.dt
        self.feet_air_time *= ~touching
        self.last_contacts = contacts

    # --- resets ---------------------------------------------------------------------------
    def _resample_commands(self, ids: np.ndarray) -> None:
        c = self.cfg.commands
        m = len(ids)
        if m == 0:
            return
        low = np.array([c.lin_vel_x[0], c.lin_vel_y[0], c.ang_vel_yaw[0]])
        high = np.array([c.lin_vel_x[1], c.lin_vel_y[1], c.ang_vel_yaw[1]])
        draws = np.array(
            [
                command_stream(self.command_key, i, d).random(4)
                for i, d in zip(ids, self.command_draws[ids])
            ]
        )
        self.command_draws[ids] += 1
        cmd = low + (high - low) * draws[:, :3]
        slow = np.linalg.norm(cmd[:, :2], axis=1) < c.min_speed
        cmd[slow, :2] = 0.0
        standing = draws[:, 3] < c.standing_share
        cmd[standing] = 0.0
        self.commands[ids] = cmd
        self.command_steps[ids] = 0

    def _update_levels(self, ids: np.ndarray) -> None:
        """legged_gym's curriculum, judged by tracking: up a level after an episode that
        tracked the planar command well, down after one that tracked it badly. Only the steps
        with a moving command count (standing still would pass a standing command), and an
        episode without any stays where it is."""
        t = self.cfg.terrain
        if not t.curriculum or t.fixed_levels is not None or len(ids) == 0:
            return
        judged = self.track_steps[ids] > 0
        success = self.track_sum[ids] / np.maximum(self.track_steps[ids], 1)
        up = judged & (success > t.promote_above)
        down = judged & (success < t.demote_below)
        level = self.levels[ids] + up - down
        top = t.levels - 1
        mastered = level > top
        level[mastered] = self.rng.integers(0, t.levels, int(mastered.sum()))
        self.levels[ids] = np.clip(level, 0, top)

    def _reset_envs(self, ids: np.ndarray) -> None:
        m = len(ids)
        if m == 0:
            return
        self.batch.reset(ids, stage=mujoco.mjtStage.mjSTAGE_NONE)
        t = self.cfg.terrain
        size = t.tile_size
        x = (self.levels[ids] + 0.5) * size + self.rng.uniform(-1.0, 1.0, m)
        y = (self.tiles[ids] + 0.5) * size + self.rng.uniform(-1.0, 1.0, m)
        yaw = self.rng.uniform(-np.pi, np.pi, m)
        # high enough that no leg starts in the ground: the highest terrain within 1 m
        around = np.linspace(-1.0, 1.0, 5)
        gx = (x[:, None, None] + around[None, :, None]) + 0 * around[None, None, :]
        gy = (y[:, None, None] + around[None, None, :]) + 0 * around[None, :, None]
        ground = self.terrain.height(gx, gy).reshape(m, -1).max(1)
        qpos = np.tile(self.init_qpos, (m, 1))
        qpos[:, 0], qpos[:, 1], qpos[:, 2] = x, y, ground + 0.75
        qpos[:, 3] = np.cos(yaw / 2)
        qpos[:, 6] = np.sin(yaw / 2)
        qpos[:, 7:] += self.rng.uniform(-0.1, 0.1, (m, self.model.nq - 7))
        qvel = 0.1 * self.rng.standard_normal((m, self.model.nv))
        self.qpos[ids] = qpos
        self.qvel[ids] = qvel
        self._resample_commands(ids)
        self.episode_steps[ids] = 0
        self.last_actions[ids] = 0.0
        self.last_dof_vel[ids] = qvel[:, 6:]
        self.feet_air_time[ids] = 0.0
        self.last_contacts[ids] = False
        self.track_sum[ids] = 0.0
        self.track_steps[ids] = 0.0

    # --- TensorSim ------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Reset every env; `seed` seeds the whole batch (levels, tiles, parameters, episodes,
        commands, observation noise)."""
        self.rng, self.noise_rng, self.command_key = random_streams(seed)
        self.command_draws[:] = 0
        n, t, rnd = self.num_envs, self.cfg.terrain, self.cfg.randomization
        if t.fixed_levels is not None:
            levels = np.asarray(t.fixed_levels, dtype=np.int64)
            self.levels = levels[np.arange(n) % len(levels)].clip(0, t.levels - 1)
        else:
            self.levels = self.rng.integers(0, min(t.max_init_level, t.levels - 1) + 1, n)
        self.tiles = self.rng.integers(0, len(TERRAIN_TYPES), n)
        self.friction = self.rng.uniform(*rnd.friction, n) if rnd.friction else np.ones(n)
        self.added_mass = self.rng.uniform(*rnd.added_mass, n) if rnd.added_mass else np.zeros(n)
        self._apply_parameters()
        self._reset_envs(np.arange(n))
        self.steps = 0
        return self._tensors(self._observe(slice(None)))

    def step(self, actions: torch.Tensor) -> tuple:
        cfg = self.cfg
        a = np.clip(actions.detach().cpu().numpy().astype(np.float64), -1.0, 1.0)
        self.ctrl[:] = self.ctrl_offset + self.ctrl_scale * a
        failed = np.zeros(self.num_envs, dtype=bool)
        # MuJoCo resets a simulation whose state blew up (bad qpos/qvel/qacc) to the model's
        # initial pose and counts a warning; such an env's episode ends here
        unstable = self.batch.warning[:, UNSTABLE, 1].sum(1)
        try:
            self.batch.step(nstep=cfg.frame_skip)
        except SimulationError as e:  # those envs kept their state: end their episodes
            failed[e.ids] = True
        failed |= self.batch.warning[:, UNSTABLE, 1].sum(1) > unstable
        self.steps += 1
        self.episode_steps += 1
        sensors = self.sensordata
        k = self._kinematics(slice(None))
        terms = self.reward_terms(k, a, sensors)
        reward = np.zeros(self.num_envs)
        # each term's share of the mean reward, logged (env/reward_<term>) to see what the
        # policy is paid for; before only_positive_rewards' clipping, termination added below
        shares: dict[str, float] = {}
        for name, value in terms.items():
            if name != "termination":
                scaled = self.scales[name] * self.dt * value
                reward += scaled
                shares[f"reward_{name}"] = float(scaled.mean())
        if cfg.rewards.only_positive_rewards:
            reward = np.clip(reward, 0.0, None)
        self._update_air_time(sensors)
        # the curriculum's measure: the planar tracking kernel while the command moves
        moving = np.linalg.norm(self.commands[:, :2], axis=1) > 0.1
        if "tracking_lin_vel" in terms:
            kernel = terms["tracking_lin_vel"]
        else:
            err = np.sum((self.commands[:, :2] - k["v_heading"]) ** 2, axis=1)
            kernel = np.exp(-err / cfg.rewards.tracking_sigma)
        self.track_sum += kernel * moving
        self.track_steps += moving
        finite = np.isfinite(self.qpos).all(1) & np.isfinite(self.qvel).all(1)
        upright = k["rot"][:, 2, 2] > 0.0
        height = k["height"]
        terminated = failed | ~finite | ~upright | (height < 0.2) | (height > 1.0)
        if cfg.rewards.termination:
            penalty = cfg.rewards.termination * self.dt * terminated
            reward += penalty
            shares["reward_termination"] = float(penalty.mean())
        limit = self.max_episode_steps
        truncated = ~terminated & (
            (self.episode_steps >= limit) if limit else np.zeros_like(terminated)
        )
        self.last_actions = a
        self.last_dof_vel = k["dof_vel"].copy()
        # what evaluation reports, with the command this step was rewarded for
        error_xy = np.linalg.norm(self.commands[:, :2] - k["v_heading"], axis=1)
        error_yaw = np.abs(self.commands[:, 2] - k["yaw_rate"])
        extras = {
            "tracking_error_xy": error_xy,
            "tracking_error_yaw": error_yaw,
            "command": self.commands.copy(),
            # what the command is compared with: (vx, vy) in the heading frame and the yaw rate
            "velocity": np.column_stack([k["v_heading"], k["yaw_rate"]]),
            "terrain_level": self.levels.copy(),
            "terms": terms,
            # the trainer logs these as env/<name>, means over each rollout
            "log": {
                "tracking_error_xy": float(error_xy.mean()),
                "tracking_error_yaw": float(error_yaw.mean()),
                "terrain_level": float(self.levels.mean()),
                **shares,
            },
        }
        # the next command shows in this observation, so the policy sees it before acting on it
        self.command_steps += 1
        self._resample_commands(np.flatnonzero(self.command_steps >= self.command_resample_steps))
        if self.push_steps and self.steps % self.push_steps == 0:
            # legged_gym's pushes: a random planar velocity added to every body at once
            push = cfg.randomization.max_push_vel
            self.qvel[:, 0:2] += self.rng.uniform(-push, push, (self.num_envs, 2))
            k = self._kinematics(slice(None))
        obs = self._observe(slice(None), k)
        ended = np.flatnonzero(terminated | truncated)
        final_obs = None
        if len(ended):
            final_obs = {key: v.copy() for key, v in obs.items()}
            self._update_levels(ended)
            self._reset_envs(ended)
            for key, value in self._observe(ended).items():
                obs[key][ended] = value
        extras["final_obs"] = self._tensors(final_obs) if final_obs is not None else None
        return (
            self._tensors(obs),
            torch.as_tensor(reward, dtype=torch.float32, device=self.device),
            torch.as_tensor(terminated, device=self.device),
            torch.as_tensor(truncated, device=self.device),
            extras,
        )

    def _tensors(self, obs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """float32 tensors, one per key: views of one [N, total] tensor (a single conversion
        and copy instead of one per key)."""
        keys = list(obs)
        flat = torch.from_numpy(np.concatenate([obs[k] for k in keys], 1, dtype=np.float32))
        flat = flat.to(self.device)
        parts = torch.split(flat, [obs[k].shape[1] for k in keys], dim=1)
        return dict(zip(keys, parts, strict=True))

    # --- exact resume ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        state = {name: getattr(self, name).copy() for name in self.STATE_ARRAYS}
        state["mujoco"] = self.batch.state.copy()  # mjSTATE_INTEGRATION rows
        for name in RANDOM_STREAMS:
            state[name] = getattr(self, name).bit_generator.state
        state["command_key"] = self.command_key
        state["steps"] = self.steps
        return state

    def load_state_dict(self, state: dict) -> None:
        from ppokit.errors import EnvError

        missing = [name for name in (*RANDOM_STREAMS, "command_key") if name not in state]
        if missing:  # saved before the commands and the noise had their own streams
            raise EnvError(
                f"the saved env state has no {', '.join(missing)} (saved by an older ppokit);"
                " the episodes restart"
            )
        for name in self.STATE_ARRAYS:
            setattr(self, name, np.array(state[name], dtype=getattr(self, name).dtype))
        if state["mujoco"].shape != self.batch.state.shape:
            raise EnvError(
                f"the saved MuJoCo state has shape {state['mujoco'].shape}, this batch's"
                f" {self.batch.state.shape}; build the env as the saved run did"
            )
        self.batch.state[:] = state["mujoco"]
        self._apply_parameters()
        for name in RANDOM_STREAMS:
            getattr(self, name).bit_generator.state = state[name]
        self.command_key = int(state["command_key"])
        self.steps = int(state["steps"])

    # --- rendering -------------------------------------------------------------------------------
    def render(self, env_index: int = 0) -> np.ndarray:
        """Env `env_index` as an RGB frame [H, W, 3] from a camera that follows its torso. Arrows
        show the command (green) and what the body does (blue), 1 m per m/s or rad/s: the pair
        from the torso its planar velocity, the pair 0.8 m ahead of it the yaw rate (as the
        sideways speed of a point 1 m ahead)."""
        if self._camera is None:
            height, width = self.RENDER_SIZE
            self._camera = FollowCamera(self.model, self.torso_body, height, width)
            self._render_data = mujoco.MjData(self.model)
        data = self._render_data
        assert data is not None
        i = int(env_index)
        data.qpos[:], data.qvel[:] = self.qpos[i], self.qvel[i]
        mujoco.mj_forward(self.model, data)
        k = self._kinematics(np.array([i]))
        yaw = float(k["yaw"][0])
        heading = np.array([np.cos(yaw), np.sin(yaw), 0.0])
        left = np.array([-heading[1], heading[0], 0.0])
        cmd = self.commands[i]
        centre = data.xpos[self.torso_body] + np.array([0.0, 0.0, 0.5])
        ahead = centre + 0.8 * heading
        green, blue = (0.1, 0.8, 0.1, 1.0), (0.1, 0.3, 0.9, 1.0)
        planar = np.array([*self.qvel[i, :2], 0.0])  # the free joint's world-frame velocity
        # the command's arrows wider, so that both show where they overlap (good tracking)
        arrows = [
            (centre, centre + cmd[0] * heading + cmd[1] * left, green, 0.07),
            (centre, centre + planar, blue, 0.035),
            (ahead, ahead + cmd[2] * left, green, 0.07),
            (ahead, ahead + float(k["yaw_rate"][0]) * left, blue, 0.035),
        ]
        return self._camera.render(data, arrows)

    def close(self) -> None:
        if self._camera is not None:
            self._camera.close()
            self._camera = None


REWARD_TERMS = (
    "tracking_lin_vel",
    "tracking_ang_vel",
    "lin_vel_progress",
    "lin_vel_z",
    "ang_vel_xy",
    "orientation",
    "base_height",
    "torques",
    "dof_acc",
    "action_rate",
    "dof_pos_limits",
    "collision",
    "feet_air_time",
    "stand_still",
    "termination",
)
