"""Typed configuration: dataclasses <- YAML preset/file <- command-line overrides.

Every field carries a one-line help text and, for numbers, the range of values that mean
something; the CLI, the YAML schema, the node params and the error messages are all derived from
these dataclasses, never written by hand. `check_value` is the one check of a field's type and
range, for every entry point (flags, YAML files, presets, checkpoints, Python, node graphs).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ppokit.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """The numbers a field accepts: x >= ge, x > gt, x <= le, x < lt (None: no such bound), and
    always finite. On a list field it bounds each item."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def contains(self, x: float) -> bool:
        return math.isfinite(x) and not (
            (self.ge is not None and x < self.ge)
            or (self.gt is not None and x <= self.gt)
            or (self.le is not None and x > self.le)
            or (self.lt is not None and x >= self.lt)
        )

    def text(self) -> str:
        """'> 0', '>= 1', 'in [0, 1]', 'in [0, 1)' or '' (any finite number)."""
        low = f"[{_num(self.ge)}" if self.ge is not None else None
        low = f"({_num(self.gt)}" if self.gt is not None else low
        high = f"{_num(self.le)}]" if self.le is not None else None
        high = f"{_num(self.lt)})" if self.lt is not None else high
        if low and high:
            return f"in {low}, {high}"
        for op, bound in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt)):
            if bound is not None:
                return f"{op} {_num(bound)}"
        return ""


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def opt(
    default: Any,
    help: str,
    *,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    merge: bool = False,
    **kwargs: Any,
) -> Any:
    """A dataclass field with a help text and, for a number or a list of numbers, its range
    (`ge`/`gt`/`le`/`lt`; on a list, each item's). Mutable defaults are copied per instance.
    `merge`: a mapping set over an earlier one (a flag over a preset) merges into it key by key."""
    metadata = {"help": help, "range": Range(ge, gt, le, lt), "merge": merge}
    if isinstance(default, (list, dict)):
        value = default
        return field(
            default_factory=lambda: typing.cast(Any, type(value))(value),
            metadata=metadata,
            **kwargs,
        )
    return field(default=default, metadata=metadata, **kwargs)


@dataclass
class EnvConfig:
    id: str = opt(
        "Pendulum-v1", "Gymnasium environment id (any registered id, e.g. HalfCheetah-v5)"
    )
    num_envs: int = opt(8, "number of parallel environments", ge=1)
    vectorization: Literal["sync", "async"] = opt(
        "sync", "sync: all envs in this process; async: one subprocess per env"
    )
    max_episode_steps: int | None = opt(
        None, "override the env's time limit (truncation); null: the env's own", ge=1
    )
    kwargs: dict = opt(
        {},
        "extra keyword arguments for gymnasium.make, merged key by key (nested mappings too)"
        " into the preset's or config's",
        merge=True,
    )
    finite_horizon: bool = opt(
        False,
        "the time limit is part of the task: treat truncation as termination (no bootstrap"
        " from the value of the final observation; docs/gpu.md)",
    )
    step_timeout: float = opt(
        300.0,
        "seconds one vector step may take before training stops with an error naming the env"
        " (a hung env); 0: no limit",
        ge=0,
    )


