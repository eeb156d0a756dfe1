"""Export a trained policy to ONNX or TorchScript, verified against the torch policy.

The exported graph is `PolicyGraph`: raw observations in, the deterministic env action out (Box:
rescaled to the env's bounds and clipped; Discrete/MultiDiscrete: int64 indices). Observation
normalization and action post-processing are inside, so a robot needs only the file and
onnxruntime (or libtorch). Every export is checked against the torch model on 256 random
observations (for a recurrent policy: 32 envs x 8 steps, state carried); a difference above 1e-5
fails the export and leaves no file behind.

Inputs and outputs (also listed in the file's metadata):
- ONNX: one input per observation (``obs``, or one per key of a Dict observation, named by the
  key); recurrent policies add the hidden state as input ``hidden`` [batch, state_size] (zeros at
  an episode's start) and output ``hidden_out``, which the caller feeds back.
- TorchScript: ``module(obs)`` with a tensor, or a dict of tensors for Dict observations. A
  recurrent module keeps the hidden state itself (one row per env of the batch) and has
  ``reset()`` / ``reset(done)`` to clear it at episode starts.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from ppokit import checkpoint as ckpt
from ppokit.errors import ExportError
from ppokit.extras import require
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.memory import reset_states
from ppokit.outputs import make_dir, output_file
from ppokit.policy import (
    METADATA_KEY,
    TORCHSCRIPT_EXTRA,
    checkpoint_config,
    load_policy,
    model_from_checkpoint,
    policy_metadata,
)

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
VERIFY_SAMPLES = 256
TOLERANCE = 1e-5
ONNX_OPSET = 18
ONNX_MODULES = ("onnx", "onnxscript", "onnxruntime")  # the `onnx` extra


class PolicyGraph(nn.Module):
    """What an exported file computes, on positional tensors: the observation inputs (one, or
    one per dict key in `keys` order), then the hidden state of a recurrent model. Returns the
    deterministic env action, and the next hidden state of a recurrent model."""

    def __init__(self, model: ActorCritic) -> None:
        super().__init__()
        self.model = model
        self.keys = list(model.observation_space.spaces) if model.dict_obs else []
        self.recurrent = bool(model.recurrent)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n = max(1, len(self.keys))
        obs = dict(zip(self.keys, inputs[:n])) if self.keys else inputs[0]
        state = inputs[n] if self.recurrent else None
        step = self.model.act(obs, state, deterministic=True)  # the one observation -> action path
        return (step.env_actions, step.state) if self.recurrent else step.env_actions


class DictInputGraph(nn.Module):
    """`PolicyGraph` taking a dict of observation tensors (the TorchScript interface)."""

    def __init__(self, graph: PolicyGraph) -> None:
        super().__init__()
        self.graph = graph

    def forward(self, obs: dict[str, torch.Tensor], *state: torch.Tensor):
        return self.graph(*[obs[k] for k in self.graph.keys], *state)


class StatefulPolicy(nn.Module):
    """A recurrent TorchScript policy that keeps its hidden state: `forward(obs)` -> action,
    `reset()` clears every env's state, `reset(done)` those where the [B] mask is true."""

    def __init__(self, step: nn.Module, state_size: int) -> None:
        super().__init__()
        self.step = step
        self.state_size = state_size
        self.state = torch.zeros(0, state_size)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        batch = obs.shape[0]
        if self.state.shape[0] != batch:
            self.state = torch.zeros(batch, self.state_size, device=obs.device)
        action, state = self.step(obs, self.state)
        self.state = state
        return action

    @torch.jit.export
    def reset(self, done: torch.Tensor | None = None) -> None:
        if done is None or done.shape[0] != self.state.shape[0]:
            self.state = torch.zeros(0, self.state_size)
        else:
            self.state = reset_states(self.state, done.to(torch.bool).to(self.state.device))


class StatefulDictPolicy(StatefulPolicy):
    """`StatefulPolicy` for dict observations."""

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:  # type: ignore[override]
        first = obs[sorted(obs.keys())[0]]
        batch = first.shape[0]
        if self.state.shape[0] != batch:
            self.state = torch.zeros(batch, self.state_size, device=first.device)
        action, state = self.step(obs, self.state)
        self.state = state
        return action


@dataclass
class ExportResult:
    path: Path
    format: str
    max_abs_diff: float
    samples: int
    metadata: dict


