"""The helpers a graph program calls besides ppokit's core API (part of the public API: exported
scripts import this module).

Nothing here learns: acting, recording, GAE and the update are `PPO.act`, `PPO.record`,
`PPO.finish_rollout` and `PPO.update`, which `NodeTrainer` calls in the order a PPOTrainerNode
needs them on each tick. Besides it, this module holds the small pieces of plumbing that nodes
add around them (batch concatenation for several envs, k-tick windows for high-level agents,
checkpoints, progress lines). Evaluation is `ppokit.evaluate.evaluate_model` and episode
statistics `EpisodeTracker.metrics()`, as in `ppokit train`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

from ppokit import checkpoint as ckpt
from ppokit.algo.ppo import PPO
from ppokit.config import TrainConfig, to_dict
from ppokit.device import resolve_device, seed_everything, set_threads
from ppokit.envs.base import StepResult
from ppokit.episodes import EpisodeTracker
from ppokit.errors import RunDirError
from ppokit.logging import RunLogger, check_wandb
from ppokit.nn.actor_critic import ActorCritic
from ppokit.nn.memory import reset_states
from ppokit.outputs import new_run_dir, output_file
from ppokit.trainer import (
    install_stop_handlers,
    metric_names,
    prepare_run_dir,
    restore_handlers,
    write_checkpoint,
    write_final_eval,
)

# "stop": a stop was asked for (Ctrl-C, SIGTERM, the studio's interrupt): trainers end after
# their current update and the run finishes as an interrupted `ppokit train` does (checkpoint).
_state: dict[str, Any] = {"quiet": False, "t0": time.perf_counter(), "stop": False}
# Called after every update of every trainer as observer(name, trainer, metrics): the studio
# streams progress and curves through this.
observers: list[Callable[[str, NodeTrainer, dict], None]] = []


def start(seed: int, device: str, torch_threads: int | None, quiet: bool = False) -> torch.device:
    """What `ppokit train` does before building anything: threads, device, seeds (in that
    order, so a graph and the equivalent `ppokit train` draw the same random numbers)."""
    set_threads(torch_threads)
    resolved = resolve_device(device)
    seed_everything(seed)
    _state["quiet"] = quiet
    _state["t0"] = time.perf_counter()
    _state["stop"] = False
    return resolved


def request_stop(*_: Any) -> None:
    """End the run after the current update of each trainer, with its checkpoints written (the
    first Ctrl-C / SIGTERM); a second one stops at once."""
    if _state["stop"]:
        raise KeyboardInterrupt
    _state["stop"] = True


def interrupted() -> bool:
    return bool(_state["stop"])


def set_overwrite(overwrite: bool) -> None:
    """`graph run --overwrite`: a run directory that holds a run is moved aside, not refused."""
    _state["overwrite"] = overwrite


def claim(run_dir: Path, cfg: TrainConfig) -> Any:
    """Own `run_dir` (one owner per run dir, as `ppokit train`), refuse to write over a run in
    it unless --overwrite, and write its config; returns the lock."""
    try:
        lock, moved = prepare_run_dir(
            run_dir, cfg, True, _state.get("overwrite", False), "graph run"
        )
    except RunDirError as e:
        if "already holds a run" not in str(e):
            raise  # another process owns it: its own message says which
        raise RunDirError(
            f"run directory {str(run_dir)!r} already holds a run; replace it with `ppokit graph"
            " run ... --overwrite` (the old run is moved aside, not deleted), continue it with"
            f" `ppokit train --resume {run_dir}`, or choose another --out"
        ) from None
    if moved is not None and not _state["quiet"]:
        print(f"--overwrite: the old run in {run_dir} was moved to {moved}", flush=True)
    return lock


def run_dir_of(out_dir: Path, trainer: str, trainers: int) -> Path:
    """A trainer's run directory: the graph's output directory when it has one trainer, else
    <out>/<trainer id>."""
    return Path(out_dir) if trainers == 1 else Path(out_dir) / trainer


def box(dim: int) -> gym.spaces.Box:
    """The observation space of features that do not come straight from an env."""
    return gym.spaces.Box(-np.inf, np.inf, (dim,), np.float32)


def action_space(kind: str, size: int) -> gym.Space:
    """The action space of an agent whose actions reach no env: continuous in [-1, 1]^size, or
    `size` discrete choices."""
    if kind == "discrete":
        return gym.spaces.Discrete(size)
    return gym.spaces.Box(-1.0, 1.0, (size,), np.float32)


# ----------------------------------------------------------------------------------------------
# What an agent produces
# ----------------------------------------------------------------------------------------------


class PolicyOutput:
    """An agent's output for one tick.

    `action` is what goes to the env (rescaled and clipped to its bounds); `policy_action` the
    sample in the policy's own space and `log_prob` its log-probability. `value` and
    `action_params` are computed when read (the training loop itself never needs them per step:
    values come from one batched critic pass in `PPO.finish_rollout`). Read them in the tick
    they belong to.
    """

    __slots__ = ("model", "observations", "action", "policy_action", "log_prob")

    def __init__(
        self,
        model: ActorCritic,
        observations: torch.Tensor,
        action: torch.Tensor,
        policy_action: torch.Tensor,
        log_prob: torch.Tensor,
    ) -> None:
        self.model = model
        self.observations = observations
        self.action = action
        self.policy_action = policy_action
        self.log_prob = log_prob

    @classmethod
    def from_rollout(
        cls, model: ActorCritic, observations: torch.Tensor, action: torch.Tensor, buffer: Any
    ) -> PolicyOutput:
        """After `PPO.act`: the sample and log-prob it just stored in the rollout buffer."""
        t = buffer.step  # act stores at the current step; record advances it
        return cls(model, observations, action, buffer.actions[t], buffer.log_probs[t])

    @classmethod
    def explore(
        cls, model: ActorCritic, observations: torch.Tensor, memory: Memory | None = None
    ) -> PolicyOutput:
        """Sample without storing anything (an agent that is not, or no longer, trained);
        a recurrent model carries its state in `memory`."""
        with torch.no_grad():
            if memory is None:
                step = model.act(observations)
            else:
                step = model.act(observations, memory.get(model, observations))
                memory.state = step.state
        return cls(model, observations, step.env_actions, step.actions, step.log_probs)

    @property
    def value(self) -> torch.Tensor:
        with torch.no_grad():
            return self.model.value(self.model.normalize(self.observations))

    @property
    def action_params(self) -> dict[str, torch.Tensor]:
        """{"mean", "std"} of the Gaussian (policy space) or {"logits"}."""
        with torch.no_grad():
            params = self.model.actor(self.model.normalize(self.observations))
            if self.model.continuous:
                return {"mean": params, "std": self.model.distribution.std().expand_as(params)}
            return {"logits": params}


class Memory:
    """The recurrent state of an agent acting outside a rollout (zeroed at episode ends by
    `nn.memory.reset_states`, the one reset)."""

    def __init__(self) -> None:
        self.state: torch.Tensor | None = None

    def get(self, model: ActorCritic, observations: Any) -> torch.Tensor | None:
        if not model.recurrent:
            return None
        if self.state is None:
            n = len(
                next(iter(observations.values()))
                if isinstance(observations, dict)
                else observations
            )
            self.state = model.initial_state(n, self.device_of(model))
        return self.state

    @staticmethod
    def device_of(model: ActorCritic) -> torch.device:
        return next(model.parameters()).device

    def reset(self, step: StepResult) -> None:
        if self.state is not None:
            self.state = reset_states(self.state, step.terminated | step.truncated)


def actions_of(value: Any) -> torch.Tensor:
    return value.action if isinstance(value, PolicyOutput) else value


def features(value: Any, space: gym.Space) -> torch.Tensor:
    """Actions as float features for another agent's observations (one-hot when discrete)."""
    x = actions_of(value)
    if isinstance(space, gym.spaces.Discrete):
        return F.one_hot(x.long(), int(space.n)).float()
    if isinstance(space, gym.spaces.MultiDiscrete):
        return torch.cat(
            [F.one_hot(x[:, i].long(), int(n)).float() for i, n in enumerate(space.nvec)], dim=1
        )
    return x.float().reshape(x.shape[0], -1)


