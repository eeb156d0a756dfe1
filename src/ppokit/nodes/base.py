"""The node base class and the registry of node types.

A node type is a class with a declaration (`spec`) and two methods:

- `infer(ctx)`: from the specs of its inputs (batch size, spaces), check its params and give the
  specs of its outputs. Runs before anything is built, so size mismatches are reported with the
  node and the field, all at once.
- `emit(e)`: the Python statements that realise the node, calling ppokit's public API, in the
  setup, tick (once per tick), final (after the last tick) and teardown sections of the program.

`ppokit graph run` executes the program these statements form and `ppokit graph export` writes
it out, so the two are the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import gymnasium as gym

from ppokit.nodes.declarations import NodeSpec

if TYPE_CHECKING:
    from ppokit.nodes.program import Emitter, InferContext


@dataclass
class PortSpec:
    """What a port carries, known before running: its type, the batch size N and a space.

    `space` is the observation space (OBSERVATIONS, DONES) or the action space (ACTIONS,
    POLICY_OUTPUT). `env` names the EnvNode the data derives from (for actions: the env whose
    action space they are in), `raw` says observations are that env's own, unchanged; `agent`
    names the agent a MODEL or POLICY_OUTPUT comes from.
    """

    type: str
    batch: int | None = None
    space: gym.Space | None = None
    env: str | None = None
    raw: bool = False
    agent: str | None = None


class Node:
    """Base class of node types. Instances hold one graph node's resolved params."""

    spec: ClassVar[NodeSpec]
    # Nodes that pass an agent's actions on towards an env step (the agent looks through them
    # to find the env whose action space it acts in).
    forwards_actions: ClassVar[bool] = False

    def __init__(self, node_id: str, params: dict[str, Any], explicit: set[str]) -> None:
        self.id = node_id
        self.params = params
        self.explicit = explicit  # names of params given in the graph (not defaulted)

    @property
    def type(self) -> str:
        return self.spec.type

    def infer(self, ctx: InferContext) -> None:
        """Check params against the input specs; set the output specs with ctx.output()."""

    def infer_loops(self, ctx: InferContext) -> None:
        """Check loop inputs, whose sources run later in the tick (called after `infer`)."""

    def emit(self, e: Emitter) -> None:
        """Add the node's statements to the program."""


_TYPES: dict[str, type[Node]] = {}
_ALIASES: dict[str, str] = {}

# DNNE node types ppokit cannot run, with the ppokit node to use instead.
UNSUPPORTED: dict[str, tuple[str, str]] = {
    "IsaacGymEnvNode": (
        "EnvNode with a Gymnasium env id (or run its task as one: --env-map IsaacGymCartpole=CartPole-v1)",
        "Isaac Gym is not supported",
    ),
    "IsaacGymStepNode": ("EnvStepNode", "Isaac Gym is not supported"),
    "CartpoleActionNode": ("ActionProcessorNode", "it drives Isaac Gym's Cartpole"),
}


def register(cls: type[Node]) -> type[Node]:
    name = cls.spec.type
    assert name not in _TYPES and name not in _ALIASES, f"node type {name} registered twice"
    _TYPES[name] = cls
    for alias in cls.spec.aliases:
        _ALIASES[alias] = name
    return cls


def node_class(type_name: str) -> type[Node] | None:
    """The class registered under `type_name` or one of its aliases."""
    return _TYPES.get(type_name) or _TYPES.get(_ALIASES.get(type_name, ""))


CATEGORIES = ("RL/Env", "RL/PPO", "RL/Flow", "RL/Output")


def node_classes() -> list[type[Node]]:
    """All registered node types, by category (CATEGORIES order), then registration order."""
    rank = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(_TYPES.values(), key=lambda c: rank.get(c.spec.category, len(rank)))


def type_names() -> list[str]:
    return [*_TYPES, *_ALIASES]
