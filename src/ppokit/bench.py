"""`ppokit bench learning`: train presets over seeds, evaluate each final policy
deterministically, and write the results table (CSV, JSON, Markdown) and a grid of learning
curves (one panel per task, mean and a band over seeds).

Each run is a `ppokit train` subprocess, so runs are isolated and `--jobs 2` trains two at a
time. A run whose `bench.json` exists with the same config is reused, so an interrupted
benchmark continues where it stopped and a finished one can be re-tabulated for free; a
finished run is never overwritten by one with another config (a sweep point needs its own
--out).
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from ppokit import config as C
from ppokit.errors import ConfigError, OutputError

# Published PPO figures at 1M steps (training-episode returns unless noted) and ppokit's targets,
# printed next to our results. None: no published figure at this budget.
ANCHORS = {
    "halfcheetah": {"cleanrl": 1443.0, "rl_zoo": 5819.0, "target": 5800.0},
    "hopper": {"cleanrl": 2383.0, "rl_zoo": 2410.0, "target": 3000.0},
    "walker2d": {"cleanrl": 2288.0, "rl_zoo": 3479.0, "target": 4000.0},
    "ant": {"cleanrl": None, "rl_zoo": 1327.0, "target": 3000.0},
    "humanoid": {"cleanrl": 716.0, "rl_zoo": None, "target": 1500.0},
    "invertedpendulum": {"cleanrl": 963.0, "rl_zoo": None, "target": 1000.0},
}
RUN_RECORD = "bench.json"
CURVE_METRIC = "charts/episode_return"


@dataclass
class RunRecord:
    task: str
    env_id: str
    seed: int
    steps: int
    eval_mean: float
    eval_std: float
    eval_episodes: int
    train_return: float  # mean of the last logged training episodes (log.episode_window)
    wall_s: float
    run_dir: str


@dataclass
class BenchSpec:
    tasks: list[str]
    seeds: list[int]
    steps: int | None  # None: each preset's total_steps
    episodes: int
    overrides: dict
    out: Path
    jobs: int = 1


def parse_overrides(items: Sequence[str]) -> dict:
    """`--set key=value` pairs into a config-override dict, keys checked against the config."""
    valid = [name for name, _, _ in C.iter_fields()]
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set takes KEY=VALUE (e.g. algo.lr=1e-4), got {item!r}")
        if key not in valid:
            raise C.unknown_key_error(key, valid, "--set")
        out[key] = C.parse_cli_value(text)
    return out


def check_spec(spec: BenchSpec) -> None:
    presets = C.available_presets()
    for task in spec.tasks:
        if task not in presets:
            raise ConfigError(f"--tasks: no preset {task!r}; presets: {', '.join(presets)}")
    if not spec.seeds:
        raise ConfigError("--seeds must be >= 1")
    if spec.steps is not None and spec.steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {spec.steps}")
    if spec.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {spec.episodes}")
    if spec.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {spec.jobs}")
    for task in spec.tasks:  # every config must validate, and fit stored runs, before training
        for seed in spec.seeds:
            cfg = C.load_config(task, None, run_overrides(spec, task, seed))
            reusable(run_dir(spec, task, seed) / RUN_RECORD, C.to_dict(cfg))


def run_overrides(spec: BenchSpec, task: str, seed: int) -> dict:
    overrides = {**spec.overrides, "seed": seed, "eval.episodes": spec.episodes}
    overrides["log.progress"] = False
    if spec.steps is not None:
        overrides["total_steps"] = spec.steps
    return overrides


def run_dir(spec: BenchSpec, task: str, seed: int) -> Path:
    return spec.out / "runs" / task / f"seed{seed}"


def training_outcome(run: Path) -> tuple[int, float]:
    """(environment steps trained, the last logged mean of recent training-episode returns).

    Steps are whole rollouts, so they can exceed total_steps; the return is NaN if no episode
    finished."""
    from ppokit.plot import read_run

    curve = read_run(run, CURVE_METRIC)
    finite = curve.values[np.isfinite(curve.values)]
    return int(curve.steps[-1]), float(finite[-1]) if len(finite) else math.nan


def reusable(record_path: Path, config: dict) -> RunRecord | None:
    """The stored record if that run finished with exactly this config; None if it did not
    finish (or its record is unreadable). A finished run with another config is an error: it
    is never overwritten silently."""
    if not record_path.is_file():
        return None
    try:
        data = json.loads(record_path.read_text())
        stored = data["config"]
        record = RunRecord(**data["record"])
    except (ValueError, TypeError, KeyError):
        return None
    if stored != config:  # compare as resolved configs (a record may use renamed keys)
        stored, config = _resolved(stored, str(record_path)), _resolved(config, "bench config")
    if stored != config:
        from ppokit.plot import _flatten

        old, new = _flatten(stored), _flatten(config)
        keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys[:4])
        raise ConfigError(
            f"{str(record_path.parent)!r} holds a finished run with another config ({changes});"
            " give another --out, or delete that run directory to retrain it"
        )
    return record


def _resolved(config: dict, where: str) -> dict:
    """`config` as a full config dict under today's key names (config.RENAMED); as it is if it
    does not load."""
    with contextlib.suppress(ConfigError):
        return C.to_dict(C.from_dict(config, where=where))
    return config


def train_and_evaluate(spec: BenchSpec, task: str, seed: int, threads: int, log) -> RunRecord:
    overrides = run_overrides(spec, task, seed)
    cfg = C.load_config(task, None, overrides)
    config = C.to_dict(cfg)
    folder = run_dir(spec, task, seed)
    record = reusable(folder / RUN_RECORD, config)
    if record is not None:
        log(f"{task} seed {seed}: reusing {folder}")
        return replace(record, run_dir=str(folder))  # the out dir may have moved since
    if folder.exists():  # an unfinished run: start it again
        shutil.rmtree(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "ppokit", "train", "--preset", task, "--run-dir", str(folder)]
    for key, value in overrides.items():
        command += [f"--{key}", json.dumps(value) if not isinstance(value, str) else value]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    log(f"{task} seed {seed}: training {cfg.total_steps} steps in {folder}")
    start = time.perf_counter()
    with (spec.out / "runs" / task / f"seed{seed}.log").open("w") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    wall = time.perf_counter() - start
    if code != 0:
        raise OutputError(
            f"{task} seed {seed} failed (exit {code}); see {folder.parent / f'seed{seed}.log'}"
        )
    result = json.loads((folder / "eval.json").read_text())
    steps, train_return = training_outcome(folder)
    record = RunRecord(
        task=task,
        env_id=cfg.env.id,
        seed=seed,
        steps=steps,
        eval_mean=float(result["mean_return"]),
        eval_std=float(result["std_return"]),
        eval_episodes=int(result["episodes"]),
        train_return=train_return,
        wall_s=round(wall, 1),
        run_dir=str(folder),
    )
    payload = {"config": config, "record": asdict(record)}
    (folder / RUN_RECORD).write_text(json.dumps(payload, indent=2) + "\n")
    log(
        f"{task} seed {seed}: eval {record.eval_mean:.1f} +- {record.eval_std:.1f},"
        f" training return {record.train_return:.1f}, {record.wall_s:.0f} s"
    )
    return record


def summarize(records: Sequence[RunRecord]) -> list[dict]:
    """Per task, in first-seen order: mean and (population) std over seeds."""
    tasks = list(dict.fromkeys(r.task for r in records))
    rows = []
    for task in tasks:
        runs = [r for r in records if r.task == task]
        evals = np.array([r.eval_mean for r in runs])
        trains = np.array([r.train_return for r in runs])
        walls = np.array([r.wall_s for r in runs])
        rows.append(
            {
                "task": task,
                "env_id": runs[0].env_id,
                "steps": runs[0].steps,
                "seeds": [r.seed for r in runs],
                "eval_mean": float(evals.mean()),
                "eval_std": float(evals.std()),
                "eval_per_seed": [float(x) for x in evals],
                "train_mean": float(np.nanmean(trains)) if np.isfinite(trains).any() else None,
                "train_std": float(np.nanstd(trains)) if np.isfinite(trains).any() else None,
                "wall_s_mean": float(walls.mean()),
                **{k: v for k, v in ANCHORS.get(task, {}).items()},
            }
        )
    return rows


def markdown_table(summary: Sequence[dict]) -> str:
    def fmt(x: float | None) -> str:
        return "—" if x is None else f"{x:.0f}"

    lines = [
        "| task | steps | seeds | deterministic eval | training return | wall time / run |"
        " target | CleanRL | RL-Zoo |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in summary:
        train = (
            "—"
            if row["train_mean"] is None
            else f"{row['train_mean']:.0f} ± {row['train_std']:.0f}"
        )
        lines.append(
            f"| {row['env_id']} | {row['steps']:,} | {len(row['seeds'])} |"
            f" {row['eval_mean']:.0f} ± {row['eval_std']:.0f} | {train} |"
            f" {row['wall_s_mean'] / 60:.1f} min | {fmt(row.get('target'))} |"
            f" {fmt(row.get('cleanrl'))} | {fmt(row.get('rl_zoo'))} |"
        )
    return "\n".join(lines) + "\n"


def plot_grid(records: Sequence[RunRecord], out: Path) -> None:
    """One panel per task: mean training return over seeds with a ±1 std band, each seed's
    curve, and each seed's final deterministic evaluation as a marker at its last step."""
    from ppokit.plot import _pyplot, _save, aggregate, read_run

    tasks = list(dict.fromkeys(r.task for r in records))
    plt = _pyplot()
    cols = min(3, len(tasks))
    rows = math.ceil(len(tasks) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        runs = [r for r in records if r.task == task]
        curves = [read_run(r.run_dir, CURVE_METRIC) for r in runs]
        steps, mean, std, _, _ = aggregate(curves)
        for k, curve in enumerate(curves):  # each seed, faint: a failed seed shows by itself
            ok = np.isfinite(curve.values)
            label = "each seed" if k == 0 else None
            ax.plot(curve.steps[ok], curve.values[ok], lw=0.7, color="0.6", alpha=0.7, label=label)
        ax.plot(steps, mean, lw=1.8, label=f"training return, mean of {len(runs)} seeds")
        ax.fill_between(steps, mean - std, mean + std, alpha=0.25, lw=0, label="±1 std")
        ax.scatter(
            [r.steps for r in runs],
            [r.eval_mean for r in runs],
            marker="x",
            color="k",
            zorder=3,
            label="final deterministic eval",
        )
        target = ANCHORS.get(task, {}).get("target")
        if target is not None:
            ax.axhline(target, color="0.5", ls="--", lw=1, label="target")
        ax.set_title(runs[0].env_id)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    axes.flat[0].set_ylabel("episode return")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    _save(fig, out)


def write_outputs(records: Sequence[RunRecord], out: Path) -> dict:
    summary = summarize(records)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(records[0])))
        writer.writeheader()
        for r in records:
            writer.writerow(asdict(r))
    (out / "results.json").write_text(
        json.dumps({"runs": [asdict(r) for r in records], "tasks": summary}, indent=2) + "\n"
    )
    table = markdown_table(summary)
    (out / "results.md").write_text(table)
    plot_grid(records, out / "learning_curves.png")
    return {"summary": summary, "table": table}


def run_learning_bench(spec: BenchSpec, log=print) -> dict:
    from ppokit.outputs import make_dir, output_dir
    from ppokit.plot import _pyplot

    check_spec(spec)
    _pyplot()  # the curve grid needs matplotlib: fail now, not after hours of training
    make_dir(output_dir(spec.out, "benchmark output"), "benchmark output")
    threads = max(1, (os.cpu_count() or 1) // spec.jobs)
    jobs = [(task, seed) for task in spec.tasks for seed in spec.seeds]
    with ThreadPoolExecutor(max_workers=spec.jobs) as pool:
        futures = [
            pool.submit(train_and_evaluate, spec, task, seed, threads, log) for task, seed in jobs
        ]
        records = [f.result() for f in futures]
    return write_outputs(records, spec.out)
