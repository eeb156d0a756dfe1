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
from ppokit_test_envs import DICT_OBS

# torch.jit (TorchScript) is deprecated upstream; ppokit still exports it on request.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit.*")

CASES = {
    # name: (env id, policy overrides)
    # Box actions rescaled to [-2, 2] and clipped; bounded observations.
    "box": ("Pendulum-v1", {}),
    # Discrete actions (argmax, int64); observations partly unbounded.
    "discrete": ("CartPole-v1", {}),
    "multi_discrete": (MULTI_DISCRETE, {}),
    # Recurrent: GRU with a separate critic core; 2-layer LSTM shared with the critic.
    "gru": ("CartPole-v1", {"memory": "gru", "memory_hidden": 16, "critic_memory": "separate"}),
    "lstm": ("Pendulum-v1", {"memory": "lstm", "memory_hidden": 8, "memory_layers": 2}),
    # Dict observations: a uint8 image, two vectors (named inputs); and with a GRU.
    "dict": (DICT_OBS, {}),
    "dict_gru": (DICT_OBS, {"memory": "gru", "memory_hidden": 8}),
}
ONNX_CASES = ["box", "discrete", "multi_discrete", "gru", "dict"]


def write_checkpoint(path: Path, env_id: str, policy: dict | None = None, seed: int = 0) -> Path:
    """A checkpoint of an untrained model made to exercise every part of the inference graph:
    non-trivial normalizer statistics, and actor outputs large enough to hit the action clip."""
    torch.manual_seed(seed)
    cfg = TrainConfig()
    cfg.env = replace(cfg.env, id=env_id)
    cfg.policy = replace(cfg.policy, actor_hidden=[32, 32], critic_hidden=[16], **(policy or {}))
    obs_space, act_space = env_spaces(env_id, None, {})
    model = ppokit.ActorCritic(obs_space, act_space, cfg.policy)
    raw = sample_observations(model, 500, seed=seed)
    stretched = [
        x if x.dtype == torch.uint8 else x * (1 + 3 * torch.rand(x.shape[1:])) + 1 for x in raw
    ]
    if model.dict_obs:
        model.obs_normalizer.update(dict(zip(obs_space.spaces, stretched)))
    else:
        model.obs_normalizer.update(stretched[0])
    with torch.no_grad():
        model.actor.layers[-1].weight.mul_(1000.0)  # head gain 0.01 -> outputs of order 1-10
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
    return {
        name: write_checkpoint(folder / f"{name}.pt", env, policy)
        for name, (env, policy) in CASES.items()
    }


def load_model(checkpoint: Path) -> ppokit.ActorCritic:
    return model_from_checkpoint(ckpt.load_checkpoint(checkpoint))


def as_obs(model: ppokit.ActorCritic, inputs: list[torch.Tensor]):
    """Observation inputs as the env gives them: a tensor, or a dict for dict observations."""
    if model.dict_obs:
        return dict(zip(model.observation_space.spaces, inputs))
    return inputs[0]


def reference_actions(model: ppokit.ActorCritic, sequence: list[list[torch.Tensor]]) -> list:
    """Deterministic env actions of the torch model along a sequence of observation batches,
    through the model's own inference API (forward, or policy_step with the state carried)."""
    out = []
    state = model.initial_state(sequence[0][0].shape[0]) if model.recurrent else None
    with torch.no_grad():
        for inputs in sequence:
            if model.recurrent:
                action, state = model.policy_step(as_obs(model, inputs), state, True)
            else:
                action = model(as_obs(model, inputs))
            out.append(action.numpy())
    return out


def observation_sequence(model, envs: int = 16, steps: int = 4, seed: int = 123) -> list:
    return [
        sample_observations(model, envs, seed + t) for t in range(steps if model.recurrent else 1)
    ]


