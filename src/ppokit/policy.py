"""`ppokit.load_policy(path)`: one callable for a checkpoint, an ONNX file or a TorchScript file.

Every kind computes the same thing: raw observations in, the deterministic action out, already
rescaled and clipped to the env's bounds (observation normalization and action post-processing
live inside the model and inside exported graphs). Exported files carry a JSON description
(`policy_metadata`) of the env and spaces, so they can be evaluated without their checkpoint.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from ppokit import checkpoint as ckpt
from ppokit.config import TrainConfig, from_dict, to_dict
from ppokit.envs.gym_env import check_env_id, env_factory
from ppokit.errors import CheckpointError, EnvError, ExportError
from ppokit.nn.actor_critic import ActorCritic

METADATA_FORMAT = "ppokit-policy"
METADATA_VERSION = 1
METADATA_KEY = "ppokit"  # ONNX metadata_props key; TorchScript extra file "ppokit.json"
TORCHSCRIPT_EXTRA = "ppokit.json"

Array = np.ndarray | torch.Tensor


# ----------------------------------------------------------------------------------------------
# Spaces as plain data (exported metadata, compatibility checks)
# ----------------------------------------------------------------------------------------------


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, np.float64).ravel()]


def describe_space(space: gym.Space) -> dict:
    """A JSON-friendly description of a space (infinite Box bounds become null)."""
    if isinstance(space, gym.spaces.Box):
        return {
            "type": "box",
            "shape": list(space.shape),
            "dtype": str(space.dtype),
            "low": _finite_or_none(space.low),
            "high": _finite_or_none(space.high),
        }
    if isinstance(space, gym.spaces.Discrete):
        return {"type": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"type": "multi_discrete", "nvec": [int(n) for n in space.nvec.ravel()]}
    return {"type": type(space).__name__, "repr": repr(space)}


def space_from_description(desc: dict) -> gym.Space:
    """Inverse of `describe_space` for the kinds a policy can have."""
    kind = desc.get("type")
    if kind == "box":
        shape = tuple(desc["shape"])

        dtype = np.dtype(desc.get("dtype") or "float32")

        def bound(values: list, inf: float) -> np.ndarray:
            return np.array([inf if v is None else v for v in values], dtype).reshape(shape)

        return gym.spaces.Box(
            bound(desc["low"], -np.inf), bound(desc["high"], np.inf), shape, dtype
        )
    if kind == "discrete":
        return gym.spaces.Discrete(desc["n"], start=desc.get("start", 0))
    if kind == "multi_discrete":
        return gym.spaces.MultiDiscrete(desc["nvec"])
    raise ExportError(f"policy metadata describes an unsupported space: {desc}")


def space_mismatch(policy_meta: dict, observation_space: gym.Space, action_space: gym.Space) -> str:
    """'' when an env's spaces fit the policy, else what differs, as 'env vs policy'."""
    want_obs, want_act = policy_meta["observation_space"], policy_meta["action_space"]
    have_obs, have_act = describe_space(observation_space), describe_space(action_space)
    problems = []
    if (want_obs.get("type"), want_obs.get("shape")) != (
        have_obs.get("type"),
        have_obs.get("shape"),
    ):
        problems.append(f"observations {_short(have_obs, False)} vs {_short(want_obs, False)}")
    if want_act != have_act:
        problems.append(f"actions {_short(have_act)} vs {_short(want_act)}")
    return "; ".join(problems)


def _short(desc: dict, bounds: bool = True) -> str:
    kind = desc.get("type")
    if kind == "box":
        text = f"Box{tuple(desc['shape'])}"
        low, high = desc["low"], desc["high"]
        if bounds and low and None not in low + high:
            if len(set(low)) == 1 and len(set(high)) == 1:
                text += f" in [{low[0]:g}, {high[0]:g}]"
            else:
                text += " with per-dimension bounds"
        return text
    if kind == "discrete":
        return f"Discrete({desc['n']})"
    if kind == "multi_discrete":
        return f"MultiDiscrete({desc['nvec']})"
    return desc.get("repr", str(desc))


# ----------------------------------------------------------------------------------------------
# Checkpoints -> model
# ----------------------------------------------------------------------------------------------


