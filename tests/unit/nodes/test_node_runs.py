"""A graph run is a run: the run directory `ppokit train` writes (config.yaml, metrics.csv,
TensorBoard, checkpoints/, eval.json) through the Trainer's own helpers; recurrent and
dict-observation agents train as nodes."""

from __future__ import annotations

import csv

import pytest
import yaml

import ppokit_test_envs
from ppokit.checkpoint import load_checkpoint
from ppokit.nodes import run_graph


def test_graph_run_writes_the_run_directory_of_ppokit_train(tiny_graph, tmp_path):
    g = tiny_graph()
    g["nodes"]["trainer"]["params"].update(total_steps=128, checkpoint_every=2)
    result = run_graph(g, out_dir=tmp_path / "run", quiet=True)
    run = result.out_dir
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert cfg["env"]["id"] == "CartPole-v1" and cfg["algo"]["num_steps"] == 16
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["global_step"]) for r in rows[:4]] == [32, 64, 96, 128]
    assert {"losses/value_loss", "charts/episode_return", "charts/SPS", "eval/mean_return"} <= set(
        rows[0]
    )
    assert rows[-1]["eval/mean_return"] == str(result.results["eval"]["mean_return"])
    assert list(run.glob("events.out.tfevents.*"))
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["latest.pt", "update_000002.pt", "update_000004.pt"]
    state = load_checkpoint(run)
    assert state["global_step"] == 128 and state["ppo"]["updates"] == 4
    assert (run / "eval.json").is_file()


def test_recurrent_agent_trains_as_a_node(tiny_graph, tmp_path):
    g = tiny_graph()
    g["nodes"]["agent"]["params"].update(memory="gru", memory_hidden=16)
    g["nodes"]["trainer"]["params"].update(bptt_length=8, minibatch_size=2)
    result = run_graph(g, out_dir=tmp_path / "run", quiet=True)
    state = load_checkpoint(result.out_dir)
    assert state["config"]["policy"]["memory"] == "gru"
    assert result.results["trainer"]["updates"] == 2
    assert result.results["eval"]["episodes"] == 2


def test_dict_observation_agent_trains_as_a_node(tiny_graph, tmp_path):
    g = tiny_graph()
    g["nodes"]["env"]["params"]["env_id"] = ppokit_test_envs.DICT_OBS
    agent = g["nodes"]["agent"]["params"]
    agent.pop("action_space")
    agent.update(actor_keys=["state", "image"], critic_keys=["state", "privileged"])
    result = run_graph(g, out_dir=tmp_path / "run", quiet=True)
    state = load_checkpoint(result.out_dir)
    assert state["config"]["policy"]["critic_keys"] == ["state", "privileged"]
    assert result.results["trainer"]["global_step"] == 64


def test_wandb_when_asked(tiny_graph, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    g = tiny_graph()
    g["nodes"]["trainer"]["params"].update(wandb=True, wandb_mode="offline")
    result = run_graph(g, out_dir=tmp_path / "run", quiet=True)
    assert (result.out_dir / "wandb").is_dir()


def test_validate_refuses_an_output_path_that_cannot_be_written(tiny_graph, tmp_path):
    """Found before training, not after it: an absolute path under a file (not a folder)."""
    from ppokit.nodes.graph import from_native
    from ppokit.nodes.program import validate_graph

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    g = tiny_graph()
    g["nodes"]["save"] = {
        "type": "SaveCheckpointNode",
        "inputs": {"model": "agent.model"},
        "params": {"path": str(blocker / "ckpt.pt")},
    }
    issues = validate_graph(from_native(g))
    (issue,) = [i for i in issues if i.code == "not_writable"]
    assert issue.node == "save" and "is a file, not a directory" in issue.message


def test_a_failed_output_node_leaves_the_trained_model_in_the_run_dir(
    tiny_graph, tmp_path, monkeypatch
):
    """An output node that fails after training (the disk filled up meanwhile): the run's own
    checkpoints/latest.pt holds the trained model."""
    from ppokit.errors import OutputError
    from ppokit.nodes import runtime
    from ppokit.nodes.errors import GraphRunError

    def failing_save(path, state):
        raise OutputError(f"cannot write checkpoint {str(path)!r}: No space left on device")

    monkeypatch.setattr(runtime, "save_checkpoint", failing_save)
    g = tiny_graph()
    g["nodes"]["save"] = {
        "type": "SaveCheckpointNode",
        "inputs": {"model": "agent.model"},
        "params": {"path": "model.pt"},
    }
    with pytest.raises(GraphRunError, match="failed after the last tick: .*No space left"):
        run_graph(g, out_dir=tmp_path / "run", quiet=True)
    state = load_checkpoint(tmp_path / "run")
    assert state["ppo"]["updates"] == 2 and state["global_step"] == 64
