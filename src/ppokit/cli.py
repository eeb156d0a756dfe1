"""`ppokit` command line. Every config field is a flag, derived from the dataclasses in config.py."""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Sequence
from typing import Any

from ppokit import config as C
from ppokit.choices import BANDS, DEFAULT_METRIC, MUJOCO_TASKS
from ppokit.errors import ConfigError, PPOKitError

if typing.TYPE_CHECKING:
    from ppokit.trainer import Trainer

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


def add_config_flags(parser: argparse.ArgumentParser, shown: C.TrainConfig | None = None) -> None:
    """One flag per config field: --section.field (also --section.field-with-dashes); the help
    shows each field's value in `shown` (the config the other flags choose) or its default."""
    defaults = C.to_dict(shown if shown is not None else C.TrainConfig())
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
        limits = C.range_help(tp, C.field_range(f))
        group.add_argument(
            *flags,
            dest=f"cfg:{name}",
            default=argparse.SUPPRESS,
            metavar=C.type_name(tp).upper()
            if typing.get_origin(tp) is not typing.Literal
            else "{" + C.type_name(tp) + "}",
            help=f"{C.field_help(f)} (default: {value}{'; ' + limits if limits else ''})",
        )
    for old in C.RENAMED:  # old names still work (mapped with a note), not listed
        flags = [f"--{old}", f"--{old.replace('_', '-')}"]
        parser.add_argument(
            *flags, dest=f"cfg:{old}", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )


def config_overrides(ns: argparse.Namespace) -> dict[str, Any]:
    types = {name: tp for name, tp, _ in C.iter_fields()}
    types |= {old: types[new] for old, new in C.RENAMED.items()}
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