def env_spaces(env_id: str, max_episode_steps: int | None, kwargs: dict) -> tuple[gym.Space, ...]:
    """(observation_space, action_space) of one instance of an env."""
    check_env_id(env_id)
    kwargs = {k: v for k, v in kwargs.items() if k != "render_mode"}
    try:
        env = env_factory(env_id, max_episode_steps, kwargs)()
    except Exception as e:  # env constructors raise anything
        raise EnvError(f"cannot build environment {env_id!r}: {e}") from None
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def model_from_checkpoint(state: dict, device: str | torch.device = "cpu") -> ActorCritic:
    """The ActorCritic of a loaded checkpoint, in eval mode (builds one env for its spaces)."""
    cfg = checkpoint_config(state)
    observation_space, action_space = env_spaces(
        cfg.env.id, cfg.env.max_episode_steps, cfg.env.kwargs
    )
    saved = state.get("spaces", {})
    now = {"observation": repr(observation_space), "action": repr(action_space)}
    if saved and saved != now:
        raise CheckpointError(
            f"checkpoint {state['path']!r} was trained on spaces {saved} but {cfg.env.id!r} now"
            f" has {now}; the installed env differs from the one it was trained on"
        )
    model = ActorCritic(
        observation_space,
        action_space,
        cfg.policy,
        normalize_obs=cfg.env.normalize_obs,
        obs_clip=cfg.env.obs_clip,
    )
    try:
        model.load_state_dict(state["ppo"]["model"])
    except (KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint {state['path']!r} does not fit its config's model: {first}"
        ) from None
    return model.to(device).eval()


def checkpoint_config(state: dict) -> TrainConfig:
    return from_dict(state["config"], where=f"checkpoint {state['path']!r}")


def reward_scale(state: dict) -> float:
    """The factor from the critic's (scaled-reward) units to env reward units."""
    cfg = checkpoint_config(state)
    if not cfg.env.scale_rewards:
        return 1.0
    var = state["ppo"]["reward_scaler"]["rms.var"]
    return float(torch.sqrt(torch.as_tensor(var, dtype=torch.float64) + 1e-8))


def policy_metadata(model: ActorCritic, cfg: TrainConfig, state: dict | None = None) -> dict:
    """What an exported file says about itself: env, spaces, inputs and outputs."""
    from ppokit import __version__

    action_dtype = "float32" if model.continuous else "int64"
    action_shape = list(model.distribution.action_shape)
    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "ppokit_version": __version__,
        "env_id": cfg.env.id,
        "env": to_dict(cfg)["env"],
        "observation_space": describe_space(model.observation_space),
        "action_space": describe_space(model.action_space),
        "inputs": [{"name": "obs", "shape": ["batch", model.obs_dim], "dtype": "float32"}],
        "outputs": [{"name": "action", "shape": ["batch", *action_shape], "dtype": action_dtype}],
        "recurrent": False,
        "deterministic": True,
        "global_step": None if state is None else state.get("global_step"),
        "source": None if state is None else state.get("path"),
    }


# ----------------------------------------------------------------------------------------------
# The callable
# ----------------------------------------------------------------------------------------------


@dataclass
class Policy:
    """raw observation(s) -> env action(s); what `load_policy` returns.

    Accepts one observation or a batch, as a NumPy array (returns NumPy) or a torch tensor
    (returns a tensor on the same device). `model` and `checkpoint` are set for checkpoints only
    (value analysis needs the critic, which exported files leave out).
    """

    kind: str  # "checkpoint" | "onnx" | "torchscript"
    path: Path
    metadata: dict
    _run: Callable[[Array], Array] = field(repr=False)
    model: ActorCritic | None = field(default=None, repr=False)
    checkpoint: dict | None = field(default=None, repr=False)

    @property
    def env_id(self) -> str | None:
        return self.metadata.get("env_id")

    @property
    def observation_shape(self) -> tuple[int, ...] | None:
        space = self.metadata.get("observation_space")
        return tuple(space["shape"]) if space else None

    @property
    def action_space(self) -> gym.Space | None:
        desc = self.metadata.get("action_space")
        return space_from_description(desc) if desc else None

    def reset(self) -> None:
        """Start of a new episode. A no-op for feed-forward policies (recurrent ones will clear
        their hidden state here)."""

    def __call__(self, obs: Any) -> Any:
        shape = self.observation_shape
        is_tensor = isinstance(obs, torch.Tensor)
        if not is_tensor:
            obs = np.asarray(obs, dtype=np.float32)
        single = shape is not None and tuple(obs.shape) == shape
        if single:
            obs = obs[None]
        if shape is not None and tuple(obs.shape[1:]) != shape:
            raise EnvError(
                f"observation of shape {tuple(obs.shape)} given to a policy for observations of"
                f" shape {shape} (or a batch [B, *shape])"
            )
        actions = self._run(obs)
        return actions[0] if single else actions


