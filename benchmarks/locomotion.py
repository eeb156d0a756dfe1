"""Command tracking on ppokit/AntLocomotion-v0 and ppokit/AntLocomotionBatched-v0: a trained
policy against a random one and a standing one (zero action), over the same episodes (same
seeds: terrain, start, commands).

    python benchmarks/locomotion.py --train ant-locomotion --steps 300000   # train, then compare
    python benchmarks/locomotion.py --checkpoint runs/ant-locomotion_s1_...  # compare a run
    python benchmarks/locomotion.py --checkpoint runs/ant-locomotion-batched_s1_...  # batched
    python benchmarks/locomotion.py --baselines-only --env ppokit/AntLocomotionBatched-v0
    python benchmarks/locomotion.py --curve DIR   # every checkpoint in DIR: the learning curve

On the batched task, `--envs-per-level` envs per terrain level run `--max-steps` steps each
(episodes auto-reset; no curriculum, no pushes; observation noise as in training unless
`--obs-noise` sets its level), and the
errors are also reported per command bin (standing: a zero command; else the largest of |vx|,
|vy| in m/s and |yaw rate| in rad/s names it forward, lateral or turning) and per terrain level.
A row "velocity averaged over 1 s" compares the command with the velocity's mean over the last
second instead (on the steps whose last second had one command and one episode): what is left
once the torso's oscillation within a stride is taken out, i.e. how well the gait's mean speed
follows the command. A row "action change per step" gives the unscaled term of the action-rate
penalty, sum over joints of (a_t - a_t-1)^2: how much the policy's torques jump between steps.

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


BINS = ("forward", "lateral", "turning", "standing")


def command_bins(commands: np.ndarray) -> np.ndarray:
    """[N, 3] commands -> [N] index into BINS."""
    dominant = np.argmax(np.abs(commands), axis=1)  # 0 forward, 1 lateral, 2 turning
    return np.where(np.all(commands == 0, axis=1), 3, dominant)


def averaged_errors(
    commands: np.ndarray, velocities: np.ndarray, ended: np.ndarray, window: int
) -> tuple[float, float, int]:
    """Tracking errors of the velocity averaged over the last `window` steps ([T, N, 3] commands
    and velocities; [T, N] terminations), on the steps whose window had one command and one
    episode: the per-step error less the gait's oscillation within a stride."""
    totals = np.cumsum(velocities, axis=0)
    mean = (totals[window:] - totals[:-window]) / window  # steps window .. T-1
    now = commands[window:]
    steady = np.ones(now.shape[:2], dtype=bool)
    for lag in range(1, window + 1):
        steady &= np.all(commands[window - lag : len(commands) - lag] == now, axis=-1)
        steady &= ~ended[window - lag : len(ended) - lag]
    xy = np.linalg.norm(now[..., :2] - mean[..., :2], axis=-1)[steady]
    yaw = np.abs(now[..., 2] - mean[..., 2])[steady]
    return float(xy.mean()), float(yaw.mean()), int(steady.sum())