def add_source_flags(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    source = parser.add_argument_group("config source")
    source.add_argument(
        "--preset",
        help=f"name of a preset in configs/ (default: pendulum; with --env alone, the recipe of"
        f" the env's family). Presets: {', '.join(C.available_presets())}",
    )
    source.add_argument("--config", help="path of a YAML config file (same keys as config.yaml)")
    source.add_argument(
        "--print-config",
        action="store_true",
        help="print the fully resolved config as YAML and exit (nothing is trained or written)",
    )
    return source


def package_version() -> str:
    """The installed distribution's version (package metadata), else ppokit.__version__."""
    from importlib import metadata

    try:
        return metadata.version("ppokit")
    except metadata.PackageNotFoundError:  # run from a source tree that is not installed
        from ppokit import __version__

        return __version__


class _VersionAction(argparse.Action):
    """--version: reads the package metadata only when asked (not on every parser build)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=argparse.SUPPRESS, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> typing.NoReturn:
        print(f"ppokit {package_version()}")
        parser.exit(0)


def build_parser(shown: tuple[C.TrainConfig, str] | None = None) -> argparse.ArgumentParser:
    """The parser; `shown` is the config (and where it came from) whose values `train --help`
    and `verify --help` list next to each flag."""
    parser = _Parser(
        prog="ppokit", description="PPO for continuous control and robotics.", allow_abbrev=False
    )
    parser.add_argument("--version", action=_VersionAction, help="print the version and exit")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="print the full traceback of an error, not only its one-line message",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    shown_cfg, shown_from = shown if shown is not None else (None, "the built-in defaults")
    train = sub.add_parser(
        "train",
        help="train a policy",
        description=(
            "Train with PPO. The config is resolved as defaults <- --preset or --config <- flags, "
            "and written to <run dir>/config.yaml. Without --preset or --config the pendulum preset"
            " is used, or with --env ID the recipe of the env's family (MuJoCo, discrete, classic"
            " control, Dict observations). Flags take YAML values: 3e-4, true, null, [64,64]."
            f" The values listed below are those of {shown_from}; give --preset/--config/--env"
            " with --help to list theirs."
        ),
        allow_abbrev=False,
    )
    source = add_source_flags(train)
    source.add_argument(
        "--resume",
        metavar="PATH",
        help="continue a run from its directory or a checkpoint file; flags given override its config",
    )
    source.add_argument(
        "--run-dir", help="exact run directory to write (default: <log.root>/<name>)"
    )
    source.add_argument(
        "--overwrite",
        action="store_true",
        help="train a new run into a --run-dir that holds one: the old run is moved aside to"
        " <dir>.old-<time> (never deleted); without it such a directory is refused",
    )
    add_config_flags(train, shown_cfg)
    train.add_argument(
        "--wandb",
        action="store_const",
        const="true",
        dest="cfg:log.wandb",
        default=argparse.SUPPRESS,
        help="log to Weights & Biases (same as --log.wandb true; --log.wandb_mode offline works without a network)",
    )
    add_eval_parser(sub)
    add_verify_parser(sub, shown_cfg)
    add_plot_parser(sub)
    add_export_parser(sub)
    add_graph_parser(sub)
    add_studio_parser(sub)
    add_bench_parser(sub)
    add_tune_parser(sub)
    add_check_env_parser(sub)
    return parser


def add_eval_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a trained policy (returns, videos, value analysis)",
        description=(
            "Run whole episodes with a trained policy (deterministic by default) and print the"
            " mean and std of return and length. PATH is a run directory, a checkpoint, or an"
            " exported .onnx/.pt policy."
        ),
        allow_abbrev=False,
    )
    p.add_argument("path", metavar="PATH", help="run directory, checkpoint or exported policy")
    add_checkpoint_flag(p)
    p.add_argument("--episodes", type=int, default=10, help="episodes to run (default: 10)")
    p.add_argument(
        "--stochastic", action="store_true", help="sample actions instead of the mean/argmax"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the env resets (default: 0)")
    p.add_argument("--env", help="evaluate on another env id with the same spaces")
    p.add_argument(
        "--max-episode-steps", type=int, help="override the env's time limit (truncation)"
    )
    p.add_argument(
        "--env-kwargs",
        metavar="YAML",
        help="env constructor arguments merged into the training run's (nested mappings merge"
        " key by key), e.g. '{commands: {resample_time: 5.0}}'",
    )
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument(
        "--record",
        metavar="DIR",
        help="write an MP4 per episode (episode_000.mp4, ...) from rgb_array rendering; works"
        " headless (MuJoCo through EGL/OSMesa)",
    )
    p.add_argument(
        "--record-episodes",
        type=int,
        metavar="K",
        help="record only the first K episodes (default: all)",
    )
    p.add_argument("--render", action="store_true", help="show the episodes in a live window")
    p.add_argument(
        "--analyze-value",
        metavar="PNG",
        help="compare the critic's V(s_t) with the realised discounted return; writes PNG and"
        " adds explained variance and per-episode bias to the output",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default: cpu)")


def add_verify_parser(sub: argparse._SubParsersAction, shown: C.TrainConfig | None) -> None:
    p = sub.add_parser(
        "verify",
        help="check PPO's implementation details on the objects a config builds",
        description=(
            "Build the env, model and PPO of a config (defaults <- --preset or --config <- flags,"
            " as for train), run one rollout and one update, and check the implementation details"
            " on those objects: optimizer, initialisation, log-std, normalization, minibatches,"
            " advantages, clipping, truncation bootstrap, LR schedule, KL stop, EMA, precision."
            " Prints detail / expected / found / ok; exits 1 if a row fails."
        ),
        allow_abbrev=False,
    )
    add_source_flags(p)
    add_config_flags(p, shown)


def resolve_config(
    preset: str | None, config_file: str | None, overrides: dict[str, Any]
) -> tuple[C.TrainConfig, str | None]:
    """The config of a train/verify command line, and the one-line note of the recipe when the
    env's family chose it (no --preset or --config, but --env)."""
    if preset or config_file or "env.id" not in overrides:
        return C.load_config(
            preset or (None if config_file else "pendulum"), config_file, overrides
        ), None
    from ppokit.recipes import pick_recipe, recipe_config

    typed = C.apply_overrides(C.TrainConfig(), overrides, "command-line overrides")
    recipe = pick_recipe(typed.env.id, typed.env.kwargs)
    cfg = C.apply_overrides(
        recipe_config(recipe, typed.env.id), overrides, "command-line overrides"
    )
    C.validate(cfg)
    return cfg, recipe.announce(typed.env.id)


def print_config(cfg: C.TrainConfig, note: str | None) -> int:
    if note:
        print(f"# {note}")
    print(C.config_yaml(cfg), end="")
    return 0


def cmd_verify(ns: argparse.Namespace) -> int:
    from ppokit.device import resolve_device
    from ppokit.verify import format_table, verify

    cfg, note = resolve_config(ns.preset, ns.config, config_overrides(ns))
    if ns.print_config:
        return print_config(cfg, note)
    if note:
        print(note)
    rows = verify(cfg, resolve_device(cfg.device))
    print(f"ppokit verify: {cfg.preset or ns.config} ({cfg.env.id}, {cfg.env.num_envs} envs)")
    print(format_table(rows))
    failed = [r.detail for r in rows if not r.ok]
    if failed:
        print(f"{len(failed)} of {len(rows)} checks failed: {', '.join(failed)}")
        return 1
    print(f"all {len(rows)} checks passed")
    return 0


def add_checkpoint_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--checkpoint",
        default="latest",
        metavar="NAME",
        help="which checkpoint of a run directory: latest, best (the best evaluation during"
        " training, --eval.every) or update_N (default: latest)",
    )