# ----------------------------------------------------------------------------------------------
# Batches of several envs, extra features
# ----------------------------------------------------------------------------------------------


def concat_batches(parts: Sequence[Any]) -> Any:
    """Concatenate the env batches of several sources (tensors or step results) in order."""
    first = parts[0]
    if isinstance(first, StepResult):
        finals = [p.final_obs for p in parts]
        final = (
            None
            if all(f is None for f in finals)
            else torch.cat([p.obs if f is None else f for p, f in zip(parts, finals)])
        )
        return StepResult(
            obs=torch.cat([p.obs for p in parts]),
            rewards=torch.cat([p.rewards for p in parts]),
            terminated=torch.cat([p.terminated for p in parts]),
            truncated=torch.cat([p.truncated for p in parts]),
            final_obs=final,
        )
    return torch.cat([actions_of(p) for p in parts])


def append_features(value: Any, extra: torch.Tensor) -> Any:
    """Observations (or a step result's observations and final observations) with `extra`
    appended as further features."""
    if isinstance(value, StepResult):
        return dataclasses.replace(
            value,
            obs=torch.cat([value.obs, extra], dim=1),
            final_obs=None
            if value.final_obs is None
            else torch.cat([value.final_obs, extra], dim=1),
        )
    return torch.cat([value, extra], dim=1)


