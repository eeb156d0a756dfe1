"""Search spaces of `ppokit tune`: which config keys a study samples, and from what.

A space is a mapping of dotted config keys (the keys of config.yaml and of the flags) to an
Optuna distribution, written in YAML:

    algo.lr: {low: 1.0e-5, high: 3.0e-3, log: true}     # float, log-uniform
    algo.clip_coef: {low: 0.1, high: 0.4}               # float, uniform
    algo.num_epochs: {low: 3, high: 20}                 # int (the key is an integer field)
    algo.gamma: {choices: [0.95, 0.98, 0.99, 0.995]}    # categorical
    policy.actor_hidden: {choices: [[64, 64], [256, 256]], also: [policy.critic_hidden]}

`type` (uniform, log, int, categorical) may be given; otherwise it follows from the key's field
type and `choices`. `also` copies the sampled value to other keys of the same type (one width
for actor and critic). Keys are checked against the config schema (did-you-mean), numeric
distributions need a numeric key, and bounds and choices must be values the field accepts.
Every recipe family (recipes.py) has a default space (`default_space`).

This module imports only the config: the space is checked before Optuna is imported, and the
parameters it describes are plain data (`Param`), turned into Optuna distributions by tune.py.
"""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from ppokit import config as C
from ppokit.errors import ConfigError

KINDS = ("uniform", "log", "int", "categorical")
SPEC_KEYS = {"type", "low", "high", "log", "step", "choices", "also"}