@dataclass
class PolicyConfig:
    normalize_obs: bool = opt(True, "running mean/std observation normalization inside the model")
    obs_clip: float = opt(10.0, "clip normalized observations to +-obs_clip", gt=0)
    actor_hidden: list[int] = opt([64, 64], "hidden layer sizes of the actor MLP", ge=1)
    critic_hidden: list[int] = opt([64, 64], "hidden layer sizes of the critic MLP", ge=1)
    activation: Literal["tanh", "elu", "relu", "silu", "gelu"] = opt(
        "tanh", "hidden-layer activation"
    )
    init_noise_std: float = opt(
        0.5,
        "initial action std as a fraction of the action range (high - low; an unbounded"
        " dimension counts as [-1, 1]), or in env units with noise_std_relative false",
        gt=0,
    )
    noise_std_relative: bool = opt(
        True,
        "init_noise_std is a fraction of the action range (every preset); false: absolute std"
        " in env units",
    )
    log_std_min: float = opt(-5.0, "lower clamp of the learned log-std")
    log_std_max: float = opt(2.0, "upper clamp of the learned log-std")
    rescale_actions: bool = opt(
        True, "Gaussian acts in [-1, 1] mapped affinely onto finite Box bounds"
    )
    memory: Literal["none", "gru", "lstm"] = opt(
        "none",
        "recurrent core between the encoders and the heads (gru/lstm: trained with truncated"
        " BPTT over algo.bptt_length steps; not with algo.compile or the numpy act step)",
    )
    memory_hidden: int = opt(128, "units of the recurrent core", ge=1)
    memory_layers: int = opt(1, "layers of the recurrent core", ge=1)
    critic_memory: Literal["shared", "separate", "none"] = opt(
        "shared",
        "recurrent policies: the critic reads the actor's core (shared), has its own (separate)"
        " or none (feedforward critic)",
    )
    encoders: dict = opt(
        {},
        "dict observations: encoder per key, e.g. {depth: {type: cnn, channels: [16, 32],"
        " kernels: [5, 3], strides: [2, 2], out: 64}, commands: {type: identity}, height_scan:"
        " {type: mlp, hidden: [64]}}; keys not named: cnn for images, mlp [64] for vectors",
    )
    actor_keys: list[str] | None = opt(
        None, "dict observations: keys the actor reads (default: all keys)"
    )
    critic_keys: list[str] | None = opt(
        None,
        "dict observations: keys the critic reads (default: actor_keys); keys only the critic"
        " reads make a privileged (asymmetric) critic",
    )


@dataclass
class AlgoConfig:
    num_steps: int = opt(2048, "rollout length per environment between updates", ge=1)
    num_epochs: int = opt(10, "optimisation epochs over each rollout", ge=1)
    num_minibatches: int | None = opt(
        32,
        "minibatches per epoch (set this or minibatch_size; both must agree); recurrent"
        " policies split sequences of bptt_length steps, not steps",
        ge=1,
    )
    minibatch_size: int | None = opt(
        None,
        "samples per minibatch (set this or num_minibatches; both must agree); for recurrent"
        " policies it counts sequences of bptt_length steps",
        ge=1,
    )
    bptt_length: int = opt(
        24,
        "recurrent policies: length of the sequences (truncated BPTT) cut from each env's"
        " rollout; a minibatch counts sequences",
        ge=1,
    )
    gamma: float = opt(0.99, "discount factor", ge=0, le=1)
    lam: float = opt(0.95, "GAE lambda", ge=0, le=1)
    scale_rewards: bool = opt(True, "divide rewards by the std of the discounted return")
    reward_clip: float = opt(10.0, "clip scaled rewards to +-reward_clip (0 disables)", ge=0)
    clip_coef: float = opt(0.2, "PPO ratio clip range", gt=0)
    clip_value_loss: bool = opt(True, "clip the value loss around the old values")
    value_clip_coef: float | None = opt(None, "value clip range (null: clip_coef)", gt=0)
    vf_coef: float = opt(0.5, "value loss coefficient", ge=0)
    ent_coef: float = opt(0.0, "entropy bonus coefficient", ge=0)
    max_grad_norm: float = opt(0.5, "global gradient-norm clip (0 disables)", ge=0)
    normalize_advantages: bool = opt(True, "normalize advantages to zero mean, unit std")
    advantage_norm_scope: Literal["batch", "minibatch"] = opt(
        "batch", "normalize advantages over the whole batch or per minibatch"
    )
    recompute_advantages: bool = opt(
        False,
        "recompute values, advantages and returns with the current critic before every epoch"
        " after the first (feedforward policies; Andrychowicz et al. 2021)",
    )
    target_kl: float | None = opt(
        None, "KL target: early-stop threshold and the adaptive LR's set point", gt=0
    )
    kl_early_stop: bool = opt(
        False, "end the whole update when a minibatch's approx KL exceeds target_kl"
    )
    optimizer: Literal["adam", "adamw"] = opt("adam", "optimizer (eps 1e-5)")
    weight_decay: float = opt(0.0, "AdamW weight decay", ge=0)
    adam_eps: float = opt(1e-5, "Adam epsilon", gt=0)
    lr: float = opt(3e-4, "initial learning rate", gt=0)
    lr_schedule: Literal["constant", "linear", "cosine", "adaptive"] = opt(
        "constant", "constant | linear to 0 | cosine to lr*lr_floor | KL-adaptive"
    )
    lr_floor: float = opt(0.1, "cosine schedule ends at lr * lr_floor", ge=0, le=1)
    min_lr: float = opt(1e-6, "lower bound of the adaptive LR", gt=0)
    max_lr: float = opt(
        1e-3, "upper bound of the adaptive LR (larger values unlearn policies)", gt=0
    )
    lr_factor: float = opt(
        1.5, "adaptive LR divides/multiplies by this when KL > 2x / < 0.5x target", gt=1
    )
    act_backend: Literal["auto", "torch", "numpy"] = opt(
        "auto",
        "rollout act step: numpy is faster for MLP policies on the CPU with few envs (auto picks"
        " it for <= 16 envs; torch for batched simulators and GPUs)",
    )
    compile: bool = opt(
        False, "torch.compile the minibatch step (faster updates after ~20-40 s of compilation)"
    )
    compile_act: bool = opt(
        False,
        "torch.compile the rollout's act step of the torch act path (batched envs; see"
        " benchmarks/RESULTS.md for when it pays)",
    )


