"""Offscreen MuJoCo cameras, without a display: depth images for the policy and RGB frames of a
tracked body for videos.

mujoco picks its OpenGL platform when it is first imported (MUJOCO_GL); in a process that
imported it before choosing a headless one, `mujoco.Renderer` would try GLFW and fail. So the GL
context is made here explicitly: EGL (Mesa renders on the CPU when there is no GPU), else OSMesa,
else GLFW where a display exists.
"""

from __future__ import annotations

import mujoco
import numpy as np


class OffscreenCamera:
    """A GL context, a scene and a viewport for one camera of `model`; subclasses read pixels."""

    def __init__(
        self, model: mujoco.MjModel, camera: mujoco.MjvCamera, height: int, width: int, off=()
    ) -> None:
        self.width, self.height = width, height
        self._gl = gl_context(width, height)
        self._gl.make_current()
        self._context = mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._scene = mujoco.MjvScene(model, maxgeom=1000)
        for flag in off:  # names of mjtRndFlag render passes to leave out
            self._scene.flags[getattr(mujoco.mjtRndFlag, flag)] = 0
        self._option = mujoco.MjvOption()
        self._camera = camera
        self._viewport = mujoco.MjrRect(0, 0, width, height)
        self._model = model

    def _update_scene(self, data: mujoco.MjData) -> mujoco.MjvScene:
        self._gl.make_current()
        mujoco.mjv_updateScene(
            self._model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL,
            self._scene,
        )  # fmt: skip
        return self._scene

    def close(self) -> None:
        self._context.free()
        self._gl.free()


class DepthCamera(OffscreenCamera):
    """Depth images (metres) from the named fixed camera of `model`."""

    def __init__(self, model: mujoco.MjModel, camera: str, height: int, width: int) -> None:
        fixed = mujoco.MjvCamera()
        fixed.type = mujoco.mjtCamera.mjCAMERA_FIXED
        fixed.fixedcamid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, camera)
        # Depth needs none of the costly passes (on a CPU renderer they are most of the time).
        off = ("mjRND_SHADOW", "mjRND_REFLECTION", "mjRND_SKYBOX", "mjRND_FOG")
        super().__init__(model, fixed, height, width, off)
        self._buffer = np.empty((height, width), dtype=np.float32)
        extent = model.stat.extent
        self._near, self._far = model.vis.map.znear * extent, model.vis.map.zfar * extent

    def render(self, data: mujoco.MjData) -> np.ndarray:
        mujoco.mjr_render(self._viewport, self._update_scene(data), self._context)
        mujoco.mjr_readPixels(None, self._buffer, self._viewport, self._context)
        # Depth buffer values in [0, 1] to metres (as mujoco.Renderer does), top row first.
        near, far = self._near, self._far
        depth = near / (1.0 - self._buffer * (1.0 - near / far))
        return depth[::-1].copy()


class FollowCamera(OffscreenCamera):
    """RGB frames from a camera that follows body `body` (the torso), with arrows drawn in."""

    def __init__(self, model: mujoco.MjModel, body: int, height: int, width: int) -> None:
        tracking = mujoco.MjvCamera()
        tracking.type = mujoco.mjtCamera.mjCAMERA_TRACKING
        tracking.trackbodyid = body
        tracking.distance, tracking.elevation, tracking.azimuth = 4.5, -40.0, 135.0
        # No shadows (a heightfield shows shadow acne: one shadow map for 50 m of terrain) and
        # no reflections; a checker texture on the terrain shows its relief instead.
        super().__init__(model, tracking, height, width, ("mjRND_SHADOW", "mjRND_REFLECTION"))
        self._rgb = np.empty((height, width, 3), dtype=np.uint8)

    def render(self, data: mujoco.MjData, arrows: list[tuple]) -> np.ndarray:
        """`arrows`: (start, end, rgba, width) in world coordinates."""
        scene = self._update_scene(data)
        for start, end, rgba, width in arrows:
            if scene.ngeom >= scene.maxgeom or np.linalg.norm(end - start) < 1e-3:
                continue
            geom = scene.geoms[scene.ngeom]
            mujoco.mjv_initGeom(
                geom, mujoco.mjtGeom.mjGEOM_ARROW, np.zeros(3), np.zeros(3), np.eye(3).ravel(),
                np.asarray(rgba, np.float32),
            )  # fmt: skip
            mujoco.mjv_connector(geom, mujoco.mjtGeom.mjGEOM_ARROW, width, start, end)
            scene.ngeom += 1
        mujoco.mjr_render(self._viewport, scene, self._context)
        mujoco.mjr_readPixels(self._rgb, None, self._viewport, self._context)
        return self._rgb[::-1].copy()  # OpenGL's first row is the bottom one


def gl_context(width: int, height: int):
    """An offscreen OpenGL context of MuJoCo's: the configured headless backend, EGL, OSMesa."""
    from ppokit.errors import EnvError
    from ppokit.recording import MESA_HINT, configure_headless_gl

    backend = (configure_headless_gl() or "glfw").lower()
    errors = []
    for name in dict.fromkeys([backend, "egl", "osmesa"]):
        try:
            if name == "egl":
                from mujoco.egl import GLContext
            elif name == "osmesa":
                from mujoco.osmesa import GLContext
            else:
                from mujoco.glfw import GLContext
            return GLContext(width, height)
        except Exception as e:  # missing library, wrong PyOpenGL platform, no display
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise EnvError(f"cannot render offscreen ({'; '.join(errors)}); {MESA_HINT}")
