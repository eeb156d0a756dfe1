"""`ppokit tune`: hyperparameter search with Optuna, from one laptop to many machines.

Optuna does the search: its samplers (TPE, random), pruners (median, successive halving),
storages (an RDB such as SQLite or PostgreSQL, or a journal file) and plots. ppokit adds what a
trial is: a real `ppokit train` subprocess with the sampled values as flags, whose periodic
deterministic evaluations (eval/mean_return rows of its metrics.csv) are reported to the pruner
while it runs, and whose final deterministic evaluation (eval.json) is the objective, over
--seeds seeds run side by side (their mean, or a lower quantile).

Scale-out is the storage's: `--jobs J` starts J worker processes (`python -m ppokit.tune
WORKER.json`) that share one study through it, and every machine running the same command on a
shared storage adds workers. Workers record heartbeats (RDB storages); a worker that dies leaves
a trial whose heartbeat stops, which the next worker fails and re-queues (Optuna's
RetryHeartbeatStaleTrialCallback). A study stores its search space and base config, so running
`ppokit tune` again continues it, and a different space is refused.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ppokit import config as C
from ppokit import tune_space as S
from ppokit.errors import ConfigError, PPOKitError

SPACE_ATTR = "ppokit_space"
SETTING_ATTR = "ppokit_setting"
PLOTS = ("history.png", "parallel_coordinate.png", "importance.png")
POLL_S = 0.5


class TrialError(PPOKitError):
    """A trial's training failed: the trial is recorded as failed with this message."""


@dataclass
class TuneSpec:
    """What `ppokit tune` was asked (the CLI's flags); see `add_tune_parser` for each."""

    trials: int
    steps: int
    preset: str | None = None
    config: str | None = None
    env_id: str | None = None
    seeds: int = 1
    first_seed: int = 1
    space: str | None = None
    study: str | None = None
    storage: str | None = None
    jobs: int = 1
    timeout: float | None = None
    out: str = "runs/tune"
    aggregate: str = "mean"
    sampler: str = "tpe"
    sampler_seed: int | None = None
    pruner: str = "median"
    prune_after: int = 5
    eval_every: int | None = None
    eval_episodes: int = 10
    periodic_episodes: int = 5
    overrides: dict = field(default_factory=dict)
    launcher: str | None = None
    heartbeat: int = 30
    baseline: bool = True


# ----------------------------------------------------------------------------------------------
# The set-up: base config, space, storage, study (checked before anything trains)
# ----------------------------------------------------------------------------------------------


def check_spec(spec: TuneSpec) -> None:
    for name, value, least in (
        ("--trials", spec.trials, 1),
        ("--steps", spec.steps, 1),
        ("--seeds", spec.seeds, 1),
        ("--jobs", spec.jobs, 1),
        ("--eval-episodes", spec.eval_episodes, 1),
        ("--periodic-episodes", spec.periodic_episodes, 1),
        ("--heartbeat", spec.heartbeat, 1),
        ("--prune-after", spec.prune_after, 0),
    ):
        if value < least:
            raise ConfigError(f"{name} must be >= {least}, got {value}")
    if spec.timeout is not None and spec.timeout <= 0:
        raise ConfigError(f"--timeout must be > 0 seconds, got {spec.timeout}")
    if spec.eval_every is not None and not 1 <= spec.eval_every <= spec.steps:
        raise ConfigError(
            f"--eval-every must be in [1, --steps {spec.steps}], got {spec.eval_every}"
        )
    aggregate_fn(spec.aggregate)


def aggregate_fn(name: str):
    """`mean`, or `qP` (the P-th percentile over seeds, e.g. q25: a lower quantile that favours
    configs whose every seed learns)."""
    import numpy as np

    if name == "mean":
        return lambda xs: float(np.mean(xs))
    if name.startswith("q"):
        try:
            q = float(name[1:])
        except ValueError:
            q = -1.0
        if 0 <= q <= 100:
            return lambda xs: float(np.percentile(xs, q))
    raise ConfigError(f"--aggregate takes mean or qP with P in [0, 100] (e.g. q25), got {name!r}")


