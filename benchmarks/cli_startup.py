"""Wall time of short `ppokit` commands: start-up, parser, and the one-line errors.

Each command runs as a fresh `python -m ppokit ...` subprocess (what a user waits for, module
imports included), `--runs` times after one untimed warm-up run (so the file cache is warm), and
the median and min are printed. It also says which heavy modules each command imported, read
from `python -X importtime`. Only figures measured in one invocation compare well: the machine
may be busy.

Usage:
  PYTHONPATH=src python benchmarks/cli_startup.py [--runs 10] [--python PYTHON]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = (
    ["--help"],
    ["--version"],
    ["train", "--help"],
    ["train", "--bogus"],
)
HEAVY = ("torch", "gymnasium", "matplotlib", "numpy")


def timed(python: str, args: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run([python, "-m", "ppokit", *args], capture_output=True, check=False)
    return time.perf_counter() - start


def heavy_imports(python: str, args: list[str]) -> list[str]:
    done = subprocess.run(
        [python, "-X", "importtime", "-m", "ppokit", *args], capture_output=True, text=True
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    return [m for m in HEAVY if m in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed runs per command")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run ppokit with")
    ns = parser.parse_args()
    print(f"python {ns.python}; PYTHONPATH={os.environ.get('PYTHONPATH', '')}; {ns.runs} runs")
    print("| command | median (s) | min (s) | heavy modules imported |")
    print("|---|---|---|---|")
    for args in COMMANDS:
        timed(ns.python, args)  # warm-up: file cache
        times = [timed(ns.python, args) for _ in range(ns.runs)]
        heavy = ", ".join(heavy_imports(ns.python, args)) or "none"
        print(
            f"| `ppokit {' '.join(args)}` | {statistics.median(times):.2f} | {min(times):.2f}"
            f" | {heavy} |"
        )


if __name__ == "__main__":
    main()