def checkpoint_path(ns: argparse.Namespace) -> str:
    """PATH, or the checkpoint --checkpoint names in the run directory PATH."""
    if ns.checkpoint == "latest":
        return ns.path
    from ppokit.checkpoint import resolve_checkpoint

    return str(resolve_checkpoint(ns.path, ns.checkpoint))


def add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot learning curves of runs",
        description=(
            "Learning curves (episode return against env steps) from runs' metrics.csv. Runs"
            " whose config differs only in the seed are drawn as one mean curve with a band."
        ),
        allow_abbrev=False,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories")
    p.add_argument(
        "--out", default="learning_curves.png", help="output PNG (default: learning_curves.png)"
    )
    p.add_argument(
        "--metric", default=DEFAULT_METRIC, help=f"metrics.csv column (default: {DEFAULT_METRIC})"
    )
    p.add_argument(
        "--band", choices=BANDS, default="minmax", help="band over seeds (default: minmax)"
    )
    p.add_argument(
        "--smooth", type=int, default=1, metavar="N", help="moving average over N points"
    )
    p.add_argument("--title", help="figure title (default: the env ids)")


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a policy to ONNX or TorchScript",
        description=(
            "Export the deterministic policy (raw observation -> env action, normalization and"
            " action scaling inside) and verify it against torch on 256 random observations."
        ),
        allow_abbrev=False,
    )
    p.add_argument("path", metavar="PATH", help="run directory or checkpoint")
    add_checkpoint_flag(p)
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"), help="file format")
    p.add_argument(
        "--out",
        help="output file (default: <run dir>/policy.onnx or policy.pt, or next to a checkpoint)",
    )


def cmd_train(ns: argparse.Namespace) -> int:
    from ppokit.faults import HeldInterrupt

    # Ctrl-C while torch and MuJoCo import and the envs build is held, then stops the run at
    # its first step boundary (an update-0 checkpoint), as one during training does. Every
    # import that loads torch belongs inside: a Ctrl-C raised in torch's import can be lost.
    with HeldInterrupt() as start_up:
        trainer = build_trainer(ns)
    if trainer is None:  # --print-config
        return 0
    if start_up.interrupted:
        trainer.request_stop()
    if trainer.is_main:  # torchrun: rank 0 reports for every rank
        print(f"run directory: {trainer.run_dir}", flush=True)
    result = trainer.train()
    # Under torchrun the process group is left at exit (distributed.setup registers teardown).
    if not trainer.is_main:
        return 130 if result.interrupted else 0
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


