"""The learning tests' runs over seeds and CPU instruction sets (ISA profiles).

    python benchmarks/learning_isa.py --seeds 1 2 3 4 5 --isa native avx2 default --jobs 2
    python benchmarks/learning_isa.py --cases cartpole masked-gru --seeds 1 2 3 --isa avx2
    python benchmarks/learning_isa.py --summary  # the table of what OUT/results.jsonl holds
    python benchmarks/learning_isa.py --exec other -- pytest -m learning  # a command under another ISA

Each case is a `ppokit train` (or `ppokit graph run`, or torchrun) subprocess with the settings
of one learning test (tests/learning/), evaluated deterministically over 20 episodes as the test
does. An ISA profile sets the environment variables that choose the vector code of every numeric
library in the process, so a run imitates another CPU: ATen's kernels (ATEN_CPU_CAPABILITY),
MKL's BLAS (MKL_CBWR), oneDNN (ONEDNN_MAX_CPU_ISA) and NumPy's OpenBLAS (OPENBLAS_CORETYPE).
Results are appended to OUT/results.jsonl as they finish (an interrupted sweep keeps what ran and
skips it next time); benchmarks/RESULTS.md records the table with this command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ISA_PROFILES: dict[str, dict[str, str]] = {
    "native": {},
    "avx512": {
        "ATEN_CPU_CAPABILITY": "avx512",
        "MKL_CBWR": "AVX512",
        "ONEDNN_MAX_CPU_ISA": "AVX512_CORE",
        "OPENBLAS_CORETYPE": "SkylakeX",
    },
    "avx2": {
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AVX2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "OPENBLAS_CORETYPE": "Haswell",
    },
    "default": {
        "ATEN_CPU_CAPABILITY": "default",
        "MKL_CBWR": "COMPATIBLE",
        "ONEDNN_MAX_CPU_ISA": "SSE41",
        "OPENBLAS_CORETYPE": "Nehalem",
    },
}

# name -> (kind, arguments, threshold, sense). kind: train | graph | torchrun.
CASES: dict[str, tuple[str, list[str], float, str]] = {
    "cartpole": ("train", ["--preset", "cartpole"], 475, ">="),
    "pendulum": ("train", ["--preset", "pendulum"], -250, ">="),
    "masked-gru": ("train", ["--preset", "cartpole-masked-gru"], 475, ">="),
    "masked-mlp": ("train", ["--preset", "cartpole-masked-gru", "--policy.memory", "none"], 200, "<"),
    "cartpole-bf16": ("train", ["--preset", "cartpole", "--precision", "bf16"], 475, ">="),
    "pointmass-4096": ("train", ["--preset", "pointmass-4096", "--device", "cpu"], 50, ">="),
    "pointmass-ema": (
        "train", ["--preset", "pointmass-4096", "--device", "cpu", "--ema.decay", "0.5"], 50, ">=",
    ),
    "graph-cartpole": ("graph", ["examples/graphs/cartpole_ppo.json"], 475, ">="),
    "graph-pendulum": ("graph", ["examples/graphs/pendulum_ppo.json"], -250, ">="),
    "cartpole-2ranks": ("torchrun", ["--preset", "cartpole", "--env.num_envs", "4"], 475, ">="),
}  # fmt: skip


def other_isa() -> str:
    """An ISA profile that is not this machine's own: AVX2 below AVX-512, SSE below AVX2."""
    import torch

    native = torch.backends.cpu.get_cpu_capability()
    return "avx2" if native.startswith("AVX512") else "default"


def exec_under(isa: str, argv: list[str]) -> None:
    """Replace this process with `argv` run under the ISA profile `isa` (or `other`)."""
    isa = other_isa() if isa == "other" else isa
    if isa not in ISA_PROFILES:
        raise SystemExit(
            f"error: unknown ISA profile {isa!r}; use one of {', '.join(ISA_PROFILES)} or other"
        )
    if not argv:
        raise SystemExit("error: --exec ISA needs a command after --")
    env = {**os.environ, **ISA_PROFILES[isa]}
    print(
        f"ISA profile {isa}: " + " ".join(f"{k}={v}" for k, v in ISA_PROFILES[isa].items()),
        flush=True,
    )
    os.execvpe(argv[0], argv, env)


