"""What a node type declares, once: its ports, its params, its category and help.

Validation, `ppokit graph nodes`, docs/nodes.md and the ComfyUI definitions are all derived from
these declarations; none of them lists a port or a param by hand.
"""

from __future__ import annotations

import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from ppokit import config as C
from ppokit.errors import ConfigError

# ----------------------------------------------------------------------------------------------
# Port types: what flows along a link, one value per tick
# ----------------------------------------------------------------------------------------------

ENV = "ENV"
OBSERVATIONS = "OBSERVATIONS"
ACTIONS = "ACTIONS"
POLICY_OUTPUT = "POLICY_OUTPUT"
REWARDS = "REWARDS"
DONES = "DONES"
MODEL = "MODEL"
TRIGGER = "TRIGGER"
LOSS_INFO = "LOSS_INFO"
METRICS = "METRICS"
ANY = "*"

PORT_TYPES: dict[str, str] = {
    ENV: "a ppokit vector env (`VecEnv`: N Gymnasium envs stepped together)",
    OBSERVATIONS: "observations of a batch of envs, a float tensor [N, obs_dim]",
    ACTIONS: "env actions of a batch of envs, a tensor [N, action_dim] (float) or [N] (int)",
    POLICY_OUTPUT: (
        "what an agent produced this tick (`PolicyOutput`): `action` (env action), `value`,"
        " `log_prob`, `action_params` (mean/std or logits); accepted wherever ACTIONS are"
    ),
    REWARDS: "rewards of a batch of envs, a float tensor [N]",
    DONES: (
        "the episode ends of an env step, a ppokit `StepResult`: `terminated` and `truncated`"
        " kept apart ([N] bools) and `final_obs`, the observations truncated episodes bootstrap"
        " from"
    ),
    MODEL: "an agent's actor-critic (`ActorCritic`), with the observation normalizer inside",
    TRIGGER: "a bool that is true on the ticks an event happened (an update ran)",
    LOSS_INFO: "the metrics of the last PPO update (`losses/...`, `charts/...`), a dict",
    METRICS: "a result dict (e.g. an evaluation's mean_return, std_return, returns)",
    ANY: "any type; the node's inputs must all have the same type, which its output then has",
}


class _Required:
    """The default of a param that must be given."""

    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Input:
    """An input port. `loop`: it receives its source's value from the previous tick, so a link
    into it may close a cycle (the env step's next observations back into a router)."""

    name: str
    types: tuple[str, ...]
    help: str
    optional: bool = False
    loop: bool = False

    def accepts(self, port_type: str) -> bool:
        return ANY in self.types or port_type in self.types or port_type == ANY


@dataclass(frozen=True)
class Output:
    name: str
    type: str
    help: str


@dataclass(frozen=True)
class Param:
    """A node parameter: a typed value with a default, an optional range, choices and aliases.

    `type` is a Python annotation as in ppokit.config (int, float, bool, str, list[int], dict,
    Literal[...], X | None); a range bounds a number or each item of a list. `config` names the
    TrainConfig field the value is written to; such params are made by `config_param`, which
    takes the range from the field.
    """

    name: str
    type: Any
    default: Any = REQUIRED
    help: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    aliases: tuple[str, ...] = ()
    config: str | None = None
    # Declared after ComfyUI workflows were saved with positional widget values: ComfyUI lists
    # it after every other widget, so those workflows keep their values.
    late: bool = False

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    @property
    def choices(self) -> tuple | None:
        for tp in (self.type, *typing.get_args(self.type)):
            if typing.get_origin(tp) is Literal:
                return typing.get_args(tp)
        return None

    @property
    def nullable(self) -> bool:
        return type(None) in typing.get_args(self.type)

    @property
    def range(self) -> C.Range:
        return C.Range(self.ge, self.gt, self.le, self.lt)

    def type_name(self) -> str:
        return C.type_name(self.type)

    def range_text(self) -> str:
        """'> 0', '>= 1', 'in [0, 1]' or ''."""
        return self.range.text()

    def check(self, value: Any) -> tuple[Any, str | None, str | None, str | None]:
        """(value converted to the param's type, error code, message, suggestion).

        The code is None when the value is valid. Types and ranges are checked as for config
        fields (`ppokit.config.coerce` and `range_problem`).
        """
        choices = self.choices
        if choices is not None and not (value is None and self.nullable):
            if value not in choices:
                close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
                suggestion = close[0] if close else None
                return (
                    value,
                    "not_in_choices",
                    f"{value!r} is not one of {', '.join(repr(c) for c in choices)}",
                    suggestion,
                )
            return value, None, None, None
        try:
            value = C.coerce(value, self.type, self.name)
        except ConfigError:
            return (value, "bad_value", f"expected {self.type_name()}, got {value!r}", None)
        if value is None:
            return value, None, None, None
        problem = C.range_problem(value, self.range)
        if problem is not None:
            return value, "out_of_range", f"{value!r} is out of range: {problem}", None
        return value, None, None, None


@dataclass(frozen=True)
class NodeSpec:
    """The declaration of a node type.

    Add new params at the end of `params`: ComfyUI workflows store widget values by position in
    this order (required section first), so appending keeps saved workflows loadable.
    """

    type: str
    category: str
    description: str
    inputs: tuple[Input, ...] = ()
    outputs: tuple[Output, ...] = ()
    params: tuple[Param, ...] = ()
    aliases: tuple[str, ...] = ()
    _by_name: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        table: dict[str, Any] = {}
        for p in self.params:
            for name in (p.name, *p.aliases):
                assert name not in table, f"{self.type}: param name {name!r} declared twice"
                table[("param", name)] = p
        for i in self.inputs:
            table[("input", i.name)] = i
        for o in self.outputs:
            table[("output", o.name)] = o
        self._by_name.update(table)

    def param(self, name: str) -> Param | None:
        return self._by_name.get(("param", name))

    def input(self, name: str) -> Input | None:
        return self._by_name.get(("input", name))

    def output(self, name: str) -> Output | None:
        return self._by_name.get(("output", name))

    def param_names(self) -> list[str]:
        return [n for p in self.params for n in (p.name, *p.aliases)]


# ----------------------------------------------------------------------------------------------
# Params derived from ppokit's config fields
# ----------------------------------------------------------------------------------------------

_FROM_CONFIG: Any = object()


def config_param(
    config_field: str,
    name: str | None = None,
    *,
    default: Any = _FROM_CONFIG,
    help: str | None = None,
    type: Any = None,
    aliases: tuple[str, ...] = (),
    late: bool = False,
) -> Param:
    """A Param that sets `config_field` (e.g. "algo.clip_coef"): the field's range always (a node
    param accepts the values the config field accepts), its type, default and help unless given
    here. `type` and `default` are given only to add a null that means "taken from elsewhere"
    (the trainer's learning_rate: the agent's; critic_hidden_sizes: hidden_sizes)."""
    tp, f = C.field_info(config_field)
    rng = C.field_range(f)
    return Param(
        name=name or config_field.rsplit(".", 1)[-1],
        type=type if type is not None else tp,
        default=C.field_default(f) if default is _FROM_CONFIG else default,
        help=help if help is not None else C.field_help(f),
        ge=rng.ge,
        gt=rng.gt,
        le=rng.le,
        lt=rng.lt,
        aliases=aliases,
        config=config_field,
        late=late,
    )
