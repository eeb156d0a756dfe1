"""Learning figures of the recurrent presets: train a preset over seeds, evaluate deterministically.

    python benchmarks/learning_recurrent.py cartpole-masked-gru --seeds 1 2 3
    python benchmarks/learning_recurrent.py cartpole-masked-gru --seeds 1 2 3 --set policy.memory=none
    python benchmarks/learning_recurrent.py pendulum-masked-gru --seeds 1 2 3

Prints one line per seed (eval mean +- std over 20 episodes, wall time) and the mean over seeds;
benchmarks/RESULTS.md records the figures with the command that produced them.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import yaml

from ppokit.config import load_config
from ppokit.trainer import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("preset")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--set", nargs="*", default=[], help="overrides key=value (YAML values)")
    args = parser.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    means = []
    with tempfile.TemporaryDirectory() as root:
        for seed in args.seeds:
            cfg = load_config(
                args.preset,
                overrides={
                    **overrides,
                    "seed": seed,
                    "log.root": root,
                    "log.progress": False,
                    "log.checkpoint_every": 0,
                    "eval.episodes": 0,
                },
            )
            start = time.perf_counter()
            trainer = Trainer(cfg)
            trainer.train()
            result = trainer.evaluate(episodes=args.episodes, deterministic=True)
            means.append(result["mean_return"])
            print(
                f"{args.preset} {' '.join(args.set)} seed {seed}: eval {result['mean_return']:.1f}"
                f" +- {result['std_return']:.1f} ({args.episodes} episodes) at {cfg.total_steps}"
                f" steps, {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    print(f"mean over seeds {args.seeds}: {statistics.mean(means):.1f}", flush=True)


if __name__ == "__main__":
    main()
