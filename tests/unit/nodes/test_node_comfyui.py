"""ComfyUI / DNNE interop: definitions derived from the declarations; workflows imported by port
name, whatever slot numbers they carry."""

from __future__ import annotations

import json

import pytest

from ppokit.nodes import load_graph, node_classes, validate_graph
from ppokit.nodes.comfyui import (
    NODE_CLASS_MAPPINGS,
    NODE_DISPLAY_NAME_MAPPINGS,
    object_info,
    widget_params,
)
from ppokit.nodes.validate import check


def resolved(graph, rename=None):
    """{node: (type, params with defaults, {input: "node.port"})} with ids renamed."""
    rename = rename or {}
    r, issues = check(graph)
    assert issues == []
    out = {}
    for node_id, node in r.nodes.items():
        links = {k: f"{rename.get(v.node, v.node)}.{v.port}" for k, v in r.links[node_id].items()}
        out[rename.get(node_id, node_id)] = (node.type, node.params, links)
    return out


def titles(graph):
    return {node_id: nd.meta["title"] for node_id, nd in graph.nodes.items()}


@pytest.mark.parametrize("fixture", ["cartpole_ui.json", "cartpole_api.json"])
def test_workflow_imports_as_the_native_graph(examples_dir, fixtures_dir, fixture):
    native = load_graph(examples_dir / "cartpole_ppo.json")
    imported = load_graph(fixtures_dir / fixture)
    assert validate_graph(imported) == []
    assert resolved(imported, titles(imported)) == resolved(native)


def test_ui_links_are_resolved_by_name_not_slot(fixtures_dir):
    data = json.loads((fixtures_dir / "cartpole_ui.json").read_text())
    # The fixture's slot numbers point at the wrong ports on purpose.
    step = next(n for n in data["nodes"] if n["type"] == "EnvStepNode")
    assert [o["name"] for o in step["outputs"]][0] == "dones"
    loop_link = next(k for k in data["links"] if k[1] == step["id"] and k[3] == 2)
    assert loop_link[2] == 0  # "slot 0" of the step node, which is 'dones' in its list
    graph = load_graph(data, "ui.json")
    assert graph.nodes["2"].inputs["loop"] == "5.next_observations"
    assert graph.nodes["4"].inputs["actions"] == "3.policy_output"  # through the Reroute
    assert "21" not in graph.nodes  # the Note is dropped


def test_isaac_gym_nodes_name_the_ppokit_node_to_use():
    data = {
        "1": {"class_type": "IsaacGymEnvNode", "inputs": {"task": "Ant"}},
        "2": {"class_type": "IsaacGymStepNode", "inputs": {"env": ["1", 0]}},
    }
    messages = [str(i) for i in validate_graph(load_graph(data, "api.json"))]
    assert messages[0] == (
        "node '1' (IsaacGymEnvNode) type: IsaacGymEnvNode cannot run in ppokit (Isaac Gym is not"
        " supported); use EnvNode with a Gymnasium env id (or run its task as one: --env-map"
        " IsaacGymCartpole=CartPole-v1) instead [unsupported_node_type]"
    )
    # DNNE's step node is read as EnvStepNode (docs/graphs.md): only the env needs a choice.
    assert not any("IsaacGymStepNode" in m for m in messages)


def test_two_links_into_one_ui_input_are_reported(fixtures_dir):
    data = json.loads((fixtures_dir / "cartpole_ui.json").read_text())
    step = next(n for n in data["nodes"] if n["type"] == "EnvStepNode")
    env_input = next(i for i in step["inputs"] if i["name"] == "env")
    step["inputs"].append(dict(env_input))
    codes = [(i.node, i.field, i.code) for i in validate_graph(load_graph(data, "ui.json"))]
    assert codes == [("5", "inputs.env", "duplicate_link")]


def test_definitions_come_from_the_declarations():
    info = object_info()
    assert list(info) == [cls.spec.type for cls in node_classes()]
    agent = info["PPOAgentNode"]
    assert agent["input"]["required"]["observations"][0] == "OBSERVATIONS"
    assert agent["input"]["required"]["hidden_sizes"][0] == "STRING"
    assert agent["input"]["required"]["hidden_sizes"][1]["default"] == "64,64"
    assert agent["input"]["required"]["activation"][0] == ["tanh", "elu", "relu", "silu", "gelu"]
    assert agent["input"]["required"]["activation"][1]["default"] == "tanh"  # the config's
    assert agent["input"]["required"]["learning_rate"] == [
        "FLOAT",
        {"default": 0.0003, "tooltip": "initial learning rate (> 0)", "min": 0, "step": 0.0001},
    ]
    assert agent["input"]["optional"]["action_space"][0] == ["", "continuous", "discrete"]
    assert agent["output_name"] == ["policy_output", "model"]
    assert agent["output"] == ["POLICY_OUTPUT", "MODEL"]
    trainer = info["PPOTrainerNode"]["input"]["required"]
    assert trainer["horizon_length"][1]["default"] == 2048
    optional = info["PPOTrainerNode"]["input"]["optional"]
    assert optional["minibatch_size"][0] == "STRING"  # int or null: "" is the default
    assert optional["minibatch_size"][1]["default"] == ""  # the config's: num_minibatches 32
    assert optional["num_minibatches"][1]["default"] == "32"
    step = info["EnvStepNode"]["input"]["required"]
    assert step["actions"][0] == "ACTIONS,POLICY_OUTPUT"
    assert info["EvaluateNode"]["output_node"] is True


def test_comfyui_classes():
    cls = NODE_CLASS_MAPPINGS["PPOTrainerNode"]
    types = cls.INPUT_TYPES()
    assert types["required"]["states"] == (
        "OBSERVATIONS",
        {"tooltip": "the observations the agent acted on"},
    )
    assert cls.RETURN_NAMES == ("training_complete", "loss_info")
    assert NODE_DISPLAY_NAME_MAPPINGS["PPOTrainerNode"] == "PPO Trainer"
    with pytest.raises(RuntimeError, match="ppokit graph run"):
        cls().run()


@pytest.mark.parametrize("cls", node_classes(), ids=lambda c: c.spec.type)
def test_positional_widget_values_map_to_params(cls):
    """A UI node whose widgets_values follow the definition's order imports param by param."""
    values, expected = [], {}
    for p in widget_params(cls):
        if p.name in ("env_id",):
            value, text = "Pendulum-v1", "Pendulum-v1"
        elif p.type is int:
            value = p.default + 1
            text = value
        elif p.type is bool:
            value = not p.default
            text = value
        else:
            value, text = None, ""
        values.append(text)
        if value is not None:
            expected[p.name] = value
    data = {
        "nodes": [
            {"id": 1, "type": cls.spec.type, "inputs": [], "outputs": [], "widgets_values": values}
        ],
        "links": [],
    }
    graph = load_graph(data, "ui.json")
    assert graph.nodes["1"].params == expected
