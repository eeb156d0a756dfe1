"""Throughput of data-parallel training: `ppokit train` on 1 process against `torchrun` on K.

Each rank runs the preset as it is (its own envs, its own minibatches), so K ranks collect and
learn from K times the samples per update: ideal scaling is K times the SPS. Every run is a fresh
`ppokit train` (or `torchrun --nproc_per_node=K -m ppokit train`) with the same number of updates,
no evaluation, no checkpoints, the progress bar off and OMP_NUM_THREADS=1 (as torchrun sets it
for its workers). The SPS are read from the run's
metrics.csv (`charts/SPS`, env steps of every rank / time since training started):

- steady SPS: over the updates after the first `--warmup` ones (compilation, warm caches);
- overall SPS: over the whole run, the first update included.

With `--repeats R` the process counts alternate (1, 2, 1, 2, ...) R times and the table gives the
median of each column (on a shared machine the load moves between runs).

Usage:
  python benchmarks/distributed.py [--preset halfcheetah] [--updates 20] [--warmup 4]
                                   [--ranks 1 2] [--repeats 1] [--json out.json]
                                   [-- more ppokit train flags]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def command(preset: str, ranks: int, updates: int, root: str, extra: list[str]) -> list[str]:
    sys.path.insert(0, str(REPO / "src"))
    from ppokit.cli import build_parser, config_overrides
    from ppokit.config import load_config

    cfg = load_config(
        preset, overrides=config_overrides(build_parser().parse_args(["train", *extra]))
    )
    steps = cfg.algo.num_steps * cfg.env.num_envs * ranks * updates
    train = [
        "train", "--preset", preset, "--total_steps", str(steps), "--eval.episodes", "0",
        "--log.progress", "false", "--log.checkpoint_every", "0", "--log.root", root,
        "--log.run_name", f"ranks{ranks}", *extra,
    ]  # fmt: skip
    if ranks == 1:
        return [str(BIN / "ppokit"), *train]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return [
        str(BIN / "torchrun"), f"--nproc_per_node={ranks}", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", f"127.0.0.1:{port}", "-m", "ppokit", *train,
    ]  # fmt: skip


def measure(cmd: list[str], run_dir: Path, warmup: int) -> dict:
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    # torchrun sets OMP_NUM_THREADS=1 for its workers; the single process gets the same.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("charts/SPS")]
    steps = [int(r["global_step"]) for r in rows]
    elapsed = [s / float(r["charts/SPS"]) for s, r in zip(steps, rows)]
    w = warmup - 1
    steady = rows[warmup:]
    return {
        "command": shlex.join(cmd),
        "updates": len(rows),
        "steps": steps[-1],
        "steady_sps": (steps[-1] - steps[w]) / (elapsed[-1] - elapsed[w]),
        "overall_sps": steps[-1] / elapsed[-1],
        "first_update_s": elapsed[0],
        "rollout_s": sum(float(r["time/rollout_s"]) for r in steady) / len(steady),
        "update_s": sum(float(r["time/update_s"]) for r in steady) / len(steady),
        "wall_s": wall,
        "load_before": load,
        "load_after": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="halfcheetah")
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="write the results here as well")
    parser.add_argument("extra", nargs="*", help="more `ppokit train` flags (after --)")
    args = parser.parse_args()
    import torch

    runs = []
    for _ in range(args.repeats):
        for ranks in args.ranks:
            with tempfile.TemporaryDirectory() as root:
                cmd = command(args.preset, ranks, args.updates, root, args.extra)
                print(f"$ {shlex.join(cmd)}", flush=True)
                r = {"ranks": ranks, **measure(cmd, Path(root) / f"ranks{ranks}", args.warmup)}
            runs.append(r)
            print(
                f"  {ranks} process(es): steady {r['steady_sps']:,.0f} SPS, overall"
                f" {r['overall_sps']:,.0f} SPS, first update {r['first_update_s']:.1f} s, per"
                f" update: rollout {r['rollout_s']:.3f} s + update {r['update_s']:.3f} s,"
                f" wall {r['wall_s']:.1f} s, load {r['load_before']:.2f} -> {r['load_after']:.2f}",
                flush=True,
            )
    results = []
    for ranks in args.ranks:
        mine = [r for r in runs if r["ranks"] == ranks]
        median = {k: statistics.median(r[k] for r in mine) for k in mine[0] if k != "command"}
        results.append(
            {**median, "ranks": ranks, "steady_sps_runs": [r["steady_sps"] for r in mine]}
        )
    base = results[0]["steady_sps"]
    for r in results:
        r["speedup"] = r["steady_sps"] / base
    print(
        "\n| processes | steady SPS (runs) | steady SPS, median | speed-up | overall SPS |"
        " first update s | rollout s | update s | load |"
    )
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        each = ", ".join(f"{x:,.0f}" for x in r["steady_sps_runs"])
        print(
            f"| {r['ranks']} | {each} | {r['steady_sps']:,.0f} | {r['speedup']:.2f}x |"
            f" {r['overall_sps']:,.0f} | {r['first_update_s']:.1f} | {r['rollout_s']:.3f} |"
            f" {r['update_s']:.3f} | {r['load_before']:.1f}-{r['load_after']:.1f} |"
        )
    if args.json:
        meta = {
            "preset": args.preset,
            "updates": args.updates,
            "warmup": args.warmup,
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        }
        out = {"meta": meta, "results": results, "runs": runs}
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