def build_trainer(ns: argparse.Namespace) -> Trainer | None:
    """The Trainer `ppokit train` asks for; None after --print-config has printed the config."""
    from ppokit.trainer import Trainer

    overrides = config_overrides(ns)
    if ns.resume:
        from ppokit.checkpoint import load_checkpoint

        saved = C.from_dict(load_checkpoint(ns.resume)["config"], where="checkpoint config")
        base = C.load_config(ns.preset, ns.config) if ns.preset or ns.config else saved
        cfg = C.apply_overrides(base, overrides, "command-line overrides")
        C.validate(cfg)
        note = None
    else:
        cfg, note = resolve_config(ns.preset, ns.config, overrides)
    if ns.print_config:
        print_config(cfg, note)
        return None
    if note:
        print(note, flush=True)
    return Trainer(cfg, run_dir=ns.run_dir, resume=ns.resume, overwrite=ns.overwrite)


def cmd_eval(ns: argparse.Namespace) -> int:
    from ppokit.evaluate import run_eval

    report = run_eval(
        checkpoint_path(ns),
        episodes=ns.episodes,
        deterministic=not ns.stochastic,
        seed=ns.seed,
        env_id=ns.env,
        max_episode_steps=ns.max_episode_steps,
        env_kwargs=ns.env_kwargs,
        json_path=ns.json,
        record_dir=ns.record,
        record_episodes=ns.record_episodes,
        render=ns.render,
        analyze_value=ns.analyze_value,
        device=ns.device,
    )
    mode = "deterministic" if report["deterministic"] else "stochastic"
    print(
        f"eval {report['env']} ({report['episodes']} episode{'s' if report['episodes'] != 1 else ''},"
        f" {mode}, seed {report['seed']}):"
        f" return {report['mean_return']:.1f} +- {report['std_return']:.1f},"
        f" length {report['mean_length']:.0f} +- {report['std_length']:.0f}"
    )
    for video in report.get("videos", []):
        print(f"video: {video['path']} ({video['frames']} frames)")
    if "value_analysis" in report:
        va = report["value_analysis"]
        print(
            f"value analysis: explained variance {va['explained_variance']:.3f},"
            f" bias (V - G) {va['bias']:+.3g}, rmse {va['rmse']:.3g}; figure: {va['png']}"
        )
    if ns.json:
        print(f"results written to {ns.json}")
    return 0


def cmd_plot(ns: argparse.Namespace) -> int:
    from ppokit.plot import plot_runs

    summary = plot_runs(
        ns.runs, ns.out, metric=ns.metric, band=ns.band, smooth_window=ns.smooth, title=ns.title
    )
    for group in summary["groups"]:
        final = "no data" if group["final"] is None else f"final {group['final']:.1f}"
        print(f"{group['label']}: {final}")
    print(f"plot written to {summary['out']}")
    return 0


def cmd_export(ns: argparse.Namespace) -> int:
    from ppokit.export import export_policy

    result = export_policy(checkpoint_path(ns), ns.format, ns.out)
    print(
        f"exported {result.format} policy to {result.path}; verified on {result.samples} random"
        f" observations: max abs difference {result.max_abs_diff:.2e}"
    )
    return 0


