"""`ppokit.load_policy(path)`: one callable for a checkpoint, an ONNX file or a TorchScript file.

Every kind computes the same thing: raw observations in, the deterministic action out, already
rescaled and clipped to the env's bounds (observation normalization and action post-processing
live inside the model and inside exported graphs). Exported files carry a JSON description
(`policy_metadata`) of the env, the spaces and their inputs and outputs, so they can be evaluated
without their checkpoint.

Dict observations are passed as a mapping of key -> array (ONNX: one named input per key).
Recurrent policies keep their hidden state between calls, one row per env of the batch; `reset()`
clears it (all envs, or those marked done), and `ppokit eval` resets the envs whose episode ended.
"""

from __future__ import annotations

import json
import math
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch

from ppokit import checkpoint as ckpt
from ppokit.config import TrainConfig, from_dict, to_dict
from ppokit.envs.gym_env import check_env_id, env_factory
from ppokit.errors import CheckpointError, EnvError, ExportError
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.memory import reset_states
from ppokit.observations import obs_batch_size, storage_dtype

METADATA_FORMAT = "ppokit-policy"
METADATA_VERSION = 1
METADATA_KEY = "ppokit"  # ONNX metadata_props key; TorchScript extra file "ppokit.json"
TORCHSCRIPT_EXTRA = "ppokit.json"
BOX_INPUT = "obs"  # the input name of a Box observation
HIDDEN_INPUT, HIDDEN_OUTPUT = "hidden", "hidden_out"  # recurrent state in and out (ONNX)


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
    if isinstance(space, gym.spaces.Dict):
        return {"type": "dict", "spaces": {k: describe_space(v) for k, v in space.spaces.items()}}
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
    if kind == "dict":
        return gym.spaces.Dict({k: space_from_description(v) for k, v in desc["spaces"].items()})
    raise ExportError(f"policy metadata describes an unsupported space: {desc}")


def space_mismatch(policy_meta: dict, observation_space: gym.Space, action_space: gym.Space) -> str:
    """'' when an env's spaces fit the policy, else what differs, as 'env vs policy'."""
    want_obs, want_act = policy_meta["observation_space"], policy_meta["action_space"]
    have_obs, have_act = describe_space(observation_space), describe_space(action_space)
    problems = []
    if _layout(want_obs) != _layout(have_obs):
        problems.append(f"observations {_short(have_obs, False)} vs {_short(want_obs, False)}")
    if want_act != have_act:
        problems.append(f"actions {_short(have_act)} vs {_short(want_act)}")
    return "; ".join(problems)


def _layout(desc: dict) -> Any:
    """What an observation's fit depends on: kinds, keys and shapes (not the bounds)."""
    if desc.get("type") == "dict":
        return {k: _layout(v) for k, v in desc["spaces"].items()}
    return desc.get("type"), desc.get("shape")


def _short(desc: dict, bounds: bool = True) -> str:
    kind = desc.get("type")
    if kind == "dict":
        inner = ", ".join(f"{k}: {_short(v, bounds)}" for k, v in desc["spaces"].items())
        return f"Dict({inner})"
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
    if not cfg.algo.scale_rewards:
        return 1.0
    var = state["ppo"]["reward_scaler"]["rms.var"]
    return float(torch.sqrt(torch.as_tensor(var, dtype=torch.float64) + 1e-8))


def observation_inputs(model: ActorCritic) -> list[dict]:
    """The observation inputs of an exported policy: one per dict key, else one named "obs"."""
    space = model.observation_space
    if isinstance(space, gym.spaces.Dict):
        items = list(space.spaces.items())
    else:
        items = [(BOX_INPUT, space)]
    out = []
    for name, sub in items:
        dtype = (
            "uint8"
            if isinstance(space, gym.spaces.Dict) and storage_dtype(sub) == torch.uint8
            else "float32"
        )
        out.append({"name": name, "shape": ["batch", *map(int, sub.shape)], "dtype": dtype})
    return out


