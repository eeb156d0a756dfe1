"""The native graph format: load -> dump gives the text back; errors for unreadable files."""

from __future__ import annotations

import json

import pytest

from ppokit.nodes import GraphError, dumps, load_graph, save_graph, validate_graph
from ppokit.nodes.graph import from_native, parse_json, to_native

EXAMPLES = ["cartpole_ppo", "cartpole_multi_env", "cartpole_hierarchical", "pendulum_ppo"]


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_round_trip_and_are_valid(examples_dir, name):
    path = examples_dir / f"{name}.json"
    text = path.read_text()
    graph = load_graph(path)
    assert dumps(graph) == text  # the files are in canonical form
    assert to_native(from_native(json.loads(text))) == json.loads(text)
    assert validate_graph(graph) == []


def test_dump_keeps_what_was_written(tiny_graph, tmp_path):
    data = tiny_graph()
    data["nodes"]["router"]["type"] = "ORNode"  # an alias stays as written
    data["nodes"]["agent"]["params"]["hidden_sizes"] = "64,64"
    data["nodes"]["agent"]["meta"] = {"pos": [10, 20], "title": "Agent"}
    graph = load_graph(data, "g.json")
    save_graph(graph, tmp_path / "g.json")
    again = load_graph(tmp_path / "g.json")
    assert to_native(again) == to_native(graph) == data
    assert dumps(again) == dumps(graph)


def test_links_are_by_name(tiny_graph):
    graph = load_graph(tiny_graph(), "g.json")
    assert graph.nodes["trainer"].inputs == {
        "states": "router.observations",
        "policy_outputs": "agent.policy_output",
        "rewards": "step.rewards",
        "dones": "step.dones",
        "model": "agent.model",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "{",
            "g.json is not valid JSON: Expecting property name enclosed in double quotes at line 1 column 2",
        ),
        (
            '{"format": "ppokit-graph", "nodes": []}',
            "g.json: 'nodes' must be an object mapping node ids to nodes",
        ),
        (
            '{"format": "ppokit-graph", "version": 9, "nodes": {}}',
            "g.json: graph format version 9 is newer than this ppokit (1)",
        ),
        (
            '{"nodes": {"a": {"params": {}}}}',
            "g.json: node 'a' has no 'type' (a node type name string)",
        ),
        ("[1, 2]", "g.json: not a ppokit graph"),
    ],
)
def test_unreadable_graphs_raise_one_clear_error(tmp_path, text, message):
    path = tmp_path / "g.json"
    path.write_text(text)
    with pytest.raises(GraphError) as info:
        load_graph(str(path).replace(str(path), str(path)))
    assert str(info.value).replace(str(path), "g.json").startswith(message)


def test_missing_file(tmp_path):
    with pytest.raises(GraphError, match="does not exist"):
        load_graph(tmp_path / "nope.json")


def test_duplicate_keys_are_kept_for_validation():
    text = '{"format": "ppokit-graph", "nodes": {"a": {"type": "EnvNode", "params": {"num_envs": 1, "num_envs": 2}}}}'
    graph = load_graph(parse_json(text), "g.json")
    assert [i.code for i in graph.load_issues] == ["duplicate_param"]