def base_config(spec: TuneSpec) -> tuple[C.TrainConfig, str | None]:
    """The config every trial starts from (--preset/--config/--env as `ppokit train` resolves
    them, then --set and --steps) and, without --space, its recipe family (which picks the
    default space)."""
    from ppokit.recipes import pick_recipe, recipe_config

    overrides = dict(spec.overrides)
    if spec.env_id:
        overrides["env.id"] = spec.env_id
    overrides["total_steps"] = spec.steps
    overrides["eval.episodes"] = spec.eval_episodes
    if spec.preset or spec.config:
        cfg = C.load_config(spec.preset, spec.config, overrides)
    else:
        typed = C.apply_overrides(C.TrainConfig(), overrides, "command-line overrides")
        if "env.id" not in overrides:
            raise ConfigError("ppokit tune needs --preset NAME, --config FILE or --env ID")
        recipe = pick_recipe(typed.env.id, typed.env.kwargs)
        cfg = C.apply_overrides(recipe_config(recipe, typed.env.id), overrides, "--set")
        C.validate(cfg)
    cfg.seed = spec.first_seed
    # The family picks the default space; a space file makes building the env unnecessary.
    family = None if spec.space else pick_recipe(cfg.env.id, cfg.env.kwargs).name
    return cfg, family


def trial_config(base: C.TrainConfig, space: dict[str, S.Param], params: dict) -> C.TrainConfig:
    """`base` with a trial's sampled values (raises ConfigError for a combination the config
    rejects, e.g. minibatches that do not divide the batch)."""
    return C.apply_overrides(base, sampled_overrides(space, params), "the sampled values")


