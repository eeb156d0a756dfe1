"""`ppokit check-env`: is an environment ready for PPO with ppokit?

Two layers of checks on fresh instances of the env:

- Gymnasium's own checker (`gymnasium.utils.env_checker.check_env`): the API contract. Its
  warnings and its exception, if any, become rows; ppokit does not repeat what it checks.
- ppokit's: the spaces the policy supports (the model's own space checks,
  `observation_dim`/`observation_groups`/`make_distribution`), finite observations and rewards
  over N random steps, reset determinism by seed (also after steps), whether episodes are ever
  truncated (PPO bootstraps on truncation, so a task without a time limit deserves a look), the
  reward scale, and the env's step rate.

The env is a registered Gymnasium id (also "module:Id", as `gym.make` accepts) or
"module:factory", a callable that returns a `gymnasium.Env`.
"""

from __future__ import annotations

import importlib
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from ppokit.config import PolicyConfig
from ppokit.envs.gym_env import check_env_id
from ppokit.errors import ConfigError, EnvError
from ppokit.nn.actor_critic import make_distribution, observation_dim, observation_groups

DETERMINISM_STEPS = 50  # steps replayed after reset(seed) to compare trajectories
# Gymnasium checker warnings whose advice ppokit follows by itself: (message fragment, why).
NORMALIZED = "observations are normalized with running statistics (policy.normalize_obs)"
HANDLED_WARNINGS = (
    (
        "recommend using a symmetric and normalized space",
        "the policy acts in [-1, 1], mapped onto finite Box bounds (policy.rescale_actions)",
    ),
    ("observation space minimum value is -infinity", NORMALIZED),
    ("observation space maximum value is infinity", NORMALIZED),
)


@dataclass
class Row:
    check: str
    verdict: str  # ok | warn | fail
    detail: str


def resolve_env(target: str) -> tuple[Callable[[], gym.Env], str]:
    """(factory of one env, display name) for "ID", "module:ID" or "module:factory".

    "module:name" is a factory when the module has a callable `name`, else a Gymnasium id (whose
    module registers it on import). Raises EnvError for an unknown id (with close matches) or a
    module that cannot be imported."""
    module_name, _, name = target.rpartition(":")
    if module_name:
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise EnvError(f"cannot import module {module_name!r} of {target!r}: {e}") from None
        attr = getattr(module, name, None)
        if attr is not None:
            if not callable(attr):
                raise EnvError(
                    f"{module_name}.{name} is not callable (type {type(attr).__name__}); name a"
                    " function or class that returns a gymnasium.Env"
                )
            return checked(attr, target), target
        try:
            check_env_id(target)
        except EnvError as e:
            raise EnvError(f"module {module_name!r} has no callable {name!r}, and {e}") from None
        return checked(lambda: gym.make(name), target), name
    check_env_id(target)
    return checked(lambda: gym.make(target), target), target


def checked(fn: Callable[[], object], target: str) -> Callable[[], gym.Env]:
    """`fn` whose result must be a `gymnasium.Env`; anything it raises becomes an EnvError."""

    def make() -> gym.Env:
        try:
            env = fn()
        except Exception as e:  # the user's constructor: one line, not a traceback
            raise EnvError(f"cannot build {target!r}: {type(e).__name__}: {e}") from None
        if not isinstance(env, gym.Env):
            raise EnvError(f"{target!r} returned a {type(env).__name__}, not a gymnasium.Env")
        return env

    return make


def one_line(text: object) -> str:
    """A message as one line: ANSI colours (Gymnasium's WARN) and whitespace runs removed."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(text))
    return " ".join(text.split()).removeprefix("WARN: ")


def error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {one_line(e)}" if str(e) else type(e).__name__


# ----------------------------------------------------------------------------------------------
# Gymnasium's checker
# ----------------------------------------------------------------------------------------------


def gymnasium_rows(make: Callable[[], gym.Env]) -> list[Row]:
    """Gymnasium's env checker on the unwrapped env (as it recommends): one row per distinct
    warning, a failing row for the exception that stopped it, else one ok row."""
    from gymnasium.utils.env_checker import check_env

    env = make()
    rows: list[Row] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_env(env.unwrapped, skip_render_check=True)
        except Exception as e:
            rows.append(Row("gymnasium checker", "fail", error_text(e)))
        finally:
            env.close()
    seen = []
    for w in caught:
        message = one_line(w.message)
        if message not in seen:
            seen.append(message)
    rows[:0] = [checker_warning(m) for m in seen]
    return rows or [Row("gymnasium checker", "ok", "Gymnasium's API checks passed")]


def checker_warning(message: str) -> Row:
    """A warning of Gymnasium's checker as a row; advice ppokit already follows is ok."""
    for fragment, why in HANDLED_WARNINGS:
        if fragment in message:
            return Row("gymnasium checker", "ok", f"{message} [ppokit: {why}]")
    return Row("gymnasium checker", "warn", message)


