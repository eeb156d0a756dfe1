"""The GPU check's measurements (run by benchmarks/gpu_check.sh, which installs what is missing).

Rows of the table it prints (Markdown):
  1. the batched torch env (ppokit/TorchPointMass-v0, the `pointmass-4096` preset) at 4096 envs:
     training SPS, learner share of wall time, peak GPU memory (benchmarks/batched_envs.py's
     measurement);
  2. `pointmass-4096` learning: a seeded training run to the preset's total_steps, its final
     deterministic evaluation return and wall time;
  3. the update's accelerators: SPS with precision fp32/bf16 x algo.compile off/on;
  4. data-parallel over 2 processes with NCCL (`torchrun --nproc_per_node 2`), if more than one
     GPU is present.

`--quick` shrinks everything (256 envs, 1 iteration, 25k learning steps, compile rows skipped)
for the CPU dry run the tests exercise (`--device cpu --quick`).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def rows_table(rows: list[tuple[str, str, str]]) -> str:
    out = ["| check | result | notes |", "| --- | --- | --- |"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(out)


def train_sps(device: str, num_envs: int, iterations: int, overrides: dict) -> dict:
    """SPS of `pointmass-4096` (with `overrides`) over `iterations` after one warm-up
    iteration (compilation happens there), timed as Trainer.train runs them."""
    import torch

    from ppokit.config import load_config
    from ppokit.trainer import Trainer

    cfg = load_config(
        "pointmass-4096",
        overrides={
            "env.num_envs": num_envs,
            "device": device,
            "log.progress": False,
            "log.checkpoint_every": 0,
            "log.root": tempfile.mkdtemp(prefix="ppokit_gpu_check_"),
            "eval.episodes": 0,
            "torch_threads": 1,
            **overrides,
        },
    )
    trainer = Trainer(cfg)
    dev = trainer.device

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    obs = trainer.env.reset(seed=1)
    elapsed = 0.0
    for i in range(iterations + 1):
        sync()
        t0 = time.perf_counter()
        obs = trainer.collect(obs)
        trainer.ppo.finish_rollout(obs)
        trainer.ppo.update()
        sync()
        if i > 0:
            elapsed += time.perf_counter() - t0
    trainer.env.close()
    samples = iterations * cfg.algo.num_steps * num_envs
    return {"sps": samples / elapsed, "paths": trainer.ppo.paths.describe()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()

    import torch
    from batched_envs import measure

    import ppokit

    quick = args.quick
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        print(f"gpu_check: --device {device} but torch {torch.__version__} sees no CUDA GPU")
        return 2
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    name = torch.cuda.get_device_name(0) if gpus else "CPU"
    envs = 256 if quick else 4096
    iterations = 1 if quick else 5
    rows: list[tuple[str, str, str]] = []
    started = time.perf_counter()
    print(
        f"ppokit {ppokit.__version__}, torch {torch.__version__}, device {device} ({name}),"
        f" {gpus} GPU(s){', --quick' if quick else ''}",
        flush=True,
    )

    # 1. the batched env at 4096 envs
    r = measure(envs, device, iterations, 1, False)
    memory = f"{r['peak_cuda_mb']:.0f} MB peak GPU memory" if "peak_cuda_mb" in r else "CPU run"
    rows.append(
        (
            f"batched torch env, {envs} envs (pointmass-4096)",
            f"{r['sps']:,.0f} SPS",
            f"learner share {r['learner_share']:.0%}; {memory}",
        )
    )
    print(rows_table(rows[-1:]).splitlines()[-1], flush=True)

    # 2. pointmass-4096 learning
    from ppokit.config import load_config
    from ppokit.trainer import Trainer

    steps = 25_000 if quick else None
    overrides = {
        "device": device,
        "seed": 1,
        "log.progress": False,
        "log.checkpoint_every": 0,
        "log.root": tempfile.mkdtemp(prefix="ppokit_gpu_check_"),
        "eval.episodes": 10,
        "torch_threads": 1,
    }
    if quick:
        overrides.update({"env.num_envs": envs, "total_steps": steps})
    cfg = load_config("pointmass-4096", overrides=overrides)
    t0 = time.perf_counter()
    result = Trainer(cfg).train()
    wall = time.perf_counter() - t0
    eval_return = (result.eval or {}).get("mean_return")
    shown = f"{eval_return:.1f}" if eval_return is not None else "n/a"
    rows.append(
        (
            f"pointmass-4096 learning, seed 1, {result.global_step:,} steps",
            f"eval return {shown}",
            f"{wall:.0f} s wall; deterministic, 10 episodes",
        )
    )
    print(rows_table(rows[-1:]).splitlines()[-1], flush=True)

    # 3. bf16 and compile on/off
    for precision in ("fp32", "bf16"):
        for compiled in (False, True):
            label = f"update {precision}, compile {'on' if compiled else 'off'}, {envs} envs"
            if compiled and quick:
                rows.append((label, "skipped", "--quick (compilation takes tens of seconds)"))
            else:
                try:
                    s = train_sps(
                        device,
                        envs,
                        iterations,
                        {"precision": precision, "algo.compile": compiled},
                    )
                    rows.append((label, f"{s['sps']:,.0f} SPS", s["paths"].replace("|", "/")))
                except Exception as e:  # a path refused on this device is a result too
                    rows.append((label, "refused", f"{type(e).__name__}: {e}"[:160]))
            print(rows_table(rows[-1:]).splitlines()[-1], flush=True)

    # 4. two processes over NCCL
    label = "data-parallel, 2 processes (NCCL), pointmass-4096"
    if gpus > 1 and device.startswith("cuda"):
        rows.append((label, *nccl_two_processes(quick)))
    else:
        rows.append((label, "skipped", f"needs 2 GPUs ({gpus} present)"))
    print(rows_table(rows[-1:]).splitlines()[-1], flush=True)

    print(f"\ngpu_check done in {time.perf_counter() - started:.0f} s\n")
    print(rows_table(rows))
    return 0


def nccl_two_processes(quick: bool) -> tuple[str, str]:
    """`torchrun --nproc_per_node 2 -m ppokit train --preset pointmass-4096 --device cuda`:
    the last logged SPS (both ranks' samples) and the wall time."""
    import csv

    root = Path(tempfile.mkdtemp(prefix="ppokit_gpu_check_nccl_"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun")
    updates = 3 if quick else 20
    steps = updates * 24 * 4096 * 2
    cmd = [
        torchrun, "--nproc_per_node=2", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "ppokit", "train",
        "--preset", "pointmass-4096", "--device", "cuda", "--total_steps", str(steps),
        "--eval.episodes", "0", "--log.progress", "false", "--log.checkpoint_every", "0",
        "--log.root", str(root), "--log.run_name", "nccl",
    ]  # fmt: skip
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return "failed", (proc.stderr.strip().splitlines() or ["?"])[-1][:160]
    with (root / "nccl" / "metrics.csv").open() as f:
        sps = [float(r["charts/SPS"]) for r in csv.DictReader(f) if r.get("charts/SPS")]
    return f"{sps[-1]:,.0f} SPS", f"{wall:.0f} s wall for {steps:,} steps (start-up included)"


if __name__ == "__main__":
    raise SystemExit(main())
