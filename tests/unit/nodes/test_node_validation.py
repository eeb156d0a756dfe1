"""Validation: each bad graph reports exactly the expected problems, all of them at once, with
node id, field, code and did-you-mean."""

from __future__ import annotations

import json
import re

import pytest

from ppokit.nodes import GraphValidationError, build_program, load_graph, validate_graph
from ppokit.nodes.graph import parse_json


def problems(graph: dict) -> list[str]:
    return [str(i) for i in validate_graph(load_graph(graph, "g.json"))]


def set_param(node: str, name: str, value):
    def mutate(g: dict) -> None:
        g["nodes"][node].setdefault("params", {})[name] = value

    return mutate


def set_input(node: str, name: str, link: str):
    def mutate(g: dict) -> None:
        g["nodes"][node]["inputs"][name] = link

    return mutate


def delete(*path: str):
    def mutate(g: dict) -> None:
        target = g
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


def set_type(node: str, type_name: str):
    def mutate(g: dict) -> None:
        g["nodes"][node]["type"] = type_name

    return mutate


CASES = {
    "unknown node type": (
        set_type("agent", "PPOAgnetNode"),
        "node 'agent' type: unknown node type 'PPOAgnetNode' (`ppokit graph nodes` lists them);"
        " did you mean 'PPOAgentNode'? [unknown_node_type]",
    ),
    "node type ppokit cannot run": (
        set_type("env", "IsaacGymEnvNode"),
        "node 'env' (IsaacGymEnvNode) type: IsaacGymEnvNode cannot run in ppokit (Isaac Gym is"
        " not supported); use EnvNode with a Gymnasium env id (or run its task as one:"
        " --env-map IsaacGymCartpole=CartPole-v1) instead [unsupported_node_type]",
    ),
    "unknown param": (
        set_param("agent", "hidden_size", [32]),
        "node 'agent' (PPOAgentNode) params.hidden_size: unknown param 'hidden_size'; did you"
        " mean 'hidden_sizes'? [unknown_param]",
    ),
    "value out of range": (
        set_param("trainer", "gamma", 1.5),
        "node 'trainer' (PPOTrainerNode) params.gamma: 1.5 is out of range: must be in [0, 1]"
        " [out_of_range]",
    ),
    "value not in the choices": (
        set_param("agent", "activation", "tanhh"),
        "node 'agent' (PPOAgentNode) params.activation: 'tanhh' is not one of 'tanh', 'elu',"
        " 'relu', 'silu', 'gelu'; did you mean 'tanh'? [not_in_choices]",
    ),
    "value of the wrong type": (
        set_param("env", "num_envs", "eight"),
        "node 'env' (EnvNode) params.num_envs: expected int, got 'eight' [bad_value]",
    ),
    "missing required param": (
        delete("nodes", "env", "params", "env_id"),
        "node 'env' (EnvNode) params.env_id: required param 'env_id' (str: Gymnasium environment"
        " id (any registered id, e.g. CartPole-v1, HalfCheetah-v5)) is not set [missing_param]",
    ),
    "param given under two names": (
        set_param("trainer", "clip_coef", 0.3),
        "node 'trainer' (PPOTrainerNode) params.clip_coef: param 'clip_param' is given twice (as"
        " 'clip_param' and as 'clip_coef') [duplicate_param]",
    ),
    "missing required input": (
        delete("nodes", "trainer", "inputs", "rewards"),
        "node 'trainer' (PPOTrainerNode) inputs.rewards: required input 'rewards' (REWARDS) is not"
        " linked [missing_input]",
    ),
    "type mismatch between ports": (
        set_input("eval", "env", "agent.model"),
        "node 'eval' (EvaluateNode) inputs.env: agent.model is MODEL; input 'env' takes ENV"
        " [type_mismatch]",
    ),
    "dangling link": (
        set_input("trainer", "dones", "stepp.dones"),
        "node 'trainer' (PPOTrainerNode) inputs.dones: link 'stepp.dones' names node 'stepp',"
        " which is not in the graph; did you mean 'step'? [dangling_link]",
    ),
    "link to an output that does not exist": (
        set_input("router", "loop", "step.next_obs"),
        "node 'router' (ObservationRouterNode) inputs.loop: link 'step.next_obs': EnvStepNode has"
        " no output 'next_obs' (outputs: next_observations, rewards, dones, final_observations);"
        " did you mean 'step.next_observations'? [unknown_output]",
    ),
    "cycle with no loop-closing node": (
        set_input("router", "initial", "step.next_observations"),
        "node 'router' (ObservationRouterNode): cycle router -> agent -> actions -> step -> router"
        " has no loop-closing input; close loops through an input that takes the previous tick's"
        " value (ObservationRouterNode's 'loop') [cycle]",
    ),
    "input_size that does not match the env": (
        set_param("agent", "input_size", 5),
        "node 'agent' (PPOAgentNode) params.input_size: input_size is 5, the observations have 4"
        " features [size_mismatch]",
    ),
    "action space that does not match the env": (
        set_param("agent", "action_space", "continuous"),
        "node 'agent' (PPOAgentNode) params.action_space: action_space is 'continuous', env 'env'"
        " has discrete actions (Discrete(2)) [space_mismatch]",
    ),
    "minibatch that does not divide the batch": (
        set_param("trainer", "minibatch_size", 24),
        "node 'trainer' (PPOTrainerNode) params.minibatch_size: minibatch_size 24 must divide"
        " horizon_length x num_envs = 16 x 2 = 32 [size_mismatch]",
    ),
    "two learning rates": (
        set_param("trainer", "learning_rate", 3e-4),
        "node 'trainer' (PPOTrainerNode) params.learning_rate: learning_rate 0.0003 differs from"
        " the learning_rate 0.001 of agent 'agent'; the optimizer has one: set it on one node"
        " [conflict]",
    ),
    "states that are not what the agent acts on": (
        set_input("trainer", "states", "env.observations"),
        "node 'trainer' (PPOTrainerNode) inputs.states: states must be the observations agent"
        " 'agent' acts on (router.observations), not env.observations; did you mean"
        " 'router.observations'? [wrong_source]",
    ),
    "unknown env id": (
        set_param("env", "env_id", "CartPol-v1"),
        "node 'env' (EnvNode) params.env_id: unknown environment id 'CartPol-v1'; did you mean"
        " CartPole-v1, CartPole-v0, phys2d/CartPole-v1? (any registered Gymnasium id works)"
        " [bad_env]",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_graph_reports_exactly_its_problem(tiny_graph, case):
    mutate, expected = CASES[case]
    graph = tiny_graph()
    mutate(graph)
    assert problems(graph) == [expected]


def test_the_tiny_graph_itself_is_valid(tiny_graph):
    assert problems(tiny_graph()) == []


def test_all_problems_are_collected_before_failing(tiny_graph):
    graph = tiny_graph()
    graph["nodes"]["agent"]["params"]["hidden_size"] = [32]
    graph["nodes"]["trainer"]["params"]["gamma"] = 1.5
    graph["nodes"]["eval"]["inputs"]["env"] = "env.envs"
    with pytest.raises(GraphValidationError) as info:
        build_program(load_graph(graph, "g.json"))
    codes = [(i.node, i.field, i.code, i.suggestion) for i in info.value.issues]
    assert codes == [
        ("agent", "params.hidden_size", "unknown_param", "hidden_sizes"),
        ("trainer", "params.gamma", "out_of_range", None),
        ("eval", "inputs.env", "unknown_output", "env.env"),
    ]
    assert str(info.value).startswith("g.json: 3 errors\n  node 'agent' (PPOAgentNode)")


def test_two_links_into_one_input_are_reported(tiny_graph):
    text = json.dumps(tiny_graph()).replace(
        '"actions": "actions.actions"}',
        '"actions": "actions.actions", "actions": "agent.policy_output"}',
    )
    assert problems(parse_json(text)) == [
        "node 'step' (EnvStepNode) inputs.actions: two links into input 'actions'; an input takes"
        " one link [duplicate_link]"
    ]


def test_graph_without_a_trainer_needs_max_ticks(tiny_graph):
    graph = tiny_graph()
    del graph["nodes"]["trainer"], graph["nodes"]["checkpoint"]
    assert problems(graph) == [
        "graph max_ticks: the graph has no PPOTrainerNode to end it; set 'max_ticks' [no_stop]"
    ]
    graph["max_ticks"] = 3
    assert problems(graph) == []


def test_unknown_graph_and_node_fields(tiny_graph):
    graph = tiny_graph()
    graph["sed"] = 3
    graph["nodes"]["env"]["param"] = {}
    assert problems(graph) == [
        "graph sed: unknown graph field 'sed'; did you mean 'seed'? [unknown_field]",
        "node 'env' (EnvNode) param: unknown node field 'param' (a node has type, params, inputs,"
        " meta); did you mean 'params'? [unknown_field]",
    ]


def test_aliases_and_list_text_are_accepted(tiny_graph):
    graph = tiny_graph()
    graph["nodes"]["router"]["type"] = "ORNode"  # DNNE's name
    params = graph["nodes"]["trainer"]["params"]
    params["num_epochs"] = params.pop("epochs")
    params["gae_lambda"] = params.pop("lam")
    graph["nodes"]["agent"]["params"]["hidden_sizes"] = "64,64"
    assert problems(graph) == []


def test_a_trainer_needs_the_model_of_an_agent_no_other_trainer_has(tiny_graph):
    graph = tiny_graph()
    second = json.loads(json.dumps(graph["nodes"]["trainer"]))
    graph["nodes"]["trainer2"] = second
    assert problems(graph) == [
        "node 'trainer2' (PPOTrainerNode) inputs.model: agent 'agent' is already trained by"
        " 'trainer'; an agent has one trainer [wrong_source]"
    ]


# (node, param, graph value out of range, the config field it sets) : the range is the field's.
CONFIG_RANGES = [
    ("trainer", "clip_param", -1.0, "algo.clip_coef"),
    ("trainer", "value_coef", -0.5, "algo.vf_coef"),
    ("trainer", "max_grad_norm", -1.0, "algo.max_grad_norm"),
    ("trainer", "target_kl", 0.0, "algo.target_kl"),
    ("trainer", "reward_clip", -1.0, "algo.reward_clip"),
    ("trainer", "bptt_length", 0, "algo.bptt_length"),
    ("trainer", "episode_window", 0, "log.episode_window"),
    ("agent", "obs_clip", 0.0, "policy.obs_clip"),
    ("agent", "hidden_sizes", [64, 0], "policy.actor_hidden"),
    ("agent", "init_noise_std", 0.0, "policy.init_noise_std"),
    ("env", "max_episode_steps", 0, "env.max_episode_steps"),
    ("env", "num_envs", 0, "env.num_envs"),
]


@pytest.mark.parametrize(
    ("node", "param", "value", "field"), CONFIG_RANGES, ids=[c[1] for c in CONFIG_RANGES]
)
def test_params_that_set_config_fields_are_held_to_the_fields_range(
    tiny_graph, node, param, value, field
):
    from ppokit import config as C

    graph = tiny_graph()
    set_param(node, param, value)(graph)
    (problem,) = problems(graph)
    must = C.range_problem(value, C.field_range(C.field_info(field)[1]))
    assert must is not None
    assert f"params.{param}: {value!r} is out of range: {must} [out_of_range]" in problem
    # The config refuses the same value with the same range.
    with pytest.raises(C.ConfigError, match=re.escape(must)):
        C.check_value(field, value)


@pytest.mark.parametrize(("name", "value"), [("seed", -1), ("torch_threads", 0)])
def test_graph_settings_that_set_config_fields_use_the_fields_range(tiny_graph, name, value):
    graph = tiny_graph()
    graph[name] = value
    (problem,) = problems(graph)
    assert problem.startswith(f"graph {name}: {value} is out of range: must be")
