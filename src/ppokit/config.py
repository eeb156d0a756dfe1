"""Typed configuration: dataclasses <- YAML preset/file <- command-line overrides.

Every field carries a one-line help text; the CLI, the YAML schema and the error messages are all
derived from these dataclasses, never written by hand.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from ppokit.errors import ConfigError


def opt(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help text (mutable defaults are copied per instance)."""
    if isinstance(default, (list, dict)):
        value = default
        return field(
            default_factory=lambda: typing.cast(Any, type(value))(value),
            metadata={"help": help},
            **kwargs,
        )
    return field(default=default, metadata={"help": help}, **kwargs)


@dataclass
class EnvConfig:
    id: str = opt(
        "Pendulum-v1", "Gymnasium environment id (any registered id, e.g. HalfCheetah-v5)"
    )
    num_envs: int = opt(8, "number of parallel environments")
    vectorization: Literal["sync", "async"] = opt(
        "sync", "sync: all envs in this process; async: one subprocess per env"
    )
    max_episode_steps: int | None = opt(None, "override the env's time limit (truncation)")
    kwargs: dict = opt({}, "extra keyword arguments for gymnasium.make")
    normalize_obs: bool = opt(True, "running mean/std observation normalization inside the model")
    obs_clip: float = opt(10.0, "clip normalized observations to +-obs_clip")
    scale_rewards: bool = opt(True, "divide rewards by the std of the discounted return")
    reward_clip: float = opt(10.0, "clip scaled rewards to +-reward_clip (0 disables)")
    finite_horizon: bool = opt(
        False,
        "the time limit is part of the task: treat truncation as termination (no bootstrap"
        " from the value of the final observation; docs/gpu.md)",
    )


@dataclass
class PolicyConfig:
    actor_hidden: list[int] = opt([64, 64], "hidden layer sizes of the actor MLP")
    critic_hidden: list[int] = opt([64, 64], "hidden layer sizes of the critic MLP")
    activation: Literal["tanh", "elu", "relu", "silu", "gelu"] = opt(
        "tanh", "hidden-layer activation"
    )
    init_noise_std: float = opt(
        0.5,
        "initial action std as a fraction of the action range (high - low; an unbounded"
        " dimension counts as [-1, 1]), or in env units with noise_std_relative false",
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
    memory_hidden: int = opt(128, "units of the recurrent core")
    memory_layers: int = opt(1, "layers of the recurrent core")
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
    num_steps: int = opt(2048, "rollout length per environment between updates")
    num_epochs: int = opt(10, "optimisation epochs over each rollout")
    num_minibatches: int | None = opt(
        32,
        "minibatches per epoch (set this or minibatch_size; both must agree); recurrent"
        " policies split sequences of bptt_length steps, not steps",
    )
    minibatch_size: int | None = opt(
        None,
        "samples per minibatch (set this or num_minibatches; both must agree); for recurrent"
        " policies it counts sequences of bptt_length steps",
    )
    bptt_length: int = opt(
        24,
        "recurrent policies: length of the sequences (truncated BPTT) cut from each env's"
        " rollout; a minibatch counts sequences",
    )
    gamma: float = opt(0.99, "discount factor")
    lam: float = opt(0.95, "GAE lambda")
    clip_coef: float = opt(0.2, "PPO ratio clip range")
    clip_value_loss: bool = opt(True, "clip the value loss around the old values")
    value_clip_coef: float | None = opt(None, "value clip range (default: clip_coef)")
    vf_coef: float = opt(0.5, "value loss coefficient")
    ent_coef: float = opt(0.0, "entropy bonus coefficient")
    max_grad_norm: float = opt(0.5, "global gradient-norm clip (0 disables)")
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
        None, "KL target: early-stop threshold and the adaptive LR's set point"
    )
    kl_early_stop: bool = opt(
        False, "end the whole update when a minibatch's approx KL exceeds target_kl"
    )
    optimizer: Literal["adam", "adamw"] = opt("adam", "optimizer (eps 1e-5)")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    adam_eps: float = opt(1e-5, "Adam epsilon")
    lr: float = opt(3e-4, "initial learning rate")
    lr_schedule: Literal["constant", "linear", "cosine", "adaptive"] = opt(
        "constant", "constant | linear to 0 | cosine to lr*lr_floor | KL-adaptive"
    )
    lr_floor: float = opt(0.1, "cosine schedule ends at lr * lr_floor")
    min_lr: float = opt(1e-6, "lower bound of the adaptive LR")
    max_lr: float = opt(1e-3, "upper bound of the adaptive LR (larger values unlearn policies)")
    lr_factor: float = opt(
        1.5, "adaptive LR divides/multiplies by this when KL > 2x / < 0.5x target"
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
    )