def policy_metadata(model: ActorCritic, cfg: TrainConfig, state: dict | None = None) -> dict:
    """What an exported file says about itself: env, spaces, inputs and outputs.

    Inputs are the observation tensors (`observation_inputs`) and, for a recurrent policy, the
    hidden state [batch, state_size] (zeros at an episode's start); outputs the env action and,
    for a recurrent policy, the next hidden state.
    """
    from ppokit.version import __version__

    recurrent = bool(getattr(model, "recurrent", False))
    state_size = int(getattr(model, "state_size", 0)) if recurrent else 0
    inputs = observation_inputs(model)
    action_dtype = "float32" if model.continuous else "int64"
    outputs = [
        {
            "name": "action",
            "shape": ["batch", *model.distribution.action_shape],
            "dtype": action_dtype,
        }
    ]
    if recurrent:
        if HIDDEN_INPUT in [i["name"] for i in inputs]:
            raise ExportError(
                f"observation key {HIDDEN_INPUT!r} clashes with the recurrent state's input name"
            )
        inputs.append({"name": HIDDEN_INPUT, "shape": ["batch", state_size], "dtype": "float32"})
        outputs.append({"name": HIDDEN_OUTPUT, "shape": ["batch", state_size], "dtype": "float32"})
    return {
        "format": METADATA_FORMAT,
        "version": METADATA_VERSION,
        "ppokit_version": __version__,
        "env_id": cfg.env.id,
        "env": to_dict(cfg)["env"],
        "observation_space": describe_space(model.observation_space),
        "action_space": describe_space(model.action_space),
        "inputs": inputs,
        "outputs": outputs,
        "recurrent": recurrent,
        "state_size": state_size,
        "deterministic": True,
        "global_step": None if state is None else state.get("global_step"),
        "source": None if state is None else state.get("path"),
    }


# ----------------------------------------------------------------------------------------------
# The callable
# ----------------------------------------------------------------------------------------------


class Backend(Protocol):
    """What runs a batch: `inputs` maps input names to [B, ...] arrays (NumPy for ONNX, torch
    tensors on the policy's device otherwise); returns the actions."""

    def __call__(self, inputs: dict[str, Any]) -> Any: ...

    def reset(self, done: np.ndarray | None) -> None: ...