def add_graph_parser(sub: argparse._SubParsersAction) -> None:
    graph = sub.add_parser(
        "graph",
        help="validate, run and export node graphs",
        description=(
            "Node graphs (JSON, or ComfyUI/DNNE workflows in UI or API format): the training loop"
            " composed from nodes. docs/graphs.md explains them; docs/nodes.md lists the nodes."
        ),
        allow_abbrev=False,
    )
    gsub = graph.add_subparsers(dest="graph_command", required=True, parser_class=_Parser)
    p = gsub.add_parser(
        "validate", help="check a graph and report every problem", allow_abbrev=False
    )
    p.add_argument("graph", metavar="GRAPH", help="graph file (.json)")
    add_env_map_flag(p)
    p = gsub.add_parser(
        "run",
        help="run a graph",
        description="Run a graph until every PPOTrainerNode has used its total_steps.",
        allow_abbrev=False,
    )
    p.add_argument("graph", metavar="GRAPH", help="graph file (.json)")
    p.add_argument("--out", help="output directory (default: runs/<graph name>_s<seed>_<time>)")
    p.add_argument("--device", help="torch device (default: the graph's, cpu)")
    p.add_argument("--seed", type=int, help="override the graph's seed")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NODE.PARAM=VALUE",
        help="override a node param (YAML value), e.g. --set trainer.total_steps=20000",
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="when --out already holds a run, move it aside (to <out>.old-<time>) instead of refusing",
    )
    add_env_map_flag(p)
    p = gsub.add_parser(
        "export",
        help="write a graph as a standalone Python script (or as native JSON)",
        description=(
            "Write the program `graph run` executes as a standalone script (OUT.py), or convert"
            " a ComfyUI workflow to a native graph (OUT.json)."
        ),
        allow_abbrev=False,
    )
    p.add_argument("graph", metavar="GRAPH", help="graph file (.json)")
    p.add_argument(
        "-o",
        "--out",
        required=True,
        help="output file: .py (script), .json (native graph) or .comfyui.json (a ComfyUI workflow)",
    )
    add_env_map_flag(p)
    p = gsub.add_parser(
        "nodes",
        help="list node types, or describe one",
        description="The node types and their ports and params, from their declarations.",
        allow_abbrev=False,
    )
    p.add_argument("name", nargs="?", help="a node type to describe")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="the declarations as JSON")
    fmt.add_argument(
        "--comfyui", action="store_true", help="ComfyUI node definitions (/object_info JSON)"
    )
    fmt.add_argument("--markdown", action="store_true", help="the reference (docs/nodes.md)")


def env_map_item(text: str) -> tuple[str, str]:
    """--env-map NAME=ENV_ID (parsed here: the studio's start-up imports no node module)."""
    name, sep, env_id = text.partition("=")
    if not sep or not name.strip() or not env_id.strip():
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected NAME=ENV_ID, e.g. IsaacGymCartpole=CartPole-v1"
        )
    return name.strip(), env_id.strip()


def add_env_map_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--env-map",
        action="append",
        default=[],
        type=env_map_item,
        metavar="NAME=ENV_ID",
        help="run a workflow's env NAME as the Gymnasium env ENV_ID (simulators ppokit does not"
        " ship), e.g. --env-map IsaacGymCartpole=CartPole-v1",
    )


def add_studio_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "studio",
        help="the ComfyUI editor for node graphs, backed by ppokit (needs ppokit[studio])",
        description=(
            "Serve the ComfyUI web editor with ppokit's nodes: draw or open a graph (the examples"
            " are templates), press Run, and watch progress and learning curves on the nodes."
            " Each queued workflow runs as `ppokit graph run` does, in a worker process, into a"
            " run directory under --runs. docs/studio.md explains it."
        ),
        allow_abbrev=False,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8188, help="port (default: 8188)")
    p.add_argument(
        "--listen",
        nargs="?",
        const="0.0.0.0",
        metavar="ADDR",
        help="bind ADDR (default 0.0.0.0: every interface) instead of loopback; anyone who can"
        " reach it can run code-free but CPU-heavy jobs and read its runs' images",
    )
    p.add_argument(
        "--user-dir",
        default="studio",
        help="folder of the editor's settings and saved workflows (<dir>/workflows; default: studio)",
    )
    p.add_argument(
        "--runs",
        default="runs/studio",
        help="folder of the runs' directories (default: runs/studio)",
    )
    p.add_argument(
        "--curve-every",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="seconds between learning-curve images on a trainer node (default: 5)",
    )
    add_env_map_flag(p)