def default_output(source: Path, fmt: str) -> Path:
    """<run dir>/policy.onnx|.pt for a run directory, else next to the checkpoint file."""
    suffix = FORMATS[fmt]
    if source.is_dir():
        return source / f"policy{suffix}"
    return (
        source.with_suffix(suffix)
        if source.suffix != suffix
        else source.with_name(f"{source.stem}_policy{suffix}")
    )


def _sample_box(
    space: gym.spaces.Box, normalizer: nn.Module | None, n: int, g: torch.Generator
) -> torch.Tensor:
    """n raw observations of one Box: uint8 uniformly over its values; else uniform within
    finite bounds and, elsewhere, Gaussian around the normalizer's mean with 3x its std (some
    beyond the normalizer's clip), or N(0, 3^2) without statistics."""
    shape = tuple(space.shape)
    if space.dtype == np.uint8:
        low, high = int(np.min(space.low)), int(np.max(space.high))
        return torch.randint(low, high + 1, (n, *shape), generator=g, dtype=torch.uint8)
    dim = int(np.prod(shape))
    low = torch.as_tensor(np.asarray(space.low, np.float64).reshape(-1))
    high = torch.as_tensor(np.asarray(space.high, np.float64).reshape(-1))
    rms = getattr(normalizer, "rms", None)
    if rms is not None and getattr(normalizer, "enabled", False) and float(rms.count) > 0:
        mean = rms.mean.reshape(-1).double().cpu()
        std = rms.var.reshape(-1).double().sqrt().cpu()
    else:
        mean, std = torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64)
    gaussian = mean + 3 * std * torch.randn(n, dim, generator=g, dtype=torch.float64)
    finite = torch.isfinite(low) & torch.isfinite(high) & ((high - low) < 1e6)
    uniform = low + (high - low) * torch.rand(n, dim, generator=g, dtype=torch.float64)
    return torch.where(finite, uniform.nan_to_num(0.0), gaussian).float().reshape(n, *shape)


def sample_observations(
    model: ActorCritic, n: int = VERIFY_SAMPLES, seed: int = 0
) -> list[torch.Tensor]:
    """Random raw observations that exercise the whole graph, as the list of observation inputs
    (one tensor, or one per dict key in the space's order), each [n, ...]."""
    g = torch.Generator().manual_seed(seed)
    space = model.observation_space
    if isinstance(space, gym.spaces.Dict):
        parts = dict(getattr(model.obs_normalizer, "parts", {}).items())
        return [_sample_box(sub, parts.get(key), n, g) for key, sub in space.spaces.items()]
    return [_sample_box(space, model.obs_normalizer, n, g)]


def export_policy(
    source: str | Path, fmt: str, out: str | Path | None = None, verify: bool = True
) -> ExportResult:
    """Export a checkpoint (file or run directory) to `fmt` ('onnx' or 'torchscript').

    Writes to a temporary file next to `out`, verifies it with `load_policy` (the path users
    take) against the torch policy, and only then renames it to `out`.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    if fmt == "onnx":  # before any work: the exporter, the file format, the verification
        for module in ONNX_MODULES:
            require(module, "onnx", "ONNX export")
    state = ckpt.load_checkpoint(source)
    model = model_from_checkpoint(state, "cpu")
    out_path = output_file(
        out if out is not None else default_output(Path(source), fmt), f"{fmt} export"
    )
    metadata = policy_metadata(model, checkpoint_config(state), state)
    graph = PolicyGraph(model).eval()
    example = _example_inputs(graph, metadata)
    # The temporary name keeps the suffix: load_policy tells the kinds apart by it.
    make_dir(out_path.parent, f"{fmt} export")
    tmp = out_path.parent / f".{out_path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp{FORMATS[fmt]}"
    try:
        if fmt == "onnx":
            _export_onnx(graph, example, tmp, metadata)
        else:
            _export_torchscript(graph, example, tmp, metadata)
        diff = 0.0
        if verify:
            diff = max_abs_diff(graph, tmp)
            if not diff <= TOLERANCE:
                raise ExportError(
                    f"{fmt} export does not match the torch policy: max abs difference"
                    f" {diff:.3g} > {TOLERANCE:g} on {VERIFY_SAMPLES} random observations;"
                    " nothing was written"
                )
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out_path, fmt, diff, VERIFY_SAMPLES if verify else 0, metadata)


def _example_inputs(graph: PolicyGraph, metadata: dict) -> list[torch.Tensor]:
    """Positional example inputs of the graph: observations of a small batch (and a state)."""
    obs = sample_observations(graph.model, n=4, seed=1)
    if graph.recurrent:
        obs.append(torch.zeros(4, int(metadata["state_size"])))
    return obs


def _as_policy_input(graph: PolicyGraph, obs: list[torch.Tensor]) -> Any:
    """The observation as a user passes it to `load_policy`'s callable (NumPy)."""
    if graph.keys:
        return {k: x.numpy() for k, x in zip(graph.keys, obs)}
    return obs[0].numpy()


