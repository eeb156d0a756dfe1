"""DNNE-UI's published Cartpole_PPO workflow, read for real: widget values by name, DNNE's node
and port names mapped to ppokit's, its Isaac Gym env run as CartPole-v1 with one flag.

fixtures/dnne_cartpole_ppo.json is a copy of `user/default/workflows/Cartpole_PPO.json` of
github.com/asantanna/DNNE-UI at commit 6035791ee6d919a0601daca59122696b4f23ea28.
"""

from __future__ import annotations

import copy
import json

import pytest

from ppokit.nodes import load_graph, run_graph, validate_graph
from ppokit.nodes.comfyui import parse_env_map
from ppokit.nodes.errors import GraphError
from ppokit.nodes.validate import check

ENV_MAP = {"IsaacGymCartpole": "CartPole-v1"}


@pytest.fixture
def dnne(fixtures_dir):
    return json.loads((fixtures_dir / "dnne_cartpole_ppo.json").read_text())


def test_without_the_env_map_one_line_names_the_node_and_the_flag(dnne):
    issues = validate_graph(load_graph(dnne, "Cartpole_PPO.json"))
    assert [i.code for i in issues] == ["unsupported_node_type"]
    assert issues[0].node == "1" and "--env-map IsaacGymCartpole=CartPole-v1" in str(issues[0])


def test_with_the_env_map_it_validates_with_every_value_in_its_param(dnne, capsys):
    graph = load_graph(dnne, "Cartpole_PPO.json", env_map=ENV_MAP)
    resolved, issues = check(graph)
    assert issues == [] and validate_graph(graph) == []
    p = {node_id: (n.type, n.params) for node_id, n in resolved.nodes.items()}
    assert p["1"][0] == "EnvNode" and p["1"][1]["env_id"] == "CartPole-v1"
    assert p["1"][1]["num_envs"] == 1
    assert p["2"][0] == "ObservationRouterNode" and p["5"][0] == "ActionProcessorNode"
    agent = p["3"][1]
    assert (agent["hidden_sizes"], agent["activation"], agent["learning_rate"]) == (
        [64, 64],
        "elu",
        0.0003,
    )
    trainer = p["6"][1]
    expected = dict(horizon_length=16, epochs=4, gamma=0.99, lam=0.95, clip_param=0.2,
                    value_coef=0.5, entropy_coef=0.01, learning_rate=0.0003, max_grad_norm=0.5)  # fmt: skip
    assert {k: trainer[k] for k in expected} == expected
    assert trainer["num_minibatches"] == 1  # DNNE's minibatch of 32 > the 16-sample rollout
    assert graph.nodes["6"].inputs["states"] == "2.observations"
    assert graph.nodes["2"].inputs == {"initial": "1.observations", "loop": "4.next_observations"}
    notes = capsys.readouterr().err
    assert "node 1 (IsaacGymEnvNode): runs 'Cartpole' as the Gymnasium env 'CartPole-v1'" in notes
    assert "read by position" not in notes  # every widget value carried its name


def test_it_trains(dnne, tmp_path):
    graph = load_graph(dnne, "Cartpole_PPO.json", env_map=ENV_MAP)
    graph.nodes["6"].params["total_steps"] = 64
    result = run_graph(graph, out_dir=tmp_path / "run", quiet=True)
    assert result.results["6"]["updates"] == 4
    assert (tmp_path / "run" / "checkpoints" / "latest.pt").is_file()


def test_positional_values_are_a_fallback_with_a_note(fixtures_dir, capsys):
    load_graph(fixtures_dir / "cartpole_ui.json")
    assert "its widget values carry no names; read by position" in capsys.readouterr().err


def test_named_values_win_over_position(dnne):
    """Values are matched to the names the file gives, whatever the order of the definitions."""
    data = copy.deepcopy(dnne)
    trainer = next(n for n in data["nodes"] if n["id"] == 6)
    widgets = [i for i in trainer["inputs"] if "widget" in i]
    order = list(range(len(widgets)))[::-1]
    trainer["inputs"] = [i for i in trainer["inputs"] if "widget" not in i] + [
        widgets[k] for k in order
    ]
    trainer["widgets_values"] = [trainer["widgets_values"][k] for k in order]
    resolved, issues = check(load_graph(data, "w.json", env_map=ENV_MAP))
    p = resolved.nodes["6"].params
    assert issues == [] and (p["horizon_length"], p["epochs"], p["entropy_coef"]) == (16, 4, 0.01)


def test_env_map_flag_syntax():
    assert parse_env_map(["IsaacGymCartpole=CartPole-v1"]) == ENV_MAP
    with pytest.raises(GraphError, match="expected NAME=ENV_ID"):
        parse_env_map(["CartPole-v1"])
