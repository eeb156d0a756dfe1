"""Throughput of ppokit on its batched reference task (ppokit/TorchPointMass-v0): SPS, the share
of wall time spent in the learner vs the env, and peak memory, at 256 / 1024 / 4096 envs.

The training configuration is the `pointmass-4096` preset (24 steps per env per update, 5
epochs of 4 minibatches, 64-64 ELU MLPs) with only `env.num_envs` changed. Each env count runs in
a child process of this one (so its peak RSS is its own) and does, after one warm-up iteration:

  (1) `--iterations` training iterations exactly as `Trainer.train` runs them (collect, GAE,
      update), timed per phase with one device synchronisation at each phase's end only;
  (2) the env alone for the same number of steps with actions drawn on the device.

env share = (2) / (1); learner share = 1 - env share (act, record incl. V(final obs), GAE and
update). The same script runs unchanged on CUDA (`--device cuda`), where it also reports the
peak CUDA memory; `--compile-act` times the act step compiled (`algo.compile_act`), and
`--act-backend numpy|torch` forces the act step's backend (`algo.act_backend`; auto picks NumPy
up to 16 envs).

Usage:
  python benchmarks/batched_envs.py [--device cpu|cuda] [--envs 256,1024,4096] [--iterations 3]
                                    [--threads 1] [--compile-act] [--act-backend auto]
                                    [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULT_MARKER = "BATCHED_RESULT "


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    num_envs: int,
    device_name: str,
    iterations: int,
    threads: int,
    compile_act: bool,
    act_backend: str = "auto",
):
    import torch

    from ppokit.config import load_config
    from ppokit.trainer import Trainer

    torch.set_num_threads(threads)
    overrides = {
        "env.num_envs": num_envs,
        "device": device_name,
        "torch_threads": threads,
        "log.progress": False,
        "log.checkpoint_every": 0,
        "log.root": str(Path(__import__("tempfile").mkdtemp()) / "runs"),
        "eval.episodes": 0,
        "algo.compile_act": compile_act,
        "algo.act_backend": act_backend,
    }
    cfg = load_config("pointmass-4096", overrides=overrides)
    trainer = Trainer(cfg)
    device, ppo, env = trainer.device, trainer.ppo, trainer.env
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    obs = env.reset(seed=1)
    phases = {"rollout": 0.0, "update": 0.0}
    for i in range(iterations + 1):  # the first iteration warms up (allocations, compilation)
        sync(device)
        t0 = time.perf_counter()
        obs = trainer.collect(obs)
        sync(device)
        t1 = time.perf_counter()
        ppo.finish_rollout(obs)
        ppo.update()
        sync(device)
        t2 = time.perf_counter()
        if i > 0:
            phases["rollout"] += t1 - t0
            phases["update"] += t2 - t1
    steps = iterations * cfg.algo.num_steps
    low = torch.as_tensor(env.action_space.low, device=device)
    high = torch.as_tensor(env.action_space.high, device=device)
    actions = [low + (high - low) * torch.rand(num_envs, len(low), device=device) for _ in range(8)]
    sync(device)
    t0 = time.perf_counter()
    for k in range(steps):
        env.step(actions[k % 8])
    sync(device)
    env_time = time.perf_counter() - t0
    total = phases["rollout"] + phases["update"]
    result = {
        "num_envs": num_envs,
        "device": str(device),
        "iterations": iterations,
        "samples": steps * num_envs,
        "sps": steps * num_envs / total,
        "rollout_s": phases["rollout"] / iterations,
        "update_s": phases["update"] / iterations,
        "env_s": env_time / iterations,
        "env_share": env_time / total,
        "learner_share": 1.0 - env_time / total,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "act_backend": ppo.paths.act,  # torch, numpy or compiled
        "compile_act": compile_act,
    }
    if device.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--envs", default="256,1024,4096")
    parser.add_argument("--iterations", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--compile-act", action="store_true")
    parser.add_argument("--act-backend", default="auto", choices=("auto", "torch", "numpy"))
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = measure(
            args.child,
            args.device,
            args.iterations,
            args.threads,
            args.compile_act,
            args.act_backend,
        )
        print(RESULT_MARKER + json.dumps(result), flush=True)
        return 0
    results = []
    for n in [int(x) for x in args.envs.split(",")]:
        cmd = [sys.executable, __file__, "--child", str(n), "--device", args.device]
        cmd += ["--iterations", str(args.iterations), "--threads", str(args.threads)]
        if args.compile_act:
            cmd.append("--compile-act")
        cmd += ["--act-backend", args.act_backend]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith(RESULT_MARKER)]
        if out.returncode or not lines:
            print(out.stdout + out.stderr, file=sys.stderr)
            return 1
        results.append(json.loads(lines[0][len(RESULT_MARKER) :]))
    machine = platform.processor() or platform.machine()
    print(f"device {args.device}, {args.threads} thread(s), {machine}")
    print(
        "| envs | SPS | rollout s/iter | update s/iter | env s/iter | env share | learner share"
        " | peak RSS MB | act step |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in results:
        extra = f" (CUDA peak {r['peak_cuda_mb']:.0f} MB)" if "peak_cuda_mb" in r else ""
        print(
            f"| {r['num_envs']} | {r['sps']:,.0f} | {r['rollout_s']:.3f} | {r['update_s']:.3f} |"
            f" {r['env_s']:.3f} | {100 * r['env_share']:.1f}% | {100 * r['learner_share']:.1f}% |"
            f" {r['peak_rss_mb']:.0f}{extra} |"
            f" {r['act_backend']}{' compiled' if r['compile_act'] else ''} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