def max_abs_diff(graph: PolicyGraph, exported: Path, seed: int = 0) -> float:
    """max |exported - torch| over VERIFY_SAMPLES random observations, the file loaded as users
    load it. A recurrent policy runs 32 envs x 8 steps with its state carried (and once more
    after `reset()`), so the hidden state's round trip is checked too."""
    policy = load_policy(exported)
    recurrent = graph.recurrent
    envs = 32 if recurrent else VERIFY_SAMPLES
    steps = VERIFY_SAMPLES // envs
    batches = [sample_observations(graph.model, envs, seed + t) for t in range(steps)]
    state = torch.zeros(envs, graph.model.state_size) if recurrent else None
    expected, actual = [], []
    with torch.no_grad():
        for t, obs in enumerate(batches):
            if recurrent:
                action, state = graph(*obs, state)
            else:
                action = graph(*obs)
            expected.append(action.double().numpy())
            actual.append(np.asarray(policy(_as_policy_input(graph, obs)), dtype=np.float64))
            if recurrent and t == 0:
                first = expected[0]
        if recurrent:  # after reset() the state starts from zeros again
            policy.reset()
            expected.append(first)
            actual.append(np.asarray(policy(_as_policy_input(graph, batches[0])), np.float64))
    for e, a in zip(expected, actual):
        if a.shape != e.shape:
            raise ExportError(
                f"exported policy returns actions of shape {a.shape}, the torch policy {e.shape}"
            )
    return max((float(np.max(np.abs(a - e))) if e.size else 0.0) for e, a in zip(expected, actual))


def _export_onnx(
    graph: PolicyGraph, example: list[torch.Tensor], path: Path, metadata: dict
) -> None:
    batch = torch.export.Dim("batch", min=1)
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # torch.onnx logs optional-dependency notes at WARNING
    try:
        with (
            warnings.catch_warnings(),
            contextlib.redirect_stdout(io.StringIO()),  # the exporter prints its progress
        ):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                graph,
                tuple(example),
                input_names=[i["name"] for i in metadata["inputs"]],
                output_names=[o["name"] for o in metadata["outputs"]],
                # forward(*inputs): one dynamic batch dimension per positional input
                dynamic_shapes=(tuple({0: batch} for _ in example),),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
    except Exception as e:  # the exporter raises many types
        message = " ".join(str(e).split())[:300]
        raise ExportError(f"ONNX export failed ({type(e).__name__}): {message}") from None
    finally:
        quiet.setLevel(level)
    assert program is not None
    model = program.model_proto
    model.doc_string = f"ppokit policy for {metadata['env_id']}: raw observation -> action"
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    require("onnx", "onnx", "ONNX export").save_model(model, str(path))


def _export_torchscript(
    graph: PolicyGraph, example: list[torch.Tensor], path: Path, metadata: dict
) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated upstream, still supported
            if graph.keys:  # dict observations: the module takes a dict
                n = len(graph.keys)
                inputs = (dict(zip(graph.keys, example[:n])), *example[n:])
                traced = torch.jit.trace(
                    DictInputGraph(graph), inputs, check_trace=False, strict=False
                )
            else:
                traced = torch.jit.trace(graph, tuple(example), check_trace=False)
            module = traced
            if graph.recurrent:
                wrapper = StatefulDictPolicy if graph.keys else StatefulPolicy
                module = torch.jit.script(wrapper(traced, int(metadata["state_size"])))
            torch.jit.save(
                module, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata)}
            )
    except Exception as e:  # tracing raises many types
        message = " ".join(str(e).split())[:300]
        raise ExportError(f"TorchScript export failed ({type(e).__name__}): {message}") from None
