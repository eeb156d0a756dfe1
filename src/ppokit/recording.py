"""Rendering for evaluation: headless OpenGL selection, render-mode checks, MP4 episode videos.

MuJoCo renders through OpenGL. On a machine with no display, gymnasium's fallback order (GLFW,
then EGL, then OSMesa) fails at the first step: GLFW needs a display, and once it has loaded
PyOpenGL for the wrong platform EGL cannot be tried. `configure_headless_gl` therefore picks the
backend before any env is built: EGL (Mesa's llvmpipe renders on the CPU, no GPU needed) when
libEGL is installed, else OSMesa. `make install EXTRAS=video` (and `make test`) install Mesa's EGL
on Debian.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np

from ppokit.errors import EnvError, OutputError

MESA_HINT = (
    "install Mesa's EGL (`make install EXTRAS=video` does on Debian, or apt-get install libegl1"
    " libegl-mesa0 libgl1-mesa-dri) or set MUJOCO_GL=osmesa with libosmesa6"
)


def has_display() -> bool:
    """True when a window can be opened (always on macOS/Windows, DISPLAY/WAYLAND on Linux)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def configure_headless_gl() -> str | None:
    """Choose MuJoCo's OpenGL backend when none is set and there is no display.

    Returns the backend in force (None when left to MuJoCo/gymnasium). Must run before the
    first MuJoCo env renders; an explicit MUJOCO_GL is always respected.
    """
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if has_display():
        return None
    for backend, library in (("egl", "EGL"), ("osmesa", "OSMesa")):
        if ctypes.util.find_library(library):
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            return backend
    return None


def configure_headless_sdl() -> str | None:
    """Choose SDL's dummy video driver for off-screen frames when there is no display.

    Classic-control tasks draw rgb_array frames on pygame Surfaces, which need no video driver,
    but first call `pygame.display.init()`. With no display SDL probes its drivers in turn, and
    the Wayland probe has libwayland-client print `error: XDG_RUNTIME_DIR is invalid or not set
    in the environment.` to stderr before SDL falls back to an off-screen driver. Returns the
    driver in force (None when left to SDL); an explicit SDL_VIDEODRIVER is always respected.
    """
    if os.environ.get("SDL_VIDEODRIVER"):
        return os.environ["SDL_VIDEODRIVER"]
    if has_display():
        return None
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    return "dummy"


TRACKING_CAMERA = "track"  # Gymnasium's MuJoCo locomotion models name their follow camera so


def _probe(env_id: str, env_kwargs: dict) -> gym.Env:
    kwargs = {k: v for k, v in env_kwargs.items() if k != "render_mode"}
    try:
        return gym.make(env_id, **kwargs)
    except Exception as e:  # env constructors raise anything
        raise EnvError(f"cannot build environment {env_id!r}: {e}") from None


def render_modes(env_id: str, env_kwargs: dict) -> list[str]:
    """The render modes an env declares (builds one instance to read its metadata)."""
    env = _probe(env_id, env_kwargs)
    try:
        return list(env.metadata.get("render_modes") or [])
    finally:
        env.close()


def check_render_mode(env_id: str, env_kwargs: dict, mode: str, flag: str) -> None:
    """Raise EnvError when the env cannot render in `mode` (what `flag` asked for)."""
    modes = render_modes(env_id, env_kwargs)
    if mode not in modes:
        have = ", ".join(modes) if modes else "none"
        raise EnvError(
            f"{flag} needs an env with render mode {mode!r}; {env_id!r} declares: {have}"
        )


def recording_kwargs(env_id: str, env_kwargs: dict) -> dict:
    """Extra gymnasium.make kwargs for recording: a MuJoCo env whose model has a camera named
    "track" (Gymnasium's locomotion tasks: it follows the body) renders from it, so a running
    agent stays in the picture; its default free camera stays put. An explicit camera_id or
    camera_name in the env's kwargs wins."""
    if "camera_id" in env_kwargs or "camera_name" in env_kwargs:
        return {}
    env = _probe(env_id, env_kwargs)
    try:
        from gymnasium.envs.mujoco.mujoco_env import MujocoEnv  # takes camera_name

        base = env.unwrapped
        if not isinstance(base, MujocoEnv):
            return {}
        import mujoco

        model = base.model

        if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, TRACKING_CAMERA) < 0:
            return {}
        return {"camera_name": TRACKING_CAMERA}
    except Exception:  # not a MuJoCo env after all: record with its defaults
        return {}
    finally:
        env.close()


def render_frame(env: gym.Env, env_id: str) -> np.ndarray:
    """One rgb_array frame as uint8 [H, W, 3], with a clear error when rendering fails."""
    try:
        frame = env.render()
    except Exception as e:  # OpenGL/EGL failures surface as many exception types
        backend = os.environ.get("MUJOCO_GL", "unset")
        message = " ".join(str(e).split()) or type(e).__name__
        raise EnvError(
            f"cannot render {env_id!r} (MUJOCO_GL={backend}): {message}; {MESA_HINT}"
        ) from None
    frame = np.asarray(frame)
    if frame.ndim != 3 or frame.shape[-1] not in (3, 4):
        raise EnvError(
            f"{env_id!r} rendered an array of shape {frame.shape}, not an RGB image [H, W, 3]"
        )
    return np.ascontiguousarray(frame[..., :3], dtype=np.uint8)


def require_video():
    """imageio's v2 API with its ffmpeg plugin (the `video` extra), or a one-line error."""
    from ppokit.extras import require

    require("imageio_ffmpeg", "video", "eval --record")  # the ffmpeg binary imageio writes with
    return require("imageio.v2", "video", "eval --record")


class VideoWriter:
    """An MP4 (H.264, yuv420p) written frame by frame with imageio's ffmpeg plugin.

    H.264 in yuv420p needs even dimensions: odd frames are padded by one edge pixel.
    """

    def __init__(self, path: Path, fps: float) -> None:
        imageio = require_video()
        self.path = Path(path)
        self.frames = 0
        try:
            self._writer = imageio.get_writer(
                str(self.path),
                format="FFMPEG",  # type: ignore[arg-type]
                mode="I",
                fps=fps,
                codec="libx264",
                pixelformat="yuv420p",
                macro_block_size=1,
                ffmpeg_log_level="error",
            )
        except OSError as e:
            raise OutputError(f"cannot write video {str(self.path)!r}: {e}") from None

    def append(self, frame: np.ndarray) -> None:
        h, w = frame.shape[:2]
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        self._writer.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        self._writer.close()


def video_info(path: str | Path) -> tuple[int, tuple[int, int]]:
    """(frame count, (height, width)) of a video, by decoding every frame."""
    imageio = require_video()

    reader = imageio.get_reader(str(path), format="FFMPEG")  # type: ignore[arg-type]
    try:
        count, shape = 0, (0, 0)
        for frame in reader:
            count += 1
            shape = frame.shape[:2]
        return count, (int(shape[0]), int(shape[1]))
    finally:
        reader.close()
