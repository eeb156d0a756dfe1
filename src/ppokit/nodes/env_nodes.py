"""Environment nodes: EnvNode (a batch of Gymnasium envs and their first observations) and
EnvStepNode (one batched step)."""

from __future__ import annotations

import functools
import json

import gymnasium as gym

from ppokit.config import EnvConfig
from ppokit.envs import check_env_id
from ppokit.envs.gym_env import env_factory
from ppokit.errors import EnvError
from ppokit.nn.actor_critic import observation_dim
from ppokit.nodes.base import Node, PortSpec, register
from ppokit.nodes.declarations import (
    ACTIONS,
    DONES,
    ENV,
    OBSERVATIONS,
    POLICY_OUTPUT,
    REWARDS,
    Input,
    NodeSpec,
    Output,
    Param,
    config_param,
)
from ppokit.nodes.program import Emitter, InferContext, config_call, literal


@functools.lru_cache(maxsize=32)
def _spaces(env_id: str, max_episode_steps: int | None, kwargs: str) -> tuple[gym.Space, gym.Space]:
    env = env_factory(env_id, max_episode_steps, json.loads(kwargs))()
    try:
        return env.observation_space, env.action_space
    finally:
        env.close()


def env_spaces(cfg: EnvConfig) -> tuple[gym.Space, gym.Space]:
    """(observation space, action space) of one env of `cfg`, without building the vector env."""
    check_env_id(cfg.id)
    try:
        return _spaces(cfg.id, cfg.max_episode_steps, json.dumps(cfg.kwargs, sort_keys=True))
    except EnvError:
        raise
    except Exception as e:  # gym.make raises many kinds for bad kwargs or missing extras
        raise EnvError(f"cannot build environment {cfg.id!r}: {type(e).__name__}: {e}") from None


@register
class EnvNode(Node):
    spec = NodeSpec(
        type="EnvNode",
        category="RL/Env",
        description=(
            "A batch of `num_envs` Gymnasium envs (any registered id) stepped together; outputs"
            " the env and the observations of its first reset."
        ),
        outputs=(
            Output("env", ENV, "the vector env, for EnvStepNode and EvaluateNode"),
            Output("observations", OBSERVATIONS, "the observations of the first reset"),
        ),
        params=(
            Param(
                "env_id",
                str,
                help="Gymnasium environment id (any registered id, e.g. CartPole-v1, HalfCheetah-v5)",
                aliases=("id", "env_name"),
                config="env.id",
            ),
            config_param("env.num_envs"),
            Param(
                "seed",
                int | None,
                None,
                "seed of the first reset (env i gets seed + i); default: the graph's seed",
                ge=0,
            ),
            config_param("env.vectorization"),
            config_param("env.max_episode_steps"),
            config_param("env.kwargs"),
        ),
        aliases=("GymEnvNode",),
    )

    def config(self) -> EnvConfig:
        p = self.params
        return EnvConfig(
            id=p["env_id"],
            num_envs=p["num_envs"],
            vectorization=p["vectorization"],
            max_episode_steps=p["max_episode_steps"],
            kwargs=dict(p["kwargs"]),
        )

    def infer(self, ctx: InferContext) -> None:
        cfg = self.config()
        try:
            obs_space, act_space = env_spaces(cfg)
            if not isinstance(obs_space, gym.spaces.Dict):  # dict obs: the agent checks its keys
                observation_dim(obs_space)
        except EnvError as e:
            ctx.error("params.env_id", "bad_env", str(e))
            return
        self.observation_space, self.action_space = obs_space, act_space
        n = cfg.num_envs
        ctx.output("env", PortSpec(ENV, n, None, env=self.id))
        ctx.output("observations", PortSpec(OBSERVATIONS, n, obs_space, env=self.id, raw=True))

    def emit(self, e: Emitter) -> None:
        seed = self.params["seed"]
        seed = e.setting("seed") if seed is None else seed
        e.imports("from ppokit.config import EnvConfig", "from ppokit.envs import make_env")
        e.set_out("env", e.p)
        e.setup(
            f"{e.var('cfg')} = {config_call('EnvConfig', self.config(), ('id', 'num_envs'))}",
            f"{e.p} = make_env({e.var('cfg')}, device)",
            f"{e.out('observations')} = {e.p}.reset(seed={literal(seed)})",
        )
        e.teardown(f"{e.p}.close()")


@register
class EnvStepNode(Node):
    spec = NodeSpec(
        type="EnvStepNode",
        category="RL/Env",
        description=(
            "Steps the env with the actions. Envs whose episode ended are reset at once; the"
            " observation the episode ended on is kept for bootstrapping truncated episodes."
        ),
        inputs=(
            Input("env", (ENV,), "the env to step"),
            Input("actions", (ACTIONS, POLICY_OUTPUT), "actions in env units, one per env"),
        ),
        outputs=(
            Output(
                "next_observations",
                OBSERVATIONS,
                "observations after the step (after reset where an episode ended)",
            ),
            Output("rewards", REWARDS, "rewards of the step"),
            Output(
                "dones",
                DONES,
                "episode ends of the step: terminated, truncated, final observations",
            ),
            Output(
                "final_observations",
                OBSERVATIONS,
                "the observation each env's step ended on (the final one where an episode ended)",
            ),
        ),
        aliases=("GymStepNode",),
    )

    def infer(self, ctx: InferContext) -> None:
        env = ctx.input("env")
        actions = ctx.input("actions")
        assert env is not None and actions is not None
        env_node = ctx.other(env.env)
        if actions.batch != env.batch:
            ctx.error(
                "inputs.actions",
                "size_mismatch",
                f"actions for {actions.batch} envs reach env {env.env!r} of {env.batch} envs",
            )
            return
        if actions.space != env_node.action_space:
            ctx.error(
                "inputs.actions",
                "space_mismatch",
                f"actions in {actions.space} reach env {env.env!r}, which takes {env_node.action_space}",
            )
            return
        n, space = env.batch, env_node.observation_space
        for port in ("next_observations", "final_observations"):
            ctx.output(port, PortSpec(OBSERVATIONS, n, space, env=env.env, raw=True))
        ctx.output("rewards", PortSpec(REWARDS, n, env=env.env))
        ctx.output("dones", PortSpec(DONES, n, space, env=env.env, raw=True))

    def emit(self, e: Emitter) -> None:
        e.set_out("next_observations", f"{e.p}.obs")
        e.set_out("rewards", f"{e.p}.rewards")
        e.set_out("dones", e.p)
        e.set_out("final_observations", f"rt.final_observations({e.p})")
        e.tick(f"{e.p} = {e.inp('env')}.step({e.actions('actions')})")