def with_rewards(step: StepResult, rewards: torch.Tensor) -> StepResult:
    """`step` with other rewards (a graph may reshape them between the env and the trainer)."""
    return step if rewards is step.rewards else dataclasses.replace(step, rewards=rewards)


def final_observations(step: StepResult) -> torch.Tensor:
    """The observation each env's step ended on: the final one where an episode ended."""
    return step.obs if step.final_obs is None else step.final_obs


class Window:
    """One transition of an agent that acts every k ticks, summed from k env steps.

    Per env: rewards are summed up to and including the step its episode ended on (if it ended
    within the window); `terminated`/`truncated` and the final observation are those of that
    end. Rewards of a new episode begun inside the window belong to no transition.
    """

    def __init__(self) -> None:
        self.rewards: torch.Tensor | None = None

    def add(self, step: StepResult, rewards: torch.Tensor) -> None:
        if self.rewards is None:
            self.rewards = torch.zeros_like(rewards)
            self.terminated = torch.zeros_like(step.terminated)
            self.truncated = torch.zeros_like(step.truncated)
            self.final_obs: torch.Tensor | None = None
        live = ~(self.terminated | self.truncated)
        self.rewards += torch.where(live, rewards, torch.zeros_like(rewards))
        ends = (step.terminated | step.truncated) & live
        if bool(ends.any()):
            assert step.final_obs is not None
            if self.final_obs is None:
                self.final_obs = step.final_obs.clone()
            else:
                self.final_obs[ends] = step.final_obs[ends]
        self.terminated |= step.terminated & live
        self.truncated |= step.truncated & live
        self.last_obs = step.obs

    def pop(self) -> StepResult:
        assert self.rewards is not None, "Window.pop() before add()"
        ended = self.terminated | self.truncated
        final = None
        if self.final_obs is not None:
            final = torch.where(ended.unsqueeze(1), self.final_obs, self.last_obs)
        step = StepResult(self.last_obs, self.rewards, self.terminated, self.truncated, final)
        self.rewards = None
        return step


# ----------------------------------------------------------------------------------------------
# A trainer node: PPO's steps in the order of a tick
# ----------------------------------------------------------------------------------------------