@dataclass
class EmaConfig:
    decay: float = opt(
        0.0,
        "rollouts act with an exponential moving average of the policy weights, updated as"
        " ema = decay * ema + (1 - decay) * weights after each update (0 disables; e.g. 0.9)",
        ge=0,
        lt=1,
    )


@dataclass
class LogConfig:
    root: str = opt("runs", "directory under which run directories are created")
    run_name: str | None = opt(None, "run directory name (default: <preset|env>_s<seed>_<time>)")
    checkpoint_every: int = opt(
        50, "write a checkpoint every this many updates (0: only at end)", ge=0
    )
    keep_checkpoints: int = opt(
        3, "how many periodic checkpoints to keep (latest.pt always kept)", ge=1
    )
    progress: bool = opt(True, "show a progress bar")
    wandb: bool = opt(False, "log to Weights & Biases as well")
    wandb_project: str = opt("ppokit", "W&B project")
    wandb_mode: Literal["online", "offline", "disabled"] = opt("online", "W&B mode")
    episode_window: int = opt(
        100, "episode return/length are averaged over this many episodes", ge=1
    )


@dataclass
class EvalConfig:
    episodes: int = opt(10, "episodes of the final deterministic evaluation (0 skips it)", ge=0)
    every: int = opt(
        0,
        "evaluate deterministically every this many updates during training, log eval/* and keep"
        " the best policy in checkpoints/best.pt (0: never)",
        ge=0,
    )
    every_steps: int = opt(
        0, "as eval.every, in env steps (rounded up to whole updates); set one of the two", ge=0
    )
    periodic_episodes: int = opt(10, "episodes of each evaluation during training", ge=1)
    target_return: float | None = opt(
        None, "stop training once an evaluation during training reaches this mean return"
    )
    patience: int = opt(
        0,
        "stop training after this many evaluations during training without a new best (0: never)",
        ge=0,
    )


