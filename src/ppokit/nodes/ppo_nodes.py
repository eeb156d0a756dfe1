"""PPOAgentNode (the actor-critic, acting) and PPOTrainerNode (recording, GAE, the update).

They are ppokit's own training loop cut at the seam its public steps already have: the agent's
tick is `PPO.act(obs)`, the trainer's tick is `PPO.record(step)`, and when the rollout is full the
trainer runs `PPO.finish_rollout(next_obs)` and `PPO.update()`, where `next_obs` is what the agent
acts on next. No PPO math lives here.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal

import gymnasium as gym

from ppokit import config as C
from ppokit.config import AlgoConfig, LogConfig, PolicyConfig, TrainConfig
from ppokit.errors import ConfigError, EnvError
from ppokit.nn.actor_critic import make_distribution, observation_dim, observation_groups
from ppokit.nodes.base import Node, PortSpec, register
from ppokit.nodes.declarations import (
    DONES,
    LOSS_INFO,
    MODEL,
    OBSERVATIONS,
    POLICY_OUTPUT,
    REWARDS,
    TRIGGER,
    Input,
    NodeSpec,
    Output,
    Param,
    config_param,
)
from ppokit.nodes.program import Emitter, InferContext, call, config_call, literal
from ppokit.nodes.runtime import action_space as make_action_space

# Config fields the generated program always spells out (others only where not the default).
POLICY_SHOWN = ("actor_hidden", "critic_hidden", "activation")
ENV_SHOWN = ("id", "num_envs")
ALGO_SHOWN = ("num_steps", "num_epochs", "minibatch_size", "num_minibatches", "lr", "gamma", "lam")


def _action_size(space: gym.Space) -> int:
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.MultiDiscrete):
        return int(space.nvec.size)
    return int(space.shape[0]) if space.shape else 1


_MEMORY = ("memory", "memory_hidden", "memory_layers", "critic_memory")
_DICT_OBS = ("encoders", "actor_keys", "critic_keys")


@register
class PPOAgentNode(Node):
    spec = NodeSpec(
        type="PPOAgentNode",
        category="RL/PPO",
        description=(
            "An actor-critic (ppokit's ActorCritic: observation normalizer, separate actor and"
            " critic MLPs, per-key encoders for dict observations, an optional GRU/LSTM core,"
            " Gaussian or categorical head) that acts on the observations each"
            " tick. When a PPOTrainerNode trains its model, acting goes through PPO.act, which"
            " stores the step in the rollout."
        ),
        inputs=(Input("observations", (OBSERVATIONS,), "the observations to act on"),),
        outputs=(
            Output(
                "policy_output",
                POLICY_OUTPUT,
                "action, value, log_prob and action_params (mean/std or logits)",
            ),
            Output("model", MODEL, "the actor-critic network"),
        ),
        params=(
            Param(
                "input_size",
                int | None,
                None,
                "observation size; inferred from the observations (a mismatch is an error)",
                ge=1,
            ),
            Param(
                "output_size",
                int | None,
                None,
                "action size (Box dims or discrete choices); inferred from the env the actions"
                " reach (a mismatch is an error); needed when they reach no env",
                ge=1,
            ),
            config_param(
                "policy.actor_hidden",
                "hidden_sizes",
                help='hidden layer sizes of the actor and the critic MLPs (also "64,64")',
            ),
            config_param(
                "policy.critic_hidden",
                "critic_hidden_sizes",
                type=list[int] | None,
                default=None,
                help="critic hidden sizes, when they differ from hidden_sizes",
            ),
            config_param("policy.activation"),
            config_param("algo.lr", "learning_rate", aliases=("lr",)),
            Param(
                "action_space",
                Literal["continuous", "discrete"] | None,
                None,
                "continuous (Gaussian) or discrete (categorical); inferred from the env the"
                " actions reach (a mismatch is an error); default continuous when they reach none",
            ),
            config_param("policy.init_noise_std"),
            config_param("policy.noise_std_relative"),
            config_param("policy.log_std_min"),
            config_param("policy.log_std_max"),
            config_param("policy.rescale_actions"),
            config_param(
                "policy.normalize_obs", "normalize_observations", aliases=("normalize_obs",)
            ),
            config_param("policy.obs_clip"),
            Param(
                "act_every",
                int,
                1,
                "act on every k-th tick and hold the action in between (a high-level agent"
                " emitting a sub-goal every k ticks); its trainer then records one transition per"
                " k ticks",
                ge=1,
            ),
            # Recurrent policies and dict observations: the PolicyConfig fields `ppokit train`
            # reads, declared late (after every other widget in ComfyUI's order).
            *(config_param(f"policy.{name}", late=True) for name in _MEMORY + _DICT_OBS),
        ),
    )

    def policy_config(self) -> PolicyConfig:
        p = self.params
        return PolicyConfig(
            actor_hidden=list(p["hidden_sizes"]),
            critic_hidden=list(p["critic_hidden_sizes"] or p["hidden_sizes"]),
            activation=p["activation"],
            init_noise_std=p["init_noise_std"],
            noise_std_relative=p["noise_std_relative"],
            log_std_min=p["log_std_min"],
            log_std_max=p["log_std_max"],
            rescale_actions=p["rescale_actions"],
            normalize_obs=p["normalize_observations"],
            obs_clip=p["obs_clip"],
            **{name: p[name] for name in _MEMORY + _DICT_OBS},
        )

    def infer(self, ctx: InferContext) -> None:
        p = self.params
        obs = ctx.input("observations")
        assert obs is not None
        try:
            if isinstance(obs.space, gym.spaces.Dict):  # keys and encoders: the model's checks
                observation_groups(obs.space, self.policy_config())
                obs_dim = None
            else:
                obs_dim = observation_dim(obs.space)
        except (EnvError, ConfigError) as e:
            ctx.error("inputs.observations", "space_mismatch", str(e))
            return
        if obs_dim is None and p["input_size"] is not None:
            ctx.error(
                "params.input_size",
                "size_mismatch",
                "the observations are a dict; input_size applies to flat observations",
            )
        elif p["input_size"] is not None and p["input_size"] != obs_dim:
            ctx.error(
                "params.input_size",
                "size_mismatch",
                f"input_size is {p['input_size']}, the observations have {obs_dim} features",
            )
        envs = ctx.analysis.envs_reached(self.id, "policy_output")
        env = None
        if envs:
            spaces = [ctx.other(n).action_space for n in envs]
            if any(s != spaces[0] for s in spaces[1:]):
                ctx.error(
                    "outputs.policy_output",
                    "space_mismatch",
                    f"the actions reach envs {envs} with different action spaces",
                )
                return
            env, space = envs[0], spaces[0]
            kind = "continuous" if isinstance(space, gym.spaces.Box) else "discrete"
            if p["action_space"] is not None and p["action_space"] != kind:
                ctx.error(
                    "params.action_space",
                    "space_mismatch",
                    f"action_space is {p['action_space']!r}, env {env!r} has {kind} actions ({space})",
                )
            if p["output_size"] is not None and p["output_size"] != _action_size(space):
                ctx.error(
                    "params.output_size",
                    "size_mismatch",
                    f"output_size is {p['output_size']}, env {env!r} takes {_action_size(space)}"
                    f" {'choices' if kind == 'discrete' else 'action dims'} ({space})",
                )
        else:
            if p["output_size"] is None:
                ctx.error(
                    "params.output_size",
                    "missing_param",
                    "the actions reach no EnvStepNode, so output_size (and action_space) must be set",
                )
                return
            space = make_action_space(p["action_space"] or "continuous", p["output_size"])
        policy = self.policy_config()
        if policy.log_std_min >= policy.log_std_max:
            ctx.error("params.log_std_min", "out_of_range", "log_std_min must be below log_std_max")
        try:
            make_distribution(space, policy)
        except EnvError as e:
            ctx.error("params.action_space", "space_mismatch", str(e))
        self.observation_space, self.action_space = obs.space, space
        ctx.output(
            "policy_output", PortSpec(POLICY_OUTPUT, obs.batch, space, env=env, agent=self.id)
        )
        ctx.output(
            "model", PortSpec(MODEL, obs.batch, obs.space, env=obs.env, raw=obs.raw, agent=self.id)
        )

    def emit(self, e: Emitter) -> None:
        e.imports(
            "from ppokit.config import PolicyConfig",
            "from ppokit.nn.actor_critic import ActorCritic",
        )
        p = self.params
        obs_spec = e.input_spec("observations")
        act_spec = e.spec("policy_output")
        args = [
            e.obs_space(obs_spec),
            e.action_space(act_spec),
            config_call("PolicyConfig", self.policy_config(), POLICY_SHOWN, 8),
        ]
        e.set_out("model", e.p)
        e.setup(f"{e.p} = {call('ActorCritic', args, len(e.p) + 3)}.to(device)")
        obs = e.inp("observations")
        out = e.out("policy_output")
        trainer = e.analysis.trainer_of(self.id)
        if trainer is None:
            body = [f"{out} = rt.PolicyOutput.explore({e.p}, {obs})"]
        else:  # PPO.act samples and stores obs, action and log-prob while training lasts
            body = [f"{out} = {e.prefix_of(trainer)}.act({e.p}, {obs})"]
        k = p["act_every"]
        if k > 1:
            body = [f"if tick % {k} == 0:  # acts every {k} ticks; holds its output in between"] + [
                f"    {line}" for line in body
            ]
        e.tick(*body)


# Trainer params: the issue's names for the common PPO options, then every other AlgoConfig
# field under its own name, so the whole of ppokit's PPO is reachable from the node. Defaults,
# ranges and help are the config fields' (`config_param`).
_NAMED = (
    config_param("algo.num_steps", "horizon_length", aliases=("num_steps", "horizon")),
    config_param("algo.num_epochs", "epochs", aliases=("num_epochs", "ppo_epochs")),
    config_param(
        "algo.minibatch_size",
        help="samples per minibatch, instead of num_minibatches; must divide horizon_length x"
        " num_envs",
    ),
    config_param(
        "algo.num_minibatches",
        help="minibatches per epoch, instead of minibatch_size (the one given wins over the"
        " other's default)",
    ),
    config_param(
        "algo.lr",
        "learning_rate",
        default=None,
        type=float | None,
        help="optimizer learning rate; default: the agent's learning_rate",
        aliases=("lr",),
    ),
    config_param("algo.gamma", aliases=("discount",)),
    config_param("algo.lam", aliases=("gae_lambda", "lambda")),
    config_param("algo.clip_coef", "clip_param", aliases=("clip_coef", "clip_range")),
    config_param("algo.vf_coef", "value_coef", aliases=("vf_coef", "value_loss_coef")),
    config_param("algo.ent_coef", "entropy_coef", aliases=("ent_coef",)),
    config_param("algo.max_grad_norm"),
)
# Weights & Biases, as `ppokit train --log.wandb true` logs (the run directory's RunLogger).
_WANDB = ("wandb", "wandb_project", "wandb_mode")
# Declared after _REST, where they were as env.* fields (ComfyUI stores widget values by position).
_REWARDS = ("algo.scale_rewards", "algo.reward_clip")
_MAPPED = {p.config for p in _NAMED} | set(_REWARDS)
_REST = tuple(
    config_param(name) for name, _, _ in C.iter_fields(AlgoConfig, "algo.") if name not in _MAPPED
)


@register
class PPOTrainerNode(Node):
    spec = NodeSpec(
        type="PPOTrainerNode",
        category="RL/PPO",
        description=(
            "Trains its agent's model with ppokit's PPO: records each tick's outcome"
            " (PPO.record, which bootstraps truncated episodes from their final observations);"
            " when horizon_length ticks are stored, finishes the rollout with the observations"
            " the agent acts on next (values, reward scaling, GAE) and runs the update. The"
            " graph runs until every trainer has used its total_steps."
        ),
        inputs=(
            Input("states", (OBSERVATIONS,), "the observations the agent acted on"),
            Input("policy_outputs", (POLICY_OUTPUT,), "the agent's output"),
            Input("rewards", (REWARDS,), "rewards of the env step"),
            Input("dones", (DONES,), "episode ends of the env step"),
            Input("model", (MODEL,), "the agent's model (the one trained)"),
        ),
        outputs=(
            Output("training_complete", TRIGGER, "true on the ticks an update ran"),
            Output("loss_info", LOSS_INFO, "metrics of the last update"),
        ),
        params=(
            *_NAMED,
            *_REST,
            *(config_param(name) for name in _REWARDS),
            config_param(
                "total_steps",
                help="env steps to train for (summed over envs); the graph runs until every"
                " trainer is done",
            ),
            config_param("log.episode_window"),
            Param(
                "log_every",
                int,
                10,
                "print a progress line every this many updates (0: never)",
                ge=0,
            ),
            config_param("log.checkpoint_every", late=True),
            config_param("log.keep_checkpoints", late=True),
            *(config_param(f"log.{name}", late=True) for name in _WANDB),
        ),
    )

    def infer(self, ctx: InferContext) -> None:
        p = self.params
        issues_before = len(ctx.analysis.issues)
        links = ctx.analysis.resolved.links
        model_link = ctx.source("model")
        assert model_link is not None
        agent = ctx.other(model_link.node)
        if agent.type != "PPOAgentNode":
            ctx.error(
                "inputs.model",
                "wrong_source",
                f"the model must come from a PPOAgentNode, not {agent.type}",
            )
            return
        owner = ctx.analysis.trainer_of(agent.id)
        if owner != self.id:
            ctx.error(
                "inputs.model",
                "wrong_source",
                f"agent {agent.id!r} is already trained by {owner!r}; an agent has one trainer",
            )
            return
        po = ctx.source("policy_outputs")
        if (po.node, po.port) != (agent.id, "policy_output"):
            ctx.error(
                "inputs.policy_outputs",
                "wrong_source",
                f"policy_outputs must be {agent.id}.policy_output (the agent whose model is"
                f" trained), not {po}",
                f"{agent.id}.policy_output",
            )
        acted_on = links[agent.id]["observations"]
        if ctx.source("states") != acted_on:
            ctx.error(
                "inputs.states",
                "wrong_source",
                f"states must be the observations agent {agent.id!r} acts on ({acted_on}),"
                f" not {ctx.source('states')}",
                str(acted_on),
            )
        states, rewards, dones = ctx.input("states"), ctx.input("rewards"), ctx.input("dones")
        n = states.batch
        for name, spec in (("rewards", rewards), ("dones", dones)):
            if spec.batch != n:
                ctx.error(
                    f"inputs.{name}", "size_mismatch", f"{name} of {spec.batch} envs, states of {n}"
                )
        if dones.space.shape != states.space.shape:
            ctx.error(
                "inputs.dones",
                "size_mismatch",
                f"the final observations in dones have shape {dones.space.shape}, the states"
                f" {states.space.shape}; append the same features to both (ObservationConcatNode)",
            )
        if len(ctx.analysis.issues) > issues_before:
            return
        self.agent = agent.id
        self.act_every = agent.params["act_every"]
        lr = p["learning_rate"]
        if lr is None:
            lr = agent.params["learning_rate"]
        elif "learning_rate" in agent.explicit and agent.params["learning_rate"] != lr:
            ctx.error(
                "params.learning_rate",
                "conflict",
                f"learning_rate {lr} differs from the learning_rate {agent.params['learning_rate']}"
                f" of agent {agent.id!r}; the optimizer has one: set it on one node",
            )
            return
        # The one of minibatch_size and num_minibatches given wins over the other's default.
        minibatch_size, num_minibatches = p["minibatch_size"], p["num_minibatches"]
        if "minibatch_size" in self.explicit and "num_minibatches" not in self.explicit:
            num_minibatches = None
        elif "num_minibatches" in self.explicit and "minibatch_size" not in self.explicit:
            minibatch_size = None
        batch = p["horizon_length"] * n
        for name, size in (
            ("minibatch_size", minibatch_size),
            ("num_minibatches", num_minibatches),
        ):
            if size is not None and batch % size:
                ctx.error(
                    f"params.{name}",
                    "size_mismatch",
                    f"{name} {size} must divide horizon_length x num_envs ="
                    f" {p['horizon_length']} x {n} = {batch}",
                )
                return
        algo = {f.name: p[f.name] for f in dataclasses.fields(AlgoConfig) if f.name in p}
        algo.update(
            num_steps=p["horizon_length"],
            num_epochs=p["epochs"],
            minibatch_size=minibatch_size,
            num_minibatches=num_minibatches,
            lr=lr,
            gamma=p["gamma"],
            lam=p["lam"],
            clip_coef=p["clip_param"],
            vf_coef=p["value_coef"],
            ent_coef=p["entropy_coef"],
            max_grad_norm=p["max_grad_norm"],
        )
        env_node = ctx.other(dones.env)
        env = dataclasses.replace(env_node.config(), num_envs=n)
        cfg = TrainConfig(
            env=env,
            policy=agent.policy_config(),
            algo=AlgoConfig(**algo),
            total_steps=p["total_steps"],
            seed=ctx.setting("seed"),
            device=ctx.setting("device") or "cpu",
            torch_threads=ctx.setting("torch_threads"),
        )
        cfg.log.episode_window = p["episode_window"]
        for name in ("checkpoint_every", "keep_checkpoints", *_WANDB):
            setattr(cfg.log, name, p[name])
        try:
            C.validate(cfg)
        except ConfigError as e:
            ctx.error(None, "bad_config", str(e))
            return
        self.cfg = cfg
        self.steps_per_update = p["horizon_length"] * n * self.act_every
        self.total_updates = math.ceil(p["total_steps"] / self.steps_per_update)
        ctx.output("training_complete", PortSpec(TRIGGER))
        ctx.output("loss_info", PortSpec(LOSS_INFO))

    def emit(self, e: Emitter) -> None:
        e.imports("from ppokit.config import AlgoConfig, EnvConfig, PolicyConfig, TrainConfig")
        if self.cfg.log != LogConfig():
            e.imports("from ppokit.config import LogConfig")
        t, cfg, k = e.p, self.cfg, self.act_every
        cfg_args = [
            f"env={config_call('EnvConfig', cfg.env, ENV_SHOWN, 8)}",
            f"policy={config_call('PolicyConfig', cfg.policy, POLICY_SHOWN, 11)}",
            f"algo={config_call('AlgoConfig', cfg.algo, ALGO_SHOWN, 9)}",
            f"total_steps={cfg.total_steps}",
            f"seed={cfg.seed}",
        ]
        if cfg.log != LogConfig():  # episode window, checkpoints
            cfg_args.insert(3, f"log={config_call('LogConfig', cfg.log, (), 8)}")
        args = [literal(self.id), e.prefix_of(self.agent), f"{t}_cfg", "device"]
        args += [f"act_every={k}"] if k > 1 else []
        args += [f"log_every={self.params['log_every']}"]
        # The run directory `ppokit train` writes (config, metrics, TensorBoard, checkpoints/).
        trainers = sum(n.type == "PPOTrainerNode" for n in e.analysis.nodes.values())
        args += [f"run_dir=rt.run_dir_of(out, {literal(self.id)}, {trainers})"]
        if self.evaluated(e):
            args += ["evaluated=True"]
        e.setup(
            f"{t}_cfg = {call('TrainConfig', cfg_args, 100)}",
            f"{t} = {call('rt.NodeTrainer', args, len(t) + 3)}"
            f"  # {self.total_updates} updates of {self.steps_per_update} steps",
        )
        e.loop_condition(f"{t}.training")
        # Before the agent acts: a rollout that filled on the previous tick is finished with the
        # observations the agent is about to act on (they follow its last step), then updated.
        next_obs = e.input_of(self.agent, "observations")
        e.before(
            self.agent,
            "before the agent acts",
            f"{e.out('training_complete')} = {t}.update_if_full({next_obs}, tick)",
        )
        e.set_out("loss_info", f"{t}.loss_info")
        dones, rewards = e.inp("dones"), e.inp("rewards")
        own = rewards == f"{dones}.rewards"
        e.tick(
            f"{t}.record({dones}, tick{'' if own else f', rewards={rewards}'})"
            f"  # the outcome of the agent's actions{'' if k == 1 else f'; one transition per {k} ticks'}"
        )
        e.end(f"{t}.end()  # the final checkpoint: checkpoints/latest.pt")
        e.final(f"results[{literal(self.id)}] = {t}.summary()")
        e.teardown(f"{t}.close()")

    def evaluated(self, e: Emitter) -> bool:
        """Whether an EvaluateNode evaluates this trainer's model at the end (eval.json)."""
        return any(
            n.type == "EvaluateNode"
            and n.params["at_end"]
            and e.analysis.trainer_of(e.analysis.resolved.links[n.id]["model"].node) == self.id
            for n in e.analysis.nodes.values()
            if "model" in e.analysis.resolved.links.get(n.id, {})
        )
