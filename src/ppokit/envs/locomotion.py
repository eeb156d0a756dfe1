"""Velocity-command tracking for a quadruped: Gymnasium's MuJoCo Ant on a heightfield terrain.

The legged-locomotion recipe in miniature, on Ant-v5's robot (its XML, actuators and time step):

- terrain: a 24 m x 24 m MuJoCo heightfield of smooth random bumps (``terrain_scale`` metres
  high, flat ground around it), generated once per env (``terrain_seed``); each episode starts
  at a random spot and heading on it.
- commands: a target forward/lateral velocity and yaw rate in the robot's heading frame,
  resampled at the start of every episode and every ``resample_every`` steps (10 s).
- observation, a dict:
  ``proprioception`` (30): what a robot measures on board: gravity in the body frame, angular
  velocity, joint positions and velocities, the previous action;
  ``privileged`` (4): what only the simulator knows well: the body's linear velocity and its
  height above the terrain (for an asymmetric critic: ``policy.critic_keys``);
  ``commands`` (3): the target (vx, vy, yaw rate);
  ``height_scan`` (63): terrain heights on a 9 x 7 grid around the body (heading-aligned,
  1.6 m x 1.2 m), measured by a fan of MuJoCo ray casts (``mj_multiRay``) from above the
  torso, relative to the torso's nominal height; or, with
  ``perception="depth"``, ``depth`` (1 x 24 x 32): a depth image from a camera on the torso,
  rendered headless with ``mujoco.Renderer`` (EGL or OSMesa).
- reward: exp(-|v_xy - cmd_xy|^2 / 0.25) + 0.5 exp(-(w_z - cmd_yaw)^2 / 0.25) (legged_gym's
  tracking terms) + 0.5 x the velocity along the commanded direction, clipped to the commanded
  speed (a linear signal towards moving at all, without which short CPU runs settle on standing
  still), minus small penalties on vertical velocity, roll/pitch rates and action magnitude.
  The episode terminates when the torso leaves 0.2-1.0 m above the terrain or turns over, and is
  truncated after 1000 steps (50 s).

``info`` carries ``tracking_error_xy`` (m/s) and ``tracking_error_yaw`` (rad/s) of every step,
the figures benchmarks/locomotion.py reports. Registered ids: ``ppokit/AntLocomotion-v0`` and
``ppokit/AntLocomotionDepth-v0`` (by ppokit.envs, without importing this module).
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

from ppokit.envs.offscreen import DepthCamera

ANT_LOCOMOTION = "ppokit/AntLocomotion-v0"
ANT_LOCOMOTION_DEPTH = "ppokit/AntLocomotionDepth-v0"

TERRAIN_HALF_SIZE = 12.0  # metres, the heightfield spans [-12, 12]^2 (flat ground beyond)
TERRAIN_CELLS = 121  # 0.2 m resolution (rendering cost grows with the cell count)
TERRAIN_GROUP = 2  # geom group of the terrain (visible by default): the ray casts see only it
SCAN_X = np.linspace(-0.6, 1.0, 9)  # forward, heading frame
SCAN_Y = np.linspace(-0.6, 0.6, 7)  # left
NOMINAL_HEIGHT = 0.55
DEFAULT_COMMAND_RANGES = ((-0.5, 1.0), (-0.5, 0.5), (-0.5, 0.5))  # vx, vy (m/s), yaw rate (rad/s)


def ant_xml() -> str:
    """Ant-v5's model with a heightfield on its floor plane and a depth camera added."""
    source = Path(gym.__file__).parent / "envs" / "mujoco" / "assets" / "ant.xml"
    xml = source.read_text()
    floor = re.search(r'<geom[^>]*name="floor"[^>]*/>', xml)
    assert floor is not None, "unexpected ant.xml: no floor geom"
    plane = floor.group(0).replace('name="floor"', f'name="ground" group="{TERRAIN_GROUP}"')
    xml = xml.replace(
        floor.group(0),
        f'<geom conaffinity="1" condim="3" group="{TERRAIN_GROUP}" hfield="terrain"'
        ' name="floor" rgba="0.6 0.7 0.6 1" type="hfield"/>\n    ' + plane,
    )
    xml = xml.replace(
        "</asset>",
        f'  <hfield name="terrain" nrow="{TERRAIN_CELLS}" ncol="{TERRAIN_CELLS}"'
        f' size="{TERRAIN_HALF_SIZE} {TERRAIN_HALF_SIZE} 1 0.2"/>\n  </asset>',
    )
    # A forward-looking camera on the torso, pitched 30 degrees down (for the depth variant).
    xml = xml.replace(
        '<geom name="torso_geom"',
        '<camera name="depth" pos="0.3 0 0.1" xyaxes="0 -1 0 0.5 0 0.866" fovy="70"/>\n'
        '      <geom name="torso_geom"',
    )
    return xml