# ----------------------------------------------------------------------------------------------
# ppokit's checks
# ----------------------------------------------------------------------------------------------


def space_rows(env: gym.Env) -> list[Row]:
    """Whether ppokit's model can read the observations and produce the actions."""
    policy = PolicyConfig()
    rows = []
    obs_space, act_space = env.observation_space, env.action_space
    try:
        if isinstance(obs_space, gym.spaces.Dict):
            observation_groups(obs_space, policy)
        else:
            observation_dim(obs_space)
        rows.append(Row("observation space", "ok", describe_space(obs_space)))
    except (EnvError, ConfigError) as e:
        rows.append(Row("observation space", "fail", one_line(e)))
    try:
        distribution = make_distribution(act_space, policy)
        detail = f"{describe_space(act_space)} -> {type(distribution).__name__}"
        if isinstance(act_space, gym.spaces.Box) and not (
            np.isfinite(act_space.low).all() and np.isfinite(act_space.high).all()
        ):
            rows.append(
                Row(
                    "action space",
                    "warn",
                    f"{detail}; unbounded: the policy acts in env units there (no rescaling"
                    " from [-1, 1]) and the initial std treats the range as [-1, 1]: give the"
                    " Box finite bounds if the actions have a natural range",
                )
            )
        else:
            rows.append(Row("action space", "ok", detail))
    except (EnvError, ConfigError) as e:
        rows.append(Row("action space", "fail", one_line(e)))
    return rows


def describe_space(space: gym.Space) -> str:
    """A space in one short line (a Box's bounds as their range, not every element)."""
    if isinstance(space, gym.spaces.Box):
        low, high = space.low, space.high
        bounds = f"[{low.min():.4g}, {high.max():.4g}]"
        if not (np.all(low == low.flat[0]) and np.all(high == high.flat[0])):
            bounds = f"within {bounds}"
        return f"Box{space.shape} {space.dtype} {bounds}"
    if isinstance(space, gym.spaces.Dict):
        return "Dict(" + ", ".join(f"{k}: {describe_space(v)}" for k, v in space.items()) + ")"
    return str(space)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def leaves(obs: object) -> list[np.ndarray]:
    """The arrays of an observation of any space (dicts and tuples walked)."""
    if isinstance(obs, dict):
        return [a for v in obs.values() for a in leaves(v)]
    if isinstance(obs, tuple):
        return [a for v in obs for a in leaves(v)]
    return [np.asarray(obs)]


def all_finite(obs: object) -> bool:
    return all(
        not np.issubdtype(a.dtype, np.floating) or bool(np.isfinite(a).all()) for a in leaves(obs)
    )


def same_obs(a: object, b: object) -> bool:
    la, lb = leaves(a), leaves(b)
    return len(la) == len(lb) and all(
        x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f")
        for x, y in zip(la, lb)
    )


def has_time_limit(env: gym.Env) -> int | None:
    """The env's time limit in steps (a TimeLimit wrapper or its spec), else None."""
    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env._max_episode_steps
        env = env.env
    spec = getattr(env, "spec", None)
    return getattr(spec, "max_episode_steps", None)


@dataclass
class Rollout:
    """What N random steps showed."""

    steps: int = 0
    seconds: float = 0.0
    rewards: list[float] | None = None
    returns: list[float] | None = None
    terminated: int = 0
    truncated: int = 0
    bad_obs: str = ""  # where the first NaN/inf observation appeared
    bad_reward: str = ""
    error: str = ""  # an exception that stopped the steps


