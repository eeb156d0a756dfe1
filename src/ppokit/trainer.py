"""The training loop: collect, GAE, update, log, checkpoint, resume.

`Trainer.train()` reads top to bottom like a single-file PPO; each step it calls (PPO.act,
PPO.record, PPO.finish_rollout, PPO.update) is public and also used by other loops.
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from ppokit import checkpoint as ckpt
from ppokit import distributed, faults
from ppokit.algo.ppo import PPO
from ppokit.config import (
    EnvConfig,
    PolicyConfig,
    TrainConfig,
    config_yaml,
    from_dict,
    load_preset,
    to_dict,
    validate,
)
from ppokit.device import resolve_device, seed_everything, set_threads
from ppokit.envs import VecEnv, make_env
from ppokit.envs.external import adapt_external_env
from ppokit.envs.snapshot import load_vec_env_state, vec_env_state
from ppokit.episodes import EnvLog, EpisodeTracker
from ppokit.errors import (
    CheckpointError,
    ConfigError,
    EnvError,
    EnvStateUnsupported,
    TrainingStopped,
)
from ppokit.evaluate import evaluate_model
from ppokit.faults import StepWatchdog
from ppokit.logging import Progress, RunLogger, check_wandb
from ppokit.nn.actor_critic import ActorCritic
from ppokit.observations import Obs, obs_map
from ppokit.outputs import make_dir, new_run_dir, write_text
from ppokit.rundir import RunLock, claim_run_dir

# Config fields that must match to resume: they define the shapes and meaning of saved state.
RESUME_MUST_MATCH = ("env.id", "policy", "algo.optimizer")


@dataclass
class TrainResult:
    run_dir: Path
    global_step: int
    updates: int
    mean_return: float | None
    eval: dict | None
    interrupted: bool = False
    best_eval: dict | None = None  # the best evaluation during training (eval.every)
    stop_reason: str | None = None  # why training ended before total_steps (early stop)


Callback = Callable[["Trainer", dict], None]


class Trainer:
    """Builds env, model and algorithm from a config and runs (or resumes) training.

    Launched by torchrun, each process is one data-parallel rank (ppokit.distributed): it owns
    `cfg.env.num_envs` envs seeded apart from the other ranks', the update is shared, and rank 0
    alone writes logs, progress and checkpoints. `steps_per_update` and `global_step` count every
    rank's steps.

    `callbacks` are called on every rank after each update, as `callback(trainer, metrics)`,
    before the metrics are logged: a callback may add entries to `metrics` (they are logged with
    the rest) and may end training with `trainer.stop_training(reason)` (docs/training.md).

    `env` trains on an environment built elsewhere instead of `make_env(cfg.env)`: a callable
    returning a `gymnasium.Env` (ppokit builds `cfg.env.num_envs` of them), a `gymnasium.Env`
    instance (`cfg.env.num_envs` 1), a `gymnasium.vector.VectorEnv` in SAME_STEP autoreset mode,
    or a ppokit `VecEnv` (a GPU simulator behind `ppokit.envs.isaaclab.IsaacLabVecEnv`,
    `TorchVecEnv`, ...); see `ppokit.envs.external`. Its env count must equal
    `cfg.env.num_envs` and its device the trainer's; the run directory is named after it. The
    final evaluation runs on new envs of the same kind where ppokit can make them (a callable,
    or an env whose spec `gym.make` rebuilds) and is skipped, with a printed reason, otherwise.
    """

    def __init__(
        self,
        cfg: TrainConfig,
        run_dir: str | Path | None = None,
        resume: str | Path | None = None,
        callbacks: list[Callback] | None = None,
        env: VecEnv | gym.Env | gym.vector.VectorEnv | Callable[[], gym.Env] | None = None,
        overwrite: bool = False,
    ) -> None:
        validate(cfg)  # however it was made (file, flags, by hand): the schema's checks
        check_wandb(cfg.log)  # a missing wandb or API key: one line, before anything is written
        state = ckpt.load_checkpoint(resume) if resume is not None else None
        if state is not None:
            check_resume_compatible(state["config"], cfg)
        self.cfg = cfg
        self.callbacks = list(callbacks or [])
        set_threads(cfg.torch_threads)
        # Under torchrun: join the process group (cuda:LOCAL_RANK on GPUs); else one process.
        self.sync, self.device = distributed.setup(resolve_device(cfg.device))
        self.sync.check_same(to_dict(cfg), "config")
        rank, world = self.sync.rank, self.sync.world_size
        seed_everything(cfg.seed + rank)
        # What the final evaluation builds its envs from: the config, or a factory of the given
        # env; None when ppokit cannot make more of it (`external_env`: evaluation is skipped).
        self.eval_env: EnvConfig | Callable[[], gym.Env] | None = cfg.env
        self.no_eval, run_name = "", None
        if env is None:
            self.env = make_env(cfg.env, self.device)
        else:
            given = adapt_external_env(env, cfg.env, self.device)
            self.env, self.eval_env, self.no_eval = given.env, given.make_one, given.no_eval
            run_name = given.name
            check_external_env(self.env, cfg, self.device)
            if self.eval_env is None and (cfg.eval.every or cfg.eval.every_steps):
                raise ConfigError(
                    f"eval.every needs new envs for evaluation: {self.no_eval}; set eval.every 0"
                    " and evaluate the checkpoints, or pass a callable that makes the env"
                )
            if self.eval_env is None and cfg.eval.episodes > 0 and self.sync.is_main:
                print(f"final evaluation will be skipped: {self.no_eval}", flush=True)
        self.external_env = self.eval_env is None
        check_action_options(cfg, self.env.action_space, self.env_id())
        self.model = ActorCritic(
            self.env.observation_space,
            self.env.action_space,
            cfg.policy,
        ).to(self.device)
        self.steps_per_update = cfg.algo.num_steps * cfg.env.num_envs * world
        self.total_updates = math.ceil(cfg.total_steps / self.steps_per_update)
        e = cfg.eval
        self.eval_every = e.every or math.ceil(e.every_steps / self.steps_per_update)
        # The best evaluation during training so far, and evaluations since it (eval.patience).
        self.best_eval: dict | None = None
        self.evals_since_best = 0
        self.ppo = PPO(self.model, cfg, self.device, self.total_updates, sync=self.sync)
        # Episodes of every rank's envs (their rewards and done flags are gathered per update).
        self.episodes = EpisodeTracker(
            cfg.env.num_envs * world, cfg.log.episode_window, self.device
        )
        self.env_log = EnvLog()  # the env's own metrics (infos["log"]), means per rollout
        self.global_step = 0
        # The observation, memory, RNG and env state at the start of the rollout in progress: a
        # stop before the rollout completes saves these with the last complete update.
        self._rollout_start: dict | None = None
        self.env_unsaved: str | None = "a new run"  # why the envs were not restored (resume)
        self._obs: Obs | None = None  # the observation the next rollout starts from
        self._watchdog = StepWatchdog(0)  # train() arms it with env.step_timeout
        self.resumed = state is not None
        if state is not None:
            self._load_state(state)
            from_dir = Path(state["path"]).resolve().parent.parent
            self.run_dir = Path(run_dir) if run_dir else from_dir
        else:
            self.run_dir = Path(run_dir) if run_dir else default_run_dir(cfg, run_name)
        # Every rank takes rank 0's run directory (a default name holds rank 0's clock time).
        self.run_dir = Path(self.sync.broadcast_object(str(self.run_dir)))
        self.lock: RunLock | None = None
        if self.is_main:
            self._claim_run_dir(state, overwrite)
        self.logger: RunLogger | None = None
        self.stop_requested = False
        self._stop_pending = False  # distributed: asked on this rank, not yet agreed on
        self.stop_reason: str | None = None  # set by stop_training (early stop, callbacks)

    def _claim_run_dir(self, state: dict | None, overwrite: bool) -> None:
        """Lock the run directory for this process (one owner per run dir), refuse to write a
        new run over an old one (unless `overwrite`: moved aside), write the config."""
        resuming_here = (
            state is not None
            and self.run_dir.resolve() == Path(state["path"]).resolve().parent.parent
        )
        self.lock, moved = prepare_run_dir(
            self.run_dir, self.cfg, not resuming_here, overwrite, "resume" if state else "training"
        )
        if moved is not None:
            self.say(f"--overwrite: the old run in {self.run_dir} was moved to {moved}")

    def check_resume_left(self) -> None:
        """A resume must have something left to do: updates, or the final evaluation."""
        run_dir = self.run_dir
        evaluated = (run_dir / "eval.json").exists() or self.cfg.eval.episodes == 0
        if self.ppo.updates >= self.total_updates and evaluated:
            raise ConfigError(
                f"the run already has {self.global_step:,} steps and total_steps is"
                f" {self.cfg.total_steps:,}: nothing left to train; extend it with --total_steps"
                f" above {self.global_step:,}, or evaluate it with `ppokit eval {run_dir}`"
            )

    def release(self) -> None:
        """Give up the run directory (its lock); the end of train() does it."""
        if self.lock is not None:
            self.lock.release()

    @property
    def is_main(self) -> bool:
        """Whether this process writes logs and checkpoints (rank 0; always, without torchrun)."""
        return self.sync.is_main

    # --- state ----------------------------------------------------------------------------------
    def state_dict(self, rollout: dict | None = None) -> dict:
        """The checkpoint; under torchrun every rank must call it (RNG states are gathered).

        Besides the learner it holds where the envs are (`rollout`: the observation, the
        policy's memory, the RNG streams and the env state, at an update boundary), so a
        resume continues the very episodes in progress. `rollout` defaults to now; a stop in the
        middle of a rollout passes the state saved at its start."""
        rollout = rollout if rollout is not None else self.rollout_state(None)
        state = ckpt.training_state(self.cfg, self.ppo, self.global_step, self.episodes)
        state["rng"] = rollout["rng"]
        state["best_eval"] = {"result": self.best_eval, "evals_since": self.evals_since_best}
        if self.sync.distributed:  # each rank's RNG streams, so every rank resumes exactly
            state["rng_ranks"] = self.sync.gather_object(state["rng"])
            state["rollout_ranks"] = self.sync.gather_object(_to_cpu(rollout))
        else:
            state["rollout"] = _to_cpu(rollout)
        return state

    def rollout_state(self, obs: Any) -> dict:
        """The observation `obs` (None: the one the next rollout starts from), memory, RNG
        streams and env state, now. `env` is None, with the reason in `env_unsaved`, when the
        env cannot save its state (async subprocess envs, external simulators)."""
        env_state, unsaved = capture_env_state(self.env)
        obs = obs if obs is not None else self._obs
        return {
            "obs": None if obs is None else obs_map(torch.clone, obs),
            "memory": self.ppo.memory_state.clone(),
            "rng": ckpt.rng_state(),
            "env": env_state,
            "env_unsaved": unsaved,
        }

    def _load_state(self, state: dict) -> None:
        spaces = {
            "observation": repr(self.env.observation_space),
            "action": repr(self.env.action_space),
        }
        if state["spaces"] != spaces:
            raise CheckpointError(
                f"cannot resume: the checkpoint's spaces {state['spaces']} differ from the env's {spaces}"
            )
        self.ppo.load_state_dict(state["ppo"])
        # A resume with another total_steps stretches what is left of the LR schedule over the
        # updates now left, so the LR goes on from where it was (LRSchedule.extend).
        self.ppo.schedule.extend(self.ppo.updates, self.total_updates)
        self.global_step = int(state["global_step"])
        self.episodes.load_state_dict(state["episodes"])
        best = state.get("best_eval") or {}
        self.best_eval, self.evals_since_best = best.get("result"), best.get("evals_since", 0)
        ranks = state.get("rng_ranks")
        rollouts = state.get("rollout_ranks")
        same_world = ranks is not None and len(ranks) == self.sync.world_size
        if same_world:
            ckpt.set_rng_state(ranks[self.sync.rank])
        elif self.sync.rank == 0:
            ckpt.set_rng_state(state["rng"])
        else:  # written by fewer ranks: this rank's streams start afresh, seeded apart
            seed_everything(self.cfg.seed + self.sync.rank + 1_000_003 * self.ppo.updates)
        if rollouts is not None:
            saved = rollouts[self.sync.rank] if same_world else None
            why = None if same_world else "the checkpoint was written by another number of ranks"
        elif not self.sync.distributed:
            saved, why = state.get("rollout"), None
        else:
            saved, why = None, None
        changed = env_changes(state["config"].get("env", {}), to_dict(self.cfg)["env"])
        if changed and saved is not None:  # the saved state is of envs made another way
            saved, why = None, f"the env config changed since the checkpoint ({changed})"
        self.env_unsaved = self._restore_envs(saved) if saved is not None else why

    def _restore_envs(self, saved: dict) -> str | None:
        """Put the envs, the observation and the memory where the checkpoint left them; None
        when done, else why not (a resume then restarts episodes)."""
        if saved.get("env") is None or saved.get("obs") is None:
            return saved.get("env_unsaved") or "the checkpoint holds no env state"
        try:
            load_vec_env_state(self.env, saved["env"])
        except (EnvStateUnsupported, EnvError) as e:
            return str(e)
        if saved["memory"].shape != self.ppo.memory_state.shape:
            return "the policy's memory has another shape"
        self.ppo.memory_state.copy_(saved["memory"].to(self.device))
        self._obs = obs_map(lambda t: t.to(self.device), saved["obs"])
        return None

    def save_checkpoint(self, name: str | None = None, rollout: dict | None = None) -> Path:
        """Write the checkpoint update_N.pt and latest.pt, or only checkpoints/<name>.pt when
        `name` is given (rank 0; under torchrun every rank calls this together). `rollout`: see
        state_dict."""
        state = self.state_dict(rollout)
        if not self.is_main:
            return checkpoint_path(self.run_dir, self.ppo.updates, name)
        return write_checkpoint(self.run_dir, state, self.ppo.updates, self.cfg.log, name)

    # --- the loop -------------------------------------------------------------------------------
    def collect(self, obs: torch.Tensor) -> torch.Tensor:
        """Fill the rollout buffer from `obs` on; returns the observation after the last step.

        Returns early (buffer not full) when a stop was requested. Each env step runs under the
        step watchdog (env.step_timeout).
        """
        watchdog = self._watchdog
        while not self.ppo.rollout_full and not self.stop_requested:
            actions = self.ppo.act(obs)
            watchdog.started = time.monotonic()
            step = self.env.step(actions)
            watchdog.started = None
            if "log" in step.infos:
                self.env_log.add(step.infos["log"])
            self.ppo.record(step)
            obs = step.obs
        check_finite = getattr(self.env, "check_finite", None)
        if check_finite is not None:  # batched torch envs: one host read of a NaN/inf flag
            check_finite()
        if self.ppo.rollout_full:
            self.global_step += self.steps_per_update
        return obs

    def request_stop(self, *_: Any) -> None:
        """Finish at the next step boundary and write a checkpoint (first Ctrl-C / SIGTERM).

        Under torchrun the ranks agree at the end of each update, so all of them finish that
        update and stop together."""
        if self.stop_requested or self._stop_pending:  # a second Ctrl-C stops at once
            raise KeyboardInterrupt
        if self.sync.distributed:
            self._stop_pending = True
        else:
            self.stop_requested = True

    def stop_training(self, reason: str) -> None:
        """End training after the current update, as a finished run (not an interruption): the
        final checkpoint and evaluation follow. Called by the early stops and by callbacks."""
        self.stop_reason = reason

    def say(self, message: str) -> None:
        """One line to the console from rank 0."""
        if self.is_main:
            print(message, flush=True)

    def metric_names(self) -> list[str]:
        """The metrics every update logs, in order (metrics.csv's columns)."""
        return metric_names(self.ppo, bool(self.eval_every), self.cfg.eval.episodes > 0)

    def start_episodes(self) -> Obs:
        """The observation training starts from: the envs' state saved in the checkpoint (a
        resume continues the episodes in progress, bit for bit), else new episodes."""
        if self.resumed and self.env_unsaved is None and self._obs is not None:
            return self._obs  # restored by _load_state: the episodes in progress go on
        if self.resumed:
            self.say(f"resume: episodes restart ({self.env_unsaved})")
            # New episodes everywhere: their running returns start over too.
            self.ppo.reward_scaler.reset()
            self.episodes.reset_partial()
        # A fresh run starts from the configured seed; a resumed run from one derived from its
        # update count, so two resumes of one checkpoint are identical. Rank r's envs take the
        # seeds after rank r-1's: K ranks of N envs reset like one process of K*N envs.
        obs = self.env.reset(
            seed=self.cfg.seed
            + 1_000_003 * self.ppo.updates
            + self.sync.rank * self.cfg.env.num_envs
        )
        self.ppo.reset_memory()  # recurrent policies: new episodes start from a zero state
        return obs

    def train(self) -> TrainResult:
        """Train to total_steps (or an early stop, or Ctrl-C: the last complete update is
        saved). A fault (an env error, NaN/inf data, a failed write) also saves the last
        complete update, writes the traceback to <run dir>/error.log and raises
        TrainingStopped with one line naming it."""
        cfg = self.cfg
        # Ctrl-C from here on stops at the next step boundary with a checkpoint (an update-0 one
        # when it comes during the start-up), so an interrupted run can always be resumed. A stop
        # requested before (a Ctrl-C held while the Trainer was built) does the same.
        handlers = install_stop_handlers(self.request_stop)
        try:
            if self.resumed:
                self.check_resume_left()
            if self.is_main:
                self.logger = RunLogger(
                    self.run_dir,
                    cfg.log,
                    to_dict(cfg),
                    self.run_dir.name,
                    self.metric_names(),
                    resume_step=self.global_step if self.resumed else None,
                )
            return self._train(handlers)
        finally:
            restore_handlers(handlers)
            if self.logger is not None:
                self.logger.close()
            self.release()

    def _train(self, handlers: dict) -> TrainResult:
        cfg = self.cfg
        planned = self.total_updates * self.steps_per_update
        if self.ppo.updates == 0 and planned != cfg.total_steps:
            self.say(
                f"total_steps {cfg.total_steps:,} is not a multiple of the {self.steps_per_update:,}"
                f" steps per update ({cfg.env.num_envs * self.sync.world_size} envs x"
                f" {cfg.algo.num_steps} steps): training runs {self.total_updates:,} updates ="
                f" {planned:,} steps"
            )
        self.say(self.ppo.paths.describe())  # which accelerators replace the reference steps
        self.stop_reason = None
        progress = Progress(
            self.total_updates * self.steps_per_update,
            self.global_step,
            cfg.log.progress and self.is_main,
        )
        start_time, start_step = time.perf_counter(), self.global_step
        compiling = self.ppo.paths.update == "compiled"
        # Where a fault leaves the learner: "rollout" (unchanged since the last update: saved
        # with the rollout's starting state), "update" (half-updated: not saved), "after" (the
        # update is complete: saved as it is).
        phase, fault = "start", None
        self._watchdog = StepWatchdog(cfg.env.step_timeout)
        try:
            with self._watchdog:
                self._obs = obs = self.start_episodes()
                while (
                    self.ppo.updates < self.total_updates
                    and not self.stop_requested
                    and self.stop_reason is None
                ):
                    phase = "rollout"
                    self._rollout_start = self.rollout_state(obs)
                    t0, step0 = time.perf_counter(), self.global_step
                    obs = self.collect(obs)
                    if self.stop_requested:  # the partial (or unused) rollout is discarded
                        self.global_step = step0
                        break
                    t1 = time.perf_counter()
                    phase = "update"
                    self.episodes.add_rollout(
                        *self.sync.gather_envs(self.ppo.buffer.rewards, self.ppo.buffer.dones)
                    )
                    self.ppo.finish_rollout(obs)
                    if compiling:
                        self.say(
                            "algo.compile: compiling the update with torch.compile (one-off, tens of seconds on a CPU)"
                        )
                    metrics = self.ppo.update()
                    self._obs, self._rollout_start, phase = obs, None, "after"
                    t2 = time.perf_counter()
                    if compiling:
                        self.say(
                            f"algo.compile: the first update took {t2 - t1:.0f} s with compilation"
                        )
                        compiling = False
                    sps = (self.global_step - start_step) / (time.perf_counter() - start_time)
                    metrics.update(self.episodes.metrics())
                    metrics.update(self.env_log.means())  # rank 0's envs under torchrun
                    metrics.update(
                        {"charts/SPS": sps, "time/rollout_s": t1 - t0, "time/update_s": t2 - t1}
                    )
                    if self.eval_every and self.ppo.updates % self.eval_every == 0:
                        metrics.update(self.periodic_evaluation())
                    for callback in self.callbacks:
                        callback(self, metrics)
                    if self.logger is not None:
                        self.logger.log(self.global_step, metrics)
                    progress.update(self.global_step, sps, self.episodes.mean_return())
                    every = cfg.log.checkpoint_every
                    if (
                        every
                        and self.ppo.updates % every == 0
                        and self.ppo.updates < self.total_updates
                    ):
                        self.save_checkpoint()
                    if self.sync.distributed:  # one collective per update: stop together, or not
                        self.stop_requested = self.sync.any(self._stop_pending)
        except Exception as e:  # a second Ctrl-C (KeyboardInterrupt) stops at once, unsaved
            if self.sync.distributed:
                # Saving needs every rank at the same collective, and the others are elsewhere
                # (or gone): under torchrun a fault ends the run as it is, and the last periodic
                # checkpoint stands (docs/reliability.md).
                raise
            fault = e
        finally:
            restore_handlers(handlers)
            progress.close()
        # A stop mid-rollout discards the partial rollout: checkpoints fall on update boundaries.
        self.ppo.buffer.reset()
        if fault is not None:
            self.stop_on_fault(fault, phase)
        interrupted = self.stop_requested
        if self.stop_reason is not None and not interrupted:
            self.say(f"stopped early after {self.global_step:,} steps: {self.stop_reason}")
        path = self.save_checkpoint(rollout=self._rollout_start)
        eval_result = None
        if (
            not interrupted
            and cfg.eval.episodes > 0
            and self.logger is not None
            and not self.external_env
        ):
            try:
                eval_result = self.evaluate(cfg.eval.episodes)
            except KeyboardInterrupt:
                interrupted = True
                self.say(
                    f"final evaluation interrupted; the trained policy is saved ({path}):"
                    f" evaluate it with `ppokit eval {self.run_dir}`"
                )
            else:
                write_final_eval(self.run_dir, self.logger, self.global_step, eval_result)
        if self.sync.distributed:
            # Every rank returns rank 0's evaluation, and the ranks reach their exit together
            # instead of the others tearing the process group down while rank 0 evaluates.
            eval_result = self.sync.broadcast_object(eval_result)
        self.env.close()
        if interrupted and self.is_main and eval_result is None and self.stop_requested:
            print(f"interrupted: checkpoint written to {path}", flush=True)
        return TrainResult(
            self.run_dir,
            self.global_step,
            self.ppo.updates,
            self.episodes.mean_return(),
            eval_result,
            interrupted,
            self.best_eval,
            self.stop_reason,
        )

    def stop_on_fault(self, fault: Exception, phase: str) -> typing.NoReturn:
        """Save the last complete update, log the traceback, close the envs and raise
        TrainingStopped naming the fault in one line."""
        summary = faults.describe(fault, self.env_id(), getattr(self.env, "steps", None))
        saved = ""
        if phase == "update":
            saved = "the update in progress was not saved (the last checkpoint stands)"
        else:
            try:
                path = self.save_checkpoint(rollout=self._rollout_start)
                saved = (
                    f"the last complete update ({self.ppo.updates}, step {self.global_step:,})"
                    f" is saved in {path.parent / ckpt.LATEST}"
                )
            except Exception as e:  # a full disk: say so, the older checkpoints are intact
                saved = f"the last complete update could not be saved: {e}"
        log = faults.write_error_log(self.run_dir, fault, summary)
        close = getattr(self.env, "abort", None) or getattr(self.env, "close", None)
        try:
            if close is not None:
                close()
        except Exception:  # an env that failed may not close cleanly; its error is reported
            pass
        where = f"; traceback in {log}" if log is not None else ""
        raise TrainingStopped(f"training stopped: {summary}; {saved}{where}") from fault

    def env_id(self) -> str:
        return (
            getattr(self.env, "env_id", None)
            or getattr(self.env, "name", None)
            or (self.cfg.env.id)
        )

    def periodic_evaluation(self) -> dict[str, float]:
        """An evaluation during training (eval.every): keeps checkpoints/best.pt at the best
        mean return so far and applies the early stops; returns the eval/* metrics.

        Rank 0 evaluates and every rank takes its result, so every rank decides alike."""
        e = self.cfg.eval
        result = self.evaluate(e.periodic_episodes) if self.is_main else None
        result = self.sync.broadcast_object(result)
        result = {**result, "global_step": self.global_step, "update": self.ppo.updates}
        if self.best_eval is None or result["mean_return"] > self.best_eval["mean_return"]:
            self.best_eval, self.evals_since_best = result, 0
            self.save_checkpoint("best")
        else:
            self.evals_since_best += 1
        best = self.best_eval["mean_return"]
        if e.target_return is not None and result["mean_return"] >= e.target_return:
            self.stop_training(
                f"evaluation return {result['mean_return']:.1f} reached eval.target_return"
                f" {e.target_return:g}"
            )
        elif e.patience and self.evals_since_best >= e.patience:
            self.stop_training(
                f"no new best in {e.patience} evaluations (eval.patience); best {best:.1f} at"
                f" step {self.best_eval['global_step']:,} (checkpoints/best.pt)"
            )
        return {
            "eval/mean_return": result["mean_return"],
            "eval/std_return": result["std_return"],
            "eval/mean_length": result["mean_length"],
            "eval/best_return": best,
        }

    def evaluate(self, episodes: int, deterministic: bool = True, seed: int | None = None) -> dict:
        """Deterministic evaluation on fresh envs (seeded apart from the training envs): of the
        config's id, or new envs of the kind handed to the constructor."""
        if self.eval_env is None:
            raise EnvError(f"cannot evaluate on new envs: {self.no_eval}")
        seed = self.cfg.seed + 10_000 if seed is None else seed
        return evaluate_model(self.model, self.eval_env, episodes, seed, self.device, deterministic)


# Policy options that only mean something for continuous (Box) actions.
CONTINUOUS_ONLY = (
    "init_noise_std",
    "noise_std_relative",
    "log_std_min",
    "log_std_max",
    "rescale_actions",
)


def check_action_options(cfg: TrainConfig, action_space: gym.Space, env_id: str) -> None:
    """A continuous-only policy option changed from its default on an env with discrete
    actions would be silently ignored: a one-line ConfigError instead."""
    if isinstance(action_space, gym.spaces.Box):
        return
    default = PolicyConfig()
    changed = [
        f"policy.{k} {getattr(cfg.policy, k)!r}"
        for k in CONTINUOUS_ONLY
        if getattr(cfg.policy, k) != getattr(default, k)
    ]
    if changed:
        raise ConfigError(
            f"{', '.join(changed)} only applies to continuous (Box) actions, and {env_id!r} has"
            f" {action_space} actions: remove it"
        )


# ----------------------------------------------------------------------------------------------
# The run directory: what every run writes, whoever drives the loop (the Trainer, a node graph's
# trainer node). One implementation, so `ppokit eval/plot/export/train --resume` read both alike.
# ----------------------------------------------------------------------------------------------


def prepare_run_dir(
    run_dir: Path,
    cfg: TrainConfig,
    fresh: bool = True,
    overwrite: bool = False,
    what: str = "training",
) -> tuple[RunLock, Path | None]:
    """Lock `run_dir` for this process (one owner per run dir), refuse to write a new run
    (`fresh`) over an old one (unless `overwrite`: moved aside), create checkpoints/ and write
    the resolved config.yaml. Returns the lock (held until released) and where an old run went."""
    lock, moved = claim_run_dir(run_dir, fresh, overwrite, what)
    make_dir(run_dir / "checkpoints", "run directory")
    write_text(run_dir / "config.yaml", config_yaml(cfg), "config")
    return lock, moved


def checkpoint_path(run_dir: Path, updates: int, name: str | None = None) -> Path:
    """checkpoints/<name>.pt, or checkpoints/update_<N>.pt for a periodic checkpoint."""
    return run_dir / "checkpoints" / (f"{name}.pt" if name else f"update_{updates:06d}.pt")


def write_checkpoint(
    run_dir: Path, state: dict, updates: int, log: Any, name: str | None = None
) -> Path:
    """Write checkpoints/<name>.pt, or update_N.pt and latest.pt (keeping the newest
    `log.keep_checkpoints` periodic ones); atomic. Returns the path written."""
    path = checkpoint_path(run_dir, updates, name)
    folder = path.parent
    ckpt.save_atomic(state, path, also=None if name else folder / ckpt.LATEST)
    if name:
        return path
    periodic = sorted(folder.glob("update_*.pt"))
    for old in periodic[: max(0, len(periodic) - max(1, log.keep_checkpoints))]:
        old.unlink(missing_ok=True)
    return path


def metric_names(ppo: PPO, periodic_eval: bool, final_eval: bool) -> list[str]:
    """The metrics every update logs, in order (metrics.csv's columns)."""
    names = ppo.metric_names() + ["charts/episode_return", "charts/episode_length"]
    names += ["charts/SPS", "time/rollout_s", "time/update_s"]
    if periodic_eval:
        names += [f"eval/{k}" for k in ("mean_return", "std_return", "mean_length", "best_return")]
    elif final_eval:
        names.append("eval/mean_return")  # the final evaluation's row
    return names


def write_final_eval(run_dir: Path, logger: RunLogger, global_step: int, result: dict) -> None:
    """eval.json and the eval/mean_return row of the final evaluation."""
    write_text(run_dir / "eval.json", json.dumps(result, indent=2), "evaluation")
    logger.log(global_step, {"eval/mean_return": result["mean_return"]})


def check_external_env(env: VecEnv, cfg: TrainConfig, device: torch.device) -> None:
    """An env handed to the Trainer must match the config's env count and the trainer's device."""
    from ppokit.errors import ConfigError

    if env.num_envs != cfg.env.num_envs:
        raise ConfigError(
            f"the env has {env.num_envs} envs but env.num_envs is {cfg.env.num_envs}; set"
            f" --env.num_envs {env.num_envs}"
        )
    env_device = torch.device(env.device)
    if (env_device.type, env_device.index or 0) != (device.type, device.index or 0):
        raise ConfigError(
            f"the env's tensors are on {env.device} but the trainer's device is {device}; set"
            f" --device {env.device}"
        )
    finite = getattr(env, "finite_horizon", None)  # Isaac Lab: the task's cfg.is_finite_horizon
    if finite is not None and finite != cfg.env.finite_horizon:
        raise ConfigError(
            f"the env says finite_horizon={finite} but env.finite_horizon is"
            f" {cfg.env.finite_horizon}; set --env.finite_horizon {str(finite).lower()}"
        )


def install_stop_handlers(handler: Callable[..., None]) -> dict:
    """Route SIGINT/SIGTERM to `handler` (main thread only); returns the previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.signal(sig, handler)
    return previous


def restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def run_label(cfg: TrainConfig, env_name: str | None = None) -> str:
    """The preset's name when it trains its own env, else the env's name: `env_name` (an env
    handed to the Trainer) or the config's env id (a recipe on another env)."""
    if cfg.preset and env_name is None:
        try:
            if load_preset(cfg.preset).env.id == cfg.env.id:
                return cfg.preset
        except ConfigError:  # a preset that no longer exists (an old run's config)
            pass
    return (env_name or cfg.env.id).replace("/", "_").replace(":", "_")


def default_run_dir(cfg: TrainConfig, env_name: str | None = None) -> Path:
    """<log.root>/<log.run_name>, else <preset or env name>_s<seed>_<time>."""
    if cfg.log.run_name:
        return Path(cfg.log.root) / cfg.log.run_name
    return new_run_dir(cfg.log.root, run_label(cfg, env_name), cfg.seed)


def check_resume_compatible(saved: dict, cfg: TrainConfig) -> None:
    """Raise CheckpointError listing config fields that differ where resuming needs them equal."""
    saved_cfg = from_dict(saved, where="checkpoint config")
    now, then = to_dict(cfg), to_dict(saved_cfg)
    diffs = []
    for key in RESUME_MUST_MATCH:
        section, _, leaf = key.partition(".")
        a, b = (
            (then[section], now[section]) if not leaf else (then[section][leaf], now[section][leaf])
        )
        if isinstance(a, dict):
            diffs += [
                f"{section}.{k}: checkpoint {a[k]!r}, config {b[k]!r}" for k in a if a[k] != b[k]
            ]
        elif a != b:
            diffs.append(f"{key}: checkpoint {a!r}, config {b!r}")
    if diffs:
        raise CheckpointError("cannot resume with an incompatible config: " + "; ".join(diffs))


# EnvConfig fields that do not change how the envs are made (a resume may change them).
ENV_FIELDS_NOT_STATE = ("step_timeout", "finite_horizon")


def env_changes(saved: dict, now: dict) -> str:
    """The env config fields that differ between a checkpoint and the resume, comma-joined."""
    return ", ".join(
        f"env.{k}"
        for k in sorted(set(saved) | set(now))
        if k not in ENV_FIELDS_NOT_STATE and saved.get(k) != now.get(k)
    )


def capture_env_state(env: Any) -> tuple[Any, str | None]:
    """(the env's saved state, None), or (None, why it cannot be saved)."""
    try:
        return vec_env_state(env), None
    except EnvStateUnsupported as e:
        return None, str(e)


def _to_cpu(value: Any) -> Any:
    """`value` with every tensor in it moved to the CPU (what goes into a checkpoint)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    return value
