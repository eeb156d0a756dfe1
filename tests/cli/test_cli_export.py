"""`ppokit export` end to end, through the real command in a subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ppokit import checkpoint as ckpt
from ppokit.policy import model_from_checkpoint
from ppokit_runs import (
    assert_main_error,
    assert_one_line_error,
    ppokit_cli,
    run_main,
    train_tiny,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "run_onnx_policy.py"

# torch.jit (TorchScript) is deprecated upstream; ppokit still exports it on request.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.jit.*")


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("export") / "runs", "cartpole", env_id="CartPole-v1")


def exported_diff(stdout: str) -> float:
    match = re.search(
        r"verified on 256 random observations: max abs difference ([\d.e+-]+)", stdout
    )
    assert match, stdout
    return float(match.group(1))


@pytest.mark.slow
def test_export_onnx_default_path_and_eval(cartpole_run, tmp_path):
    import onnxruntime as ort

    proc = ppokit_cli("export", cartpole_run, "--format", "onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    path = cartpole_run / "policy.onnx"
    assert f"exported onnx policy to {path}" in proc.stdout
    assert exported_diff(proc.stdout) <= 1e-5
    # The file runs without ppokit: raw observations in, env actions (int64 for Discrete) out.
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    obs = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    (actions,) = session.run(None, {"obs": obs})
    model = model_from_checkpoint(ckpt.load_checkpoint(cartpole_run))
    assert actions.dtype == np.int64
    assert np.array_equal(actions, model(torch.from_numpy(obs)).numpy())
    meta = json.loads(session.get_modelmeta().custom_metadata_map["ppokit"])
    assert meta["action_space"] == {"type": "discrete", "n": 2, "start": 0}
    # ppokit eval takes the exported file as well (env read from its metadata).
    proc = ppokit_cli("eval", path, "--episodes", "2", "--json", tmp_path / "e.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "eval CartPole-v1 (2 episodes, deterministic, seed 0)" in proc.stdout
    # The example without ppokit runs episode 0 from the same reset (seed 0) to the same end.
    lengths = run_example(path, tmp_path)
    assert lengths[0] == json.loads((tmp_path / "e.json").read_text())["lengths"][0]


def test_export_torchscript_to_a_chosen_path(cartpole_run, tmp_path):
    out = tmp_path / "deploy" / "cartpole.pt"
    proc = ppokit_cli(
        "export", cartpole_run / "checkpoints" / "latest.pt", "--format", "torchscript",
        "--out", out, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert exported_diff(proc.stdout) <= 1e-5
    module = torch.jit.load(str(out))
    obs = torch.randn(16, 4)
    model = model_from_checkpoint(ckpt.load_checkpoint(cartpole_run))
    with torch.no_grad():
        assert torch.equal(module(obs), model(obs))
    assert sorted(p.name for p in out.parent.iterdir()) == ["cartpole.pt"]  # no temp files


@pytest.mark.parametrize(
    ("make_args", "fragments"),
    [
        (lambda run, tmp: [tmp / "empty", "--format", "onnx"], ["has no checkpoint"]),
        (lambda run, tmp: [run, "--format", "onnx", "--out", tmp / "afile" / "p.onnx"], ["cannot write onnx export", "afile"]),
    ],
    ids=["no-checkpoint", "unwritable-out"],
)  # fmt: skip
def test_bad_input_is_a_one_line_error(cartpole_run, tmp_path, make_args, fragments):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("a file")
    proc = ppokit_cli("export", *make_args(cartpole_run, tmp_path), cwd=tmp_path)
    assert_one_line_error(proc, *fragments)


@pytest.mark.parametrize(
    ("make_args", "fragments"),
    [
        (lambda run, tmp: [run, "--format", "tflite"], ["invalid choice: 'tflite'"]),
        (lambda run, tmp: [run], ["the following arguments are required: --format"]),
        (lambda run, tmp: [run, "--format", "torchscript", "--out", tmp], ["it is a directory"]),
        (lambda run, tmp: [tmp / "garbage.pt", "--format", "onnx"], ["corrupt or not a torch file"]),
    ],
    ids=["unknown-format", "no-format", "out-is-a-directory", "corrupt-checkpoint"],
)  # fmt: skip
def test_more_bad_input(cartpole_run, tmp_path, capsys, make_args, fragments):
    (tmp_path / "garbage.pt").write_bytes(b"\x80\x02 not a checkpoint" * 8)
    result = run_main(capsys, "export", *make_args(cartpole_run, tmp_path))
    assert_main_error(result, *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.pt"]


@pytest.mark.slow
def test_recurrent_policy_exports_and_evaluates_like_its_checkpoint(tmp_path):
    """A GRU policy: ONNX with the hidden state as input/output; `ppokit eval` of the file
    (state fed back, reset where episodes end) gives the checkpoint's returns exactly."""
    import onnxruntime as ort

    run = train_tiny(
        tmp_path / "runs",
        "gru",
        env_id="CartPole-v1",
        policy={"memory": "gru", "memory_hidden": 8},
        algo={"bptt_length": 8},
    )
    proc = ppokit_cli("export", run, "--format", "onnx", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert exported_diff(proc.stdout) <= 1e-5
    session = ort.InferenceSession(str(run / "policy.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["obs", "hidden"]
    assert [o.name for o in session.get_outputs()] == ["action", "hidden_out"]
    reports = []
    for source in (run, run / "policy.onnx"):
        out = tmp_path / f"{source.name}.json"
        args = ("--episodes", "5", "--max-episode-steps", "200", "--json", out)
        proc = ppokit_cli("eval", source, *args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        reports.append(json.loads(out.read_text()))
    assert reports[0]["kind"] == "checkpoint" and reports[1]["kind"] == "onnx"
    assert reports[0]["lengths"] == reports[1]["lengths"]
    assert len(set(reports[0]["lengths"])) > 1  # episodes of different lengths: resets matter
    # The example without ppokit: its episode e is reset with seed e, as ppokit eval's env 0 is
    # for episode 0 (env i of an eval with seed 0 starts from seed i).
    lengths = run_example(run / "policy.onnx", tmp_path, "--max-episode-steps", "200")
    assert lengths[0] == reports[0]["lengths"][0]


def run_example(policy: Path, cwd: Path, *args: str) -> list[int]:
    """examples/run_onnx_policy.py, checking that neither torch nor ppokit gets imported."""
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['run_onnx_policy.py', {str(policy)!r}, '--episodes', '2', *{list(args)!r}]\n"
        f"runpy.run_path({str(EXAMPLE)!r}, run_name='__main__')\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ppokit'))\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    found = re.findall(r"^episode \d+: return -?[\d.]+, length (\d+)$", proc.stdout, re.MULTILINE)
    assert len(found) == 2, proc.stdout
    return [int(n) for n in found]
