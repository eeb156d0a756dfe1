"""The gait of a trained policy on ppokit/AntLocomotionBatched-v0 under one fixed command: how
the torso's planar velocity and yaw rate oscillate (their spread and where it sits in frequency),
how long the feet stay in the air, and how much the actions change between steps.

    python benchmarks/locomotion_gait.py --checkpoint runs/RUN                 # forward 0.6 m/s
    python benchmarks/locomotion_gait.py --checkpoint runs/RUN --obs-noise 0   # without noise

benchmarks/RESULTS.md ("Where the per-step error comes from") records its figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from locomotion import load_model  # noqa: E402

from ppokit.envs.locomotion_batched import AntLocomotionBatched  # noqa: E402
from ppokit.evaluate import policy_fn  # noqa: E402

BANDS = ((0, 1), (1, 3), (3, 6), (6, 25))  # Hz; 25 Hz is the Nyquist frequency at dt 0.02 s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="run directory or checkpoint")
    parser.add_argument("--command", type=float, nargs=3, default=(0.6, 0.0, 0.0))
    parser.add_argument("--levels", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--envs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=600, help="the first 100 are skipped")
    parser.add_argument("--obs-noise", type=float, default=1.0, help="noise level (0: none)")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()

    torch.set_num_threads(1)
    model, _, _ = load_model(args.checkpoint)
    act = policy_fn(model, deterministic=True)
    env = AntLocomotionBatched(
        args.envs,
        max_episode_steps=10_000,
        terrain={"fixed_levels": args.levels},
        randomization={"push_interval": 0.0, "noise_level": args.obs_noise},
        commands={"resample_time": 1e6, "standing_share": 0.0},
    )
    obs = env.reset(seed=args.seed)
    env.commands[:] = args.command  # from the second step on
    air, velocity, actions = [], [], []
    for t in range(args.steps):
        before = env.feet_air_time.copy()
        with torch.no_grad():
            a = act(obs)
        obs, _, _, _, extras = env.step(a)
        if t >= 100:
            landed = (before > 0) & (env.feet_air_time == 0)
            air.extend((before + env.dt)[landed])
            velocity.append(extras["velocity"].copy())
            actions.append(a.numpy())
    v = np.array(velocity)  # [T, N, 3]: planar velocity (heading frame), yaw rate
    a = np.array(actions)
    error = np.linalg.norm(v[..., :2] - np.array(args.command[:2]), axis=-1).mean()
    print(f"command {args.command}, levels {args.levels}, observation noise {args.obs_noise}")
    print(f"mean velocity {v.mean((0, 1)).round(3).tolist()}, planar error per step {error:.3f}")
    print(f"feet air time at landing: mean {np.mean(air):.3f} s, median {np.median(air):.3f} s")
    print(f"action change per step: {((a[1:] - a[:-1]) ** 2).sum(-1).mean():.2f}")
    freqs = np.fft.rfftfreq(len(v), env.dt)
    for i, name in enumerate(("vx", "vy", "yaw rate")):
        x = v[..., i] - v[..., i].mean(0)
        power = (np.abs(np.fft.rfft(x, axis=0)) ** 2).mean(1)[1:]
        f = freqs[1:]
        shares = [power[(f > lo) & (f <= hi)].sum() / power.sum() for lo, hi in BANDS]
        bands = ", ".join(f"{lo}-{hi} Hz {s:.0%}" for (lo, hi), s in zip(BANDS, shares))
        print(f"{name:9s} std {x.std(0).mean():.3f}; variance by frequency: {bands}")


if __name__ == "__main__":
    main()
