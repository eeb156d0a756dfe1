"""Nodes that route data between the env and the agents: the observation router (the loop's
"OR" node), action processing, extra observation features (sub-goals), and the batch
concatenation and split that let several env nodes feed one agent."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from ppokit.nodes.base import Node, PortSpec, register
from ppokit.nodes.declarations import (
    ACTIONS,
    ANY,
    DONES,
    OBSERVATIONS,
    POLICY_OUTPUT,
    REWARDS,
    Input,
    NodeSpec,
    Output,
    Param,
)
from ppokit.nodes.program import Emitter, InferContext, literal
from ppokit.nodes.runtime import box


@register
class ObservationRouterNode(Node):
    spec = NodeSpec(
        type="ObservationRouterNode",
        category="RL/Flow",
        description=(
            "The loop's entry (DNNE's OR node): on the first tick it passes on `initial` (the"
            " env's first observations), on every later tick `loop` (the previous tick's next"
            " observations)."
        ),
        inputs=(
            Input("initial", (OBSERVATIONS,), "observations for the first tick"),
            Input(
                "loop",
                (OBSERVATIONS,),
                "observations for later ticks, from the previous tick (closes the loop)",
                loop=True,
            ),
        ),
        outputs=(Output("observations", OBSERVATIONS, "the observations of this tick"),),
        aliases=("ORNode",),
    )

    def infer(self, ctx: InferContext) -> None:
        initial = ctx.input("initial")
        assert initial is not None
        ctx.output("observations", initial)

    def infer_loops(self, ctx: InferContext) -> None:
        initial, loop = ctx.input("initial"), ctx.input("loop")
        if initial is None or loop is None:
            return
        if loop.batch != initial.batch or loop.space.shape != initial.space.shape:
            ctx.error(
                "inputs.loop",
                "size_mismatch",
                f"loop observations are {loop.batch} x {loop.space.shape}, initial ones"
                f" {initial.batch} x {initial.space.shape}",
            )

    def emit(self, e: Emitter) -> None:
        e.tick(f"{e.out('observations')} = {e.inp('initial')} if tick == 0 else {e.inp('loop')}")


@register
class ActionProcessorNode(Node):
    forwards_actions = True
    spec = NodeSpec(
        type="ActionProcessorNode",
        category="RL/Flow",
        description=(
            "Rescales, scales, offsets and clips continuous actions on their way to the env:"
            " out = clip(rescale(action) * scale + offset, low, high). Agents already emit"
            " actions rescaled and clipped to the env's bounds, so the defaults change nothing."
            " Discrete actions pass through."
        ),
        inputs=(Input("actions", (ACTIONS, POLICY_OUTPUT), "actions (or an agent's output)"),),
        outputs=(Output("actions", ACTIONS, "the processed actions"),),
        params=(
            Param("scale", float, 1.0, "multiply actions by this"),
            Param("offset", float, 0.0, "then add this"),
            Param("clip", bool, True, "then clip to [low, high]"),
            Param("low", float | None, None, "lower clip bound; default: the env's action bounds"),
            Param("high", float | None, None, "upper clip bound; default: the env's action bounds"),
            Param(
                "rescale",
                bool,
                False,
                "first map actions from [-1, 1] onto the env's bounds (for an agent with"
                " rescale_actions false)",
            ),
        ),
    )

    def infer(self, ctx: InferContext) -> None:
        actions = ctx.input("actions")
        assert actions is not None
        box = isinstance(actions.space, gym.spaces.Box)
        if (
            box
            and self.params["rescale"]
            and not (np.isfinite(actions.space.low).all() and np.isfinite(actions.space.high).all())
        ):
            ctx.error(
                "params.rescale",
                "not_applicable",
                f"rescale needs finite action bounds; these are {actions.space}",
            )
        if not box:
            for name, default in (
                ("rescale", False),
                ("scale", 1.0),
                ("offset", 0.0),
                ("low", None),
                ("high", None),
            ):
                if self.params[name] != default:
                    ctx.error(
                        f"params.{name}",
                        "not_applicable",
                        f"{name} applies to continuous actions; these are {actions.space}",
                    )
        low, high = self.params["low"], self.params["high"]
        if low is not None and high is not None and low > high:
            ctx.error("params.low", "out_of_range", f"low {low} is above high {high}")
        ctx.output(
            "actions",
            PortSpec(ACTIONS, actions.batch, actions.space, env=actions.env, agent=actions.agent),
        )

    def emit(self, e: Emitter) -> None:
        x = e.actions("actions")
        spec = e.input_spec("actions")
        p = self.params
        if not isinstance(spec.space, gym.spaces.Box):
            e.set_out("actions", x)
            return
        expr = x
        if p["rescale"]:
            space = e.action_space(spec)
            e.setup(
                f"{e.var('center')} = torch.as_tensor(({space}.high + {space}.low) / 2, device=device)",
                f"{e.var('half')} = torch.as_tensor(({space}.high - {space}.low) / 2, device=device)",
            )
            expr = f"torch.addcmul({e.var('center')}, {expr}, {e.var('half')})"
        if p["scale"] != 1.0:
            expr = f"{expr} * {literal(p['scale'])}"
        if p["offset"] != 0.0:
            expr = f"{expr} + {literal(p['offset'])}"
        if p["clip"]:
            bounds = []
            for name in ("low", "high"):
                if p[name] is not None:
                    bounds.append(literal(p[name]))
                else:
                    var = e.var(name)
                    e.setup(
                        f"{var} = torch.as_tensor({e.action_space(spec)}.{name}, device=device)"
                    )
                    bounds.append(var)
            expr = f"torch.clamp({expr}, {bounds[0]}, {bounds[1]})"
        if expr == x:
            e.set_out("actions", x)
        else:
            e.tick(f"{e.out('actions')} = {expr}")


def _feature_dim(spec: PortSpec) -> int:
    space = spec.space
    if spec.type == OBSERVATIONS or isinstance(space, gym.spaces.Box):
        return int(space.shape[0])
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    return int(sum(space.nvec))


@register
class ObservationConcatNode(Node):
    spec = NodeSpec(
        type="ObservationConcatNode",
        category="RL/Flow",
        description=(
            "Appends `extra` (another agent's actions, e.g. a sub-goal; discrete ones one-hot)"
            " to observations, and to the final observations inside `dones`, so an agent"
            " conditioned on it also bootstraps truncated episodes on it. Link `observations`,"
            " `dones` or both; each output needs its input."
        ),
        inputs=(
            Input("observations", (OBSERVATIONS,), "observations to extend", optional=True),
            Input(
                "dones", (DONES,), "episode ends whose final observations to extend", optional=True
            ),
            Input("extra", (OBSERVATIONS, ACTIONS, POLICY_OUTPUT), "the features to append"),
        ),
        outputs=(
            Output("observations", OBSERVATIONS, "observations with the features appended"),
            Output("dones", DONES, "episode ends with the features appended to final observations"),
        ),
        aliases=("SubGoalNode",),
    )

    def infer(self, ctx: InferContext) -> None:
        extra = ctx.input("extra")
        assert extra is not None
        if not ctx.linked("observations") and not ctx.linked("dones"):
            ctx.error("inputs.observations", "missing_input", "link observations, dones or both")
            return
        consumers = ctx.analysis.resolved.consumers
        for port in ("observations", "dones"):
            base = ctx.input(port)
            if base is None:
                if consumers(self.id, port):
                    ctx.error(
                        f"inputs.{port}",
                        "missing_input",
                        f"output {port!r} is linked but input {port!r} is not",
                    )
                continue
            if extra.batch != base.batch:
                ctx.error(
                    "inputs.extra",
                    "size_mismatch",
                    f"extra has {extra.batch} rows, {port} {base.batch}",
                )
                return
            dim = int(base.space.shape[0]) + _feature_dim(extra)
            ctx.output(port, PortSpec(base.type, base.batch, box(dim), env=base.env))

    def emit(self, e: Emitter) -> None:
        spec = e.input_spec("extra")
        x = e.inp("extra")
        if spec.type == OBSERVATIONS:
            extra = x
        else:
            extra = e.var("extra")
            e.tick(f"{extra} = rt.features({x}, {e.action_space(spec)})")
        for port in ("observations", "dones"):
            if e.inp(port) is not None:
                e.tick(f"{e.out(port)} = rt.append_features({e.inp(port)}, {extra})")


BATCH_TYPES = (OBSERVATIONS, ACTIONS, REWARDS, DONES)


@register
class BatchConcatNode(Node):
    spec = NodeSpec(
        type="BatchConcatNode",
        category="RL/Flow",
        description=(
            "Concatenates the env batches of 2 to 4 sources of one type (observations,"
            " actions, rewards or dones of several env nodes) in the order a, b, c, d: several"
            " envs feeding one agent."
        ),
        inputs=(
            Input("a", (ANY,), "first batch"),
            Input("b", (ANY,), "second batch"),
            Input("c", (ANY,), "third batch", optional=True),
            Input("d", (ANY,), "fourth batch", optional=True),
        ),
        outputs=(Output("batch", ANY, "the batches one after the other (type of the inputs)"),),
    )

    def infer(self, ctx: InferContext) -> None:
        parts = [(n, ctx.input(n)) for n in "abcd" if ctx.linked(n)]
        first = parts[0][1]
        if first.type not in BATCH_TYPES:
            ctx.error(
                "inputs.a",
                "type_mismatch",
                f"BatchConcatNode concatenates {', '.join(BATCH_TYPES)}, not {first.type}",
            )
            return
        for name, part in parts[1:]:
            if (part.space is None) != (first.space is None) or (
                part.space is not None and part.space != first.space
            ):
                ctx.error(
                    f"inputs.{name}",
                    "space_mismatch",
                    f"batch {name!r} is in {part.space}, batch 'a' in {first.space}",
                )
                return
        raw = all(p.raw for _, p in parts)
        batch = sum(p.batch for _, p in parts)
        ctx.output("batch", PortSpec(first.type, batch, first.space, env=first.env, raw=raw))

    def emit(self, e: Emitter) -> None:
        parts = [e.inp(n) for n in "abcd" if e.inp(n) is not None]
        e.tick(f"{e.out('batch')} = rt.concat_batches([{', '.join(parts)}])")


@register
class BatchSplitNode(Node):
    forwards_actions = True
    spec = NodeSpec(
        type="BatchSplitNode",
        category="RL/Flow",
        description=(
            "Splits a batch of actions into 2 to 4 parts of `sizes` rows (outputs a, b, c, d),"
            " one per env node: the counterpart of BatchConcatNode on the action side."
        ),
        inputs=(Input("batch", (ACTIONS, POLICY_OUTPUT), "actions (or an agent's output)"),),
        outputs=tuple(Output(n, ACTIONS, f"part {n} of the batch") for n in "abcd"),
        params=(Param("sizes", list[int], help="rows of each part, e.g. [4, 4]", ge=1),),
    )

    def infer(self, ctx: InferContext) -> None:
        batch = ctx.input("batch")
        sizes = self.params["sizes"]
        assert batch is not None
        if not 2 <= len(sizes) <= 4:
            ctx.error("params.sizes", "out_of_range", f"give 2 to 4 sizes, got {len(sizes)}")
            return
        if sum(sizes) != batch.batch:
            ctx.error(
                "params.sizes",
                "size_mismatch",
                f"sizes {sizes} add up to {sum(sizes)}, the batch has {batch.batch} rows",
            )
            return
        for i, name in enumerate("abcd"):
            if i < len(sizes):
                ctx.output(
                    name,
                    PortSpec(ACTIONS, sizes[i], batch.space, env=batch.env, agent=batch.agent),
                )
            elif ctx.analysis.resolved.consumers(self.id, name):
                ctx.error(
                    "params.sizes",
                    "size_mismatch",
                    f"output {name!r} is linked but sizes {sizes} has {len(sizes)} parts",
                )

    def emit(self, e: Emitter) -> None:
        sizes = self.params["sizes"]
        names = [e.out(n) for n in "abcd"[: len(sizes)]]
        e.tick(f"{', '.join(names)} = torch.split({e.actions('batch')}, {literal(sizes)})")