@dataclass
class LogConfig:
    root: str = opt("runs", "directory under which run directories are created")
    run_name: str | None = opt(None, "run directory name (default: <preset|env>_s<seed>_<time>)")
    checkpoint_every: int = opt(50, "write a checkpoint every this many updates (0: only at end)")
    keep_checkpoints: int = opt(3, "how many periodic checkpoints to keep (latest.pt always kept)")
    progress: bool = opt(True, "show a progress bar")
    wandb: bool = opt(False, "log to Weights & Biases as well")
    wandb_project: str = opt("ppokit", "W&B project")
    wandb_mode: Literal["online", "offline", "disabled"] = opt("online", "W&B mode")
    episode_window: int = opt(100, "episode return/length are averaged over this many episodes")


@dataclass
class EvalConfig:
    episodes: int = opt(10, "episodes of the final deterministic evaluation (0 skips it)")
    every: int = opt(
        0,
        "evaluate deterministically every this many updates during training, log eval/* and keep"
        " the best policy in checkpoints/best.pt (0: never)",
    )
    every_steps: int = opt(
        0, "as eval.every, in env steps (rounded up to whole updates); set one of the two"
    )
    periodic_episodes: int = opt(10, "episodes of each evaluation during training")
    target_return: float | None = opt(
        None, "stop training once an evaluation during training reaches this mean return"
    )
    patience: int = opt(
        0,
        "stop training after this many evaluations during training without a new best (0: never)",
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
    )
    seed: int = opt(1, "random seed (torch, numpy, env resets)")
    device: str = opt("auto", "auto | cpu | cuda | cuda:N")
    precision: Literal["fp32", "bf16"] = opt(
        "fp32",
        "bf16: the update's forward and backward under bfloat16 autocast, fp32 master weights"
        " and optimizer (CUDA, and CPUs torch supports it on)",
    )
    torch_threads: int | None = opt(1, "torch intra-op threads (1 is fastest for small MLPs)")
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


def field_help(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


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
    """Set dotted keys (``algo.lr``) on a copy of cfg, with type checks and did-you-mean errors."""
    fields = {name: (tp, f) for name, tp, f in iter_fields()}
    cfg = copy_config(cfg)
    for key, value in overrides.items():
        if key not in fields:
            raise unknown_key_error(key, list(fields), where)
        tp, _ = fields[key]
        value = coerce(value, tp, key)
        obj = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            obj = getattr(obj, p)
        setattr(obj, leaf, value)
    return cfg


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
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {e}") from None
    return data or {}


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
    """Cross-field checks that types alone cannot express."""
    a = cfg.algo

    def positive(name: str, value: float) -> None:
        if value <= 0:
            raise ConfigError(f"{name} must be > 0, got {value}")

    positive("env.num_envs", cfg.env.num_envs)
    positive("algo.num_steps", a.num_steps)
    positive("algo.num_epochs", a.num_epochs)
    positive("algo.lr", a.lr)
    positive("total_steps", cfg.total_steps)
    if not 0 <= a.gamma <= 1:
        raise ConfigError(f"algo.gamma must be in [0, 1], got {a.gamma}")
    if not 0 <= a.lam <= 1:
        raise ConfigError(f"algo.lam must be in [0, 1], got {a.lam}")
    positive("policy.init_noise_std", cfg.policy.init_noise_std)
    if cfg.policy.log_std_min >= cfg.policy.log_std_max:
        raise ConfigError("policy.log_std_min must be smaller than policy.log_std_max")
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
        if a.lr_factor <= 1:
            raise ConfigError(f"algo.lr_factor must be > 1, got {a.lr_factor}")
    if a.optimizer == "adam" and a.weight_decay:
        raise ConfigError("algo.weight_decay needs --algo.optimizer adamw")
    if a.recompute_advantages and cfg.policy.memory != "none":
        raise ConfigError(
            "algo.recompute_advantages supports feedforward policies only (recurrent values"
            " depend on the stored memory states); set it false or policy.memory none"
        )
    e = cfg.eval
    for name in ("episodes", "every", "every_steps", "patience"):
        if getattr(e, name) < 0:
            raise ConfigError(f"eval.{name} must be >= 0, got {getattr(e, name)}")
    positive("eval.periodic_episodes", e.periodic_episodes)
    if e.every and e.every_steps:
        raise ConfigError(
            f"set eval.every ({e.every} updates) or eval.every_steps ({e.every_steps} steps), not both"
        )
    if (e.target_return is not None or e.patience) and not (e.every or e.every_steps):
        raise ConfigError(
            "eval.target_return and eval.patience act on evaluations during training; set"
            " eval.every (updates) or eval.every_steps too, e.g. --eval.every 10"
        )
    if not 0.0 <= cfg.ema.decay < 1.0:
        raise ConfigError(f"ema.decay must be in [0, 1) (0 disables), got {cfg.ema.decay}")
    p = cfg.policy
    positive("policy.memory_hidden", p.memory_hidden)
    positive("policy.memory_layers", p.memory_layers)
    positive("algo.bptt_length", a.bptt_length)
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