def cmd_studio(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from ppokit.extras import require

    require("aiohttp", "studio", "ppokit studio")
    from ppokit.studio.server import serve

    host = ns.listen or ns.host
    if ns.listen:
        print(
            f"warning: --listen binds {host}: anyone who can reach this machine's port {ns.port}"
            " can queue runs and read their curves; there is no login",
            file=sys.stderr,
        )
    serve(host, ns.port, Path(ns.user_dir), Path(ns.runs), dict(ns.env_map), ns.curve_every)
    return 0


def cmd_graph(ns: argparse.Namespace) -> int:
    from ppokit.nodes import commands

    return commands.COMMANDS[ns.graph_command](ns)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench", help="benchmarks: learning quality over seeds", allow_abbrev=False
    )
    bsub = bench.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    p = bsub.add_parser(
        "learning",
        help="train presets over seeds and tabulate deterministic evaluations",
        description=(
            "Train each preset for each seed (a `ppokit train` subprocess per run), evaluate the"
            " final policy deterministically, and write OUT/results.{csv,json,md} and"
            " OUT/learning_curves.png (one panel per task, mean and ±1 std over seeds). Runs live"
            " in OUT/runs/<task>/seed<N>; a finished run with the same config is reused, so an"
            " interrupted benchmark continues where it stopped."
        ),
        allow_abbrev=False,
    )
    p.add_argument(
        "--tasks",
        nargs="+",
        default=list(MUJOCO_TASKS),
        metavar="PRESET",
        help=f"presets to run (default: {' '.join(MUJOCO_TASKS)})",
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds per task (default: 3)")
    p.add_argument("--first-seed", type=int, default=1, help="first seed (default: 1)")
    p.add_argument(
        "--steps",
        type=float,
        default=None,
        help="environment steps per run, e.g. 1e6 (default: each preset's total_steps)",
    )
    p.add_argument(
        "--episodes", type=int, default=10, help="deterministic evaluation episodes (default: 10)"
    )
    p.add_argument("--jobs", type=int, default=1, help="runs trained at the same time (default: 1)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key in every run (YAML value), e.g. --set algo.lr=1e-4",
    )
    p.add_argument(
        "--out",
        default="runs/bench_learning",
        help="output directory (default: runs/bench_learning)",
    )


def cmd_bench(ns: argparse.Namespace) -> int:
    from pathlib import Path

    from ppokit.bench import BenchSpec, parse_overrides, run_learning_bench

    if ns.steps is not None and ns.steps != int(ns.steps):
        raise ConfigError(f"--steps must be a whole number, got {ns.steps}")
    spec = BenchSpec(
        tasks=list(ns.tasks),
        seeds=list(range(ns.first_seed, ns.first_seed + max(ns.seeds, 0))),
        steps=None if ns.steps is None else int(ns.steps),
        episodes=ns.episodes,
        overrides=parse_overrides(ns.set),
        out=Path(ns.out),
        jobs=ns.jobs,
    )
    result = run_learning_bench(spec, log=lambda line: print(line, flush=True))
    print(result["table"], end="")
    print(
        f"results written to {spec.out} (results.csv, results.json, results.md, learning_curves.png)"
    )
    return 0


def add_tune_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search hyperparameters with Optuna (one machine or many)",
        description=(
            "An Optuna study over a search space of config keys. Each trial is a `ppokit train`"
            " subprocess with the sampled values; its evaluations during training feed the"
            " pruner, and its final deterministic evaluation (over --seeds seeds) is the"
            " objective. --jobs J workers share the study through --storage; every machine"
            " running the same command on a shared storage (postgresql://, or a journal file on a"
            " shared filesystem) adds workers, and running it again continues the study. Writes"
            " OUT/best.yaml (runs as `ppokit train --config OUT/best.yaml`), trials.csv,"
            " history.png, parallel_coordinate.png, importance.png and summary.md. docs/tune.md"
            " is the guide."
        ),
        allow_abbrev=False,
    )
    source = p.add_argument_group("what to tune")
    source.add_argument("--preset", help="preset the trials start from")
    source.add_argument("--config", help="YAML config file the trials start from")
    source.add_argument(
        "--env", help="env id (with no --preset/--config: the recipe of its family, as train)"
    )
    source.add_argument(
        "--space",
        metavar="YAML",
        help="search space: dotted config keys -> {low, high[, log, step]} or {choices: [...]}"
        " (default: the space of the recipe family; --print-space shows it)",
    )
    source.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fix a config key in every trial (YAML value), e.g. --set env.num_envs=8",
    )
    source.add_argument(
        "--print-space", action="store_true", help="print the search space as YAML and exit"
    )
    budget = p.add_argument_group("budget and objective")
    budget.add_argument(
        "--trials",
        type=int,
        default=30,
        help="finished trials (complete, pruned or failed) the study ends with, over every"
        " worker and machine (default: 30)",
    )
    budget.add_argument(
        "--steps", type=float, default=100_000, help="env steps per trial (default: 1e5)"
    )
    budget.add_argument(
        "--seeds", type=int, default=1, help="seeds per trial, trained side by side (default: 1)"
    )
    budget.add_argument("--first-seed", type=int, default=1, help="first seed (default: 1)")
    budget.add_argument(
        "--aggregate",
        default="mean",
        metavar="mean|qP",
        help="objective over seeds: mean, or the P-th percentile, e.g. q25 (default: mean)",
    )
    budget.add_argument(
        "--eval-episodes",
        type=int,
        default=10,
        help="episodes of each trial's final deterministic evaluation (default: 10)",
    )
    budget.add_argument(
        "--eval-every",
        type=int,
        metavar="STEPS",
        help="env steps between the evaluations the pruner reads (default: --steps / 10)",
    )
    budget.add_argument(
        "--periodic-episodes",
        type=int,
        default=5,
        help="episodes of each evaluation during training (default: 5)",
    )
    budget.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="start no trial after this many seconds (running trials finish)",
    )
    search = p.add_argument_group("search")
    search.add_argument(
        "--sampler", choices=("tpe", "random"), default="tpe", help="Optuna sampler (default: tpe)"
    )
    search.add_argument(
        "--sampler-seed", type=int, help="seed of the sampler (worker k uses SEED + k)"
    )
    search.add_argument(
        "--pruner",
        choices=("median", "halving", "none"),
        default="median",
        help="median: stop a trial below the median of earlier trials at the same step (not in"
        " the first third of training); halving: successive halving (default: median)",
    )
    search.add_argument(
        "--prune-after",
        type=int,
        default=5,
        metavar="N",
        help="the median pruner prunes once N trials have finished (default: 5)",
    )
    search.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="do not run the base config's own values as a new study's first trial",
    )
    scale = p.add_argument_group("workers and storage")
    scale.add_argument(
        "--jobs", type=int, default=1, help="worker processes on this machine (default: 1)"
    )
    scale.add_argument(
        "--storage",
        metavar="URL",
        help="Optuna storage: sqlite:///PATH, postgresql://USER:PASSWORD@HOST/DB, mysql://...,"
        " or journal:PATH (a journal file; no heartbeats) (default: sqlite:///OUT/study.db)",
    )
    scale.add_argument(
        "--study",
        help="study name (default: <preset or env id>-<steps>); an existing one continues",
    )
    scale.add_argument(
        "--heartbeat",
        type=int,
        default=30,
        metavar="SECONDS",
        help="heartbeat interval of a worker's trial (RDB storages); a trial silent for 2x this"
        " (+2 s) is failed and re-queued (default: 30)",
    )
    scale.add_argument(
        "--launcher",
        metavar="CMD",
        help="program that runs `-m ppokit train ...` for each trial (default: this Python),"
        ' e.g. "torchrun --standalone --nproc_per_node 2"',
    )
    p.add_argument("--out", default="runs/tune", help="output directory (default: runs/tune)")