def sampled_overrides(space: dict[str, S.Param], params: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, param in space.items():
        if key in params:
            value = param.to_config_value(params[key])
            for k in (key, *param.also):
                out[k] = value
    # The config takes one of minibatch count and size: the sampled one wins.
    if "algo.num_minibatches" in out and "algo.minibatch_size" not in out:
        out["algo.minibatch_size"] = None
    if "algo.minibatch_size" in out and "algo.num_minibatches" not in out:
        out["algo.num_minibatches"] = None
    return out


def setting_of(cfg: C.TrainConfig, spec: TuneSpec) -> str:
    """What makes trials of one study comparable: the base config (without where it logs and
    on which device) and the objective."""
    data = C.to_dict(cfg)
    data.pop("log"), data.pop("device")
    data["objective"] = {"aggregate": spec.aggregate, "seeds": spec.seeds}
    return json.dumps(data, sort_keys=True)


def _optuna():
    from ppokit.extras import require

    optuna = require("optuna", "tune", "ppokit tune")
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # ppokit prints its own trial lines
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", category=FutureWarning, module="optuna")
    return optuna


def storage_url(spec: TuneSpec) -> str:
    return spec.storage or f"sqlite:///{Path(spec.out).resolve() / 'study.db'}"


def _shown(url: str) -> str:
    """The URL without its password (for messages)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def open_storage(url: str, heartbeat: int):
    """An Optuna storage: a journal file (`journal:PATH`, or a path ending in .journal or .log)
    or an RDB URL (sqlite:///, postgresql://, mysql://) with heartbeats, whose stale trials are
    re-queued. One line naming the URL when it cannot be opened."""
    import inspect

    optuna = _optuna()
    if url.startswith("journal:") or url.endswith((".journal", ".log")):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        if not path.parent.is_dir():
            raise ConfigError(f"journal storage {str(path)!r}: its folder does not exist")
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise ConfigError(
            f"--storage {url!r} is not a storage URL: give sqlite:///PATH, postgresql://USER"
            "@HOST/DB, mysql://..., or journal:PATH (a journal file)"
        )
    retry_cls = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry_cls = retry_cls or optuna.storages.RetryFailedTrialCallback
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    callback = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in params
        else "failed_trial_callback"
    )
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):
        engine = {"connect_args": {"connect_timeout": 10}}
    if url.startswith("postgresql://"):  # psycopg 3 (the tune extra), whichever SQLAlchemy
        engine_url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    else:
        engine_url = url
    try:
        storage = optuna.storages.RDBStorage(
            engine_url,
            engine_kwargs=engine,
            heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat + 2,
            **{callback: retry_cls(max_retry=3)},
        )
        if url.startswith("sqlite"):
            _serialize_sqlite(storage.engine)
        return storage
    except Exception as e:  # sqlalchemy's errors (no server, bad credentials, no driver)
        reason = " ".join(str(e).split("\n")[0].split())[:300]
        raise ConfigError(
            f"cannot open the storage {_shown(url)}: {reason}; check the URL, that the server"
            " runs and is reachable, and the credentials"
        ) from None


def _serialize_sqlite(engine) -> None:
    """Every SQLite transaction takes the write lock when it begins (BEGIN IMMEDIATE).

    Optuna claims a queued trial (an enqueued baseline, a re-queued stale trial) by reading it
    as WAITING and writing RUNNING, under SELECT ... FOR UPDATE, which SQLite ignores: two
    workers could both claim it (optuna/optuna#4621). Serialised transactions, SQLAlchemy's
    recipe for SQLite, make the claim atomic; a study's few writes a second do not mind."""
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None  # the driver's own BEGIN off: ours below

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections made from now on carry the listeners


def make_sampler(spec: TuneSpec, worker: int):
    optuna = _optuna()
    seed = None if spec.sampler_seed is None else spec.sampler_seed + worker
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, spec.trials // 3 + 1))


def make_pruner(spec: TuneSpec):
    optuna = _optuna()
    if spec.pruner == "none":
        return optuna.pruners.NopPruner()
    if spec.pruner == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    # RL-Zoo's choice: no pruning on the first third of training, whose evaluations say little.
    return optuna.pruners.MedianPruner(
        n_startup_trials=spec.prune_after, n_warmup_steps=spec.steps // 3
    )


def study_name(spec: TuneSpec, cfg: C.TrainConfig) -> str:
    """--study, else <preset|config file|env id>-<steps>."""
    source = spec.preset or (Path(spec.config).stem if spec.config else cfg.env.id)
    return spec.study or f"{source}-{spec.steps}"


def open_study(spec: TuneSpec, cfg: C.TrainConfig, space: dict[str, S.Param], worker: int = 0):
    """Create the study or load it; a loaded study must have been made with this space and
    base config (stored in its user attributes)."""
    optuna = _optuna()
    storage = open_storage(storage_url(spec), spec.heartbeat)
    name = study_name(spec, cfg)
    try:
        study = optuna.create_study(
            study_name=name,
            storage=storage,
            direction="maximize",
            sampler=make_sampler(spec, worker),
            pruner=make_pruner(spec),
            load_if_exists=True,
        )
    except ValueError as e:  # e.g. a study of this name optimising several objectives
        raise ConfigError(f"study {name!r} in {_shown(storage_url(spec))}: {e}") from None
    wanted = {SPACE_ATTR: S.space_json(space), SETTING_ATTR: setting_of(cfg, spec)}
    stored = study.user_attrs
    for attr, value in wanted.items():
        if attr not in stored:
            study.set_user_attr(attr, value)
        elif stored[attr] != value:
            what = "search space" if attr == SPACE_ATTR else "base config or objective"
            diff = _difference(json.loads(stored[attr]), json.loads(value))
            raise ConfigError(
                f"study {name!r} in {_shown(storage_url(spec))} was created with another"
                f" {what} ({diff}); give another --study name to start a new study, or the"
                " same settings to continue it"
            )
    return study


def _difference(old: dict, new: dict) -> str:
    def flat(d: Any, prefix: str = "") -> dict:
        if not isinstance(d, dict):
            return {prefix.rstrip("."): d}
        out: dict = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}."))
        return out

    a, b = flat(old), flat(new)
    keys = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys[:3]) or "unknown"


def enqueue_baseline(study, space: dict[str, S.Param], cfg: C.TrainConfig) -> None:
    """A new study's first trial runs the base config's own values, where the space can hold
    them: the study then shows what the preset or recipe does before anything is tuned."""
    params = {}
    for key, param in space.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if key == "algo.num_minibatches" and value is None:  # the config sets the size instead
            value = (C.num_sequences(cfg) if cfg.policy.memory != "none" else
                     cfg.env.num_envs * cfg.algo.num_steps) // C.minibatch_size(cfg)  # fmt: skip
        if param.kind == "categorical":
            stored = C.show(value) if isinstance(value, list) else value
            if stored in param.choices:
                params[key] = stored
        elif value is not None and param.low <= value <= param.high:
            params[key] = value
    study.enqueue_trial(params, user_attrs={"baseline": True})


# ----------------------------------------------------------------------------------------------
# A worker: trials until the study holds --trials finished ones
# ----------------------------------------------------------------------------------------------


def study_counts(study) -> tuple[int, int, int]:
    """(finished, running, waiting) trials; a stale trial that was re-queued is not counted
    (its retry is)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    ended = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    finished = sum(t.state in ended and t.number not in retried for t in trials)
    running = sum(t.state == TrialState.RUNNING for t in trials)
    waiting = sum(t.state == TrialState.WAITING for t in trials)
    return finished, running, waiting


def run_worker(spec: TuneSpec, worker: int, deadline: float | None, log=print) -> None:
    """Run trials of the study until it holds spec.trials finished ones (counting other
    workers' running trials, and waiting for them to end or to be re-queued when stale), or
    until `deadline` (time.time()) passes."""
    _optuna()
    from optuna.storages import fail_stale_trials

    cfg = C.from_dict(C.load_yaml(Path(spec.out) / "base.yaml"), where="base.yaml")
    space = load_worker_space(spec)
    study = open_study(spec, cfg, space, worker)
    objective = Objective(spec, cfg, space, study.study_name, worker, log)
    heartbeats = not storage_url(spec).startswith("journal:") and "://" in storage_url(spec)
    while True:
        fail_stale_trials(study)  # a dead worker's trial, re-queued by the retry callback
        finished, running, waiting = study_counts(study)
        if finished >= spec.trials or (deadline is not None and time.time() >= deadline):
            return
        if finished + running < spec.trials or waiting:
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
        elif heartbeats:  # the last trials run elsewhere: wait until they end, or go stale
            time.sleep(min(spec.heartbeat, 5))
        else:  # no heartbeats (journal): a dead worker's trial would never end
            return


def load_worker_space(spec: TuneSpec) -> dict[str, S.Param]:
    data = json.loads((Path(spec.out) / "space.json").read_text())
    return {k: S.Param(**{**v, "choices": tuple(v["choices"]), "also": tuple(v["also"])})
            for k, v in data.items()}  # fmt: skip


def _die_with_parent() -> None:
    """In a trial's process: be killed when the worker that started it dies (Linux), so a
    kill -9 of a worker leaves no orphaned training behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def read_evaluations(metrics: Path) -> list[tuple[int, float]]:
    """The evaluations during training in a run's metrics.csv so far, as (step, mean return):
    rows with eval/best_return (the final evaluation's row has only eval/mean_return). A line
    still being written is left for the next read."""
    try:
        text = metrics.read_text()
    except FileNotFoundError:
        return []
    text = text[: text.rfind("\n") + 1]
    out = []
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("eval/best_return") and row.get("eval/mean_return"):
            out.append((int(float(row["global_step"])), float(row["eval/mean_return"])))
    return out


def _error_line(log_path: Path) -> str:
    lines = [ln.strip() for ln in log_path.read_text(errors="replace").splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error: "):
            return ln.removeprefix("error: ")
    return lines[-1] if lines else "no output"


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()  # the trainer stops at the next step and writes its checkpoint
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


class Objective:
    """One trial: sample, train --seeds runs side by side, report their periodic evaluations
    to the pruner, return the aggregate of their final deterministic evaluations."""

    def __init__(self, spec, cfg, space, study: str, worker: int, log) -> None:
        self.spec, self.cfg, self.space, self.worker, self.log = spec, cfg, space, worker, log
        self.study = study
        self.aggregate = aggregate_fn(spec.aggregate)
        self.launcher = shlex.split(spec.launcher) if spec.launcher else [sys.executable]

    def command(self, run_dir: Path, seed: int, overrides: dict) -> list[str]:
        cmd = [
            *self.launcher,
            "-m",
            "ppokit",
            "train",
            "--config",
            str(Path(self.spec.out) / "base.yaml"),
        ]
        cmd += ["--run-dir", str(run_dir), "--seed", str(seed)]
        for key, value in overrides.items():
            cmd += [f"--{key}", value if isinstance(value, str) else C.show(value)]
        return cmd

    def __call__(self, trial) -> float:
        optuna = _optuna()
        try:
            return self.run(trial)
        except (optuna.TrialPruned, TrialError, ConfigError):
            raise  # pruned, or failed with its message recorded
        except KeyboardInterrupt:
            trial.set_user_attr("error", "interrupted")
            raise
        except Exception as e:
            # Anything else (a missing file, a full disk): recorded on the trial, study goes on.
            message = f"{type(e).__name__}: {e}"
            trial.set_user_attr("error", message)
            self.log(f"trial {trial.number}: failed: {message}")
            raise

    def run(self, trial) -> float:
        optuna = _optuna()
        # The trial's first heartbeat, now: Optuna's heartbeat thread records it when it gets to
        # run, and a worker killed before that leaves the trial RUNNING without a heartbeat,
        # which fail_stale_trials never fails, so the study would wait on it forever.
        storage = trial.study._storage
        if getattr(storage, "get_heartbeat_interval", lambda: None)():
            storage.record_heartbeat(trial._trial_id)
        params = {key: suggest(trial, p) for key, p in self.space.items()}
        name = f"trial {trial.number}"
        frozen = next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)
        retry = frozen.system_attrs.get("failed_trial")
        if retry is not None:
            name += f" (retry of trial {retry})"
        try:
            trial_config(self.cfg, self.space, params)
        except ConfigError as e:
            trial.set_user_attr("error", str(e))
            self.log(f"{name}: failed: {e}")
            raise
        overrides = sampled_overrides(self.space, params)
        overrides |= {"eval.every_steps": self.spec.eval_every or max(1, self.spec.steps // 10)}
        overrides |= {"eval.every": 0, "eval.periodic_episodes": self.spec.periodic_episodes}
        overrides |= {"log.progress": False}
        folder = Path(self.spec.out) / "trials" / self.study / f"{trial.number:04d}"
        folder.mkdir(parents=True, exist_ok=True)
        # Created exclusively: a second run of one trial number (which must not happen) fails.
        with (folder / "trial.json").open("x") as f:
            json.dump({"number": trial.number, "params": params, "worker": self.worker,
                       "pid": os.getpid(), "retry_of": retry}, f)  # fmt: skip
        seeds = [self.spec.first_seed + k for k in range(self.spec.seeds)]
        runs = [folder / f"seed{s}" for s in seeds]
        trial.set_user_attr("run_dirs", [str(r) for r in runs])
        trial.set_user_attr("error", None)
        self.log(f"{name}: started by worker {self.worker}, {json.dumps(params)}")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs = []
        for seed, run in zip(seeds, runs):
            out = (folder / f"seed{seed}.log").open("w")
            procs.append(subprocess.Popen(
                self.command(run, seed, overrides), stdout=out, stderr=subprocess.STDOUT,
                env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None,
            ))  # fmt: skip
            out.close()
        try:
            reported = 0
            while True:
                finished = all(p.poll() is not None for p in procs)
                curves = [read_evaluations(r / "metrics.csv") for r in runs]
                while reported < min(map(len, curves)):
                    step = curves[0][reported][0]
                    value = self.aggregate([c[reported][1] for c in curves])
                    trial.report(value, step)
                    reported += 1
                    if trial.should_prune():
                        _stop(procs)
                        trial.set_user_attr("pruned_at_step", step)
                        self.log(f"{name}: pruned at step {step:,} (eval {value:.1f})")
                        raise optuna.TrialPruned(f"eval {value:.4g} at step {step}")
                if finished:
                    break
                time.sleep(POLL_S)
        except BaseException:
            _stop(procs)
            raise
        returns = []
        for seed, run, p in zip(seeds, runs, procs):
            if p.returncode != 0:
                message = (
                    f"seed {seed} exited with code {p.returncode}:"
                    f" {_error_line(folder / f'seed{seed}.log')} (log: {folder / f'seed{seed}.log'})"
                )
                trial.set_user_attr("error", message)
                self.log(f"{name}: failed: {message}")
                raise TrialError(message)
            returns.append(float(json.loads((run / "eval.json").read_text())["mean_return"]))
        value = self.aggregate(returns)
        trial.set_user_attr("seed_returns", returns)
        shown = ", ".join(f"{r:.1f}" for r in returns)
        self.log(f"{name}: {value:.1f} (seeds: {shown})")
        return value


def suggest(trial, p: S.Param) -> Any:
    if p.kind == "categorical":
        return trial.suggest_categorical(p.key, list(p.choices))
    if p.kind == "int":
        step = int(p.step) if p.step else 1
        return trial.suggest_int(p.key, int(p.low), int(p.high), step=step, log=p.log)
    return trial.suggest_float(p.key, p.low, p.high, step=p.step, log=p.log)


def worker_main(argv: list[str]) -> int:
    """`python -m ppokit.tune WORKER.json INDEX [DEADLINE]`: one worker of `ppokit tune`."""
    data = json.loads(Path(argv[0]).read_text())
    deadline = float(argv[2]) if len(argv) > 2 and argv[2] != "none" else None
    prefix = f"[worker {argv[1]}]"
    try:
        run_worker(
            TuneSpec(**data), int(argv[1]), deadline, lambda m: print(f"{prefix} {m}", flush=True)
        )
    except PPOKitError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


# ----------------------------------------------------------------------------------------------
# The command: set up, run the workers, write the results
# ----------------------------------------------------------------------------------------------


def prepare(spec: TuneSpec) -> tuple[C.TrainConfig, dict[str, S.Param], str | None]:
    """Everything checkable before training: the spec, base config, space, storage and study.
    Writes base.yaml and space.json to --out. Returns (base config, space, family)."""
    from ppokit.outputs import make_dir, output_dir

    check_spec(spec)
    cfg, family = base_config(spec)
    space = S.load_space(spec.space) if spec.space else S.default_space(family)
    out = Path(spec.out)
    make_dir(output_dir(out, "tune output"), "tune output")
    C.save_config(cfg, out / "base.yaml")
    (out / "space.json").write_text(
        json.dumps({k: asdict(p) for k, p in space.items()}, indent=1) + "\n"
    )
    return cfg, space, family


def run_tune(spec: TuneSpec, log=print) -> dict:
    from ppokit.plot import _pyplot

    cfg, space, family = prepare(spec)
    _pyplot()  # the figures need matplotlib: fail now, not after the study
    study = open_study(spec, cfg, space)
    if spec.baseline and not study.trials:
        enqueue_baseline(study, space, cfg)
    finished, _, _ = study_counts(study)
    log(
        f"study {study.study_name!r} in {_shown(storage_url(spec))}: {finished} of"
        f" {spec.trials} trials finished; {len(space)} parameters"
        f" ({'--space ' + spec.space if spec.space else 'the default space of ' + family});"
        f" {spec.jobs} worker{'s' if spec.jobs > 1 else ''}"
    )
    out = Path(spec.out)
    (out / "worker.json").write_text(json.dumps(asdict(spec), indent=1) + "\n")
    deadline = "none" if spec.timeout is None else str(time.time() + spec.timeout)
    start = time.time()
    workers = []
    for k in range(spec.jobs):
        cmd = [sys.executable, "-m", "ppokit.tune", str(out / "worker.json"), str(k), deadline]
        workers.append(
            subprocess.Popen(cmd, preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        )
        log(f"worker {k}: pid {workers[-1].pid}")
    codes = []
    try:
        codes = [w.wait() for w in workers]
    except KeyboardInterrupt:
        for w in workers:
            w.wait()
        raise
    for k, code in enumerate(codes):
        if code != 0:
            log(f"worker {k} ended with exit code {code}")
    wall = time.time() - start
    return write_reports(spec, open_study(spec, cfg, space), cfg, space, wall)


# ----------------------------------------------------------------------------------------------
# Results: trials.csv, best.yaml, figures, summary.md
# ----------------------------------------------------------------------------------------------


def trial_rows(study, space: dict[str, S.Param]) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        duration = t.duration.total_seconds() if t.duration is not None else None
        row = {
            "number": t.number,
            "state": t.state.name,
            "value": t.value,
            "last_intermediate": t.intermediate_values[max(t.intermediate_values)]
            if t.intermediate_values
            else None,
            "pruned_at_step": t.user_attrs.get("pruned_at_step"),
            "seed_returns": json.dumps(t.user_attrs.get("seed_returns"))
            if t.user_attrs.get("seed_returns") is not None
            else None,
            "duration_s": None if duration is None else round(duration, 1),
            "retry_of": t.system_attrs.get("failed_trial"),
            "baseline": bool(t.user_attrs.get("baseline", False)),
            "error": t.user_attrs.get("error"),
        }
        row |= {f"params.{k}": t.params.get(k) for k in space}
        rows.append(row)
    return rows


def best_config(study, cfg: C.TrainConfig, space: dict[str, S.Param]) -> C.TrainConfig:
    """The base config with the best trial's values, as `ppokit train --config` takes it: its
    training is the best trial's first seed, without the evaluations during training (which do
    not change the training)."""
    best = trial_config(cfg, space, study.best_trial.params)
    C.validate(best)
    return best


def write_reports(spec: TuneSpec, study, cfg, space, wall: float) -> dict:
    from optuna.trial import TrialState

    out = Path(spec.out)
    rows = trial_rows(study, space)
    with (out / "trials.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["number"])
        writer.writeheader()
        writer.writerows(rows)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    result: dict = {"study": study.study_name, "trials": len(rows), "wall_s": wall}
    result["states"] = {
        s: sum(r["state"] == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")
    }
    figures = plot_figures(study, out)
    best_lines = ["No trial completed: no best.yaml."]
    if complete:
        best = study.best_trial
        C.save_config(best_config(study, cfg, space), out / "best.yaml")
        result |= {"best_value": best.value, "best_trial": best.number, "best_params": best.params}
        seeds = ", ".join(f"{x:.1f}" for x in best.user_attrs.get("seed_returns") or [])
        best_lines = [
            f"Best: trial {best.number}, objective {best.value:.2f} ({spec.aggregate} of"
            f" {spec.seeds} seed{'s' if spec.seeds > 1 else ''}: {seeds}).",
            "",
            "```bash",
            f"ppokit train --config {out / 'best.yaml'}",
            "```",
            "",
            "| parameter | best |",
            "|---|---|",
            *(f"| `{k}` | {v} |" for k, v in best.params.items()),
        ]
        baseline = [t for t in complete if t.user_attrs.get("baseline")]
        if baseline:
            best_lines += [
                "",
                f"Baseline (trial {baseline[0].number}, the base config's own values): {baseline[0].value:.2f}.",
            ]
    failed = [r for r in rows if r["state"] == "FAIL"]
    lines = [
        f"# ppokit tune: study `{study.study_name}`",
        "",
        f"- base config: {base_source(spec, cfg)}, {spec.steps:,} steps per"
        f" trial, objective: {spec.aggregate} over {spec.seeds} seed(s) of the final"
        f" deterministic evaluation ({spec.eval_episodes} episodes)",
        f"- storage: {_shown(storage_url(spec))}; sampler {spec.sampler}, pruner {spec.pruner}",
        f"- trials: {len(rows)} ({', '.join(f'{v} {k.lower()}' for k, v in result['states'].items())});"
        f" {study_span(study) / 60:.1f} min from the first trial's start to the last one's end;"
        f" this invocation: {wall / 60:.1f} min with {spec.jobs} worker(s)",
        "",
        *best_lines,
        "",
        *(f"![{name}]({name})" for name in figures),
    ]
    if failed:
        lines += ["", "## Failed trials", ""]
        lines += [
            f"- trial {r['number']}: {r['error'] or 'worker stopped (heartbeat)'}" for r in failed
        ]
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    result["figures"] = figures
    return result


def base_source(spec: TuneSpec, cfg: C.TrainConfig) -> str:
    if spec.preset:
        return f"preset {spec.preset} on {cfg.env.id}"
    if spec.config:
        return f"config file {spec.config} ({cfg.env.id})"
    return f"the recipe for {cfg.env.id} (the settings of preset {cfg.preset})"


def study_span(study) -> float:
    """Seconds from the first trial's start to the last finished trial's end (every worker and
    invocation together; 0 before a trial finishes)."""
    starts = [t.datetime_start for t in study.trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in study.trials if t.datetime_complete is not None]
    return (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0


def plot_figures(study, out: Path) -> list[str]:
    """Optuna's own figures as PNG; a figure Optuna cannot draw yet (too few finished trials,
    one parameter) is left out."""
    from optuna.visualization import matplotlib as ovm

    from ppokit.plot import _pyplot

    plt = _pyplot()
    written = []
    for name, fn in zip(
        PLOTS,
        (ovm.plot_optimization_history, ovm.plot_parallel_coordinate, ovm.plot_param_importances),
    ):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = fn(study)
            fig = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
            fig.set_size_inches(10, 6)
            fig.tight_layout()
            fig.savefig(out / name, dpi=100)
            plt.close(fig)
            written.append(name)
        except (ValueError, RuntimeError, ZeroDivisionError, IndexError):
            plt.close("all")
    return written


def print_space(spec: TuneSpec) -> str:
    """The space a study of `spec` samples, as a space file (a start for your own --space)."""
    import yaml

    if spec.space:
        S.load_space(spec.space)  # checked
        return Path(spec.space).read_text()
    _, family = base_config(spec)
    header = f"# the default search space of recipe family {family!r} (ppokit tune --space)\n"
    return header + yaml.safe_dump(
        S.default_space_data(family), sort_keys=False, default_flow_style=None
    )


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