def run_batched(act, env_id: str, per_level: int, steps: int, seed: int, kwargs: dict) -> dict:
    """`act(obs dict of [N, ...] tensors) -> actions [N, A]` on the batched task, every env on a
    fixed level; per-step errors grouped by command bin and by level."""
    from ppokit.envs.locomotion_batched import AntLocomotionBatched, TerrainConfig

    levels = kwargs.get("terrain", {}).get("levels", TerrainConfig.levels)
    terrain = {**kwargs.get("terrain", {}), "fixed_levels": list(range(levels))}
    randomization = {**kwargs.get("randomization", {}), "push_interval": 0.0}
    env = AntLocomotionBatched(
        levels * per_level,
        max_episode_steps=1000,
        **{**kwargs, "terrain": terrain, "randomization": randomization},
    )
    obs = env.reset(seed=seed)
    rows: dict[str, list] = {"xy": [], "yaw": [], "level": [], "ended": []}
    commands, velocities, action_changes = [], [], []
    previous = None
    for _ in range(steps):
        with torch.no_grad():
            actions = act(obs)
        if previous is not None:
            action_changes.append(((actions - previous) ** 2).sum(-1).numpy())
        previous = actions
        obs, _, terminated, truncated, extras = env.step(actions)
        rows["xy"].append(extras["tracking_error_xy"])
        rows["yaw"].append(extras["tracking_error_yaw"])
        rows["level"].append(extras["terrain_level"])
        rows["ended"].append(terminated.numpy())
        commands.append(extras["command"])
        velocities.append(extras["velocity"])
        if hasattr(act, "episodes_ended"):
            act.episodes_ended((terminated | truncated).numpy())
    data = {k: np.concatenate(v) for k, v in rows.items()}
    commands = np.array(commands)  # [T, N, 3]
    data["bin"] = command_bins(commands.reshape(-1, 3))
    out = {"all": (data["xy"].mean(), data["yaw"].mean(), len(data["xy"]))}
    out["all, velocity averaged over 1 s"] = averaged_errors(
        commands, np.array(velocities), np.array(rows["ended"]), round(1.0 / env.dt)
    )
    for b, name in enumerate(BINS):
        sel = data["bin"] == b
        out[name] = (data["xy"][sel].mean(), data["yaw"][sel].mean(), int(sel.sum()))
    for level in range(levels):
        sel = data["level"] == level
        out[f"level {level}"] = (data["xy"][sel].mean(), data["yaw"][sel].mean(), int(sel.sum()))
    out["falls per 1000 steps"] = 1000 * data["ended"].mean()
    # The action-rate reward's term, unscaled: how much the torques jump from step to step.
    out["action change per step"] = float(np.mean(action_changes))
    return out


def curriculum_levels(act, num_envs: int, steps: int, seed: int, kwargs: dict) -> np.ndarray:
    """The terrain levels `num_envs` envs reach in `steps` steps of the training env's own
    curriculum (pushes, noise and all) under `act`, from the initial levels: [levels] counts."""
    from ppokit.envs.locomotion_batched import AntLocomotionBatched

    env = AntLocomotionBatched(num_envs, max_episode_steps=1000, **kwargs)
    obs = env.reset(seed=seed)
    for _ in range(steps):
        with torch.no_grad():
            obs, _, terminated, truncated, _ = env.step(act(obs))
        if hasattr(act, "episodes_ended"):
            act.episodes_ended((terminated | truncated).numpy())
    return np.bincount(env.levels, minlength=env.cfg.terrain.levels)


def load_model(path: str):
    from ppokit import checkpoint as ckpt
    from ppokit.config import from_dict
    from ppokit.nn.actor_critic import ActorCritic

    state = ckpt.load_checkpoint(path)
    cfg = from_dict(state["config"])
    env = gym.make(cfg.env.id, **cfg.env.kwargs)
    model = ActorCritic(env.observation_space, env.action_space, cfg.policy)
    env.close()
    model.load_state_dict(state["ppo"]["model"])
    model.eval()
    return model, cfg, state["global_step"]


def curve(directory: str, args) -> None:
    """Tracking errors of every checkpoint (update_*.pt) in `directory`, deterministic."""
    from pathlib import Path

    paths = sorted(Path(directory).glob("update_*.pt"))
    print(f"{'steps':>10s} {'planar m/s':>11s} {'yaw rad/s':>10s}  (all bins and levels)")
    for path in paths[:: max(args.curve_every, 1)]:
        model, cfg, step = load_model(str(path))
        seed = 10_000 + args.seed
        r = run_batched(
            policy_fn(model, deterministic=True),
            cfg.env.id,
            args.envs_per_level,
            args.max_steps,
            seed,
            cfg.env.kwargs,
        )
        print(f"{step:>10,d} {r['all'][0]:11.3f} {r['all'][1]:10.3f}", flush=True)


