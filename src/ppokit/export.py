"""Export a trained policy to ONNX or TorchScript, verified against the torch policy.

The exported graph is `PolicyGraph`: raw observations [B, obs_dim] in, the deterministic env
action out (Box: rescaled to the env's bounds and clipped; Discrete/MultiDiscrete: int64
indices). Observation normalization and action post-processing are inside, so a robot needs
only the file and onnxruntime (or libtorch). Every export is checked on 256 random observations
against the torch model; a difference above 1e-5 fails the export and leaves no file behind.

Recurrent policies (not in ppokit yet) are meant to export with the hidden state explicit:
ONNX inputs ``obs, hidden`` and outputs ``action, hidden_out``, so the caller carries the state;
TorchScript as a scripted module that keeps the state in a buffer, with ``reset()`` (and the
traced step inside). `PolicyGraph` and the metadata's ``inputs``/``outputs``/``recurrent``
entries are where that goes; until then a model with memory is refused.
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

import numpy as np
import onnx
import torch
from torch import nn

from ppokit import checkpoint as ckpt
from ppokit.errors import ExportError
from ppokit.nn.actor_critic import ActorCritic
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


class PolicyGraph(nn.Module):
    """What an exported file computes: raw observations -> deterministic env actions."""

    def __init__(self, model: ActorCritic) -> None:
        super().__init__()
        self.model = model

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.model(obs)


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


def sample_observations(model: ActorCritic, n: int = VERIFY_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Random raw observations that exercise the whole graph.

    Uniform within finite Box bounds; elsewhere Gaussian around the normalizer's mean with 3x its
    std (some beyond the normalizer's clip), or N(0, 3^2) without statistics.
    """
    g = torch.Generator().manual_seed(seed)
    space = model.observation_space
    dim = model.obs_dim
    low = torch.as_tensor(np.asarray(space.low, np.float64).reshape(-1))
    high = torch.as_tensor(np.asarray(space.high, np.float64).reshape(-1))
    normalizer = model.obs_normalizer
    if normalizer.enabled and float(normalizer.rms.count) > 0:
        mean = normalizer.rms.mean.reshape(-1).double().cpu()
        std = normalizer.rms.var.reshape(-1).double().sqrt().cpu()
    else:
        mean, std = torch.zeros(dim, dtype=torch.float64), torch.ones(dim, dtype=torch.float64)
    gaussian = mean + 3 * std * torch.randn(n, dim, generator=g, dtype=torch.float64)
    finite = torch.isfinite(low) & torch.isfinite(high) & ((high - low) < 1e6)
    uniform = low + (high - low) * torch.rand(n, dim, generator=g, dtype=torch.float64)
    obs = torch.where(finite, uniform.nan_to_num(0.0), gaussian)
    return obs.float().reshape(n, *space.shape)


def export_policy(
    source: str | Path, fmt: str, out: str | Path | None = None, verify: bool = True
) -> ExportResult:
    """Export a checkpoint (file or run directory) to `fmt` ('onnx' or 'torchscript').

    Writes to a temporary file next to `out`, verifies it with `load_policy` (the path users
    take) against the torch policy, and only then renames it to `out`.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    state = ckpt.load_checkpoint(source)
    model = model_from_checkpoint(state, "cpu")
    if getattr(model, "is_recurrent", False):
        raise ExportError(
            "exporting recurrent policies is not supported yet (hidden state as explicit"
            " ONNX input/output and a TorchScript module with reset() are the planned layout)"
        )
    out_path = output_file(
        out if out is not None else default_output(Path(source), fmt), f"{fmt} export"
    )
    metadata = policy_metadata(model, checkpoint_config(state), state)
    graph = PolicyGraph(model).eval()
    obs = sample_observations(model)
    # The temporary name keeps the suffix: load_policy tells the kinds apart by it.
    make_dir(out_path.parent, f"{fmt} export")
    tmp = out_path.parent / f".{out_path.stem}.{os.getpid()}.{uuid.uuid4().hex}.tmp{FORMATS[fmt]}"
    try:
        if fmt == "onnx":
            _export_onnx(graph, obs, tmp, metadata)
        else:
            _export_torchscript(graph, obs, tmp, metadata)
        diff = 0.0
        if verify:
            diff = max_abs_diff(graph, tmp, obs)
            if not diff <= TOLERANCE:
                raise ExportError(
                    f"{fmt} export does not match the torch policy: max abs difference"
                    f" {diff:.3g} > {TOLERANCE:g} on {len(obs)} random observations; nothing"
                    " was written"
                )
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(out_path, fmt, diff, len(obs) if verify else 0, metadata)


def max_abs_diff(graph: nn.Module, exported: Path, obs: torch.Tensor) -> float:
    """max |exported(obs) - torch(obs)| with the exported file loaded as users load it."""
    with torch.no_grad():
        expected = graph(obs).double().numpy()
    actual = np.asarray(load_policy(exported)(obs.numpy()), dtype=np.float64)
    if actual.shape != expected.shape:
        raise ExportError(
            f"exported policy returns actions of shape {actual.shape}, the torch policy"
            f" {expected.shape}"
        )
    return float(np.max(np.abs(actual - expected))) if expected.size else 0.0


def _export_onnx(graph: nn.Module, obs: torch.Tensor, path: Path, metadata: dict) -> None:
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
                (obs,),
                input_names=["obs"],
                output_names=["action"],
                dynamic_shapes={"obs": {0: batch}},
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
    onnx.save_model(model, str(path))


def _export_torchscript(graph: nn.Module, obs: torch.Tensor, path: Path, metadata: dict) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit is deprecated upstream, still supported
            traced = torch.jit.trace(graph, (obs,), check_trace=False)
            torch.jit.save(
                traced, str(path), _extra_files={TORCHSCRIPT_EXTRA: json.dumps(metadata)}
            )
    except Exception as e:  # tracing raises many types
        message = " ".join(str(e).split())[:300]
        raise ExportError(f"TorchScript export failed ({type(e).__name__}): {message}") from None