@dataclass
class TrainConfig:
    env: EnvConfig = field(default_factory=EnvConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    log: LogConfig = field(default_factory=LogConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    total_steps: int = opt(
        100_000,
        "environment steps to train for (summed over envs), rounded up to whole updates of"
        " num_envs x num_steps (the run says so when it rounds)",
        ge=1,
    )
    seed: int = opt(1, "random seed (torch, numpy, env resets)", ge=0, le=2**32 - 1)
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    precision: Literal["fp32", "bf16"] = opt(
        "fp32",
        "bf16: the update's forward and backward under bfloat16 autocast, fp32 master weights"
        " and optimizer (CUDA, and CPUs torch supports it on)",
    )
    torch_threads: int | None = opt(
        1, "torch intra-op threads (1 is fastest for small MLPs); null: torch's default", ge=1
    )
    preset: str | None = opt(None, "name of the preset this config came from (informational)")


SECTIONS = ("env", "policy", "algo", "ema", "log", "eval")


# ----------------------------------------------------------------------------------------------
# Field introspection
# ----------------------------------------------------------------------------------------------


def iter_fields(cfg_type: type = TrainConfig, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """All leaf fields as (dotted name, type annotation, dataclasses.Field)."""
    hints = typing.get_type_hints(cfg_type)
    out = []
    for f in dataclasses.fields(cfg_type):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.extend(iter_fields(tp, f"{prefix}{f.name}."))
        else:
            out.append((f"{prefix}{f.name}", tp, f))
    return out


_FIELDS = {name: (tp, f) for name, tp, f in iter_fields()}


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def field_range(f: dataclasses.Field) -> Range:
    """The range `opt` declared (no bounds: any finite number)."""
    return f.metadata.get("range", Range())


def field_default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def field_info(name: str) -> tuple[Any, dataclasses.Field]:
    """(type annotation, dataclasses.Field) of the dotted field `name` (e.g. "algo.lr")."""
    return _FIELDS[name]


def nullable(tp: Any) -> bool:
    return type(None) in typing.get_args(tp)


def _is_list(tp: Any) -> bool:
    return any(typing.get_origin(a) is list for a in (tp, *typing.get_args(tp)))


def range_help(tp: Any, rng: Range) -> str:
    """What `--help` and the docs show of a field's range: 'in [0, 1]', '> 0 or null',
    'items >= 1', or '' (no bounds)."""
    text = rng.text()
    if not text:
        return ""
    if _is_list(tp):
        text = f"items {text}"
    return f"{text} or null" if nullable(tp) else text


def range_problem(value: Any, rng: Range) -> str | None:
    """None when every number in `value` (a number or a list of them, already of the field's
    type) is finite and in `rng`; else what it must be ('must be > 0')."""
    items = value if isinstance(value, list) else [value]
    for v in items:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not rng.contains(v):
            must = f"must be {rng.text() or 'a finite number'}"
            return f"each item {must}" if isinstance(value, list) else must
    return None


def show(value: Any) -> str:
    """A value as it is written in YAML files and on command lines (null, true, 0.2, [64, 64],
    nan)."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def check_value(name: str, value: Any, where: str | None = None) -> Any:
    """The one check of a config field's value, for every entry point (command-line flags, YAML
    files and presets, checkpoints' configs: through `apply_overrides`; configs built in Python:
    through `validate`; node params check the same type and range in `Param.check`): its type
    (converting where lossless: 1 -> 1.0, "64,64" -> [64, 64]) and its range. Returns the
    converted value; raises a one-line ConfigError naming the key, the value, the allowed range
    and the default."""
    tp, f = _FIELDS[name]
    value = coerce(value, tp, name)
    problem = range_problem(value, field_range(f)) if value is not None else None
    if problem:
        null = " or null" if nullable(tp) else ""
        source = f" in {where}" if where else ""
        raise ConfigError(
            f"{name}: {show(value)}{source} is out of range: {problem}{null}"
            f" (default: {show(field_default(f))})"
        )
    return value


def check_fields(cfg: TrainConfig) -> None:
    """`check_value` on every field of `cfg`, storing the converted values."""
    for name, _, _ in iter_fields():
        *parents, leaf = name.split(".")
        obj = cfg
        for part in parents:
            obj = getattr(obj, part)
        setattr(obj, leaf, check_value(name, getattr(obj, leaf)))


# Keys that moved to the section they belong to: old name -> new name. Configs that use the old
# names (files, flags, saved config.yaml, checkpoints) still load, with one note per old name.
RENAMED = {
    "env.normalize_obs": "policy.normalize_obs",
    "env.obs_clip": "policy.obs_clip",
    "env.scale_rewards": "algo.scale_rewards",
    "env.reward_clip": "algo.reward_clip",
}
_noted: set[str] = set()  # old names already noted in this process


def rename_note(old: str, where: str) -> str:
    return (
        f"note: {old} is now {RENAMED[old]} (found in {where}); the old name still works but will"
        f" be removed: use {RENAMED[old]}"
    )


def renamed(overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """`overrides` with old key names (RENAMED) replaced by the new ones, printing one note per
    old name and process on stderr (a line, as the CLI's other notes; Python's warnings would
    hide it from CLI users). The old and the new name both given, with different values, is an
    error."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        new = RENAMED.get(key)
        if new is None:
            out[key] = value
            continue
        if new in overrides:
            tp, _ = _FIELDS[new]
            a, b = coerce(value, tp, key), coerce(overrides[new], tp, new)
            if a != b:
                raise ConfigError(
                    f"{key} (the old name of {new}) is {show(a)} but {new} is {show(b)} in"
                    f" {where}; give only {new}"
                )
        else:
            out[new] = value
        if key not in _noted:
            _noted.add(key)
            print(rename_note(key, where), file=sys.stderr, flush=True)
    return out


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"list[{type_name(inner)}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def coerce(value: Any, tp: Any, name: str) -> Any:
    """Check `value` against the annotation `tp`, converting where it is lossless."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return coerce(value, a, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{name}: expected {type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise ConfigError(f"{name}: {value!r} is not one of {list(choices)}{extra}")
        return value
    if origin is list:
        (inner,) = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
            value = [yaml.safe_load(v) for v in value]
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise ConfigError(f"{name}: expected {type_name(tp)}, got {value!r}")
        return [coerce(v, inner, f"{name}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{name}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    if tp is dict:
        if isinstance(value, dict):
            return value
        raise ConfigError(f"{name}: expected a mapping, got {value!r}")
    raise ConfigError(f"{name}: unsupported type {tp}")  # pragma: no cover


def parse_cli_value(text: str) -> Any:
    """Command-line text to a Python value with YAML's rules (1e-3, true, null, [64, 64])."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    # YAML 1.1 reads "1e-3" as a string; numbers written that way are common on command lines.
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def unknown_key_error(key: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    if not close:
        leaf = key.rsplit(".", 1)[-1]
        close = [v for v in valid if v.rsplit(".", 1)[-1] == leaf][:3]
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return ConfigError(
        f"unknown config key {key!r} in {where}{hint} (valid keys: `ppokit train --help`)"
    )


# ----------------------------------------------------------------------------------------------
# Building a config
# ----------------------------------------------------------------------------------------------


def to_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(data: dict, where: str = "config", base: TrainConfig | None = None) -> TrainConfig:
    """Apply a nested mapping on top of `base` (defaults when None), validating every key."""
    cfg = base if base is not None else TrainConfig()
    flat: dict[str, Any] = {}

    def flatten(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if not isinstance(k, str):
                raise ConfigError(f"config key {k!r} in {where} is not a string")
            if prefix == "" and k in SECTIONS and isinstance(v, dict):
                flatten(v, f"{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of config keys, got {type(data).__name__}")
    flatten(data, "")
    return apply_overrides(cfg, flat, where)


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any], where: str) -> TrainConfig:
    """Set dotted keys (``algo.lr``) on a copy of cfg, each checked by `check_value`, with
    did-you-mean errors for unknown keys; old key names (RENAMED) are mapped with a note."""
    cfg = copy_config(cfg)
    for key, value in renamed(overrides, where).items():
        if key not in _FIELDS:
            raise unknown_key_error(key, list(_FIELDS), where)
        value = check_value(key, value, where)
        obj = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            obj = getattr(obj, p)
        if _FIELDS[key][1].metadata.get("merge"):  # `{rewards: {...}}` keeps a preset's `control`
            value = merge_kwargs(getattr(obj, leaf), value)
        setattr(obj, leaf, value)
    return cfg


def merge_kwargs(base: dict, extra: dict) -> dict:
    """`extra` over `base`; where both hold a mapping under a key, merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_kwargs(out[key], value)
        else:
            out[key] = value
    return out


def copy_config(cfg: TrainConfig) -> TrainConfig:
    return from_plain(to_dict(cfg))


def from_plain(data: dict) -> TrainConfig:
    """Rebuild a TrainConfig from `to_dict` output without re-validating."""
    kwargs = {}
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = tp(**data[f.name])
        else:
            kwargs[f.name] = data[f.name]
    return TrainConfig(**kwargs)


def presets_dir() -> Path:
    """configs/ of a source checkout, else the copy packaged with ppokit."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "configs", here.parent / "configs"):
        if candidate.is_dir():
            return candidate
    return here.parents[2] / "configs"


def available_presets() -> list[str]:
    return sorted(p.stem for p in presets_dir().glob("*.yaml"))


def load_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {str(path)!r} is a directory; give a YAML file (e.g. a run's config.yaml)"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or "not a text file"
        raise ConfigError(f"cannot read config file {str(path)!r}: {reason}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    if data is None:
        raise ConfigError(
            f"config file {str(path)!r} is empty: it sets no config key, which is most likely a"
            " mistake; write the keys to change (e.g. `algo: {lr: 1.0e-3}`), or `{}` for the"
            " defaults"
        )
    return data


def load_preset(name: str) -> TrainConfig:
    path = presets_dir() / f"{name}.yaml"
    if not path.is_file():
        names = available_presets()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint} (available: {', '.join(names)})")
    cfg = from_dict(load_yaml(path), where=f"preset {name!r}")
    cfg.preset = name
    return cfg


def load_config(
    preset: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> TrainConfig:
    """Resolve defaults <- preset or file <- overrides, and validate the result."""
    if preset and config_file:
        raise ConfigError("give either --preset or --config, not both")
    if config_file:
        cfg = from_dict(load_yaml(Path(config_file)), where=f"config file {str(config_file)!r}")
    elif preset:
        cfg = load_preset(preset)
    else:
        cfg = TrainConfig()
    if overrides:
        cfg = apply_overrides(cfg, overrides, where="command-line overrides")
    validate(cfg)
    return cfg


def config_yaml(cfg: TrainConfig) -> str:
    """The fully resolved config as YAML (config.yaml, `ppokit train --print-config`)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


def save_config(cfg: TrainConfig, path: Path) -> None:
    path.write_text(config_yaml(cfg))


def validate(cfg: TrainConfig) -> None:
    """Check a config, however it was made (files, flags, by hand in Python; `Trainer` calls
    this): every field's type and range (`check_fields`, which also stores lossless conversions
    such as 1 -> 1.0), then the rules between fields. The one place config rules live; the
    checks that need the env or the model (spaces, the numpy act step's model support) are made
    where those are built."""
    check_fields(cfg)
    a, p, e = cfg.algo, cfg.policy, cfg.eval
    if p.log_std_min >= p.log_std_max:
        raise ConfigError(
            f"policy.log_std_min {p.log_std_min} must be smaller than policy.log_std_max"
            f" {p.log_std_max}"
        )
    minibatch_size(cfg)  # raises on disagreement
    if a.kl_early_stop and a.target_kl is None:
        raise ConfigError("algo.kl_early_stop needs algo.target_kl (e.g. --algo.target_kl 0.02)")
    if a.lr_schedule == "adaptive":
        if a.target_kl is None:
            raise ConfigError("algo.lr_schedule adaptive needs algo.target_kl (e.g. 0.01)")
        if not a.min_lr <= a.lr <= a.max_lr:
            raise ConfigError(
                f"adaptive LR: algo.lr {a.lr} must lie in [min_lr {a.min_lr}, max_lr {a.max_lr}]"
            )
    if a.optimizer == "adam" and a.weight_decay:
        raise ConfigError("algo.weight_decay needs --algo.optimizer adamw")
    if a.recompute_advantages and p.memory != "none":
        raise ConfigError(
            "algo.recompute_advantages supports feedforward policies only (recurrent values"
            " depend on the stored memory states); set it false or policy.memory none"
        )
    if e.every and e.every_steps:
        raise ConfigError(
            f"set eval.every ({e.every} updates) or eval.every_steps ({e.every_steps} steps), not both"
        )
    if (e.target_return is not None or e.patience) and not (e.every or e.every_steps):
        raise ConfigError(
            "eval.target_return and eval.patience act on evaluations during training; set"
            " eval.every (updates) or eval.every_steps too, e.g. --eval.every 10"
        )
    if p.memory != "none":
        if a.bptt_length > a.num_steps:
            raise ConfigError(
                f"algo.bptt_length {a.bptt_length} is longer than the rollout (algo.num_steps"
                f" {a.num_steps}); use at most {a.num_steps}"
            )
        if a.compile:
            raise ConfigError(
                "algo.compile does not support recurrent policies (policy.memory"
                f" {p.memory}); use --algo.compile false"
            )
        if a.act_backend == "numpy":
            raise ConfigError(
                "algo.act_backend numpy runs flat MLP policies only; use auto or torch with"
                f" policy.memory {p.memory}"
            )
        if cfg.ema.decay > 0:
            raise ConfigError(
                "ema.decay does not support recurrent policies (the rollout's memory states would"
                f" be the average's, not the trained policy's); use --ema.decay 0 with"
                f" policy.memory {p.memory}"
            )


def num_sequences(cfg: TrainConfig) -> int:
    """Sequences a recurrent rollout is cut into: ceil(num_steps / bptt_length) per env."""
    return -(-cfg.algo.num_steps // cfg.algo.bptt_length) * cfg.env.num_envs


def minibatch_size(cfg: TrainConfig) -> int:
    """Samples per minibatch, from num_minibatches or minibatch_size (which must agree).

    For recurrent policies a sample is a sequence of bptt_length steps.
    """
    a = cfg.algo
    if cfg.policy.memory != "none":
        return _divide(
            cfg,
            num_sequences(cfg),
            f"{num_sequences(cfg)} sequences of algo.bptt_length {a.bptt_length} steps",
        )
    return _divide(
        cfg,
        a.num_steps * cfg.env.num_envs,
        f"num_steps {a.num_steps} x num_envs {cfg.env.num_envs}",
    )


def _divide(cfg: TrainConfig, batch: int, unit: str) -> int:
    a = cfg.algo
    if a.num_minibatches is None and a.minibatch_size is None:
        raise ConfigError("set algo.num_minibatches or algo.minibatch_size")
    if a.minibatch_size is not None:
        if a.minibatch_size <= 0 or batch % a.minibatch_size:
            raise ConfigError(
                f"algo.minibatch_size {a.minibatch_size} must divide the batch size {batch}"
                f" ({unit})"
            )
        if a.num_minibatches is not None and a.num_minibatches * a.minibatch_size != batch:
            raise ConfigError(
                f"algo.num_minibatches {a.num_minibatches} x algo.minibatch_size "
                f"{a.minibatch_size} != batch size {batch}; set only one of them"
                " (e.g. --algo.num_minibatches null)"
            )
        return a.minibatch_size
    assert a.num_minibatches is not None
    if a.num_minibatches <= 0 or batch % a.num_minibatches:
        raise ConfigError(
            f"algo.num_minibatches {a.num_minibatches} must divide the batch size {batch} ({unit})"
        )
    return batch // a.num_minibatches
