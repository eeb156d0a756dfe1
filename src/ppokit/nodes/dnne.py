"""DNNE-UI workflows as ppokit graphs: DNNE's node, port and param names mapped to ppokit's
(an alias table), and its Isaac Gym env run as a Gymnasium env named by `--env-map`.

DNNE (github.com/asantanna/DNNE-UI) draws the same PPO loop with its own names: IsaacGymEnvNode
-> EnvNode, IsaacGymStepNode -> EnvStepNode, ORNode -> ObservationRouterNode,
CartpoleActionNode -> ActionProcessorNode, and PPOAgentNode / PPOTrainerNode with a few other
port and param names. What has no ppokit meaning (Isaac Gym paths, contexts, the step's trigger,
the trainer's loss output) is dropped with one note per node naming it. Two DNNE semantics are
kept: its trainer records the observation the agent acted on (ppokit's `states` link), and a
minibatch larger than the rollout means the whole rollout (ppokit: num_minibatches 1).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

from ppokit.nodes.graph import Graph, parse_link


@dataclass(frozen=True)
class Alias:
    """A DNNE node type as a ppokit one: renamed ports and params (None: dropped, no meaning)."""

    type: str
    inputs: dict[str, str | None] = field(default_factory=dict)
    outputs: dict[str, str | None] = field(default_factory=dict)  # DNNE order (API-format slots)
    params: dict[str, str | None] = field(default_factory=dict)
    env_params: tuple[str, ...] = ()  # describe the simulator: dropped when --env-map replaces it


DROP = None
ALIASES: dict[str, Alias] = {
    "IsaacGymEnvNode": Alias(
        "EnvNode",
        inputs={"context": DROP},
        outputs={"sim_handle": "env", "observations": "observations", "context": DROP},
        params={
            "env_name": "env_id",
            "task": "env_id",
            "isaac_gym_path": DROP,
            "isaac_gym_envs_path": DROP,
            "headless": DROP,
            "device": DROP,
            "physics_engine": DROP,
        },
    ),  # fmt: skip
    "IsaacGymStepNode": Alias(
        "EnvStepNode",
        inputs={"sim_handle": "env", "context": DROP, "trigger": DROP},
        outputs={
            "observations": "next_observations",
            "rewards": "rewards",
            "done": "dones",
            "info": DROP,
            "next_observations": "next_observations",
            "context": DROP,
        },
    ),  # fmt: skip
    "ORNode": Alias(
        "ObservationRouterNode",
        inputs={"input_a": "initial", "input_b": "loop", "input_c": DROP},
        outputs={"output": "observations"},
    ),
    "CartpoleActionNode": Alias(
        "ActionProcessorNode",
        inputs={"network_output": "actions", "context": DROP},
        outputs={"action": "actions", "context": DROP},
        params={"max_push_effort": DROP},
    ),
    "PPOAgentNode": Alias(
        "PPOAgentNode",
        outputs={"policy_output": "policy_output", "model": "model"},
        params={"action_dim": "output_size", "deterministic": DROP, "init_log_std": DROP},
        env_params=("action_space", "output_size"),
    ),
    "PPOTrainerNode": Alias(
        "PPOTrainerNode",
        inputs={
            "state": "states",
            "policy_output": "policy_outputs",
            "reward": "rewards",
            "done": "dones",
        },
        outputs={"loss": DROP, "training_complete": "training_complete"},
        params={
            "checkpoint_enabled": DROP,
            "checkpoint_trigger_type": DROP,
            "checkpoint_trigger_value": DROP,
        },
    ),  # fmt: skip
}
# Types only DNNE has: their presence marks a DNNE workflow (PPOAgentNode etc. are shared names).
DNNE_ONLY = {"IsaacGymEnvNode", "IsaacGymStepNode", "ORNode", "CartpoleActionNode"}


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def is_dnne(graph: Graph) -> bool:
    return any(nd.type in DNNE_ONLY for nd in graph.nodes.values())


def output_names(type_name: str) -> list[str] | None:
    """A DNNE type's outputs in slot order (API-format links give slots)."""
    alias = ALIASES.get(type_name)
    return list(alias.outputs) if alias is not None and type_name in DNNE_ONLY else None


def mapped_env(name: Any, env_map: dict[str, str]) -> str | None:
    """The Gymnasium id --env-map gives DNNE's env name ("Cartpole" or "IsaacGymCartpole")."""
    if not isinstance(name, str):
        return None
    return env_map.get(name) or env_map.get(f"IsaacGym{name}")


