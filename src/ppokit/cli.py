"""`ppokit` command line. Every config field is a flag, derived from the dataclasses in config.py."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from typing import Any

from ppokit import config as C
from ppokit.errors import PPOKitError

SHORTCUTS = {"--env": "env.id"}
NOT_FLAGS = {"preset"}  # recorded in config.yaml; set with --preset


def _parse_field_value(text: str, tp: Any) -> Any:
    """Strings stay strings for str fields; everything else is read with YAML rules."""
    args = typing.get_args(tp)
    is_str = tp is str or (
        typing.get_origin(tp) is typing.Literal and all(isinstance(a, str) for a in args)
    )
    if not is_str and str in args:
        is_str = True
    if is_str:
        return None if text in ("null", "None", "~") and type(None) in args else text
    return C.parse_cli_value(text)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field: --section.field (also --section.field-with-dashes)."""
    defaults = C.to_dict(C.TrainConfig())
    groups: dict[str, argparse._ArgumentGroup] = {}
    for name, tp, f in C.iter_fields():
        if name in NOT_FLAGS:
            continue
        section = name.split(".")[0] if "." in name else "run"
        group = groups.setdefault(section, parser.add_argument_group(f"{section} options"))
        value = defaults
        for part in name.split("."):
            value = value[part]
        flags = [f"--{name}"]
        if "_" in name:
            flags.append(f"--{name.replace('_', '-')}")
        flags += [s for s, target in SHORTCUTS.items() if target == name]
        group.add_argument(
            *flags,
            dest=f"cfg:{name}",
            default=argparse.SUPPRESS,
            metavar=C.type_name(tp).upper()
            if typing.get_origin(tp) is not typing.Literal
            else "{" + C.type_name(tp) + "}",
            help=f"{C.field_help(f)} (default: {value})",
        )


def config_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    types = {name: tp for name, tp, _ in C.iter_fields()}
    out = {}
    for key, text in vars(ns).items():
        if key.startswith("cfg:"):
            name = key[4:]
            out[name] = _parse_field_value(text, types[name])
    return out


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, with did-you-mean for unknown config flags."""

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("unrecognized arguments"):
            unknown = [a for a in message.split(":", 1)[1].split() if a.startswith("--")]
            if unknown:
                key = unknown[0][2:].split("=")[0].replace("-", "_")
                valid = [n for n, _, _ in C.iter_fields()]
                message = str(C.unknown_key_error(key, valid, "command-line flags"))
        self.exit(2, f"error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="ppokit", description="PPO for continuous control and robotics.", allow_abbrev=False
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser(
        "train",
        help="train a policy",
        description=(
            "Train with PPO. The config is resolved as defaults <- --preset or --config <- flags, "
            "and written to <run dir>/config.yaml. Flags take YAML values: 3e-4, true, null, [64,64]."
            f" Presets: {', '.join(C.available_presets())}."
        ),
        allow_abbrev=False,
    )
    source = train.add_argument_group("config source")
    source.add_argument("--preset", help="name of a preset in configs/ (default: pendulum)")
    source.add_argument("--config", help="path of a YAML config file (same keys as config.yaml)")
    source.add_argument(
        "--resume",
        metavar="PATH",
        help="continue a run from its directory or a checkpoint file; flags given override its config",
    )
    source.add_argument(
        "--run-dir", help="exact run directory to write (default: <log.root>/<name>)"
    )
    add_config_flags(train)
    train.add_argument(
        "--wandb",
        action="store_const",
        const="true",
        dest="cfg:log.wandb",
        default=argparse.SUPPRESS,
        help="log to Weights & Biases (same as --log.wandb true; --log.wandb_mode offline works without a network)",
    )
    return parser


def cmd_train(ns: argparse.Namespace) -> int:
    from ppokit.trainer import Trainer

    overrides = config_overrides(ns)
    if ns.resume:
        from ppokit.checkpoint import load_checkpoint

        saved = C.from_dict(load_checkpoint(ns.resume)["config"], where="checkpoint config")
        base = C.load_config(ns.preset, ns.config) if ns.preset or ns.config else saved
        cfg = C.apply_overrides(base, overrides, "command-line overrides")
        C.validate(cfg)
    else:
        preset = ns.preset if (ns.preset or ns.config) else "pendulum"
        cfg = C.load_config(preset, ns.config, overrides)
    trainer = Trainer(cfg, run_dir=ns.run_dir, resume=ns.resume)
    print(f"run directory: {trainer.run_dir}", flush=True)
    result = trainer.train()
    if result.eval is not None:
        e = result.eval
        print(
            f"eval ({e['episodes']} episodes, deterministic): return {e['mean_return']:.1f} +- {e['std_return']:.1f},"
            f" length {e['mean_length']:.0f}",
            flush=True,
        )
    print(
        f"run written to {trainer.run_dir} (config.yaml, metrics.csv, TensorBoard events, checkpoints/)"
    )
    return 130 if result.interrupted else 0


COMMANDS = {"train": cmd_train}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    try:
        return COMMANDS[ns.command](ns)
    except PPOKitError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
