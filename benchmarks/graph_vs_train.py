"""Throughput of `ppokit graph run` against `ppokit train` at the same settings.

The TrainConfig of `ppokit train` is the one the graph's PPOTrainerNode resolves to, so both run
the same envs, model and PPO settings; the graph runs without its evaluation and checkpoint
nodes and `ppokit train` without its final evaluation (both keep their progress output off).
Each contender runs in a fresh child process (one torch thread, `OMP_NUM_THREADS=1`), the two
alternate, and each is timed from the start of training (building envs and model included, the
imports not) to the end of the last update. SPS = env steps / that time.

Usage:
  python benchmarks/graph_vs_train.py [--graph examples/graphs/cartpole_ppo.json]
                                      [--steps 50000] [--repeats 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = "GRAPH_BENCH_RESULT "


def child(mode: str, graph_path: str, steps: int, out: str) -> None:
    import torch

    from ppokit.nodes import load_graph, run_graph
    from ppokit.nodes.program import analyse
    from ppokit.trainer import Trainer

    torch.set_num_threads(1)
    graph = load_graph(graph_path)
    trainers = [n for n, nd in graph.nodes.items() if nd.type == "PPOTrainerNode"]
    assert len(trainers) == 1, "the benchmark takes a graph with one PPOTrainerNode"
    graph.nodes[trainers[0]].params.update(total_steps=steps, log_every=0)
    for node_id in [
        n
        for n, nd in graph.nodes.items()
        if nd.type in ("EvaluateNode", "SaveCheckpointNode", "ExportPolicyNode")
    ]:
        del graph.nodes[node_id]
    if mode == "graph":
        t0 = time.perf_counter()
        result = run_graph(graph, out_dir=out, quiet=True)
        elapsed = time.perf_counter() - t0
        done = result.results[trainers[0]]["global_step"]
    else:
        cfg = analyse(graph).nodes[trainers[0]].cfg
        cfg.log.root, cfg.log.progress, cfg.log.checkpoint_every = out, False, 0
        cfg.eval.episodes = 0
        t0 = time.perf_counter()
        trainer = Trainer(cfg)
        trainer.train()
        elapsed = time.perf_counter() - t0
        done = trainer.global_step
    print(
        MARKER
        + json.dumps({"mode": mode, "steps": done, "seconds": elapsed, "sps": done / elapsed})
    )


def measure(mode: str, graph: str, steps: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with tempfile.TemporaryDirectory() as out:
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                "--graph",
                graph,
                "--steps",
                str(steps),
                "--out",
                out,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith(MARKER))
    return json.loads(line[len(MARKER) :])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--graph", default=str(REPO / "examples" / "graphs" / "cartpole_ppo.json"))
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json")
    parser.add_argument("--child", choices=("graph", "train"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.graph, args.steps, args.out)
        return
    runs: dict[str, list[dict]] = {"train": [], "graph": []}
    loads = [os.getloadavg()[0]]
    for r in range(args.repeats):
        for mode in ("train", "graph") if r % 2 == 0 else ("graph", "train"):
            result = measure(mode, args.graph, args.steps)
            runs[mode].append(result)
            loads.append(os.getloadavg()[0])
            print(
                f"{mode:>5}: {result['steps']} steps in {result['seconds']:.1f} s = {result['sps']:.0f} SPS",
                flush=True,
            )
    summary = {
        mode: {
            "median_sps": statistics.median(r["sps"] for r in rs),
            "sps": [round(r["sps"]) for r in rs],
        }
        for mode, rs in runs.items()
    }
    ratio = summary["graph"]["median_sps"] / summary["train"]["median_sps"]
    print(
        f"median SPS: ppokit train {summary['train']['median_sps']:.0f}, graph run"
        f" {summary['graph']['median_sps']:.0f}; graph / train = {ratio:.2f}"
    )
    print(f"1-minute load average during the runs: {min(loads):.2f} to {max(loads):.2f}")
    if args.json:
        info = {
            "graph": args.graph,
            "steps": args.steps,
            "repeats": args.repeats,
            "summary": summary,
            "ratio": ratio,
            "load": loads,
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "python": platform.python_version(),
        }
        Path(args.json).write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
