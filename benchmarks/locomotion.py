"""Command tracking on ppokit/AntLocomotion-v0: a trained policy against a random one and a
standing one (zero action), over the same episodes (same seeds: terrain, start, commands).

    python benchmarks/locomotion.py --train ant-locomotion --steps 300000   # train, then compare
    python benchmarks/locomotion.py --checkpoint runs/ant-locomotion_s1_...  # compare a run

Per policy, means over all steps: planar tracking error |v_xy - cmd_xy| (m/s), yaw-rate error
(rad/s), velocity along the commanded direction ("v along", m/s; standing still gives 0) next
to the commanded speed (|cmd|), the tracking reward terms (lin: max 1, yaw: max 0.5), reward
per step, and episode length. benchmarks/RESULTS.md records the figures with the command.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import ppokit.envs  # noqa: F401  (registers the task)
from ppokit.evaluate import policy_fn


def run_episodes(act, env_id: str, episodes: int, seed: int, max_steps: int) -> dict:
    """Roll `act(obs dict of [1, ...] tensors) -> action [1, A]` over `episodes` episodes."""
    env = gym.make(env_id, max_episode_steps=max_steps, terrain_seed=seed)
    keys = ("err_xy", "err_yaw", "along", "speed", "lin", "yaw", "reward")
    stats: dict[str, list] = {k: [] for k in keys}
    lengths = []
    try:
        for episode in range(episodes):
            obs, _ = env.reset(seed=seed + episode)
            if hasattr(act, "episodes_ended"):
                act.episodes_ended(np.array([True]))
            length = 0
            while length < max_steps:
                length += 1
                batch = {k: torch.as_tensor(v).unsqueeze(0) for k, v in obs.items()}
                action = act(batch)[0].numpy()
                obs, reward, terminated, truncated, info = env.step(action)
                stats["err_xy"].append(info["tracking_error_xy"])
                stats["err_yaw"].append(info["tracking_error_yaw"])
                stats["along"].append(info["velocity_along_command"])
                stats["speed"].append(info["command_speed"])
                stats["lin"].append(info["tracking_lin_vel"])
                stats["yaw"].append(info["tracking_ang_vel"])
                stats["reward"].append(reward)
                if terminated or truncated:
                    break
            lengths.append(length)
    finally:
        env.close()
    out = {k: float(np.mean(v)) for k, v in stats.items()}
    out["length"] = float(np.mean(lengths))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", help="preset to train first (e.g. ant-locomotion)")
    parser.add_argument("--steps", type=int, default=300_000, help="training steps with --train")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="training overrides key=value")
    parser.add_argument("--checkpoint", help="run directory or checkpoint to evaluate")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=500)
    args = parser.parse_args()

    import yaml

    from ppokit import checkpoint as ckpt
    from ppokit.config import from_dict, load_config
    from ppokit.nn.actor_critic import ActorCritic
    from ppokit.trainer import Trainer

    torch.set_num_threads(1)
    if args.train:
        overrides = {k: yaml.safe_load(v) for k, v in (s.split("=", 1) for s in args.set)}
        cfg = load_config(
            args.train,
            overrides={
                "total_steps": args.steps,
                "seed": args.seed,
                "log.progress": False,
                "eval.episodes": 0,
                **overrides,
            },
        )
        start = time.perf_counter()
        trainer = Trainer(cfg)
        trainer.train()
        print(
            f"trained {args.train} {' '.join(args.set)} for {args.steps} steps in"
            f" {time.perf_counter() - start:.0f} s: {trainer.run_dir}",
            flush=True,
        )
        model, env_id = trainer.model, cfg.env.id
    elif args.checkpoint:
        state = ckpt.load_checkpoint(args.checkpoint)
        cfg = from_dict(state["config"])
        env = gym.make(cfg.env.id)
        model = ActorCritic(env.observation_space, env.action_space, cfg.policy)
        env.close()
        model.load_state_dict(state["ppo"]["model"])
        env_id = cfg.env.id
    else:
        parser.error("give --train PRESET or --checkpoint PATH")
    model.eval()

    action_space = gym.spaces.Box(-1.0, 1.0, (8,), np.float32)
    rng = np.random.default_rng(0)
    policies = {
        "random": lambda obs: torch.as_tensor(rng.uniform(-1, 1, (1, 8)), dtype=torch.float32),
        "standing (zero action)": lambda obs: torch.zeros(1, action_space.shape[0]),
        "trained (deterministic)": policy_fn(model, deterministic=True),
    }
    seed = 10_000 + args.seed  # episodes apart from the training ones
    print(f"{args.episodes} episodes of at most {args.max_steps} steps on {env_id}, seeds {seed}+:")
    print(
        f"{'policy':26s} {'|v-cmd| m/s':>12s} {'yaw err':>8s} {'v along':>8s} {'|cmd|':>6s}"
        f" {'lin term':>9s}"
        f" {'yaw term':>9s} {'reward/step':>12s} {'length':>7s}"
    )
    for name, act in policies.items():
        r = run_episodes(act, env_id, args.episodes, seed, args.max_steps)
        print(
            f"{name:26s} {r['err_xy']:12.3f} {r['err_yaw']:8.3f} {r['along']:8.3f}"
            f" {r['speed']:6.3f} {r['lin']:9.3f}"
            f" {r['yaw']:9.3f} {r['reward']:12.3f} {r['length']:7.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