def adapt(graph: Graph, env_map: dict[str, str] | None) -> Graph:
    """`graph` (read from a DNNE workflow) in ppokit's names; unchanged when it is not DNNE's.
    Isaac Gym env nodes whose env --env-map does not name stay as they are (validation refuses
    them, naming the flag)."""
    if not is_dnne(graph):
        return graph
    env_map = env_map or {}
    original = {node_id: nd.type for node_id, nd in graph.nodes.items()}
    replaced = {
        node_id for node_id, nd in graph.nodes.items()
        if nd.type == "IsaacGymEnvNode"
        and mapped_env(nd.params.get("env_name", nd.params.get("task")), env_map)
    }  # fmt: skip
    for node_id, nd in graph.nodes.items():
        alias = ALIASES.get(nd.type)
        if alias is None or (nd.type == "IsaacGymEnvNode" and node_id not in replaced):
            continue
        dropped: list[str] = []
        params = {}
        for name, value in nd.params.items():
            new = alias.params.get(name, name)
            if new is None or (replaced and new in alias.env_params):
                dropped.append(f"param {name}")
            else:
                params[new] = value
        inputs = {}
        for name, link in nd.inputs.items():
            new = alias.inputs.get(name, name)
            if new is None:
                dropped.append(f"input {name}")
            else:
                inputs[new] = link
        if nd.type == "IsaacGymEnvNode":
            gym_id = mapped_env(params.get("env_id"), env_map)
            note(
                f"node {node_id} (IsaacGymEnvNode): runs {params.get('env_id')!r} as the Gymnasium env {gym_id!r} (--env-map)"
            )
            params["env_id"] = gym_id
        if dropped:
            note(
                f"node {node_id} ({nd.type} -> {alias.type}): dropped {', '.join(dropped)}"
                " (no meaning in ppokit"
                + (
                    "; the env --env-map names decides the actions)"
                    if replaced and alias.env_params
                    else ")"
                )
            )
        nd.type, nd.params, nd.inputs = alias.type, params, inputs
    for node_id, nd in graph.nodes.items():  # links: the source ports' ppokit names
        for name, link in list(nd.inputs.items()):
            parsed = parse_link(link)
            if parsed is None or parsed[0] not in graph.nodes:
                continue
            alias = ALIASES.get(original[parsed[0]])
            if alias is None or (
                original[parsed[0]] == "IsaacGymEnvNode" and parsed[0] not in replaced
            ):
                continue
            port = alias.outputs.get(parsed[1], parsed[1])
            if port is None:
                note(f"node {node_id}: input {name} dropped: {link} has no ppokit equivalent")
                del nd.inputs[name]
            else:
                nd.inputs[name] = f"{parsed[0]}.{port}"
    for node_id, nd in graph.nodes.items():
        if nd.type == "PPOTrainerNode":
            _dnne_trainer(graph, node_id)
    return graph


def _dnne_trainer(graph: Graph, node_id: str) -> None:
    """DNNE's trainer semantics in ppokit's terms (see the module docstring)."""
    nd = graph.nodes[node_id]
    model = parse_link(nd.inputs.get("model"))
    agent = graph.nodes.get(model[0]) if model else None
    if agent is None:
        return
    acted_on = agent.inputs.get("observations")
    if acted_on is not None and nd.inputs.get("states") != acted_on:
        note(
            f"node {node_id} (PPOTrainerNode): states {nd.inputs.get('states')} -> {acted_on} (the"
            " observations the agent acted on, which DNNE's trainer records with its action)"
        )
        nd.inputs["states"] = acted_on
    envs = [g for g in graph.nodes.values() if g.type == "EnvNode"]
    num_envs = envs[0].params.get("num_envs", 1) if len(envs) == 1 else None
    size, horizon = nd.params.get("minibatch_size"), nd.params.get("horizon_length", 16)
    if isinstance(num_envs, int) and isinstance(size, int) and isinstance(horizon, int):
        batch = horizon * num_envs
        if size >= batch or batch % size:
            note(
                f"node {node_id} (PPOTrainerNode): minibatch_size {size}"
                f" {'exceeds' if size > batch else 'does not divide'} the rollout of {horizon} x"
                f" {num_envs} = {batch} samples; DNNE then trains on whole rollouts:"
                " num_minibatches 1"
            )
            del nd.params["minibatch_size"]
            nd.params["num_minibatches"] = 1
