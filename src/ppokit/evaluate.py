"""Evaluation of a policy over whole episodes, and `ppokit eval` around it.

One loop (`evaluate_policy`) runs the episodes; recording videos and the value analysis are
hooks on it (`EvalHook`), so the numbers printed with `--record` or `--analyze-value` are the
numbers of a plain evaluation with the same seed. Live rendering is the env's "human" render
mode on the same loop, one env at a time.

Episodes are numbered up front: env i of n runs episodes i, i + n, i + 2n, ... (its fixed
share), so results, videos (episode_003.mp4) and value traces line up by number whatever order
the episodes end in, and fast-ending episodes are not over-represented.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np
import torch

from ppokit.config import EnvConfig, merge_kwargs
from ppokit.envs.base import StepResult
from ppokit.envs.gym_env import GymVecEnv
from ppokit.errors import ConfigError, EnvError
from ppokit.nn.actor_critic import ActorCritic
from ppokit.observations import obs_map
from ppokit.policy import ModelPolicy
from ppokit.value_analysis import EpisodeTrace, value_analysis

Active = list[int | None]  # per env: the number of the episode it is running, None when done


def policy_fn(model: ActorCritic, deterministic: bool = True) -> ModelPolicy:
    """raw observations -> env actions, deterministic (mode) or sampled, through the model's one
    observation -> action path; a recurrent model's memory is carried between calls and reset
    where `evaluate_policy` reports an episode ended (as in training)."""
    return ModelPolicy(model, deterministic)


def evaluate_model(
    model: ActorCritic,
    env: EnvConfig | Callable[[], gym.Env],
    episodes: int,
    seed: int,
    device: torch.device | str,
    deterministic: bool = True,
) -> dict:
    """`evaluate_policy` of a model being trained, in eval mode and back: what the trainer's
    evaluations and a graph's evaluation node run."""
    model.eval()
    try:
        return evaluate_policy(policy_fn(model, deterministic), env, episodes, seed, device)
    finally:
        model.train()


class EvalHook(Protocol):
    """Watches `evaluate_policy`'s loop. `active[i]` is the episode env i runs (None: done)."""

    def begin(self, env: GymVecEnv, obs: torch.Tensor, active: Active) -> None: ...

    def after_step(
        self,
        env: GymVecEnv,
        obs: torch.Tensor,
        result: StepResult,
        before: Active,
        after: Active,
    ) -> None:
        """`obs` is what the policy acted on; `before`/`after` the episode numbers around the
        step (an env whose episode ended has a new number, or None, in `after`)."""
        ...

    def end(self) -> None: ...