def make_terrain(rng: np.random.Generator, scale: float) -> np.ndarray:
    """Smooth random heights in [0, scale], TERRAIN_CELLS^2: random bumps 1 m apart, bilinearly
    interpolated, plus a few broad hills; zero along the border (level with the ground)."""
    n, metres = TERRAIN_CELLS, int(2 * TERRAIN_HALF_SIZE)
    coarse = rng.random((metres + 1, metres + 1))
    grid = np.linspace(0, metres, n)
    i0 = np.clip(np.floor(grid).astype(int), 0, metres - 1)
    f = grid - i0
    rows = coarse[i0] * (1 - f)[:, None] + coarse[i0 + 1] * f[:, None]
    heights = rows[:, i0] * (1 - f)[None, :] + rows[:, i0 + 1] * f[None, :]
    x = np.linspace(-1, 1, n)
    hills = np.sin(3 * x[:, None] + rng.uniform(0, 6)) * np.sin(2 * x[None, :] + rng.uniform(0, 6))
    heights = 0.7 * heights + 0.3 * (hills + 1) / 2
    heights -= heights.min()
    heights[[0, -1], :] = heights[:, [0, -1]] = 0.0  # level with the ground at the border
    return (heights / max(heights.max(), 1e-9)) * scale


class AntLocomotionEnv(MujocoEnv):
    """See the module docstring."""

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 20}

    def __init__(
        self,
        perception: str = "height_scan",
        terrain_scale: float = 0.1,
        terrain_seed: int | None = None,
        command_ranges: tuple = DEFAULT_COMMAND_RANGES,
        resample_every: int = 200,
        depth_shape: tuple[int, int] = (24, 32),
        max_depth: float = 4.0,
        frame_skip: int = 5,
        render_mode: str | None = None,
        width: int = 480,
        height: int = 480,
    ) -> None:
        if perception not in ("height_scan", "depth"):
            raise ValueError(f"perception must be height_scan or depth, got {perception!r}")
        self.perception = perception
        self.command_ranges = np.asarray(command_ranges, dtype=np.float64)
        self.resample_every = int(resample_every)
        self._command_steps = 0
        self.depth_shape = tuple(depth_shape)
        self.max_depth = float(max_depth)
        fd, path = tempfile.mkstemp(suffix=".xml", prefix="ppokit_ant_")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(ant_xml())
            MujocoEnv.__init__(
                self,
                path,
                frame_skip,
                observation_space=None,
                render_mode=render_mode,
                width=width,
                height=height,
                default_camera_config={"trackbodyid": 1, "distance": 4.0, "elevation": -25.0},
            )
        finally:
            os.unlink(path)
        self.terrain_scale = float(terrain_scale)
        self._terrain_rng = np.random.default_rng(terrain_seed)
        self._set_terrain(make_terrain(self._terrain_rng, self.terrain_scale))
        self._terrain_geom = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, "floor")
        self._torso = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, "torso")
        self._geomgroup = np.zeros(6, dtype=np.uint8)
        self._geomgroup[TERRAIN_GROUP] = 1
        self._ray_hit = np.zeros(1, dtype=np.int32)
        sx, sy = np.meshgrid(SCAN_X, SCAN_Y, indexing="ij")
        self._scan_points = np.stack([sx.ravel(), sy.ravel()], axis=1)
        self._scan_hits = np.zeros(len(self._scan_points), dtype=np.int32)
        self._scan_dist = np.zeros(len(self._scan_points))
        self._depth_renderer: mujoco.Renderer | None = None
        self.command = np.zeros(3)
        self.last_action = np.zeros(self.model.nu)

        n_joints = self.model.nq - 7
        spaces = {
            "proprioception": gym.spaces.Box(
                -np.inf, np.inf, (3 + 3 + 2 * n_joints + self.model.nu,), np.float32
            ),
            "privileged": gym.spaces.Box(-np.inf, np.inf, (4,), np.float32),
            "commands": gym.spaces.Box(
                self.command_ranges[:, 0].astype(np.float32),
                self.command_ranges[:, 1].astype(np.float32),
                dtype=np.float32,
            ),
        }
        if perception == "height_scan":
            spaces["height_scan"] = gym.spaces.Box(-1.0, 1.0, (len(self._scan_points),), np.float32)
        else:
            spaces["depth"] = gym.spaces.Box(
                0.0, self.max_depth, (1, *self.depth_shape), np.float32
            )
        self.observation_space = gym.spaces.Dict(spaces)

    # --- terrain ------------------------------------------------------------------------------
    def _set_terrain(self, heights: np.ndarray) -> None:
        self._heights = heights
        self.model.hfield_size[0, 2] = max(self.terrain_scale, 1e-3)
        self.model.hfield_data[:] = (heights / max(self.terrain_scale, 1e-3)).ravel()

    def terrain_height(self, x: float, y: float) -> float:
        """Terrain height at (x, y) by a ray cast straight down (0 off the terrain)."""
        return float(self._ray_heights(np.array([[x, y]]))[0])

    def _ray_heights(self, points: np.ndarray) -> np.ndarray:
        """Terrain heights at `points` [n, 2], one ray straight down each (0 off the terrain)."""
        top = self.terrain_scale + 1.0
        heights = np.zeros(len(points))
        down = np.array([0.0, 0.0, -1.0])
        for i, (x, y) in enumerate(points):
            dist = mujoco.mj_ray(
                self.model,
                self.data,
                np.array([x, y, top]),
                down,
                self._geomgroup,
                1,
                -1,
                self._ray_hit,
            )
            heights[i] = top - dist if dist >= 0 else 0.0
        return heights

    def _scan_heights(self, origin: np.ndarray, points: np.ndarray) -> np.ndarray:
        """Terrain heights near `points` [n, 2] from one `mj_multiRay` fan: rays from 2 m above
        `origin` [2] towards each point at ground level, each read where it hits the terrain
        (a lidar-like scan; one C call instead of n)."""
        top = self.terrain_scale + 2.0
        start = np.array([origin[0], origin[1], top])
        vec = np.concatenate([points - origin, np.full((len(points), 1), -top)], axis=1)
        vec /= np.linalg.norm(vec, axis=1, keepdims=True)
        mujoco.mj_multiRay(
            self.model,
            self.data,
            start,
            vec.ravel(),
            self._geomgroup,
            1,
            -1,
            self._scan_hits,
            self._scan_dist,
            None,
            len(points),
            mujoco.mjMAXVAL,
        )
        return np.where(self._scan_dist >= 0, top + self._scan_dist * vec[:, 2], 0.0)

    # --- state --------------------------------------------------------------------------------
    def _frames(self) -> tuple[np.ndarray, float]:
        """(rotation body->world, yaw)."""
        rot = self.data.xmat[self._torso].reshape(3, 3)
        return rot, float(np.arctan2(rot[1, 0], rot[0, 0]))

    def _velocities(self) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
        """(planar velocity in the heading frame, yaw rate, body linear vel, body angular vel)."""
        rot, yaw = self._frames()
        v_world = self.data.qvel[0:3]
        w_body = self.data.qvel[3:6]  # free joint: angular velocity in the body frame
        c, s = np.cos(yaw), np.sin(yaw)
        v_heading = np.array([c * v_world[0] + s * v_world[1], -s * v_world[0] + c * v_world[1]])
        yaw_rate = float((rot @ w_body)[2])
        return v_heading, yaw_rate, rot.T @ v_world, w_body

    def _height_scan(self) -> np.ndarray:
        _, yaw = self._frames()
        c, s = np.cos(yaw), np.sin(yaw)
        pos = self.data.xpos[self._torso]
        px, py = self._scan_points[:, 0], self._scan_points[:, 1]
        world = np.stack([pos[0] + c * px - s * py, pos[1] + s * px + c * py], axis=1)
        heights = self._scan_heights(pos[:2], world)
        return np.clip(pos[2] - NOMINAL_HEIGHT - heights, -1.0, 1.0)

    def _depth(self) -> np.ndarray:
        if self._depth_renderer is None:
            self._depth_renderer = DepthCamera(self.model, "depth", *self.depth_shape)
        depth = self._depth_renderer.render(self.data)
        return np.clip(depth, 0.0, self.max_depth)[None].astype(np.float32)

    def _height(self) -> float:
        """Torso height above the terrain below it."""
        pos = self.data.xpos[self._torso]
        return float(pos[2] - self.terrain_height(pos[0], pos[1]))

    def _get_obs(self, height: float | None = None) -> dict[str, np.ndarray]:
        rot, _ = self._frames()
        _, _, v_body, w_body = self._velocities()
        height = self._height() if height is None else height
        proprio = np.concatenate(
            [
                rot.T @ np.array([0.0, 0.0, -1.0]),  # gravity in the body frame (an IMU's)
                w_body,  # angular velocity (a gyro's)
                self.data.qpos[7:],
                self.data.qvel[6:],
                self.last_action,
            ]
        ).astype(np.float32)
        obs = {
            "proprioception": proprio,
            "commands": self.command.astype(np.float32),
            "privileged": np.array([*v_body, height], dtype=np.float32),
        }
        if self.perception == "height_scan":
            obs["height_scan"] = self._height_scan().astype(np.float32)
        else:
            obs["depth"] = self._depth()
        return obs

    # --- gym API --------------------------------------------------------------------------------
    def reset_model(self) -> dict[str, np.ndarray]:
        rng = self.np_random
        qpos = self.init_qpos.copy()
        x, y = rng.uniform(-TERRAIN_HALF_SIZE / 2, TERRAIN_HALF_SIZE / 2, size=2)
        yaw = rng.uniform(-np.pi, np.pi)
        qpos[0:2] = x, y
        qpos[2] = self.terrain_height(x, y) + 0.75
        qpos[3:7] = np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)
        qpos[7:] += rng.uniform(-0.1, 0.1, size=self.model.nq - 7)
        qvel = self.init_qvel + 0.1 * rng.standard_normal(self.model.nv)
        self.set_state(qpos, qvel)
        self._resample_command()
        self.last_action = np.zeros(self.model.nu)
        return self._get_obs()

    def _resample_command(self) -> None:
        low, high = self.command_ranges[:, 0], self.command_ranges[:, 1]
        self.command = self.np_random.uniform(low, high)
        self._command_steps = 0

    def step(self, action: np.ndarray):
        action = np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)
        self.do_simulation(action, self.frame_skip)
        v_heading, yaw_rate, v_body, w_body = self._velocities()
        error_xy = float(np.linalg.norm(v_heading - self.command[:2]))
        error_yaw = abs(yaw_rate - self.command[2])
        # Progress along the commanded direction, up to the commanded speed: a linear signal
        # towards moving at all, which the exponential kernel alone gives little of far away.
        speed = float(np.linalg.norm(self.command[:2]))
        along = float(v_heading @ self.command[:2]) / speed if speed > 1e-6 else 0.0
        terms = {
            "tracking_lin_vel": np.exp(-(error_xy**2) / 0.25),
            "progress": 0.5 * float(np.clip(along, -speed, speed)),
            "tracking_ang_vel": 0.5 * np.exp(-(error_yaw**2) / 0.25),
            "lin_vel_z": -0.2 * v_body[2] ** 2,
            "ang_vel_xy": -0.02 * float(w_body[0] ** 2 + w_body[1] ** 2),
            "action": -0.01 * float(np.square(action).sum()),
        }
        reward = float(sum(terms.values()))
        self.last_action = action
        height = self._height()
        upright = self.data.xmat[self._torso][8] > 0.0  # body z axis points up
        finite = np.isfinite(self.data.qpos).all() and np.isfinite(self.data.qvel).all()
        terminated = not (finite and upright and 0.2 <= height <= 1.0)
        # A new command takes effect from the observation returned here, so the policy sees it
        # before it acts on it.
        self._command_steps += 1
        if self.resample_every and self._command_steps >= self.resample_every:
            self._resample_command()
        obs = self._get_obs(height)
        info = {
            "tracking_error_xy": error_xy,
            "tracking_error_yaw": error_yaw,
            "velocity_along_command": along,
            "command_speed": speed,
            **terms,
        }
        if self.render_mode == "human":
            self.render()
        return obs, reward, terminated, False, info

    # --- exact resume (ppokit.envs.snapshot adds the MuJoCo physics and np_random) -------------
    def state_dict(self) -> dict:
        """The state beyond physics and np_random: the terrain (drawn per env when terrain_seed
        is None, and held in the MjModel, which MuJoCo's state API does not save), the command
        and its step count, and the previous action (observed)."""
        return {
            "heights": self._heights.copy(),
            "terrain_rng": self._terrain_rng.bit_generator.state,
            "command": self.command.copy(),
            "command_steps": self._command_steps,
            "last_action": self.last_action.copy(),
        }

    def load_state_dict(self, state: dict) -> None:
        self._set_terrain(np.array(state["heights"], dtype=np.float64))
        if self._depth_renderer is not None:  # its GL context holds the old terrain's mesh
            self._depth_renderer.close()
            self._depth_renderer = None
        self._terrain_rng.bit_generator.state = state["terrain_rng"]
        self.command = np.array(state["command"], dtype=np.float64)
        self._command_steps = int(state["command_steps"])
        self.last_action = np.array(state["last_action"], dtype=np.float64)

    def close(self) -> None:
        if getattr(self, "_depth_renderer", None) is not None:
            self._depth_renderer.close()
            self._depth_renderer = None
        super().close()
