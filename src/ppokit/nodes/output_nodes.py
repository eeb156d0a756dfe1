"""Nodes that use a model without training it: EvaluateNode, SaveCheckpointNode,
ExportPolicyNode. Each runs at the end of the run and, with its `trigger` linked to a trainer's
`training_complete`, every `every`-th update as well."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from ppokit.nodes.base import Node, PortSpec, register
from ppokit.nodes.declarations import ENV, METRICS, MODEL, TRIGGER, Input, NodeSpec, Output, Param
from ppokit.nodes.program import Emitter, InferContext, literal

_TRIGGER = Input(
    "trigger",
    (TRIGGER,),
    "also run on the ticks this is true (a trainer's training_complete)",
    optional=True,
)
_EVERY = Param("every", int, 1, "with trigger linked: run on every this-many-th trigger", ge=1)
_AT_END = Param("at_end", bool, True, "run once after the last tick")


def _checkpoint_state(e: Emitter, trainer_id: str) -> str:
    """The emitted expression for the training state of `trainer_id` (a checkpoint's content)."""
    return f"{e.prefix_of(trainer_id)}.checkpoint_state()"


def _schedule(
    node: Node,
    e: Emitter,
    action: Callable[[str], list[str]],
    result: str,
    at_end_also: tuple[str, ...] = (),
    at_end_unless: str | None = None,
) -> None:
    """`action(when)` on triggers (every n-th) and at the end, as the node's params say;
    `result` is the variable it sets (None until it first runs). At the end `at_end_also`
    follows, and both are skipped when `at_end_unless` is true."""
    trigger = e.inp("trigger")
    if trigger is not None:
        e.setup(f"{result} = None")
        every = node.params["every"]
        count = e.var("count")
        e.setup(f"{count} = 0")
        body = [f"if {trigger}:", f"    {count} += 1"]
        steps = action('f"tick {tick}"')
        if every > 1:
            body += [f"    if {count} % {every} == 0:", *(f"        {a}" for a in steps)]
        else:
            body += [f"    {a}" for a in steps]
        e.tick(*body)
    elif not node.params["at_end"] or at_end_unless:
        e.setup(f"{result} = None")
    if node.params["at_end"]:
        lines = [*action('"end of run"'), *at_end_also]
        if at_end_unless:
            lines = [f"if not {at_end_unless}:", *(f"    {line}" for line in lines)]
        e.final(*lines)


def _trained_agent(ctx: InferContext) -> tuple[Node, str | None] | None:
    model = ctx.input("model")
    if model is None:
        return None
    return ctx.other(model.agent), ctx.analysis.trainer_of(model.agent)


@register
class EvaluateNode(Node):
    spec = NodeSpec(
        type="EvaluateNode",
        category="RL/Output",
        description=(
            "Evaluates the model over whole episodes on fresh envs of the linked env's config"
            " (ppokit.evaluate.evaluate_policy; deterministic by default)."
        ),
        inputs=(
            Input("model", (MODEL,), "the model to evaluate"),
            Input("env", (ENV,), "the env whose config the evaluation envs are made from"),
            _TRIGGER,
        ),
        outputs=(Output("result", METRICS, "mean_return, std_return, mean_length, returns, ..."),),
        params=(
            Param("episodes", int, 10, "episodes to run", ge=1),
            Param("deterministic", bool, True, "act with the mode of the policy, not samples"),
            Param(
                "seed",
                int | None,
                None,
                "seed of the evaluation envs; default: the graph's seed + 10000",
                ge=0,
            ),
            _EVERY,
            _AT_END,
        ),
    )

    def infer(self, ctx: InferContext) -> None:
        agent, self.trainer = _trained_agent(ctx)
        env = ctx.input("env")
        env_node = ctx.other(env.env)
        if agent.observation_space.shape != env_node.observation_space.shape:
            ctx.error(
                "inputs.model",
                "space_mismatch",
                f"agent {agent.id!r} observes {agent.observation_space.shape} features, env"
                f" {env.env!r} gives {env_node.observation_space.shape}; evaluation feeds the"
                " env's own observations",
            )
        elif agent.action_space != env_node.action_space:
            ctx.error(
                "inputs.model",
                "space_mismatch",
                f"agent {agent.id!r} acts in {agent.action_space}, env {env.env!r} takes"
                f" {env_node.action_space}",
            )
        self.agent = agent.id
        ctx.output("result", PortSpec(METRICS))

    def emit(self, e: Emitter) -> None:
        e.imports("from ppokit.evaluate import evaluate_model")
        p = self.params
        seed = p["seed"] if p["seed"] is not None else e.setting("seed") + 10_000
        env = e.input_spec("env").env
        result = e.out("result")
        _schedule(
            self,
            e,
            lambda when: [
                f"{result} = evaluate_model({e.prefix_of(self.agent)}, {e.prefix_of(env)}_cfg,"
                f" {p['episodes']}, {seed}, device, deterministic={p['deterministic']})",
                f"rt.report({literal(self.id)}, rt.eval_line({result}), {when})",
            ],
            result,
            # the run's eval.json, as `ppokit train` writes it; no final evaluation after Ctrl-C
            at_end_also=(f"{e.prefix_of(self.trainer)}.write_eval({result})",)
            if self.trainer is not None
            else (),
            at_end_unless="rt.interrupted()",
        )
        e.final(f"results[{literal(self.id)}] = {result}")


def _check_output_path(ctx: InferContext, path: str, what: str) -> None:
    """An output file that cannot be written is a validation error, found before training
    rather than after it. A relative path lands in the run's output directory, which the run
    claims (and checks) before training starts; an absolute one is checked here."""
    from pathlib import Path

    from ppokit.errors import OutputError
    from ppokit.outputs import output_file

    if not path.strip():
        ctx.error("params.path", "not_writable", f"{what} path is empty; give a file name")
        return
    if Path(path).is_absolute():
        try:
            output_file(path, what)
        except OutputError as e:
            ctx.error("params.path", "not_writable", str(e))


@register
class SaveCheckpointNode(Node):
    spec = NodeSpec(
        type="SaveCheckpointNode",
        category="RL/Output",
        description=(
            "Writes a ppokit checkpoint of the trained model (model with normalizer statistics,"
            " optimizer, LR schedule, reward scaler, RNG, counters, config), atomically. For a"
            " graph of the basic loop, `ppokit train --resume` continues from it."
        ),
        inputs=(Input("model", (MODEL,), "a model trained by a PPOTrainerNode"), _TRIGGER),
        params=(
            Param(
                "path",
                str,
                "checkpoint.pt",
                "file to write, relative to the run's output directory",
            ),
            _EVERY,
            _AT_END,
        ),
    )

    def infer(self, ctx: InferContext) -> None:
        agent, trainer = _trained_agent(ctx)
        if trainer is None:
            ctx.error(
                "inputs.model",
                "not_trained",
                f"agent {agent.id!r} has no PPOTrainerNode; a checkpoint holds the training state",
            )
            return
        self.trainer = trainer
        _check_output_path(ctx, self.params["path"], "checkpoint")

    def emit(self, e: Emitter) -> None:
        state = _checkpoint_state(e, self.trainer)
        path = f"rt.output_path(out, {literal(self.params['path'])})"
        var = e.var("path")
        _schedule(self, e, lambda when: [f"{var} = rt.save_checkpoint({path}, {state})"], var)
        e.final(f"results[{literal(self.id)}] = {var}")


@register
class ExportPolicyNode(Node):
    spec = NodeSpec(
        type="ExportPolicyNode",
        category="RL/Output",
        description=(
            "After the last tick, exports the trained policy as `ppokit export` does: raw"
            " observations in, deterministic env actions out, observation normalization inside,"
            " verified against torch; `ppokit.load_policy(path)` and `ppokit eval` read it."
        ),
        inputs=(Input("model", (MODEL,), "a model trained by a PPOTrainerNode"),),
        params=(
            Param(
                "path", str, "policy.onnx", "file to write, relative to the run's output directory"
            ),
            Param("format", Literal["onnx", "torchscript"], "onnx", "file format"),
        ),
    )

    def infer(self, ctx: InferContext) -> None:
        agent, trainer = _trained_agent(ctx)
        if trainer is None:
            ctx.error(
                "inputs.model",
                "not_trained",
                f"agent {agent.id!r} has no PPOTrainerNode; export works from its training state",
            )
            return
        model = ctx.input("model")
        if not model.raw:
            ctx.error(
                "inputs.model",
                "space_mismatch",
                f"agent {agent.id!r} does not observe an env's own observations; an exported"
                " policy is described by its env",
            )
            return
        self.trainer = trainer
        _check_output_path(ctx, self.params["path"], f"{self.params['format']} export")

    def emit(self, e: Emitter) -> None:
        state = _checkpoint_state(e, self.trainer)
        path = f"rt.output_path(out, {literal(self.params['path'])})"
        e.final(
            f"results[{literal(self.id)}] = rt.export_policy({path},"
            f" {literal(self.params['format'])}, {state})"
        )