def cmd_tune(ns: argparse.Namespace) -> int:
    from ppokit.bench import parse_overrides

    if ns.steps != int(ns.steps):
        raise ConfigError(f"--steps must be a whole number, got {ns.steps}")
    from ppokit.tune import TuneSpec, print_space, run_tune

    spec = TuneSpec(
        trials=ns.trials,
        steps=int(ns.steps),
        preset=ns.preset,
        config=ns.config,
        env_id=ns.env,
        seeds=ns.seeds,
        first_seed=ns.first_seed,
        space=ns.space,
        study=ns.study,
        storage=ns.storage,
        jobs=ns.jobs,
        timeout=ns.timeout,
        out=ns.out,
        aggregate=ns.aggregate,
        sampler=ns.sampler,
        sampler_seed=ns.sampler_seed,
        pruner=ns.pruner,
        prune_after=ns.prune_after,
        eval_every=ns.eval_every,
        eval_episodes=ns.eval_episodes,
        periodic_episodes=ns.periodic_episodes,
        overrides=parse_overrides(ns.set),
        launcher=ns.launcher,
        heartbeat=ns.heartbeat,
        baseline=ns.baseline,
    )
    if ns.print_space:
        print(print_space(spec), end="")
        return 0
    try:
        result = run_tune(spec, log=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("interrupted: the same command continues the study", file=sys.stderr)
        return 130
    states = ", ".join(f"{n} {s.lower()}" for s, n in result["states"].items())
    print(f"study {result['study']!r}: {result['trials']} trials ({states})")
    if "best_value" in result:
        print(f"best: trial {result['best_trial']}, {result['best_value']:.2f}")
        print(f"results written to {ns.out} (best.yaml, trials.csv, summary.md, figures)")
        return 0
    print(f"no trial completed; see {ns.out}/summary.md and trials.csv")
    return 1


def add_check_env_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-env",
        help="check that an environment is ready for PPO with ppokit",
        description=(
            "Run Gymnasium's env checker and ppokit's checks on an environment: spaces the"
            " policy supports, finite observations and rewards over random steps, reset"
            " determinism by seed, truncation (time limit), reward scale and step rate. Prints"
            " check / verdict / detail; exits 1 if a check fails."
        ),
        allow_abbrev=False,
    )
    p.add_argument(
        "env",
        metavar="ID|module:factory",
        help="a registered Gymnasium id (also module:ID), or module:factory, a callable in an"
        " importable module that returns a gymnasium.Env",
    )
    p.add_argument("--steps", type=int, default=1000, help="random steps to take (default: 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of resets and actions (default: 0)")