def _as_numpy(obs: Array) -> np.ndarray:
    if isinstance(obs, torch.Tensor):
        return obs.detach().to("cpu", torch.float32).numpy()
    return np.asarray(obs, dtype=np.float32)


def _torch_runner(
    module: Callable[[torch.Tensor], torch.Tensor], device: torch.device
) -> Callable[[Array], Array]:
    @torch.no_grad()
    def run(obs: Array) -> Array:
        if isinstance(obs, torch.Tensor):
            return module(obs.to(device, torch.float32)).to(obs.device)
        return module(torch.from_numpy(_as_numpy(obs)).to(device)).cpu().numpy()

    return run


def file_kind(path: Path) -> str:
    """'checkpoint', 'onnx' or 'torchscript', from the name and, for zip archives, the content."""
    if path.is_dir():
        return "checkpoint"
    if path.suffix == ".onnx":
        return "onnx"
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
    return "checkpoint"


def load_policy(
    path: str | Path, device: str | torch.device = "cpu", deterministic: bool = True
) -> Policy:
    """A callable policy from a checkpoint (file or run directory), an ONNX or a TorchScript file.

    >>> policy = ppokit.load_policy("runs/halfcheetah_s1_.../policy.onnx")
    >>> action = policy(obs)            # one observation or a batch, NumPy or torch

    `deterministic=False` samples from the policy's distribution (checkpoints only: exported
    files hold the deterministic action alone).
    """
    p = Path(path)
    device = torch.device(device)
    kind = file_kind(p)
    if kind != "checkpoint":
        if not p.is_file():
            raise ExportError(f"policy file {str(p)!r} does not exist")
        if not deterministic:
            raise ExportError(
                f"{str(p)!r} is an exported policy, which is deterministic only; sample from a"
                " checkpoint instead"
            )
    if kind == "onnx":
        return _load_onnx(p)
    if kind == "torchscript":
        return _load_torchscript(p, device)
    state = ckpt.load_checkpoint(p, map_location="cpu")
    model = model_from_checkpoint(state, device)
    if deterministic:
        run = _torch_runner(model, device)
    else:
        from ppokit.evaluate import policy_fn

        run = _torch_runner(policy_fn(model, deterministic=False), device)
    return Policy(
        "checkpoint",
        Path(state["path"]),
        policy_metadata(model, checkpoint_config(state), state),
        run,
        model=model,
        checkpoint=state,
    )


def _parse_metadata(text: str | bytes | None, path: Path) -> dict:
    if not text:
        return {}
    try:
        meta = json.loads(text)
    except json.JSONDecodeError:
        raise ExportError(f"{str(path)!r} has unreadable ppokit metadata") from None
    return meta if isinstance(meta, dict) else {}


def _load_onnx(path: Path) -> Policy:
    try:
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - a dependency
        raise ExportError(
            "loading ONNX policies needs onnxruntime (pip install onnxruntime)"
        ) from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        message = " ".join(str(e).split())[:200]
        raise ExportError(f"{str(path)!r} is not a loadable ONNX model: {message}") from None
    meta = _parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    if meta.get("recurrent"):
        raise ExportError(f"{str(path)!r} is a recurrent policy, which load_policy cannot run yet")
    input_name = session.get_inputs()[0].name
    output_name = session.get_outputs()[0].name

    def run(obs: Array) -> Array:
        actions = session.run([output_name], {input_name: _as_numpy(obs)})[0]
        if isinstance(obs, torch.Tensor):
            return torch.from_numpy(actions).to(obs.device)
        return actions

    return Policy("onnx", path, meta, run)


def _load_torchscript(path: Path, device: torch.device) -> Policy:
    extra = {TORCHSCRIPT_EXTRA: ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated upstream
            module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except Exception as e:  # torch.jit raises many types for foreign files
        message = " ".join(str(e).split())[:200]
        raise ExportError(
            f"{str(path)!r} is not a loadable TorchScript module: {message}"
        ) from None
    module.eval()
    meta = _parse_metadata(extra[TORCHSCRIPT_EXTRA], path)
    return Policy("torchscript", path, meta, _torch_runner(module, device))
