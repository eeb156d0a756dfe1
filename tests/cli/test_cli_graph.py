"""`ppokit graph validate|run|export|nodes`: a few runs through the real command, the rest
through `ppokit.cli.main` in-process (same parser, same error handling)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ppokit.cli import main
from ppokit_testutil import cli_env, run_ppokit

REPO = Path(__file__).resolve().parents[2]
CARTPOLE = REPO / "examples" / "graphs" / "cartpole_ppo.json"
UI_WORKFLOW = REPO / "tests" / "unit" / "nodes" / "fixtures" / "cartpole_ui.json"
TINY = [
    "--set", "env.num_envs=2",
    "--set", "trainer.horizon_length=16",
    "--set", "trainer.epochs=2",
    "--set", "trainer.minibatch_size=16",
    "--set", "trainer.total_steps=64",
    "--set", "eval.episodes=2",
]  # fmt: skip


def ppokit(*args: str, cwd, timeout: float = 300):
    return run_ppokit(*args, cwd=cwd, timeout=timeout)


def bad_graph(tmp_path: Path) -> Path:
    data = json.loads(CARTPOLE.read_text())
    data["nodes"]["agent"]["params"]["hidden_size"] = [32]
    data["nodes"]["trainer"]["inputs"]["dones"] = "stepp.dones"
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


def test_validate_reports_every_problem_and_exits_2(tmp_path):
    proc = ppokit("graph", "validate", str(bad_graph(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: {tmp_path / 'bad.json'}: 2 errors",
        "  node 'agent' (PPOAgentNode) params.hidden_size: unknown param 'hidden_size'; did you"
        " mean 'hidden_sizes'? [unknown_param]",
        "  node 'trainer' (PPOTrainerNode) inputs.dones: link 'stepp.dones' names node 'stepp',"
        " which is not in the graph; did you mean 'step'? [dangling_link]",
    ]


def test_run_trains_evaluates_and_writes_a_checkpoint(tmp_path):
    proc = ppokit("graph", "run", str(CARTPOLE), *TINY, "--out", "out", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "trainer: 2 updates, 64 steps" in lines[1]
    assert lines[2].startswith("eval: eval (2 episodes): return ")
    assert lines[-1] == "output directory: out"
    state = torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=False)
    assert state["format"] == "ppokit-checkpoint" and state["global_step"] == 64


def test_nodes_comfyui_definitions(tmp_path):
    proc = ppokit("graph", "nodes", "--comfyui", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["PPOAgentNode"]["output_name"] == ["policy_output", "model"]
    assert info["ObservationRouterNode"]["input"]["required"]["loop"][0] == "OBSERVATIONS"


def test_export_script_and_convert_workflow(tmp_path, capsys):
    assert main(["graph", "export", str(CARTPOLE), "-o", str(tmp_path / "cartpole.py")]) == 0
    script = (tmp_path / "cartpole.py").read_text()
    # The trainer node's steps are calls of rt.NodeTrainer, with the tick's variables.
    assert "trainer = rt.NodeTrainer(" in script
    assert "trainer.update_if_full(router_observations, tick)" in script
    assert "trainer.record(step, tick)" in script
    compile(script, "cartpole.py", "exec")
    assert main(["graph", "export", str(UI_WORKFLOW), "-o", str(tmp_path / "g.json")]) == 0
    converted = json.loads((tmp_path / "g.json").read_text())
    assert converted["format"] == "ppokit-graph"
    assert converted["nodes"]["5"]["inputs"] == {"env": "1.env", "actions": "4.actions"}
    assert main(["graph", "validate", str(tmp_path / "g.json")]) == 0
    out = capsys.readouterr().out
    assert "valid (8 nodes; execution order: 1, 2, 3, 4, 5, 6, 7, 8)" in out


def test_nodes_listing_and_description(capsys):
    assert main(["graph", "nodes"]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].startswith("EnvNode ")
    assert main(["graph", "nodes", "PPOAgentNode"]) == 0
    text = capsys.readouterr().out
    assert '  activation: tanh|elu|relu|silu|gelu = "tanh"' in text  # the config's default
    assert "  learning_rate: float = 0.0003, > 0 (aliases: lr) - initial learning rate" in text


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["graph", "nodes", "PPOAgent"],
            "error: unknown node type 'PPOAgent'; did you mean 'PPOAgentNode'?",
        ),
        (["graph", "run", "missing.json"], "error: graph file 'missing.json' does not exist"),
        (
            ["graph", "export", str(CARTPOLE), "-o", "x.txt"],
            "error: --out 'x.txt': give a .py file (script) or a .json file (graph)",
        ),
        (
            ["graph", "run", str(CARTPOLE), "--set", "trainr.epochs=2"],
            "error: --set 'trainr.epochs=2': no node 'trainr' in the graph; did you mean 'trainer'?",
        ),
        (
            ["graph", "run", str(CARTPOLE), "--set", "trainer.epochs=0"],
            f"error: {CARTPOLE}: 1 error",
        ),
    ],
)
def test_errors_are_one_clear_message(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[0] == message


def test_a_graph_run_is_a_run_for_eval_plot_export_and_resume(tmp_path, capsys):
    """`ppokit eval/plot/export RUN` and `train --resume RUN` read a graph's output directory."""
    out = tmp_path / "run"
    assert main(["graph", "run", str(CARTPOLE), *TINY, "--out", str(out), "--quiet"]) == 0
    assert {"config.yaml", "metrics.csv", "eval.json", "checkpoints"} <= {
        p.name for p in out.iterdir()
    }
    capsys.readouterr()
    assert main(["eval", str(out), "--episodes", "2"]) == 0
    assert capsys.readouterr().out.startswith("eval CartPole-v1 (2 episodes, deterministic")
    assert main(["plot", str(out), "--out", str(tmp_path / "curve.png")]) == 0
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert (
        main(["export", str(out), "--format", "torchscript", "--out", str(tmp_path / "p.pt")]) == 0
    )
    assert "verified on" in capsys.readouterr().out
    assert (
        main(["train", "--resume", str(out), "--total_steps", "96", "--log.progress", "false"]) == 0
    )
    assert torch.load(out / "checkpoints" / "latest.pt", weights_only=False)["global_step"] == 96