@dataclass(frozen=True)
class Param:
    """One sampled dimension: `key` (and the keys in `also`) set to the sampled value.

    kind: uniform | log (floats), int (log when `log`), categorical (`choices`; list values are
    stored as their YAML text, since Optuna's categorical choices are scalars)."""

    key: str
    kind: Literal["uniform", "log", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()
    also: tuple[str, ...] = field(default_factory=tuple)

    def to_config_value(self, sampled: Any) -> Any:
        """The sampled value as the config field takes it (list choices back from their text)."""
        if self.kind == "categorical" and isinstance(sampled, str) and _is_list_key(self.key):
            return C.parse_cli_value(sampled)
        return sampled


def _field_type(key: str) -> Any:
    tp, _ = C.field_info(key)
    return tp


def _base_types(tp: Any) -> set:
    """The non-null types a field annotation allows (Literal counted as its values' type)."""
    args = typing.get_args(tp) if typing.get_origin(tp) is not None else (tp,)
    if typing.get_origin(tp) is Literal:
        return {type(a) for a in args}
    out: set = set()
    for a in args:
        if a is type(None):
            continue
        out |= {type(v) for v in typing.get_args(a)} if typing.get_origin(a) is Literal else {a}
    return out


def _is_list_key(key: str) -> bool:
    tp = _field_type(key)
    return any(typing.get_origin(a) is list for a in (tp, *typing.get_args(tp)))


def _numeric_kind(key: str) -> str | None:
    """'int' or 'float' for a numeric (scalar) field, else None (bool, str, list, Literal...)."""
    tp = _field_type(key)
    if typing.get_origin(tp) is Literal or _is_list_key(key):
        return None
    types = _base_types(tp)
    if types == {int}:
        return "int"
    if types and types <= {int, float}:
        return "float"
    return None


def _valid_keys() -> list[str]:
    return [name for name, _, _ in C.iter_fields() if name not in ("preset",)]


def _check_key(key: str, where: str) -> str:
    key = C.RENAMED.get(key, key)
    if key not in _valid_keys():
        raise C.unknown_key_error(key, _valid_keys(), where)
    if key in ("total_steps", "seed"):
        raise ConfigError(
            f"{key} in {where} is set by `ppokit tune` itself (--steps, --seeds); remove it"
            " from the space"
        )
    return key


def parse_param(key: str, spec: Any, where: str) -> Param:
    """One entry of a space file, checked against the config schema."""
    key = _check_key(key, where)
    if not isinstance(spec, dict):
        raise ConfigError(
            f"{key} in {where}: expected a distribution such as {{low: 1.0e-4, high: 1.0e-2,"
            f" log: true}} or {{choices: [a, b]}}, got {C.show(spec)}"
        )
    unknown = set(spec) - SPEC_KEYS
    if unknown:
        raise ConfigError(
            f"{key} in {where}: unknown distribution field {sorted(unknown)[0]!r}; use"
            f" {', '.join(sorted(SPEC_KEYS))}"
        )
    kind = spec.get("type")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"{key} in {where}: type {kind!r} is not one of {list(KINDS)}")
    also = tuple(_check_key(k, where) for k in spec.get("also", ()))
    for other in also:
        if _field_type(other) != _field_type(key):
            raise ConfigError(
                f"{key} in {where}: `also` key {other} has another type"
                f" ({C.type_name(_field_type(other))}, not {C.type_name(_field_type(key))})"
            )
    if "choices" in spec or kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{key} in {where}: choices must be a non-empty list")
        extra = set(spec) - {"type", "choices", "also"}
        if extra:
            raise ConfigError(
                f"{key} in {where}: a categorical distribution takes choices only, not"
                f" {sorted(extra)[0]}"
            )
        values = [C.check_value(key, c, where) for c in choices]
        # Optuna's categorical choices are scalars: a list value is stored as its YAML text.
        stored = tuple(C.show(v) if isinstance(v, list) else v for v in values)
        if len(set(map(json.dumps, stored))) != len(stored):
            raise ConfigError(f"{key} in {where}: choices repeat a value")
        return Param(key, "categorical", choices=stored, also=also)
    numeric = _numeric_kind(key)
    if numeric is None:
        raise ConfigError(
            f"{key} in {where} is not numeric ({C.type_name(_field_type(key))}): a low/high"
            f" distribution needs a number; give {{choices: [...]}} instead"
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{key} in {where}: give low and high (or choices)")
    if kind is None:
        kind = "int" if numeric == "int" else ("log" if spec.get("log") else "uniform")
    if kind == "int" and numeric != "int":
        raise ConfigError(f"{key} in {where} is a float field: use type uniform or log, not int")
    if kind in ("uniform", "log") and numeric == "int":
        raise ConfigError(
            f"{key} in {where} is an integer field: use type int (log: true for log scale)"
        )
    low, high = (C.check_value(key, spec[b], f"{where} ({key}.{b})") for b in ("low", "high"))
    if low is None or high is None or not low < high:
        raise ConfigError(f"{key} in {where}: low {low} must be smaller than high {high}")
    log = kind == "log" or bool(spec.get("log", False))
    if log and low <= 0:
        raise ConfigError(f"{key} in {where}: a log distribution needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None and (log or not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"{key} in {where}: step must be a positive number, without log")
    return Param(
        key, "int" if kind == "int" else ("log" if log else "uniform"), low, high, log, step,
        also=also,
    )  # fmt: skip


def parse_space(data: Any, where: str) -> dict[str, Param]:
    """A space mapping (dotted keys, or config sections holding keys) to its params."""
    if not isinstance(data, dict) or not data:
        raise ConfigError(
            f"{where}: expected a mapping of config keys to distributions, e.g."
            " `algo.lr: {low: 1.0e-5, high: 1.0e-3, log: true}`"
        )
    flat: dict[str, Any] = {}
    for key, spec in data.items():
        if key in C.SECTIONS and isinstance(spec, dict) and not set(spec) & SPEC_KEYS:
            flat.update({f"{key}.{k}": v for k, v in spec.items()})
        else:
            flat[str(key)] = spec
    params: dict[str, Param] = {}
    for key, spec in flat.items():
        param = parse_param(key, spec, where)
        for k in (param.key, *param.also):
            if k in params or any(k in p.also for p in params.values()):
                raise ConfigError(f"{k} is sampled twice in {where}; keep one entry")
        params[param.key] = param
    return params


def load_space(path: str | Path) -> dict[str, Param]:
    return parse_space(C.load_yaml(Path(path)), f"space file {str(path)!r}")


def space_json(space: dict[str, Param]) -> str:
    """The canonical text of a space: what a study stores to recognise its own space."""
    return json.dumps({k: asdict(p) for k, p in sorted(space.items())}, sort_keys=True)


# ----------------------------------------------------------------------------------------------
# Default spaces per recipe family (recipes.py). The dimensions RL-Zoo and CleanRL tune for PPO:
# LR and its schedule, horizon (gamma) and GAE lambda, epochs and minibatches, the batch
# (num_envs x num_steps), clip range, entropy, initial exploration, network width, value-loss
# weight and advantage normalization. Batch sizes are powers of two so every num_minibatches
# choice divides them.
# ----------------------------------------------------------------------------------------------

_COMMON: dict[str, Any] = {
    "algo.lr": {"low": 1e-5, "high": 3e-3, "log": True},
    "algo.lr_schedule": {"choices": ["constant", "linear"]},
    "algo.gamma": {"choices": [0.9, 0.95, 0.98, 0.99, 0.995, 0.999]},
    "algo.lam": {"choices": [0.8, 0.9, 0.92, 0.95, 0.98, 1.0]},
    "algo.num_epochs": {"choices": [1, 3, 5, 10, 20]},
    "algo.num_minibatches": {"choices": [1, 2, 4, 8, 16, 32]},
    "algo.clip_coef": {"choices": [0.1, 0.2, 0.3, 0.4]},
    "algo.ent_coef": {"choices": [0.0, 1e-4, 1e-3, 1e-2]},
    "algo.vf_coef": {"low": 0.2, "high": 1.0},
    "algo.normalize_advantages": {"choices": [True, False]},
    "policy.actor_hidden": {
        "choices": [[64, 64], [128, 128], [256, 256]],
        "also": ["policy.critic_hidden"],
    },
}
_GAUSSIAN = {"policy.init_noise_std": {"low": 0.05, "high": 0.5, "log": True}}

# Batch shapes per family: (num_envs choices, num_steps choices).
_BATCH = {
    "mujoco": ([8, 16, 32, 64], [16, 32, 64, 128, 256]),
    "classic-control": ([4, 8, 16], [64, 128, 256, 512, 1024]),
    "discrete": ([4, 8, 16], [16, 32, 64, 128, 256]),
    "multi-modal": ([8, 16, 32], [16, 32, 64, 128]),
    "batched": ([1024, 2048, 4096], [8, 16, 24, 32]),
}


def default_space_data(family: str) -> dict[str, Any]:
    """The default space of a recipe family (recipes.Recipe.name), as a space file holds it."""
    envs, steps = _BATCH[family]
    data = dict(_COMMON)
    data["env.num_envs"] = {"choices": envs}
    data["algo.num_steps"] = {"choices": steps}
    if family != "discrete":
        data.update(_GAUSSIAN)
    return data


def default_space(family: str) -> dict[str, Param]:
    return parse_space(default_space_data(family), f"the default space of family {family!r}")