class Policy:
    """raw observation(s) -> env action(s); what `load_policy` returns.

    Accepts one observation or a batch [B, ...]: an array for a Box observation space, a mapping
    key -> array for a Dict one; NumPy in gives NumPy out, torch in gives torch out (on the input's
    device). Recurrent policies carry one hidden state per env of the batch: call `reset()` at the
    start of new episodes (or `reset(done)` with a [B] mask). `model` and `checkpoint` are set for
    checkpoints only (value analysis needs the critic, which exported files leave out).
    """

    def __init__(
        self,
        kind: str,
        path: Path,
        metadata: dict,
        backend: Backend,
        numpy_inputs: bool,
        device: torch.device | None = None,
        model: ActorCritic | None = None,
        checkpoint: dict | None = None,
    ) -> None:
        self.kind = kind  # "checkpoint" | "onnx" | "torchscript"
        self.path = Path(path)
        self.metadata = metadata
        self.model = model
        self.checkpoint = checkpoint
        self._backend = backend
        self._numpy_inputs = numpy_inputs
        self._device = device or torch.device("cpu")
        self._inputs = [i for i in metadata.get("inputs", []) if i["name"] != HIDDEN_INPUT]

    def __repr__(self) -> str:
        return f"Policy(kind={self.kind!r}, path={str(self.path)!r}, env_id={self.env_id!r})"

    @property
    def env_id(self) -> str | None:
        return self.metadata.get("env_id")

    @property
    def recurrent(self) -> bool:
        return bool(self.metadata.get("recurrent"))

    @property
    def observation_shape(self) -> tuple[int, ...] | None:
        """Shape of one Box observation (None for dict observations or unknown files)."""
        space = self.metadata.get("observation_space")
        return tuple(space["shape"]) if space and space.get("type") == "box" else None

    @property
    def observation_space(self) -> gym.Space | None:
        desc = self.metadata.get("observation_space")
        return space_from_description(desc) if desc else None

    @property
    def action_space(self) -> gym.Space | None:
        desc = self.metadata.get("action_space")
        return space_from_description(desc) if desc else None

    def reset(self, done: Any = None) -> None:
        """Clear the hidden state of every env, or of the envs where `done` [B] is true
        (a no-op for feedforward policies)."""
        if done is not None:
            done = done.detach().cpu().numpy() if isinstance(done, torch.Tensor) else done
            done = np.asarray(done, dtype=bool)
        self._backend.reset(done)

    def episodes_ended(self, ended: np.ndarray) -> None:
        """Called by `evaluate_policy` after each step: new episodes start from a zero state."""
        if self.recurrent and np.any(ended):
            self.reset(ended)

    def __call__(self, obs: Any) -> Any:
        is_dict = isinstance(obs, Mapping)
        specs = self._inputs or [{"name": BOX_INPUT, "shape": None}]
        arrays = dict(obs) if is_dict else {specs[0]["name"] if len(specs) == 1 else BOX_INPUT: obs}
        names = [spec["name"] for spec in specs]
        if set(names) != set(arrays):
            want = "a mapping with keys " + ", ".join(names) if names != [BOX_INPUT] else "an array"
            got = "keys " + ", ".join(arrays) if is_dict else "an array"
            raise EnvError(f"the policy takes {want} as observation, got {got}")
        first = arrays[names[0]]
        as_tensor = isinstance(first, torch.Tensor)
        out_device = first.device if as_tensor else None
        shape = specs[0]["shape"]
        single = shape is not None and len(first.shape) == len(shape) - 1
        inputs = {}
        for spec in specs:
            x = arrays[spec["name"]]
            if spec["shape"] is not None:
                expected = tuple(spec["shape"][1:])
                got_shape = tuple(x.shape if not single else (1, *x.shape))[1:]
                if got_shape != expected:
                    raise EnvError(
                        f"observation {spec['name']!r} has shape {tuple(x.shape)}; the policy"
                        f" expects {expected} (or a batch [B, *{expected}])"
                    )
            inputs[spec["name"]] = self._convert(x, spec.get("dtype", "float32"), single)
        actions = self._backend(inputs)
        if as_tensor:
            actions = torch.as_tensor(actions).to(out_device)
        elif isinstance(actions, torch.Tensor):
            actions = actions.cpu().numpy()
        return actions[0] if single else actions

    def _convert(self, x: Any, dtype: str, single: bool) -> Any:
        if self._numpy_inputs:
            if isinstance(x, torch.Tensor):
                x = x.detach().cpu().numpy()
            x = np.asarray(x, dtype=np.dtype(dtype))
            return x[None] if single else x
        t = torch.as_tensor(x).to(self._device, getattr(torch, dtype))
        return t.unsqueeze(0) if single else t


def _reset_rows(state: torch.Tensor | None, done: np.ndarray | None) -> torch.Tensor | None:
    """`state` with the rows of `done` envs zeroed (None: forget it; the next call starts from
    zeros for the batch it gets)."""
    if state is None or done is None or len(done) != state.shape[0]:
        return None
    return reset_states(state, torch.as_tensor(done, device=state.device))