def evaluate_policy(
    policy: Callable[[torch.Tensor], torch.Tensor],
    env_cfg: EnvConfig | Callable[[], gym.Env],
    episodes: int = 10,
    seed: int = 0,
    device: torch.device | str = "cpu",
    max_parallel: int = 8,
    hooks: Sequence[EvalHook] = (),
) -> dict:
    """Run `episodes` full episodes on up to `max_parallel` envs in this process: of the
    registered id `env_cfg` names, or made by `env_cfg` when it is a factory of one env. Returns
    mean/std of return and length, and the per-episode lists (ordered by episode number)."""
    n = max(1, min(episodes, max_parallel))
    if isinstance(env_cfg, EnvConfig):
        env = GymVecEnv.from_config(replace(env_cfg, num_envs=n, vectorization="sync"), device)
    else:
        env = GymVecEnv.from_factories([env_cfg] * n, "sync", device)
    targets = np.array([episodes // n + (i < episodes % n) for i in range(n)])
    done_counts = np.zeros(n, dtype=int)
    returns = np.zeros(episodes)
    lengths = np.zeros(episodes, dtype=int)
    ep_ret = np.zeros(n)
    ep_len = np.zeros(n, dtype=int)

    def active() -> Active:
        return [
            int(done_counts[i] * n + i) if done_counts[i] < targets[i] else None for i in range(n)
        ]

    try:
        obs = env.reset(seed=seed)
        current = active()
        for hook in hooks:
            hook.begin(env, obs, current)
        while any(number is not None for number in current):
            result = env.step(policy(obs))
            ep_ret += result.rewards.cpu().numpy()
            ep_len += 1
            ended = (result.terminated | result.truncated).cpu().numpy()
            reset = getattr(policy, "episodes_ended", None)  # recurrent policies (any kind)
            if reset is not None:  # memory of ended episodes is reset
                reset(ended)
            for i in np.flatnonzero(ended):
                number = current[i]
                if number is not None:
                    returns[number] = ep_ret[i]
                    lengths[number] = ep_len[i]
                    done_counts[i] += 1
                ep_ret[i] = 0.0
                ep_len[i] = 0
            after = active()
            for hook in hooks:
                hook.after_step(env, obs, result, current, after)
            obs, current = result.obs, after
    finally:
        try:
            for hook in hooks:
                hook.end()
        finally:
            env.close()
    return {
        "episodes": episodes,
        "mean_return": float(np.mean(returns)) if episodes else math.nan,
        "std_return": float(np.std(returns)) if episodes else math.nan,
        "mean_length": float(np.mean(lengths)) if episodes else math.nan,
        "std_length": float(np.std(lengths)) if episodes else math.nan,
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
    }


# ----------------------------------------------------------------------------------------------
# Hooks: videos and value traces
# ----------------------------------------------------------------------------------------------


class VideoRecorder:
    """One MP4 per recorded episode from the envs' rgb_array rendering.

    Frame t of an episode shows the state the policy acted on at step t, so a video has exactly
    as many frames as its episode has steps (the state after the last action is never shown:
    the env has already reset to the next episode when the step returns).
    """

    def __init__(self, folder: Path, episodes: int, env_id: str, fps: float | None = None) -> None:
        self.folder = Path(folder)
        self.record = set(range(episodes))
        self.env_id = env_id
        self.fps = fps
        self.videos: dict[int, Path] = {}
        self.frames: dict[int, int] = {}
        self._writers: dict[int, object] = {}  # env index -> VideoWriter

    def _envs(self, env: GymVecEnv) -> list:
        return list(env.env.envs)  # the sync vector env's gymnasium envs, rendered one by one

    def _open(self, env: GymVecEnv, i: int, number: int) -> None:
        from ppokit.recording import VideoWriter

        single = self._envs(env)[i]
        fps = self.fps or single.metadata.get("render_fps") or 30
        path = self.folder / f"episode_{number:03d}.mp4"
        self._writers[i] = VideoWriter(path, float(fps))
        self.videos[number] = path

    def _capture(self, env: GymVecEnv, i: int) -> None:
        from ppokit.recording import render_frame

        self._writers[i].append(render_frame(self._envs(env)[i], self.env_id))  # type: ignore[attr-defined]

    def begin(self, env: GymVecEnv, obs: torch.Tensor, active: Active) -> None:
        for i, number in enumerate(active):
            if number in self.record:
                self._open(env, i, number)
                self._capture(env, i)

    def after_step(
        self, env: GymVecEnv, obs: torch.Tensor, result: StepResult, before: Active, after: Active
    ) -> None:
        ended = (result.terminated | result.truncated).cpu().numpy()
        for i, (old, new) in enumerate(zip(before, after)):
            if ended[i] and i in self._writers:
                self._close(i, old)
            if new in self.record:
                if i not in self._writers:
                    self._open(env, i, new)
                self._capture(env, i)

    def _close(self, i: int, number: int | None) -> None:
        writer = self._writers.pop(i)
        writer.close()  # type: ignore[attr-defined]
        if number is not None:
            self.frames[number] = writer.frames  # type: ignore[attr-defined]

    def end(self) -> None:
        for i in list(self._writers):
            self._close(i, None)


@dataclass
class ValueProbe:
    """Collects the critic's V(s_t) (in env reward units) along the evaluated episodes."""

    value_fn: Callable[[torch.Tensor], torch.Tensor]
    episodes: int
    traces: list[EpisodeTrace | None] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.traces = [None] * self.episodes
        self._values: dict[int, list[float]] = {}
        self._rewards: dict[int, list[float]] = {}

    def begin(self, env: GymVecEnv, obs: torch.Tensor, active: Active) -> None:
        self._values = {i: [] for i in range(len(active))}
        self._rewards = {i: [] for i in range(len(active))}

    @torch.no_grad()
    def after_step(
        self, env: GymVecEnv, obs: torch.Tensor, result: StepResult, before: Active, after: Active
    ) -> None:
        if all(number is None for number in before):
            return
        values = self.value_fn(obs).double().cpu().numpy()
        rewards = result.rewards.double().cpu().numpy()
        terminated = result.terminated.cpu().numpy()
        truncated = result.truncated.cpu().numpy()
        for i, number in enumerate(before):
            if number is None:
                continue
            self._values[i].append(float(values[i]))
            self._rewards[i].append(float(rewards[i]))
            if terminated[i] or truncated[i]:
                bootstrap = 0.0
                if not terminated[i] and result.final_obs is not None:
                    final = obs_map(lambda x, i=i: x[i : i + 1], result.final_obs)
                    bootstrap = float(self.value_fn(final)[0])
                self.traces[number] = EpisodeTrace(
                    np.array(self._values[i]),
                    np.array(self._rewards[i]),
                    bool(terminated[i]),
                    bootstrap,
                )
                self._values[i], self._rewards[i] = [], []

    def end(self) -> None:
        pass


# ----------------------------------------------------------------------------------------------
# `ppokit eval`
# ----------------------------------------------------------------------------------------------


def parse_env_kwargs(value: str | dict | None) -> dict:
    """--env-kwargs: a YAML mapping (or a dict from Python), else a one-line ConfigError."""
    if value is None or isinstance(value, dict):
        return dict(value or {})
    import yaml

    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = " ".join(str(e).split())
        raise ConfigError(f"--env-kwargs is not valid YAML ({problem}): {value!r}") from None
    if not isinstance(parsed, dict):
        raise ConfigError(
            f"--env-kwargs must be a mapping such as '{{frame_skip: 4}}', got {value!r}"
        )
    return parsed


def run_eval(
    path: str | Path,
    episodes: int = 10,
    deterministic: bool = True,
    seed: int = 0,
    env_id: str | None = None,
    max_episode_steps: int | None = None,
    env_kwargs: str | dict | None = None,
    json_path: str | Path | None = None,
    record_dir: str | Path | None = None,
    record_episodes: int | None = None,
    render: bool = False,
    analyze_value: str | Path | None = None,
    device: str = "cpu",
) -> dict:
    """Evaluate a checkpoint, run directory or exported policy; see `ppokit eval --help`."""
    from ppokit import recording
    from ppokit.outputs import make_dir, output_dir, output_file, write_text
    from ppokit.policy import env_spaces, load_policy, reward_scale, space_mismatch

    if episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {episodes}")
    if record_episodes is not None and record_episodes < 1:
        raise ConfigError(f"--record-episodes must be >= 1, got {record_episodes}")
    if max_episode_steps is not None and max_episode_steps < 1:
        raise ConfigError(f"--max-episode-steps must be >= 1, got {max_episode_steps}")
    extra_kwargs = parse_env_kwargs(env_kwargs)
    if render and record_dir is not None:
        raise ConfigError("--render and --record cannot be combined (one render mode per env)")
    if render and not recording.has_display():
        raise EnvError(
            "--render needs a display, and DISPLAY is not set; use --record DIR to write videos"
            " instead"
        )
    # Output paths first: a typo should not cost a whole evaluation.
    json_file = output_file(json_path, "eval JSON") if json_path is not None else None
    png_file = output_file(analyze_value, "value-analysis PNG") if analyze_value else None
    if png_file is not None and png_file.suffix.lower() != ".png":
        raise ConfigError(f"--analyze-value writes a PNG; give a .png path, not {str(png_file)!r}")
    videos_dir = output_dir(record_dir, "videos") if record_dir is not None else None
    # Optional packages next: a missing one should not cost a whole evaluation either.
    if videos_dir is not None:
        recording.require_video()
    if png_file is not None:
        from ppokit.plot import _pyplot

        _pyplot()

    from ppokit.device import resolve_device

    torch_device = resolve_device(device)
    policy = load_policy(path, torch_device, deterministic)
    if png_file is not None and policy.model is None:
        raise ConfigError(
            f"--analyze-value needs the critic, which {policy.kind} files leave out; evaluate the"
            " checkpoint or run directory instead"
        )
    if png_file is not None and policy.recurrent:
        raise ConfigError(
            "--analyze-value does not support recurrent policies yet (the critic's state would"
            " have to follow the actor's); evaluate without it"
        )
    meta = policy.metadata
    if "env" in meta:
        env_cfg = EnvConfig(**meta["env"])
    elif env_id is None:
        raise ConfigError(
            f"{str(path)!r} does not name its env (no ppokit metadata); pass --env ID"
        )
    else:
        env_cfg = EnvConfig()
    if env_id is not None and env_id != env_cfg.id:
        # Another env: its own time limit and constructor arguments.
        env_cfg = replace(env_cfg, id=env_id, kwargs={}, max_episode_steps=None)
    if max_episode_steps is not None:
        env_cfg = replace(env_cfg, max_episode_steps=max_episode_steps)
    if extra_kwargs:
        env_cfg = replace(env_cfg, kwargs=merge_kwargs(env_cfg.kwargs, extra_kwargs))

    observation_space, action_space = env_spaces(
        env_cfg.id, env_cfg.max_episode_steps, env_cfg.kwargs
    )
    if "observation_space" in meta:
        problem = space_mismatch(meta, observation_space, action_space)
        if problem:
            raise EnvError(
                f"env {env_cfg.id!r} does not fit the policy (env vs policy): {problem}; evaluate"
                " on an env with the spaces it was trained on"
            )

    hooks: list = []
    max_parallel = 8
    recorder = None
    if videos_dir is not None:
        recording.check_render_mode(env_cfg.id, env_cfg.kwargs, "rgb_array", "--record")
        recording.configure_headless_gl()  # MuJoCo: EGL/OSMesa
        recording.configure_headless_sdl()  # pygame (classic control): no Wayland/X11 probing
        extra = recording.recording_kwargs(env_cfg.id, env_cfg.kwargs)  # a following camera
        env_cfg = replace(env_cfg, kwargs={**env_cfg.kwargs, **extra, "render_mode": "rgb_array"})
        count = episodes if record_episodes is None else min(record_episodes, episodes)
        recorder = VideoRecorder(make_dir(videos_dir, "videos"), count, env_cfg.id)
        hooks.append(recorder)
    if render:
        recording.check_render_mode(env_cfg.id, env_cfg.kwargs, "human", "--render")
        env_cfg = replace(env_cfg, kwargs={**env_cfg.kwargs, "render_mode": "human"})
        max_parallel = 1  # one window
    probe = None
    if png_file is not None:
        assert policy.model is not None and policy.checkpoint is not None
        model, scale = policy.model, reward_scale(policy.checkpoint)

        def value_fn(obs: torch.Tensor) -> torch.Tensor:
            return model.value(model.normalize(obs_map(lambda x: x.to(torch_device), obs))) * scale

        probe = ValueProbe(value_fn, episodes)
        hooks.append(probe)

    result = evaluate_policy(policy, env_cfg, episodes, seed, torch_device, max_parallel, hooks)
    report = {
        "policy": str(policy.path),
        "kind": policy.kind,
        "env": env_cfg.id,
        "deterministic": deterministic,
        "seed": seed,
        **result,
    }
    if recorder is not None:
        report["videos"] = [
            {"episode": k, "path": str(p), "frames": recorder.frames.get(k)}
            for k, p in sorted(recorder.videos.items())
        ]
    if probe is not None:
        from ppokit.plot import plot_value_analysis
        from ppokit.policy import checkpoint_config

        assert policy.checkpoint is not None
        gamma = checkpoint_config(policy.checkpoint).algo.gamma
        traces = [t for t in probe.traces if t is not None]
        analysis = value_analysis(traces, gamma)
        run = policy.path.parent.parent if policy.path.parent.name == "checkpoints" else policy.path
        mode = "deterministic" if deterministic else "stochastic"
        title = f"{env_cfg.id}, {run.name}: critic vs realised return ({mode} policy, seed {seed})"
        plot_value_analysis(traces, gamma, analysis, png_file, title=title)
        report["value_analysis"] = {"png": str(png_file), **analysis}
    if json_file is not None:
        write_text(json_file, json.dumps(report, indent=2) + "\n", "eval JSON")
    return report