def report_batched(policies: dict, env_id: str, args, kwargs: dict) -> None:
    seed = 10_000 + args.seed
    noise = kwargs.get("randomization", {}).get("noise_level", 1.0)
    print(
        f"{env_id}: {args.envs_per_level} envs per terrain level, {args.max_steps} steps each,"
        f" seed {seed}, observation noise level {noise}; planar error m/s / yaw-rate error rad/s"
        " (share of steps):",
        flush=True,
    )
    results = {}
    for name, act in policies.items():
        results[name] = run_batched(act, env_id, args.envs_per_level, args.max_steps, seed, kwargs)
    names = list(results)
    print("| group | " + " | ".join(names) + " |")
    print("| --- |" + " ---: |" * len(names))
    first = results[names[0]]
    for group in first:
        if group == "falls per 1000 steps":
            cells = [f"{results[n][group]:.1f}" for n in names]
        elif group == "action change per step":
            cells = [f"{results[n][group]:.2f}" for n in names]
            group = "action change per step: sum of (a_t - a_t-1)^2"
        else:
            total = first["all"][2]
            cells = [f"{results[n][group][0]:.3f} / {results[n][group][1]:.3f}" for n in names]
            group = f"{group} ({results[names[-1]][group][2] / total:.0%})"
        print(f"| {group} | " + " | ".join(cells) + " |", flush=True)
    if args.curriculum_steps:
        print(
            f"\nterrain levels of 64 envs after {args.curriculum_steps} steps of the training"
            " curriculum (counts per level 0..top):"
        )
        for name, act in policies.items():
            counts = curriculum_levels(act, 64, args.curriculum_steps, seed, kwargs)
            print(f"  {name:26s} {counts.tolist()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", help="preset to train first (e.g. ant-locomotion)")
    parser.add_argument("--steps", type=int, default=300_000, help="training steps with --train")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="training overrides key=value")
    parser.add_argument("--checkpoint", help="run directory or checkpoint to evaluate")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--env", help="with --baselines-only: the env id")
    parser.add_argument("--baselines-only", action="store_true")
    parser.add_argument(
        "--envs-per-level", type=int, default=32, help="batched task (32: ~380 commands)"
    )
    parser.add_argument(
        "--curriculum-steps", type=int, default=0, help="batched task: run the curriculum too"
    )
    parser.add_argument(
        "--obs-noise",
        type=float,
        help="batched task: the observation noise level (randomization.noise_level; default:"
        " the run's own, 1.0 unless it set one); 0 shows how much of the error the noise causes",
    )
    parser.add_argument("--curve", help="a folder of checkpoints: evaluate each (batched task)")
    parser.add_argument("--curve-every", type=int, default=1, help="every k-th checkpoint")
    args = parser.parse_args()

    import yaml

    from ppokit import checkpoint as ckpt
    from ppokit.config import from_dict, load_config
    from ppokit.nn.actor_critic import ActorCritic
    from ppokit.trainer import Trainer

    torch.set_num_threads(1)
    model, env_kwargs = None, {}
    if args.curve:
        curve(args.curve, args)
        return
    if args.baselines_only:
        env_id = args.env or "ppokit/AntLocomotion-v0"
    elif args.train:
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
        model, env_id, env_kwargs = trainer.model, cfg.env.id, cfg.env.kwargs
    elif args.checkpoint:
        state = ckpt.load_checkpoint(args.checkpoint)
        cfg = from_dict(state["config"])
        env = gym.make(cfg.env.id, **cfg.env.kwargs)
        model = ActorCritic(env.observation_space, env.action_space, cfg.policy)
        env.close()
        model.load_state_dict(state["ppo"]["model"])
        env_id, env_kwargs = cfg.env.id, cfg.env.kwargs
    else:
        parser.error("give --train PRESET, --checkpoint PATH or --baselines-only")

    rng = np.random.default_rng(0)

    def random_policy(obs):
        n = len(next(iter(obs.values())))
        return torch.as_tensor(rng.uniform(-1, 1, (n, 8)), dtype=torch.float32)

    def standing(obs):
        return torch.zeros(len(next(iter(obs.values()))), 8)

    policies = {"random": random_policy, "standing (zero action)": standing}
    if model is not None:
        model.eval()
        policies["trained (deterministic)"] = policy_fn(model, deterministic=True)
    if env_id.startswith("ppokit/AntLocomotionBatched"):
        if args.obs_noise is not None:
            randomization = {**env_kwargs.get("randomization", {}), "noise_level": args.obs_noise}
            env_kwargs = {**env_kwargs, "randomization": randomization}
        report_batched(policies, env_id, args, env_kwargs)
        return
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