def command(case: str, seed: int, out: Path) -> list[str]:
    kind, args, _, _ = CASES[case]
    common = ["--log.progress", "false", "--log.checkpoint_every", "0", "--eval.episodes", "20"]
    if kind == "graph":
        return [sys.executable, "-m", "ppokit", "graph", "run", *args, "--seed", str(seed),
                "--out", str(out), "--quiet"]  # fmt: skip
    train = ["train", *args, "--seed", str(seed), *common, "--run-dir", str(out)]
    if kind == "torchrun":
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                "--nproc_per_node=2", "-m", "ppokit", *train]  # fmt: skip
    return [sys.executable, "-m", "ppokit", *train]


def read_result(case: str, out: Path, stdout: str) -> float:
    if (
        CASES[case][0] == "graph"
    ):  # the evaluation node's line: "eval: eval (20 episodes): return X"
        line = next(x for x in stdout.splitlines() if x.startswith("eval: "))
        return float(line.split("return ")[1].split()[0])
    return float(json.loads((out / "eval.json").read_text())["mean_return"])


def run_one(case: str, seed: int, isa: str, scratch: Path) -> dict:
    out = scratch / f"{case}_{isa}_s{seed}"
    env = {**os.environ, **ISA_PROFILES[isa], "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    proc = subprocess.run(
        command(case, seed, out), cwd=ROOT, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    row = {"case": case, "seed": seed, "isa": isa, "wall_s": round(wall, 1)}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
    else:
        row["value"] = round(read_result(case, out, proc.stdout), 2)
    shutil.rmtree(out, ignore_errors=True)
    return row


def passes(case: str, value: float) -> bool:
    _, _, threshold, sense = CASES[case]
    return value >= threshold if sense == ">=" else value < threshold


def summary(rows: list[dict], cases: list[str], seeds: list[int] | None = None) -> str:
    """Markdown: one row per case and ISA, each seed's figure (x: misses the threshold)."""
    seeds = seeds or sorted({r["seed"] for r in rows})
    rows = [r for r in rows if r["seed"] in seeds]
    lines = [
        "| case | threshold | ISA | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " | median | misses |",
        "|---|---|---|" + "---|" * len(seeds) + "---|---|",
    ]
    for case in cases:
        for isa in ISA_PROFILES:
            got = {r["seed"]: r for r in rows if r["case"] == case and r["isa"] == isa}
            if not got:
                continue
            cells, values = [], []
            for s in seeds:
                r = got.get(s)
                if r is None:
                    cells.append("")
                elif "value" not in r:
                    cells.append("error")
                else:
                    values.append(r["value"])
                    cells.append(f"{r['value']:.1f}" + ("" if passes(case, r["value"]) else " x"))
            misses = sum(not passes(case, v) for v in values)
            median = f"{statistics.median(values):.1f}" if values else ""
            _, _, threshold, sense = CASES[case]
            lines.append(
                f"| {case} | {sense} {threshold:g} | {isa} | {' | '.join(cells)} | {median}"
                f" | {misses}/{len(values)} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--seeds", nargs="+", type=int, help="default: 1 2 3 (--summary: all)")
    parser.add_argument("--isa", nargs="+", default=["native", "avx2"], choices=list(ISA_PROFILES))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/out/learning_isa")
    parser.add_argument("--summary", action="store_true", help="print the table and exit")
    parser.add_argument(
        "--exec", metavar="ISA", help="run the command after -- under ISA (a profile, or other)"
    )
    args, rest = parser.parse_known_args()
    if args.exec:
        exec_under(args.exec, rest[1:] if rest[:1] == ["--"] else rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = out / "results.jsonl"
    rows = (
        [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    )
    if args.summary:
        print(summary(rows, args.cases, args.seeds), end="")
        return
    args.seeds = args.seeds or [1, 2, 3]
    done = {(r["case"], r["seed"], r["isa"]) for r in rows if "value" in r}
    todo = [
        (c, s, i) for s in args.seeds for i in args.isa for c in args.cases if (c, s, i) not in done
    ]
    print(f"{len(todo)} runs ({len(done)} already in {results})", flush=True)
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(run_one, c, s, i, Path(scratch)) for c, s, i in todo]
        for future in futures:
            row = future.result()
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(summary(rows, args.cases, args.seeds), end="")


if __name__ == "__main__":
    main()