class NodeTrainer:
    """What a PPOTrainerNode does on each tick of a graph, around `PPO`'s public steps.

    Per tick, in order: `update_if_full(obs)` before its agent acts (a rollout that filled on
    the previous tick is finished with the observations the agent is about to act on, which
    follow its last step, then PPO updates); `act(model, obs)` when the agent acts (PPO.act
    stores the sample while training lasts); `record(step, tick)` after the env stepped. An
    agent acting every `act_every` ticks records one transition per window (`Window`).
    """

    def __init__(
        self,
        name: str,
        model: ActorCritic,
        cfg: TrainConfig,
        device: torch.device,
        act_every: int = 1,
        log_every: int = 10,
        run_dir: str | Path | None = None,
        evaluated: bool = False,
    ) -> None:
        self.name, self.cfg, self.act_every, self.log_every = name, cfg, act_every, log_every
        self.steps_per_update = cfg.algo.num_steps * cfg.env.num_envs * act_every
        self.total_updates = math.ceil(cfg.total_steps / self.steps_per_update)
        self.ppo = PPO(model, cfg, device, self.total_updates)
        self.ppo.reset_memory()  # recurrent agents: the envs were just reset
        self.episodes = EpisodeTracker(cfg.env.num_envs, cfg.log.episode_window, device)
        self.loss_info: dict[str, float] = {}
        self.window = Window() if act_every > 1 else None
        self.storing = True  # whether the agent's last action went into the rollout
        self.memory = Memory()  # a recurrent agent's state once training is over
        # The run directory `ppokit train` writes, through the Trainer's own helpers: config.yaml,
        # metrics.csv and TensorBoard (RunLogger), checkpoints/ (update_N.pt, latest.pt), eval.json.
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.logger: RunLogger | None = None
        self.lock: Any = None
        if self.run_dir is not None:
            check_wandb(cfg.log)  # a missing wandb or API key: one line, before files are written
            self.lock = claim(self.run_dir, cfg)
            names = metric_names(self.ppo, False, evaluated)
            self.logger = RunLogger(self.run_dir, cfg.log, to_dict(cfg), self.run_dir.name, names)
        self.t_update_end = time.perf_counter()

    @property
    def training(self) -> bool:
        """Updates remain and no stop was asked for (the graph runs while any trainer is
        training)."""
        return self.ppo.updates < self.total_updates and not _state["stop"]

    @property
    def global_step(self) -> int:
        return self.ppo.updates * self.steps_per_update

    def update_if_full(self, next_obs: Any, tick: int) -> bool:
        """Before the agent acts: finish a full rollout with `next_obs` and update; returns
        whether an update ran (the node's training_complete)."""
        if tick % self.act_every or not self.ppo.rollout_full:
            return False
        t1 = time.perf_counter()
        self.episodes.add_rollout(self.ppo.buffer.rewards, self.ppo.buffer.dones)
        self.ppo.finish_rollout(next_obs)
        metrics = self.ppo.update() | self.episodes.metrics()
        t2 = time.perf_counter()
        sps = self.global_step / max(t2 - _state["t0"], 1e-9)
        rollout_s, self.t_update_end = t1 - self.t_update_end, t2
        metrics |= {"charts/SPS": sps, "time/rollout_s": rollout_s, "time/update_s": t2 - t1}
        self.loss_info = metrics
        log_update(
            self.name, self.ppo.updates, self.total_updates, self.global_step, metrics,
            self.log_every,
        )  # fmt: skip
        if self.logger is not None:
            self.logger.log(self.global_step, metrics)
            every = self.cfg.log.checkpoint_every
            if every and self.ppo.updates % every == 0 and self.ppo.updates < self.total_updates:
                self.save()
        for observer in observers:
            observer(self.name, self, metrics)
        return True

    def act(self, model: ActorCritic, obs: torch.Tensor) -> PolicyOutput:
        """The agent's output: sampled by PPO.act (stored in the rollout) while training lasts,
        then sampled without storing."""
        self.storing = self.training
        if self.storing:
            return PolicyOutput.from_rollout(model, obs, self.ppo.act(obs), self.ppo.buffer)
        if self.memory.state is None and model.recurrent:  # continue from the rollout's state
            self.memory.state = self.ppo.memory_state
        return PolicyOutput.explore(model, obs, self.memory)

    def record(self, step: StepResult, tick: int, rewards: torch.Tensor | None = None) -> None:
        """The outcome of the agent's last action (with `rewards` instead of the env's when a
        graph reshapes them); one transition per window for an agent acting every k ticks."""
        if not self.storing:
            self.memory.reset(step)
            return
        step = step if rewards is None else with_rewards(step, rewards)
        if self.window is None:
            self.ppo.record(step)
            return
        self.window.add(step, step.rewards)
        if tick % self.act_every == self.act_every - 1:
            self.ppo.record(self.window.pop())

    def checkpoint_state(self) -> dict:
        """A ppokit checkpoint (the layout `Trainer.state_dict` writes), so `ppokit train
        --resume`, `ppokit eval` and `ppokit.load_policy` read it."""
        return ckpt.training_state(self.cfg, self.ppo, self.global_step, self.episodes)

    def save(self) -> Path | None:
        """checkpoints/update_N.pt and latest.pt in the run directory (the Trainer's writer)."""
        if self.run_dir is None:
            return None
        state = self.checkpoint_state()
        return write_checkpoint(self.run_dir, state, self.ppo.updates, self.cfg.log)

    def end(self) -> None:
        """After the last tick: the final checkpoint, as `ppokit train` writes it."""
        path = self.save()
        if path is not None and _state["stop"] and not _state["quiet"]:
            print(f"[{self.name}] interrupted: checkpoint written to {path}", flush=True)

    def write_eval(self, result: dict) -> None:
        """The final evaluation of this trainer's model: eval.json and its metrics row."""
        if self.logger is not None and self.run_dir is not None:
            write_final_eval(self.run_dir, self.logger, self.global_step, result)

    def close(self) -> None:
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        if self.lock is not None:  # the run directory's ownership (ppokit.rundir)
            self.lock.release()
            self.lock = None

    def summary(self) -> dict:
        return {
            "updates": self.ppo.updates,
            "global_step": self.global_step,
            "mean_return": self.episodes.mean_return(),
            "loss_info": self.loss_info,
        }


