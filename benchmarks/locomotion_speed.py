"""Speed of the locomotion task: the env alone and `ppokit train` on it (CPU), one command.

    python benchmarks/locomotion_speed.py                                   # today's env
    python benchmarks/locomotion_speed.py --env ppokit/AntLocomotionBatched-v0 \
        --preset ant-locomotion-batched                                     # the batched env

(1) env only: `make_env` of `--env` with `--num-envs` envs (64), uniform random actions, `--steps`
    vector steps per repeat after a warm-up; steps/s = env steps (vector steps x envs) / wall time.
(2) training: the `--preset` (its own env count unless `--train-envs`, pointed at `--env`) for
    `--iterations` PPO iterations after one warm-up iteration, exactly as `Trainer.train` runs
    them (collect, finish_rollout, update); steps/s = samples / (rollout + update wall time).

Each is repeated `--repeats` times and the median is reported with every repeat and the 1-minute
load average (`os.getloadavg`) before each, since the machine is shared. torch runs one thread.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def load() -> float:
    return round(os.getloadavg()[0], 2)


def env_only(env_id: str, num_envs: int, steps: int, repeats: int, kwargs: dict) -> dict:
    import torch

    from ppokit.config import EnvConfig
    from ppokit.envs import make_env

    env = make_env(EnvConfig(id=env_id, num_envs=num_envs, kwargs=kwargs))
    try:
        space = env.action_space
        g = torch.Generator().manual_seed(0)
        low = torch.as_tensor(space.low, dtype=torch.float32)
        high = torch.as_tensor(space.high, dtype=torch.float32)
        actions = [low + (high - low) * torch.rand(num_envs, *space.shape, generator=g)]
        actions += [low + (high - low) * torch.rand(num_envs, *space.shape, generator=g)]
        env.reset(seed=0)
        for k in range(20):  # warm-up
            env.step(actions[k % 2])
        runs = []
        for _ in range(repeats):
            before = load()
            t0 = time.perf_counter()
            for k in range(steps):
                env.step(actions[k % 2])
            runs.append({"sps": steps * num_envs / (time.perf_counter() - t0), "load": before})
    finally:
        env.close()
    return {"median_sps": statistics.median(r["sps"] for r in runs), "runs": runs}


def training(
    preset: str, env_id: str, num_envs: int | None, iterations: int, repeats: int, sets: dict
) -> dict:
    from ppokit.config import load_config
    from ppokit.trainer import Trainer

    overrides = {
        "env.id": env_id,
        "torch_threads": 1,
        "log.progress": False,
        "log.checkpoint_every": 0,
        "log.root": str(tempfile.mkdtemp(prefix="ppokit_loco_speed_")),
        "eval.episodes": 0,
        **sets,
    }
    if num_envs is not None:
        overrides["env.num_envs"] = num_envs
    cfg = load_config(preset, overrides=overrides)
    trainer = Trainer(cfg)
    ppo, env = trainer.ppo, trainer.env
    samples = cfg.algo.num_steps * cfg.env.num_envs
    obs = env.reset(seed=1)
    runs = []
    try:
        for r in range(repeats + 1):  # the first repeat is one warm-up iteration
            before = load()
            rollout = update = 0.0
            for _ in range(1 if r == 0 else iterations):
                t0 = time.perf_counter()
                obs = trainer.collect(obs)
                t1 = time.perf_counter()
                ppo.finish_rollout(obs)
                ppo.update()
                t2 = time.perf_counter()
                rollout, update = rollout + t1 - t0, update + t2 - t1
            if r > 0:
                runs.append(
                    {
                        "sps": iterations * samples / (rollout + update),
                        "rollout_share": rollout / (rollout + update),
                        "load": before,
                    }
                )
    finally:
        env.close()
    return {
        "median_sps": statistics.median(r["sps"] for r in runs),
        "num_envs": cfg.env.num_envs,
        "samples_per_iteration": samples,
        "act": ppo.paths.act,
        "update": ppo.paths.update,
        "runs": runs,
    }


def fmt(runs: list) -> str:
    return ", ".join(f"{r['sps']:,.0f}" for r in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="ppokit/AntLocomotion-v0")
    parser.add_argument("--env-kwargs", default="{}", help="JSON dict of env kwargs")
    parser.add_argument("--num-envs", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="vector steps per env-only repeat")
    parser.add_argument("--preset", default="ant-locomotion")
    parser.add_argument("--train-envs", type=int, default=None, help="default: the preset's")
    parser.add_argument("--iterations", type=int, default=2, help="PPO iterations per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--set", nargs="*", default=[], help="training overrides key=value")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import torch
    import yaml

    torch.set_num_threads(1)
    kwargs = json.loads(args.env_kwargs)
    sets = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
    out: dict = {"env": args.env, "uptime_load_start": os.getloadavg()}
    e = env_only(args.env, args.num_envs, args.steps, args.repeats, kwargs)
    out["env_only"] = e
    loads = ", ".join(f"{r['load']}" for r in e["runs"])
    print(
        f"env only, {args.env}, {args.num_envs} envs: median {e['median_sps']:,.0f} steps/s"
        f" (repeats {fmt(e['runs'])}; load {loads})",
        flush=True,
    )
    if not args.skip_training:
        t = training(args.preset, args.env, args.train_envs, args.iterations, args.repeats, sets)
        out["training"] = t
        loads = ", ".join(f"{r['load']}" for r in t["runs"])
        print(
            f"training, --preset {args.preset} on {args.env} ({t['num_envs']} envs,"
            f" {t['samples_per_iteration']} samples/iteration, act {t['act']}, update"
            f" {t['update']}): median {t['median_sps']:,.0f} steps/s (repeats"
            f" {fmt(t['runs'])}; rollout share"
            f" {statistics.median(r['rollout_share'] for r in t['runs']):.0%}; load {loads})",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