def test_random_observations_cover_the_graph(checkpoints):
    model = load_model(checkpoints["box"])
    (obs,) = sample_observations(model)
    assert obs.shape == (VERIFY_SAMPLES, 3)
    actions = model(obs).detach()
    assert (actions.abs() == 2.0).any() and (actions.abs() < 2.0).any()  # clipped and not
    image, *_ = sample_observations(load_model(checkpoints["dict"]))
    assert image.dtype == torch.uint8 and image.shape == (VERIFY_SAMPLES, 1, 12, 12)


@pytest.mark.slow
@pytest.mark.parametrize("case", ONNX_CASES)
def test_onnx_matches_torch(checkpoints, tmp_path, case):
    """Plain onnxruntime, independently of ppokit's loader, on fresh random observations: named
    inputs, the hidden state fed back by the caller, a dynamic batch size."""
    import onnxruntime as ort

    result = export_policy(checkpoints[case], "onnx", tmp_path / "policy.onnx")
    assert result.max_abs_diff <= TOLERANCE and result.samples == VERIFY_SAMPLES
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    model = load_model(checkpoints[case])
    names = list(model.observation_space.spaces) if model.dict_obs else ["obs"]
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ppokit"])
    assert meta["env_id"] == CASES[case][0] and meta["recurrent"] is model.recurrent
    input_names = [i.name for i in session.get_inputs()]
    assert input_names == names + (["hidden"] if model.recurrent else [])
    assert [i["name"] for i in meta["inputs"]] == input_names
    sequence = observation_sequence(model)
    expected = reference_actions(model, sequence)
    hidden = np.zeros((16, model.state_size), np.float32)
    for inputs, want in zip(sequence, expected):
        feed = {n: x.numpy() for n, x in zip(names, inputs)}
        if model.recurrent:
            got, hidden = session.run(["action", "hidden_out"], {**feed, "hidden": hidden})
        else:
            (got,) = session.run(["action"], feed)
        assert got.dtype == want.dtype and got.shape == want.shape
        assert np.max(np.abs(got - want)) <= TOLERANCE
    one = {n: x[:1].numpy() for n, x in zip(names, sequence[0])}
    if model.recurrent:
        one["hidden"] = np.zeros((1, model.state_size), np.float32)
    assert session.run(["action"], one)[0].shape == expected[0][:1].shape  # batch of one


@pytest.mark.parametrize(
    "case",
    [c if c in ("box", "discrete", "multi_discrete", "gru") else pytest.param(c, marks=pytest.mark.slow) for c in CASES],
)  # fmt: skip
def test_torchscript_matches_torch(checkpoints, tmp_path, case):
    """torch.jit.load alone: module(obs) with a tensor or a dict; a recurrent module carries
    its state, and reset() / reset(done) clear it."""
    result = export_policy(checkpoints[case], "torchscript", tmp_path / "policy.pt")
    assert result.max_abs_diff <= TOLERANCE
    module = torch.jit.load(str(result.path))
    model = load_model(checkpoints[case])
    sequence = observation_sequence(model)
    expected = reference_actions(model, sequence)
    with torch.no_grad():
        for inputs, want in zip(sequence, expected):
            got = module(as_obs(model, inputs)).numpy()
            assert got.dtype == want.dtype
            assert np.max(np.abs(got - want)) <= TOLERANCE
        if model.recurrent:
            module.reset()
            again = module(as_obs(model, sequence[0])).numpy()
            assert np.max(np.abs(again - expected[0])) <= TOLERANCE
            # reset(done) clears only the envs whose episode ended.
            done = torch.zeros(16, dtype=torch.bool)
            done[:5] = True
            module.reset(done)
            state = model.initial_state(16)
            _, state = model.policy_step(as_obs(model, sequence[0]), state, True)
            state[:5] = 0
            want, _ = model.policy_step(as_obs(model, sequence[1]), state, True)
            got = module(as_obs(model, sequence[1]))
            assert torch.max(torch.abs(got - want)) <= TOLERANCE


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