# ----------------------------------------------------------------------------------------------
# Progress, evaluation, checkpoints, export
# ----------------------------------------------------------------------------------------------


def log_update(
    name: str, updates: int, total: int, global_step: int, metrics: dict, every: int
) -> None:
    """A progress line every `every` updates (and at the last one), unless quiet."""
    if _state["quiet"] or not every or (updates % every and updates != total):
        return
    sps = global_step / max(time.perf_counter() - _state["t0"], 1e-9)
    ret = metrics.get("charts/episode_return")
    parts = [
        f"[{name}] update {updates}/{total}",
        f"steps {global_step}",
        f"return {ret:.1f}" if ret is not None else "return -",
        f"value_loss {metrics['losses/value_loss']:.3g}",
        f"kl {metrics['losses/approx_kl']:.3g}",
        f"{sps:.0f} SPS",
    ]
    print(" | ".join(parts), flush=True)


def report(name: str, what: str, when: str) -> None:
    if not _state["quiet"]:
        print(f"[{name}] {what} ({when})", flush=True)


def eval_line(result: dict) -> str:
    return (
        f"eval ({result['episodes']} episodes): return {result['mean_return']:.1f}"
        f" +- {result['std_return']:.1f}, length {result['mean_length']:.0f}"
    )


def output_path(out_dir: Path, path: str) -> Path:
    """`path` relative to the run's output directory (absolute paths stay as they are)."""
    p = Path(path)
    return p if p.is_absolute() else out_dir / p


def save_checkpoint(path: Path, state: dict) -> str:
    p = output_file(path, "checkpoint")
    ckpt.save_atomic(state, p)
    return str(p)


def export_policy(path: Path, fmt: str, state: dict) -> str:
    """`ppokit export` of the checkpoint `state` (ONNX or TorchScript, verified against torch;
    `ppokit.load_policy(path)` reads it). The checkpoint is written to a temporary file."""
    from ppokit.export import export_policy as export_checkpoint

    p = output_file(path, f"{fmt} export")
    tmp = p.parent / f".{p.name}.{uuid.uuid4().hex}.ckpt.tmp"
    try:
        ckpt.save_atomic(state, tmp)
        return str(export_checkpoint(tmp, fmt, p).path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# Running a program: output directory and the command line of exported scripts
# ----------------------------------------------------------------------------------------------


def format_results(results: dict) -> list[str]:
    """One line per result of the run (evaluations, checkpoints, trainers)."""
    lines = []
    for name, value in results.items():
        if value is None:  # an evaluation skipped after Ctrl-C
            lines.append(f"{name}: skipped (interrupted)")
        elif isinstance(value, dict) and "mean_return" in value and "episodes" in value:
            lines.append(f"{name}: {eval_line(value)}")
        elif isinstance(value, dict) and "updates" in value:
            ret = value.get("mean_return")
            ret_text = f"{ret:.1f}" if ret is not None else "-"
            lines.append(
                f"{name}: {value['updates']} updates, {value['global_step']} steps,"
                f" training return {ret_text}"
            )
        elif isinstance(value, str):
            lines.append(f"{name}: wrote {value}")
        elif name == "ticks":
            lines.append(f"ticks: {value}")
        else:
            lines.append(f"{name}: {json.dumps(value, default=str)}")
    return lines


def main(run: Callable[..., dict], name: str, seed: int, device: str) -> None:
    """Command line of an exported script: `python script.py [--out DIR] [--device D] [--quiet]`."""
    parser = argparse.ArgumentParser(description=f"Run the {name} graph (exported by ppokit).")
    parser.add_argument("--out", help="output directory (default: runs/<name>_s<seed>_<time>)")
    parser.add_argument("--device", default=device, help=f"torch device (default: {device})")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    args = parser.parse_args()
    out = Path(args.out) if args.out else new_run_dir("runs", name, seed)
    handlers = install_stop_handlers(request_stop)
    try:
        results = run(out_dir=out, device=args.device, quiet=args.quiet)
    finally:
        restore_handlers(handlers)
    for line in format_results(results):
        print(line)
    sys.stdout.flush()


__all__ = [
    "Memory",
    "NodeTrainer",
    "PolicyOutput",
    "Window",
    "action_space",
    "actions_of",
    "append_features",
    "box",
    "concat_batches",
    "eval_line",
    "export_policy",
    "features",
    "final_observations",
    "format_results",
    "interrupted",
    "log_update",
    "main",
    "observers",
    "output_path",
    "report",
    "request_stop",
    "run_dir_of",
    "save_checkpoint",
    "start",
    "with_rewards",
]