def test_dnne_cartpole_validates_after_one_flag(capsys):
    dnne = REPO / "tests" / "unit" / "nodes" / "fixtures" / "dnne_cartpole_ppo.json"
    assert main(["graph", "validate", str(dnne)]) == 2
    assert "--env-map IsaacGymCartpole=CartPole-v1" in capsys.readouterr().err
    assert main(["graph", "validate", str(dnne), "--env-map", "IsaacGymCartpole=CartPole-v1"]) == 0
    assert capsys.readouterr().out.endswith("valid (6 nodes; execution order: 1, 2, 3, 5, 4, 6)\n")


def test_export_as_a_comfyui_workflow_reads_back_as_the_graph(tmp_path, capsys):
    out = tmp_path / "cartpole.comfyui.json"
    assert main(["graph", "export", str(CARTPOLE), "-o", str(out)]) == 0
    workflow = json.loads(out.read_text())
    assert workflow["extra"]["ppokit"]["seed"] == 1 and len(workflow["nodes"]) == 8
    capsys.readouterr()
    assert main(["graph", "validate", str(out)]) == 0
    assert "read by position" not in capsys.readouterr().err  # values carry their names


def test_ctrl_c_checkpoints_a_graph_run_and_skips_the_final_evaluation(tmp_path):
    import signal

    sets = ["--set", "trainer.total_steps=10000000", "--set", "trainer.log_every=1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppokit", "graph", "run", str(CARTPOLE), *sets, "--out", "out"],
        cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    first = proc.stdout.readline()  # the first update's progress line
    assert "update 1/" in first, (first, proc.stderr.read() if proc.poll() is not None else "")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: checkpoint written to" in out and "eval: skipped (interrupted)" in out
    state = torch.load(tmp_path / "out" / "checkpoints" / "latest.pt", weights_only=False)
    assert state["global_step"] > 0 and not (tmp_path / "out" / "eval.json").exists()


def test_a_graph_run_owns_its_out_dir_as_train_owns_its_run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["graph", "run", str(CARTPOLE), *TINY, "--out", str(out), "--quiet"]
    assert main(args) == 0
    assert main(args) == 2  # a second run into it is refused, not mixed into the first
    assert "already holds a run; replace it with `ppokit graph run ... --overwrite`" in (
        capsys.readouterr().err
    )
    assert main([*args, "--overwrite"]) == 0
    assert len(list(tmp_path.glob("run.old-*"))) == 1 and (out / "eval.json").is_file()