def cmd_check_env(ns: argparse.Namespace) -> int:
    from ppokit.check_env import format_table, run_check_env, verdict_line

    rows, name = run_check_env(ns.env, ns.steps, ns.seed)
    print(f"ppokit check-env: {name} ({ns.steps} random steps, seed {ns.seed})")
    print(format_table(rows))
    print(verdict_line(rows))
    return 1 if any(r.verdict == "fail" for r in rows) else 0


COMMANDS = {
    "bench": cmd_bench,
    "train": cmd_train,
    "eval": cmd_eval,
    "verify": cmd_verify,
    "plot": cmd_plot,
    "export": cmd_export,
    "graph": cmd_graph,
    "studio": cmd_studio,
    "check-env": cmd_check_env,
    "tune": cmd_tune,
}


def help_config(argv: Sequence[str]) -> tuple[C.TrainConfig, str] | None:
    """For `train --help` / `verify --help`: the config that --preset, --config and --env on the
    same line choose, so the help lists its values rather than the built-in defaults."""
    if not argv or argv[0] not in ("train", "verify") or not {"-h", "--help"} & set(argv):
        return None
    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--preset", "--config", "--env", "--env.id"):
        pre.add_argument(flag)
    known, _ = pre.parse_known_args(argv[1:])
    env_id = known.env or getattr(known, "env.id")
    cfg, _ = resolve_config(known.preset, known.config, {"env.id": env_id} if env_id else {})
    if known.config:
        return cfg, f"config file {known.config}"
    if known.preset or not env_id:
        return cfg, f"preset {cfg.preset}"
    return cfg, f"the recipe for {env_id} (preset {cfg.preset} with env.id {env_id})"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug anywhere on the line (`ppokit train --debug ...` as well as `ppokit --debug train`)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        parser = build_parser(help_config(argv))
        ns = parser.parse_args(argv)
        return COMMANDS[ns.command](ns)
    except PPOKitError as e:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if debug:
            raise
        # Training handles Ctrl-C itself (it checkpoints); this is one before or after it.
        print("interrupted", file=sys.stderr)
        return 130