def random_rollout(env: gym.Env, steps: int, seed: int) -> Rollout:
    """`steps` random actions from reset(seed), resetting where episodes end; env time only."""
    out = Rollout(rewards=[], returns=[])
    assert out.rewards is not None and out.returns is not None
    env.action_space.seed(seed)
    episode, t, ret = 0, 0, 0.0
    try:
        start = time.perf_counter()
        obs, _ = env.reset(seed=seed)
        out.seconds += time.perf_counter() - start
        if not all_finite(obs):
            out.bad_obs = "in the first observation of reset(seed)"
        for i in range(steps):
            action = env.action_space.sample()
            start = time.perf_counter()
            obs, reward, terminated, truncated, _ = env.step(action)
            out.seconds += time.perf_counter() - start
            out.steps, t = i + 1, t + 1
            where = f"at random step {i + 1} (episode {episode}, step {t})"
            if not out.bad_obs and not all_finite(obs):
                out.bad_obs = where
            reward = float(reward)
            if not out.bad_reward and not np.isfinite(reward):
                out.bad_reward = f"{reward} {where}"
            out.rewards.append(reward)
            ret += reward
            if terminated or truncated:
                out.terminated += bool(terminated)
                out.truncated += bool(truncated and not terminated)
                out.returns.append(ret)
                episode, t, ret = episode + 1, 0, 0.0
                start = time.perf_counter()
                obs, _ = env.reset()
                out.seconds += time.perf_counter() - start
                if not out.bad_obs and not all_finite(obs):
                    out.bad_obs = f"in the reset observation after episode {episode - 1}"
    except Exception as e:
        out.error = f"step {out.steps + 1} raised {error_text(e)}"
    return out


def rollout_rows(env: gym.Env, rollout: Rollout, steps: int) -> list[Row]:
    rows = []
    done = f"{rollout.steps} random steps"
    if rollout.error:
        rows.append(Row("random steps", "fail", f"{rollout.error} (after {done})"))
    if rollout.bad_obs:
        rows.append(Row("finite observations", "fail", f"NaN/inf {rollout.bad_obs}"))
    elif rollout.steps:
        rows.append(Row("finite observations", "ok", f"over {done}"))
    if rollout.bad_reward:
        rows.append(Row("finite rewards", "fail", f"reward {rollout.bad_reward}"))
    elif rollout.steps:
        rows.append(Row("finite rewards", "ok", f"over {done}"))

    limit = has_time_limit(env)
    episodes = (
        f"{plural(rollout.terminated + rollout.truncated, 'episode')} ended in {done}"
        f" ({rollout.terminated} terminated, {rollout.truncated} truncated)"
    )
    if limit is not None:
        rows.append(Row("truncation", "ok", f"time limit {limit} steps; {episodes}"))
    elif rollout.truncated:
        rows.append(Row("truncation", "ok", episodes))
    else:
        rows.append(
            Row(
                "truncation",
                "warn",
                f"no time limit and no truncated episode; {episodes}. PPO bootstraps from"
                " V(final observation) where an episode is truncated: add"
                " gymnasium.wrappers.TimeLimit (or register with max_episode_steps) unless"
                " every episode terminates",
            )
        )

    rewards = np.asarray(rollout.rewards, dtype=np.float64)
    rewards = rewards[np.isfinite(rewards)]
    if len(rewards):
        detail = (
            f"per step: mean {rewards.mean():.4g}, std {rewards.std():.4g}, range"
            f" [{rewards.min():.4g}, {rewards.max():.4g}]"
        )
        returns = np.asarray(rollout.returns)
        if len(returns):
            detail += (
                f"; episode return (random actions): mean {returns.mean():.4g}, std"
                f" {returns.std():.4g} over {plural(len(returns), 'episode')}"
            )
        if rewards.std() == 0 and (len(returns) < 2 or returns.std() == 0):
            rows.append(
                Row(
                    "reward scale",
                    "warn",
                    f"{detail}: neither rewards nor returns vary under random actions",
                )
            )
        else:
            rows.append(Row("reward scale", "ok", detail))
    if rollout.steps and rollout.seconds > 0:
        rate = rollout.steps / rollout.seconds
        rows.append(
            Row(
                "step rate", "ok", f"{rate:,.0f} steps/s (one env, random actions, resets included)"
            )
        )
    return rows


