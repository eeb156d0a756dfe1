"""Throughput of ppokit, Stable-Baselines3 PPO and the bare env, side by side (HalfCheetah-v5, CPU).

One invocation measures, one contender at a time (each in a child process of this one, with
torch/OpenMP limited to one thread):

  (a) ppokit with SB3's default PPO hyperparameters: 1 env x 2048 steps, 10 epochs of 32
      minibatches of 64, 64-64 tanh actor and critic, no observation/reward normalization;
  (b) the same with 8 envs x 256 steps (batch 2048);
  (c) Stable-Baselines3 PPO with its defaults (1 env, n_steps 2048), if it is installed
      (`pip install -e ".[bench]"`);
  (d) the Gymnasium SyncVectorEnv alone (1 and 8 envs, SAME_STEP autoreset) with random actions.

For ppokit this script drives the loop itself: `Trainer.collect` (rollout) is timed apart from
`finish_rollout` + `update` (update), after one warm-up iteration: start-up (imports, building
env and model) and the first iteration are reported separately from the steady-state rate. SB3 is timed the
same way by wrapping `collect_rollouts` and `train`. Only ratios measured in one run mean much: the
machine this is run on may be busy.

Usage:
  python benchmarks/throughput.py [--timesteps 50000] [--only a,b,c,d] [--json out.json]
                                  [--ppokit-args "--algo.some_flag value ..."]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_MARKER = "THROUGHPUT_RESULT "
MUJOCO_NOISE = "compiler attribute 'settotalmass' is deprecated"
BATCH = 2048  # samples per PPO iteration for every PPO contender
CONTENDERS = ("a", "b", "c", "d")
TITLES = {
    "a": "(a) ppokit, SB3 defaults",
    "b": "(b) ppokit, 8 envs",
    "c": "(c) SB3 PPO, defaults",
    "d1": "(d) SyncVectorEnv, random actions",
    "d8": "(d) SyncVectorEnv, random actions",
}

# SB3's PPO defaults, in ppokit's config keys. SB3 does not clip the value loss (clip_range_vf
# None), normalizes advantages per minibatch, and uses Adam with eps 1e-5 and log_std_init 0.
SB3_DEFAULTS = {
    "algo.num_epochs": 10,
    "algo.num_minibatches": 32,
    "algo.minibatch_size": None,
    "algo.gamma": 0.99,
    "algo.lam": 0.95,
    "algo.clip_coef": 0.2,
    "algo.clip_value_loss": False,
    "algo.lr": 3e-4,
    "algo.lr_schedule": "constant",
    "algo.ent_coef": 0.0,
    "algo.vf_coef": 0.5,
    "algo.max_grad_norm": 0.5,
    "algo.normalize_advantages": True,
    "algo.advantage_norm_scope": "minibatch",
    "algo.adam_eps": 1e-5,
    "policy.actor_hidden": [64, 64],
    "policy.critic_hidden": [64, 64],
    "policy.activation": "tanh",
    "policy.init_noise_std": 1.0,
    "policy.normalize_obs": False,
    "algo.scale_rewards": False,
    "env.vectorization": "sync",
    "eval.episodes": 0,
    "log.progress": False,
    "log.checkpoint_every": 0,
    "device": "cpu",
    "torch_threads": 1,
}
PPOKIT_SHAPES = {"a": (1, 2048), "b": (8, 256)}


now = time.perf_counter  # the workers' clock; --clock cpu switches it to time.process_time


def iterations(timesteps: int) -> int:
    """PPO iterations of BATCH samples per contender, the first of which is the warm-up."""
    return max(2, math.ceil(timesteps / BATCH))


# ------------------------------------------------------------------------------------------------
# Workers (each runs in its own child process)
# ------------------------------------------------------------------------------------------------


def limit_threads() -> None:
    import torch

    torch.set_num_threads(1)
    # Allowed only once, before any inter-op parallel work; a RuntimeError means it is set.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)


class Timer:
    """Wraps a callable and sums the wall time spent in it."""

    def __init__(self, fn):
        self.fn, self.total, self.calls = fn, 0.0, 0

    def __call__(self, *args, **kwargs):
        t = now()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.total += now() - t
            self.calls += 1

    def reset(self) -> None:
        self.total, self.calls = 0.0, 0


def ppokit_overrides(num_envs: int, num_steps: int, env_id: str, seed: int, extra: dict) -> dict:
    over = dict(SB3_DEFAULTS)
    over.update({"env.id": env_id, "env.num_envs": num_envs, "algo.num_steps": num_steps})
    over["seed"] = seed
    over.update(extra)
    return over


def parse_ppokit_args(text: str) -> dict:
    """`--algo.x v --policy.y w` -> {"algo.x": v, ...}, parsed exactly as `ppokit train` does."""
    if not text.strip():
        return {}
    from ppokit.cli import build_parser, config_overrides

    ns = build_parser().parse_args(["train", *shlex.split(text)])
    return config_overrides(ns)


def worker_ppokit(key: str, a: argparse.Namespace) -> dict:
    t_begin = now()
    import torch

    from ppokit.config import load_config, to_dict
    from ppokit.trainer import Trainer

    limit_threads()
    t_imported = now()

    num_envs, num_steps = PPOKIT_SHAPES[key]
    extra = parse_ppokit_args(a.ppokit_args)
    n_iter = iterations(a.timesteps)
    over = ppokit_overrides(num_envs, num_steps, a.env, a.seed, extra)
    over["total_steps"] = n_iter * num_envs * num_steps
    cfg = load_config(None, overrides=over)
    batch = cfg.env.num_envs * cfg.algo.num_steps
    tmp = tempfile.TemporaryDirectory(prefix="ppokit_bench_")
    trainer = Trainer(cfg, run_dir=Path(tmp.name) / "run")
    obs = trainer.env.reset(seed=cfg.seed)
    t_built = now()

    # Where the rollout time goes: wrap the steps Trainer.collect calls (a few perf_counter calls
    # per env step, well under 1% of a step).
    ppo, env = trainer.ppo, trainer.env
    t_act, t_record, t_step = Timer(ppo.act), Timer(ppo.record), Timer(env.step)
    ppo.act, ppo.record, env.step = t_act, t_record, t_step
    inner = getattr(env, "env", None)  # the vector env inside ppokit's torch adapter, if any
    t_inner = Timer(inner.step) if callable(getattr(inner, "step", None)) else None
    if t_inner is not None:
        inner.step = t_inner

    def iteration() -> tuple[float, float, float, float]:
        nonlocal obs
        t0 = now()
        obs = trainer.collect(obs)
        t1 = now()
        trainer.episodes.add_rollout(ppo.buffer.rewards, ppo.buffer.dones)
        ppo.finish_rollout(obs)
        t2 = now()
        ppo.update()
        t3 = now()
        return t1 - t0, t3 - t1, t2 - t1, t3 - t2

    warm = iteration()
    for t in (t_act, t_record, t_step, t_inner):
        if t is not None:
            t.reset()
    collect_s = update_s = finish_s = ppo_update_s = 0.0
    for _ in range(n_iter - 1):
        c, u, f, p = iteration()
        collect_s += c
        update_s += u
        finish_s += f
        ppo_update_s += p
    trainer.env.close()
    tmp.cleanup()

    steps = (n_iter - 1) * batch
    vec_steps = t_step.calls
    startup_s = t_built - t_begin
    warmup_s = sum(warm[:2])
    per_step_us = {
        "policy_act": t_act.total / vec_steps * 1e6,
        "env_step_total": t_step.total / vec_steps * 1e6,
        "env_step_inner": t_inner.total / vec_steps * 1e6 if t_inner else None,
        "env_step_adapter": (t_step.total - t_inner.total) / vec_steps * 1e6 if t_inner else None,
        "record": t_record.total / vec_steps * 1e6,
        "collect_loop_other": (collect_s - t_act.total - t_step.total - t_record.total)
        / vec_steps
        * 1e6,
    }
    return {
        "name": TITLES[key],
        "num_envs": cfg.env.num_envs,
        "num_steps": cfg.algo.num_steps,
        "batch": batch,
        "measured_iterations": n_iter - 1,
        "measured_steps": steps,
        "import_s": t_imported - t_begin,
        "build_s": t_built - t_imported,
        "startup_s": startup_s,
        "warmup_iter_s": warmup_s,
        "warmup_rollout_s": warm[0],
        "warmup_update_s": warm[1],
        "rollout_s": collect_s,
        "update_s": update_s,
        "finish_rollout_s": finish_s,
        "ppo_update_s": ppo_update_s,
        "sps": steps / (collect_s + update_s),
        "sps_incl_startup": (steps + batch) / (startup_s + warmup_s + collect_s + update_s),
        "rollout_sps": steps / collect_s,
        "update_s_per_2048": update_s / (steps / 2048),
        "finish_rollout_s_per_2048": finish_s / (steps / 2048),
        "rollout_share": collect_s / (collect_s + update_s),
        "per_vector_step_us": per_step_us,
        "inner_vector_env": type(inner).__name__ if t_inner else None,
        "torch_threads": torch.get_num_threads(),
        "config": {k: v for k, v in to_dict(cfg).items() if k in ("env", "policy", "algo")},
        "extra_overrides": extra,
    }


def worker_sb3(a: argparse.Namespace) -> dict:
    t_begin = now()
    import warnings

    warnings.filterwarnings("ignore")
    import stable_baselines3
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.logger import configure
    from stable_baselines3.common.vec_env import DummyVecEnv

    limit_threads()
    t_imported = now()

    # As ../shared/bench/sb3_ppo.py (the anchor figures): defaults, DummyVecEnv, csv logger.
    n_envs, n_steps = 1, 2048
    batch = n_envs * n_steps
    n_iter = iterations(a.timesteps)
    env = make_vec_env(a.env, n_envs=n_envs, seed=a.seed, vec_env_cls=DummyVecEnv)
    model = PPO("MlpPolicy", env, n_steps=n_steps, device="cpu", seed=a.seed, verbose=0)
    logdir = tempfile.TemporaryDirectory(prefix="sb3log_")
    model.set_logger(configure(logdir.name, ["csv"]))
    t_built = now()

    starts: list[float] = []
    rollout: list[float] = []
    train: list[float] = []
    orig_collect, orig_train = model.collect_rollouts, model.train

    def collect(*args, **kw):
        t = now()
        starts.append(t)
        r = orig_collect(*args, **kw)
        rollout.append(now() - t)
        return r

    def train_(*args, **kw):
        t = now()
        r = orig_train(*args, **kw)
        train.append(now() - t)
        return r

    model.collect_rollouts, model.train = collect, train_
    t0 = now()
    model.learn(total_timesteps=n_iter * batch)
    t_end = now()
    env.close()
    logdir.cleanup()

    if len(starts) != n_iter or len(train) != n_iter:
        raise RuntimeError(f"expected {n_iter} SB3 iterations, saw {len(starts)}/{len(train)}")
    steps = (n_iter - 1) * batch
    steady_wall = t_end - starts[1]  # iterations 2..n, SB3's own logging between them included
    rollout_s, update_s = sum(rollout[1:]), sum(train[1:])
    startup_s = t_built - t_begin
    return {
        "name": TITLES["c"],
        "sb3_version": stable_baselines3.__version__,
        "num_envs": n_envs,
        "num_steps": n_steps,
        "batch": batch,
        "measured_iterations": n_iter - 1,
        "measured_steps": steps,
        "import_s": t_imported - t_begin,
        "build_s": t_built - t_imported,
        "startup_s": startup_s,
        "warmup_iter_s": starts[1] - t0,
        "warmup_rollout_s": rollout[0],
        "warmup_update_s": train[0],
        "rollout_s": rollout_s,
        "update_s": update_s,
        "steady_wall_s": steady_wall,
        "sps": steps / steady_wall,
        "sps_incl_startup": (steps + batch) / (startup_s + t_end - t0),
        "learn_sps": n_iter * batch / (t_end - t0),
        "rollout_sps": steps / rollout_s,
        "update_s_per_2048": update_s / (steps / 2048),
        "rollout_share": rollout_s / steady_wall,
        "torch_threads": torch.get_num_threads(),
        "note": "SB3's rollout time includes its GAE (compute_returns_and_advantage)",
    }


def worker_env(a: argparse.Namespace) -> dict:
    import statistics
    import warnings

    warnings.filterwarnings("ignore")
    import gymnasium as gym
    import numpy as np
    from gymnasium.vector import AutoresetMode, SyncVectorEnv

    out = {}
    for n in (1, 8):
        envs = SyncVectorEnv(
            [lambda: gym.make(a.env) for _ in range(n)], autoreset_mode=AutoresetMode.SAME_STEP
        )
        envs.reset(seed=a.seed)
        space = envs.single_action_space
        acts = (
            np.random.default_rng(a.seed)
            .uniform(space.low, space.high, size=(256, n, *space.shape))
            .astype(np.float32)
        )
        for i in range(200):  # warm-up
            envs.step(acts[i & 255])
        vec_steps = max(1, math.ceil(a.timesteps / n))
        rates = []
        for _ in range(3):
            t = now()
            for i in range(vec_steps):
                envs.step(acts[i & 255])
            rates.append(vec_steps * n / (now() - t))
        envs.close()
        out[f"d{n}"] = {
            "name": TITLES[f"d{n}"],
            "num_envs": n,
            "steps_per_window": vec_steps * n,
            "sps": statistics.median(rates),
            "sps_windows": rates,
        }
    return out


def run_worker(a: argparse.Namespace) -> None:
    global now
    if a.clock == "cpu":
        # CPU time of the worker process: far less sensitive than wall time to other processes
        # sharing the cores (every contender runs one thread).
        now = time.process_time
    if a.worker in PPOKIT_SHAPES:
        result = {a.worker: worker_ppokit(a.worker, a)}
    elif a.worker == "c":
        result = {"c": worker_sb3(a)}
    else:
        result = worker_env(a)
    print(RESULT_MARKER + json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def sb3_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("stable_baselines3") is not None


def git_describe() -> str:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "src"],
            cwd=REPO,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return rev + (" (src/ modified)" if dirty else "")
    except OSError:
        return "unknown"


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "gymnasium", "mujoco", "numpy", "stable-baselines3"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def spawn(key: str, a: argparse.Namespace) -> tuple[dict | None, str | None, float]:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        key,
        "--timesteps",
        str(a.timesteps),
        "--env",
        a.env,
        "--seed",
        str(a.seed),
        "--ppokit-args",
        a.ppokit_args,
        "--clock",
        a.clock,
    ]
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    src = str(REPO / "src")  # measure this checkout even if another ppokit is installed
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t = time.perf_counter()
    # Workers run in a scratch directory: MuJoCo writes MUJOCO_LOG.TXT into the working directory.
    with tempfile.TemporaryDirectory(prefix="throughput_") as cwd:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd)
    wall = time.perf_counter() - t
    result = None
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER) :])
        else:
            print(line)
    # MuJoCo prints a deprecation warning about HalfCheetah's XML for every env it builds.
    for line in proc.stderr.splitlines():
        if line.strip() and MUJOCO_NOISE not in line:
            print(line, file=sys.stderr)
    if proc.returncode != 0 or result is None:
        return None, f"worker {key} failed with exit code {proc.returncode}", wall
    return result, None, wall


def fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(results: dict) -> str:
    head = (
        f"{'contender':36s} {'envs x steps':>12s} {'start-up s':>10s} {'1st iter s':>10s}"
        f" {'SPS':>7s} {'SPS incl. start-up':>18s} {'rollout SPS':>11s} {'update s/2048':>13s}"
    )
    lines = [head, "-" * len(head)]
    for key in ("a", "b", "c", "d1", "d8"):
        r = results.get(key)
        if r is None:
            continue
        shape = (
            f"{r['num_envs']} x {r['num_steps']}" if "num_steps" in r else f"{r['num_envs']} envs"
        )
        lines.append(
            f"{r['name']:36s} {shape:>12s} {fmt(r.get('startup_s'), '.2f'):>10s}"
            f" {fmt(r.get('warmup_iter_s'), '.2f'):>10s} {fmt(r['sps'], ',.0f'):>7s}"
            f" {fmt(r.get('sps_incl_startup'), ',.0f'):>18s} {fmt(r.get('rollout_sps'), ',.0f'):>11s}"
            f" {fmt(r.get('update_s_per_2048'), '.3f'):>13s}"
        )
    return "\n".join(lines)


def breakdown(results: dict) -> str:
    lines = []
    for key in ("a", "b"):
        r = results.get(key)
        if r is None:
            continue
        p = r["per_vector_step_us"]
        inner = ""
        if p["env_step_inner"] is not None:
            inner = (
                f" ({r['inner_vector_env']} {p['env_step_inner']:.0f}"
                f" + torch adapter {p['env_step_adapter']:.0f})"
            )
        lines.append(
            f"{r['name']}: rollout {100 * r['rollout_share']:.0f}% of steady time; per vector step"
            f" (us): act {p['policy_act']:.0f}, env.step {p['env_step_total']:.0f}{inner},"
            f" record {p['record']:.0f}, loop {p['collect_loop_other']:.0f};"
            f" update per 2048: finish_rollout {r['finish_rollout_s_per_2048']:.3f} s"
            f" + PPO epochs {r['update_s_per_2048'] - r['finish_rollout_s_per_2048']:.3f} s"
        )
    r = results.get("c")
    if r is not None:
        lines.append(
            f"{r['name']}: rollout {100 * r['rollout_share']:.0f}% of steady time (GAE included);"
            f" learn() SPS incl. first iteration {r['learn_sps']:,.0f}"
        )
    return "\n".join(lines)


def ratios(results: dict) -> dict:
    out = {}
    a, b, c, d8 = (results.get(k) for k in ("a", "b", "c", "d8"))
    if a and c:
        out["a_over_c"] = {
            "value": a["sps"] / c["sps"],
            "incl_startup": a["sps_incl_startup"] / c["sps_incl_startup"],
            "target": ">= 3x",
            "met": a["sps"] / c["sps"] >= 3,
        }
    if b and d8:
        out["b_over_d8"] = {
            "value": b["sps"] / d8["sps"],
            "target": ">= 50%",
            "met": b["sps"] / d8["sps"] >= 0.5,
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="ppokit vs Stable-Baselines3 PPO vs the bare env: throughput on CPU."
    )
    p.add_argument("--timesteps", type=int, default=50_000, help="env steps per contender")
    p.add_argument("--only", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="time contenders by wall clock, or by their process's CPU time (for a busy machine)",
    )
    p.add_argument(
        "--ppokit-args",
        default="",
        metavar="FLAGS",
        help='extra `ppokit train` override flags for (a) and (b), e.g. "--algo.lr 1e-3"',
    )
    p.add_argument("--env", default="HalfCheetah-v5", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)

    if a.worker:
        run_worker(a)
        return 0

    only = [k.strip() for k in a.only.split(",") if k.strip()]
    unknown = sorted(set(only) - set(CONTENDERS))
    if unknown:
        p.error(f"--only: unknown contender(s) {', '.join(unknown)} (choose from a,b,c,d)")
    if a.ppokit_args and {"a", "b"} & set(only):
        sys.path.insert(0, str(REPO / "src"))
        try:  # fail now, not after minutes of benchmarking
            parse_ppokit_args(a.ppokit_args)
        except SystemExit:
            print(f"error: --ppokit-args {a.ppokit_args!r} is not valid", file=sys.stderr)
            return 2

    meta = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "clock": a.clock,
        "command": " ".join(shlex.quote(x) for x in [Path(sys.executable).name, *sys.argv]),
        "env": a.env,
        "timesteps_per_contender": a.timesteps,
        "ppo_iterations": iterations(a.timesteps),
        "batch": BATCH,
        "ppokit_args": a.ppokit_args,
        "ppokit_git": git_describe(),
        "cpu_count": os.cpu_count(),
        "machine": platform.platform(),
        "versions": versions(),
        "loadavg_before": {},
        "worker_wall_s": {},
    }
    results: dict = {}
    skipped: dict = {}
    print(
        f"throughput on {a.env}, CPU, 1 torch thread per contender, {a.timesteps} env steps each"
        f" ({iterations(a.timesteps)} PPO iterations of {BATCH}, the first one a warm-up)",
        flush=True,
    )
    for key in CONTENDERS:
        if key not in only:
            continue
        if key == "c" and not sb3_available():
            msg = 'stable-baselines3 is not installed: skipping (c) (pip install -e ".[bench]")'
            print(msg, flush=True)
            skipped["c"] = msg
            continue
        meta["loadavg_before"][key] = os.getloadavg()
        print(f"running {key} ... (load average {os.getloadavg()[0]:.2f})", flush=True)
        res, err, wall = spawn(key, a)
        meta["worker_wall_s"][key] = wall
        if err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            skipped[key] = err
            continue
        results.update(res)
    meta["loadavg_after"] = os.getloadavg()

    rat = ratios(results)
    print()
    print(table(results))
    print()
    text = breakdown(results)
    if text:
        print(text)
        print()
    if "a_over_c" in rat:
        r = rat["a_over_c"]
        print(
            f"(a)/(c) ppokit vs SB3, SPS: {r['value']:.2f}x (target >= 3x)"
            f"; including start-up: {r['incl_startup']:.2f}x"
        )
    else:
        print("(a)/(c): not measured (needs a and c)")
    if "b_over_d8" in rat:
        print(
            f"(b)/(d, 8 envs) ppokit vs bare env: {100 * rat['b_over_d8']['value']:.0f}%"
            " (target >= 50%)"
        )
    else:
        print("(b)/(d, 8 envs): not measured (needs b and d)")
    print(
        "load average before each contender: "
        + ", ".join(f"{k} {v[0]:.2f}" for k, v in meta["loadavg_before"].items())
    )

    if a.json:
        path = Path(a.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"meta": meta, "results": results, "ratios": rat, "skipped": skipped}
        path.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {path}")
    return 1 if any(k != "c" for k in skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