class ModelPolicy:
    """A model as a policy callable: raw observations [B, ...] -> env actions, through
    `ActorCritic.policy_step` (deterministic or sampling). The memory state of a recurrent model
    is carried between calls, one row per env of the batch, and reset with `reset(done)` /
    `episodes_ended(ended)` (which `evaluate_policy` calls after each step); a feedforward
    model's state is empty."""

    def __init__(self, model: ActorCritic, deterministic: bool = True) -> None:
        self.model, self.deterministic = model, deterministic
        self.state: torch.Tensor | None = None

    def __call__(self, obs: Any) -> torch.Tensor:
        batch = obs_batch_size(obs)
        if self.state is None or self.state.shape[0] != batch:
            device = next(self.model.parameters()).device
            self.state = self.model.initial_state(batch, device)
        actions, self.state = self.model.policy_step(obs, self.state, self.deterministic)
        return actions

    def reset(self, done: np.ndarray | None = None) -> None:
        """Zero the state of the envs where `done` [B] is true (None: of every env)."""
        self.state = _reset_rows(self.state, done)

    def episodes_ended(self, ended: np.ndarray) -> None:
        if self.model.recurrent:
            self.reset(np.asarray(ended, dtype=bool))


class CheckpointBackend:
    """The torch model of a checkpoint (deterministic or sampling, feedforward or recurrent)."""

    def __init__(self, model: ActorCritic, deterministic: bool) -> None:
        self.model = model
        self.policy = ModelPolicy(model, deterministic)

    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        obs = inputs[BOX_INPUT] if BOX_INPUT in inputs and not self.model.dict_obs else inputs
        return self.policy(obs)

    def reset(self, done: np.ndarray | None) -> None:
        self.policy.reset(done)


class OnnxBackend:
    """An onnxruntime session; a recurrent graph's hidden state is fed back between calls."""

    def __init__(self, session: Any, meta: dict) -> None:
        self.session = session
        self.state_size = int(meta.get("state_size") or 0) if meta.get("recurrent") else 0
        self.output = session.get_outputs()[0].name
        self.state: torch.Tensor | None = None  # on the CPU: shares memory with NumPy's view

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        if not self.state_size:
            return self.session.run([self.output], inputs)[0]
        batch = next(iter(inputs.values())).shape[0]
        if self.state is None or self.state.shape[0] != batch:
            self.state = torch.zeros(batch, self.state_size)
        actions, state = self.session.run(
            [self.output, HIDDEN_OUTPUT], {**inputs, HIDDEN_INPUT: self.state.numpy()}
        )
        self.state = torch.from_numpy(state)
        return actions

    def reset(self, done: np.ndarray | None) -> None:
        self.state = _reset_rows(self.state, done)


class TorchScriptBackend:
    """A TorchScript module: `module(obs)` (a tensor, or a dict for dict observations); a
    recurrent module keeps its own state and has `reset(done)`."""

    def __init__(self, module: Any, meta: dict) -> None:
        self.module = module
        self.dict_obs = (meta.get("observation_space") or {}).get("type") == "dict"
        self.recurrent = bool(meta.get("recurrent"))

    @torch.no_grad()
    def __call__(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        obs = inputs if self.dict_obs else inputs[BOX_INPUT]
        return self.module(obs)

    def reset(self, done: np.ndarray | None) -> None:
        if self.recurrent:
            self.module.reset(None if done is None else torch.as_tensor(done))


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
    return Policy(
        "checkpoint",
        Path(state["path"]),
        policy_metadata(model, checkpoint_config(state), state),
        CheckpointBackend(model, deterministic),
        numpy_inputs=False,
        device=device,
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
    from ppokit.extras import require

    ort = require("onnxruntime", "onnx", "loading an ONNX policy")
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        message = " ".join(str(e).split())[:200]
        raise ExportError(f"{str(path)!r} is not a loadable ONNX model: {message}") from None
    meta = _parse_metadata(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY), path)
    if not meta.get("inputs"):  # a foreign ONNX file: its own first input and output
        inputs = session.get_inputs()
        meta = {**meta, "inputs": [{"name": inputs[0].name, "shape": None, "dtype": "float32"}]}
    return Policy("onnx", path, meta, OnnxBackend(session, meta), numpy_inputs=True)


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
    return Policy(
        "torchscript",
        path,
        meta,
        TorchScriptBackend(module, meta),
        numpy_inputs=False,
        device=device,
    )
