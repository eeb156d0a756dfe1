"""Export equivalence: ONNX (onnxruntime) and TorchScript against the torch policy, and
`ppokit.load_policy` for the three kinds of file."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import ppokit
from ppokit import checkpoint as ckpt
from ppokit.config import TrainConfig, to_dict
from ppokit.errors import ExportError
from ppokit.export import TOLERANCE, VERIFY_SAMPLES, export_policy, sample_observations
from ppokit.policy import env_spaces, model_from_checkpoint
from ppokit_runs import MULTI_DISCRETE

# torch.jit (TorchScript) is deprecated upstream; ppokit still exports it on request.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit.*")

CASES = {
    # Box actions rescaled to [-2, 2] and clipped; bounded observations.
    "box": "Pendulum-v1",
    # Discrete actions (argmax, int64); observations partly unbounded.
    "discrete": "CartPole-v1",
    "multi_discrete": MULTI_DISCRETE,
}


def write_checkpoint(path: Path, env_id: str, seed: int = 0) -> Path:
    """A checkpoint of an untrained model made to exercise every part of the inference graph:
    non-trivial normalizer statistics, and actor outputs large enough to hit the action clip."""
    torch.manual_seed(seed)
    cfg = TrainConfig()
    cfg.env = replace(cfg.env, id=env_id)
    cfg.policy = replace(cfg.policy, actor_hidden=[32, 32], critic_hidden=[16])
    obs_space, act_space = env_spaces(env_id, None, {})
    model = ppokit.ActorCritic(obs_space, act_space, cfg.policy)
    dim = model.obs_dim
    model.obs_normalizer.update(torch.randn(500, dim) * torch.rand(dim) * 4 + torch.randn(dim))
    with torch.no_grad():
        model.actor.layers[-1].weight.mul_(300.0)  # head gain 0.01 -> outputs of order 1-3
    state = {
        "format": ckpt.FORMAT,
        "version": ckpt.VERSION,
        "config": to_dict(cfg),
        "ppo": {"model": model.state_dict()},
        "global_step": 0,
        "spaces": {"observation": repr(obs_space), "action": repr(act_space)},
    }
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    return {name: write_checkpoint(folder / f"{name}.pt", env) for name, env in CASES.items()}


def torch_actions(checkpoint: Path, obs: torch.Tensor) -> np.ndarray:
    model = model_from_checkpoint(ckpt.load_checkpoint(checkpoint))
    with torch.no_grad():
        return model(obs).numpy()


def test_random_observations_cover_the_graph(checkpoints):
    model = model_from_checkpoint(ckpt.load_checkpoint(checkpoints["box"]))
    obs = sample_observations(model)
    assert obs.shape == (VERIFY_SAMPLES, 3)
    actions = model(obs).detach()
    assert (actions.abs() == 2.0).any() and (actions.abs() < 2.0).any()  # clipped and not


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_onnx_matches_torch(checkpoints, tmp_path, case):
    import onnxruntime as ort

    result = export_policy(checkpoints[case], "onnx", tmp_path / "policy.onnx")
    assert result.max_abs_diff <= TOLERANCE and result.samples == VERIFY_SAMPLES
    # Independently of ppokit: plain onnxruntime on fresh random observations.
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    model = model_from_checkpoint(ckpt.load_checkpoint(checkpoints[case]))
    obs = sample_observations(model, seed=123)
    (got,) = session.run(None, {"obs": obs.numpy()})
    expected = torch_actions(checkpoints[case], obs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= TOLERANCE
    one = session.run(None, {"obs": obs[:1].numpy()})[0]  # dynamic batch size
    assert one.shape == expected[:1].shape
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ppokit"])
    assert meta["env_id"] == CASES[case] and meta["recurrent"] is False
    assert [i.name for i in session.get_inputs()] == ["obs"]


@pytest.mark.parametrize("case", list(CASES))
def test_torchscript_matches_torch(checkpoints, tmp_path, case):
    result = export_policy(checkpoints[case], "torchscript", tmp_path / "policy.pt")
    assert result.max_abs_diff <= TOLERANCE
    module = torch.jit.load(str(result.path))
    model = model_from_checkpoint(ckpt.load_checkpoint(checkpoints[case]))
    obs = sample_observations(model, seed=123)
    with torch.no_grad():
        got = module(obs).numpy()
    expected = torch_actions(checkpoints[case], obs)
    assert got.dtype == expected.dtype
    assert np.max(np.abs(got - expected)) <= TOLERANCE


@pytest.mark.parametrize("fmt", ["torchscript", pytest.param("onnx", marks=pytest.mark.slow)])
def test_load_policy_gives_the_same_callable_for_every_kind(checkpoints, tmp_path, fmt):
    exported = export_policy(
        checkpoints["box"], fmt, tmp_path / f"p{'.onnx' if fmt == 'onnx' else '.pt'}"
    )
    from_checkpoint = ppokit.load_policy(checkpoints["box"])
    from_file = ppokit.load_policy(exported.path)
    assert from_checkpoint.kind == "checkpoint" and from_file.kind == fmt
    assert from_file.env_id == "Pendulum-v1" and from_file.observation_shape == (3,)
    obs = np.array([[0.5, -0.2, 3.0], [1.0, 0.0, -8.0]], dtype=np.float32)
    a, b = from_checkpoint(obs), from_file(obs)
    assert isinstance(b, np.ndarray) and b.shape == (2, 1)
    assert np.max(np.abs(a - b)) <= TOLERANCE
    single = from_file(obs[0])  # one observation in, one action out
    assert single.shape == (1,) and np.allclose(single, b[0], atol=TOLERANCE)
    as_tensor = from_file(torch.from_numpy(obs))
    assert isinstance(as_tensor, torch.Tensor) and torch.allclose(as_tensor, torch.from_numpy(b))


def test_failed_verification_keeps_no_file(checkpoints, tmp_path, monkeypatch):
    import ppokit.export as export

    monkeypatch.setattr(export, "max_abs_diff", lambda *a: 3.5e-3)
    out = tmp_path / "policy.pt"
    with pytest.raises(ExportError, match=r"max abs difference 0.0035 > 1e-05 on 256"):
        export_policy(checkpoints["box"], "torchscript", out)
    assert list(tmp_path.iterdir()) == []


def test_stochastic_is_for_checkpoints_only(checkpoints, tmp_path):
    exported = export_policy(checkpoints["discrete"], "torchscript", tmp_path / "p.pt")
    with pytest.raises(ExportError, match="deterministic only"):
        ppokit.load_policy(exported.path, deterministic=False)
    sampled = ppokit.load_policy(checkpoints["discrete"], deterministic=False)
    actions = sampled(np.zeros((64, 4), np.float32))
    assert actions.dtype == np.int64 and set(np.unique(actions)) <= {0, 1}


def test_foreign_files_are_clear_errors(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(ExportError, match="not a loadable ONNX model"):
        ppokit.load_policy(bad)
    with pytest.raises(ExportError, match="does not exist"):
        ppokit.load_policy(tmp_path / "missing.onnx")