def determinism_rows(make: Callable[[], gym.Env], seed: int) -> list[Row]:
    """reset(seed) twice, and again after steps, gives the same observation; the same actions
    after reset(seed) give the same observations (a warning only: stochastic envs are fine)."""
    env = make()
    try:
        first, _ = env.reset(seed=seed)
        again, _ = env.reset(seed=seed)
        env.action_space.seed(seed)
        actions = [env.action_space.sample() for _ in range(DETERMINISM_STEPS)]
        trajectories = []
        after_steps = None
        for _ in range(2):
            obs, _ = env.reset(seed=seed)
            if after_steps is None and trajectories:
                after_steps = obs
            trajectory = []
            for action in actions:
                obs, _, terminated, truncated, _ = env.step(action)
                trajectory.append(obs)
                if terminated or truncated:
                    break
            trajectories.append(trajectory)
    except Exception as e:
        return [Row("reset determinism", "fail", f"raised {error_text(e)}")]
    finally:
        env.close()
    rows = []
    if not same_obs(first, again):
        rows.append(
            Row(
                "reset determinism",
                "fail",
                f"reset(seed={seed}) twice gave different observations: seed the env's"
                " randomness from reset's seed (super().reset(seed=seed), then self.np_random)",
            )
        )
    elif not same_obs(first, after_steps):
        rows.append(
            Row(
                "reset determinism",
                "fail",
                f"reset(seed={seed}) after {len(trajectories[0])} steps gave another observation"
                " than the first reset(seed): the reset must not depend on earlier steps",
            )
        )
    else:
        rows.append(Row("reset determinism", "ok", f"reset(seed={seed}) repeats, also after steps"))
    a, b = trajectories
    if len(a) == len(b) and all(same_obs(x, y) for x, y in zip(a, b)):
        rows.append(
            Row("step determinism", "ok", f"the same {len(a)} actions repeat the observations")
        )
    else:
        rows.append(
            Row(
                "step determinism",
                "warn",
                f"the same actions after reset(seed={seed}) gave other observations (fine for a"
                " stochastic env; seeded runs will not repeat exactly)",
            )
        )
    return rows


def check(make: Callable[[], gym.Env], steps: int = 1000, seed: int = 0) -> list[Row]:
    """Every check on fresh envs from `make`; see the module docstring."""
    rows = gymnasium_rows(make)
    env = make()
    try:
        rows += space_rows(env)
        with warnings.catch_warnings():  # Gymnasium's passive checker: reported above
            warnings.simplefilter("ignore")
            rollout = random_rollout(env, steps, seed)
            rows += rollout_rows(env, rollout, steps)
            rows += determinism_rows(make, seed)
    finally:
        env.close()
    return rows


def format_table(rows: list[Row]) -> str:
    """check | verdict | detail, as aligned text."""
    cells = [("check", "verdict", "detail"), *((r.check, r.verdict, r.detail) for r in rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(2)]
    lines = [f"{c[0].ljust(widths[0])}  {c[1].ljust(widths[1])}  {c[2]}".rstrip() for c in cells]
    lines.insert(1, f"{'-' * widths[0]}  {'-' * widths[1]}  {'-' * 6}")
    return "\n".join(lines)


def verdict_line(rows: list[Row]) -> str:
    failed = [r.check for r in rows if r.verdict == "fail"]
    warned = [r.check for r in rows if r.verdict == "warn"]
    warn_text = f"{len(warned)} warning{'s' if len(warned) != 1 else ''}"
    if failed:
        return (
            f"verdict: FAIL ({len(failed)} failed: {', '.join(dict.fromkeys(failed))}; {warn_text})"
        )
    if warned:
        return f"verdict: ok with {warn_text} ({', '.join(dict.fromkeys(warned))})"
    return f"verdict: ok (all {len(rows)} checks passed)"


def run_check_env(target: str, steps: int = 1000, seed: int = 0) -> tuple[list[Row], str]:
    """Resolve `target` and run the checks: (rows, the env's name). Bad input (an unknown id, a
    module that does not import, a factory that fails or returns no Env) raises a PPOKitError."""
    if steps < 1:
        raise ConfigError(f"--steps must be >= 1, got {steps}")
    make, name = resolve_env(target)
    return check(make, steps, seed), name
