"""From a graph to a program: infer what every port carries, let each node emit its statements,
and assemble them into one Python module.

The module is what `ppokit graph export` writes and what `ppokit graph run` executes, so an
exported script and `graph run` are the same code. Execution is synchronous dataflow: setup
statements in execution order, then a `while` loop whose body is one tick (each node's tick
statements in execution order); a link into a loop input is carried in a variable from the end
of one tick to the next.
"""

from __future__ import annotations

import dataclasses
import json
import keyword
import math
import re
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from ppokit.errors import PPOKitError
from ppokit.nodes.base import Node, PortSpec
from ppokit.nodes.declarations import POLICY_OUTPUT
from ppokit.nodes.errors import GraphIssue, GraphValidationError
from ppokit.nodes.graph import Graph
from ppokit.nodes.validate import Link, Resolved, check

INDENT = "    "
LINE = 100
# Names the program itself uses; node variables never take them.
RESERVED = {
    "rt", "torch", "device", "tick", "results", "out", "out_dir", "quiet", "run", "main", "math",
    "Path", "PPO", "ActorCritic", "EnvConfig", "PolicyConfig", "AlgoConfig", "TrainConfig",
    "EpisodeTracker", "make_env", "evaluate_model", "annotations",
}  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Inference: port specs
# ----------------------------------------------------------------------------------------------


@dataclass
class Analysis:
    """A statically valid graph with the specs of its ports (after inference)."""

    resolved: Resolved
    specs: dict[tuple[str, str], PortSpec] = field(default_factory=dict)
    issues: list[GraphIssue] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)

    @property
    def nodes(self) -> dict[str, Node]:
        return self.resolved.nodes

    @property
    def settings(self) -> dict[str, Any]:
        return self.resolved.settings

    def trainer_of(self, agent: str) -> str | None:
        """The PPOTrainerNode whose `model` input is linked to this agent's model."""
        for node, name in self.resolved.consumers(agent, "model"):
            if self.nodes[node].type == "PPOTrainerNode" and name == "model":
                return node
        return None

    def envs_reached(self, node: str, port: str) -> list[str]:
        """EnvNodes whose EnvStepNode receives, possibly through action-forwarding nodes
        (ActionProcessorNode, BatchSplitNode), what node.port emits."""
        found: list[str] = []
        todo, seen = [(node, port)], set()
        while todo:
            src = todo.pop()
            if src in seen:
                continue
            seen.add(src)
            for target, name in self.resolved.consumers(*src):
                t = self.nodes[target]
                if t.type == "EnvStepNode" and name == "actions":
                    env = self.resolved.links[target].get("env")
                    if env is not None and env.node not in found:
                        found.append(env.node)
                elif t.forwards_actions:
                    todo.extend((target, o.name) for o in t.spec.outputs)
        return found


class InferContext:
    """What a node's `infer` sees: its input specs; where it records outputs and problems."""

    def __init__(self, analysis: Analysis, node: Node) -> None:
        self.analysis = analysis
        self.node = node

    def source(self, name: str) -> Link | None:
        return self.analysis.resolved.links[self.node.id].get(name)

    def linked(self, name: str) -> bool:
        return self.source(name) is not None

    def input(self, name: str) -> PortSpec | None:
        link = self.source(name)
        return None if link is None else self.analysis.specs.get((link.node, link.port))

    def output(self, name: str, spec: PortSpec) -> None:
        self.analysis.specs[(self.node.id, name)] = spec

    def error(
        self, field: str | None, code: str, message: str, suggestion: str | None = None
    ) -> None:
        self.analysis.issues.append(
            GraphIssue(self.node.id, field, code, message, suggestion, self.node.type)
        )

    def setting(self, name: str) -> Any:
        return self.analysis.settings[name]

    def other(self, node_id: str) -> Node:
        return self.analysis.nodes[node_id]


def infer(resolved: Resolved) -> Analysis:
    """Run every node's `infer` in execution order; a node whose inputs failed is skipped (its
    own problem was reported), so one mistake is reported once."""
    analysis = Analysis(resolved)
    for node_id in resolved.order:
        node = resolved.nodes[node_id]
        ctx = InferContext(analysis, node)
        upstream_failed = any(
            link.node in analysis.failed
            for name, link in resolved.links[node_id].items()
            if not resolved.is_loop_input(node_id, name)
        )
        if upstream_failed:
            analysis.failed.add(node_id)
            continue
        before = len(analysis.issues)
        try:
            node.infer(ctx)
        except PPOKitError as e:  # env ids, spaces, configs: ppokit's own messages
            ctx.error(None, "invalid", str(e))
        if len(analysis.issues) > before:
            analysis.failed.add(node_id)
    for node_id in resolved.order:  # loop inputs: their sources are known now
        node = resolved.nodes[node_id]
        if node_id not in analysis.failed:
            node.infer_loops(InferContext(analysis, node))
    return analysis


def analyse(graph: Graph) -> Analysis:
    """Static validation, then inference when it passed. Problems are in `.issues`."""
    resolved, issues = check(graph)
    if issues:
        return Analysis(resolved, issues=issues)
    return infer(resolved)


def validate_graph(graph: Graph) -> list[GraphIssue]:
    """Every problem of the graph (empty when it can run)."""
    return analyse(graph).issues


# ----------------------------------------------------------------------------------------------
# Emission
# ----------------------------------------------------------------------------------------------


def literal(value: Any) -> str:
    """Python source for a param value."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, float):
        if math.isnan(value):
            return 'float("nan")'
        if math.isinf(value):
            return 'float("inf")' if value > 0 else '-float("inf")'
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{literal(k)}: {literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def call(func: str, args: list[str], lead: int = 0) -> str:
    """`func(a, b)` on one line, or one argument per line when that is longer than LINE."""
    flat = f"{func}({', '.join(args)})"
    if (lead + len(flat) <= LINE and "\n" not in flat) or not args:
        return flat
    newline = "\n"
    inner = "".join(f"{newline}{INDENT}{a.replace(newline, newline + INDENT)}," for a in args)
    return f"{func}({inner}\n)"


def config_call(name: str, instance: Any, always: tuple[str, ...] = (), lead: int = 0) -> str:
    """`EnvConfig(id="CartPole-v1", num_envs=8)`: the fields named in `always`, then those that
    differ from the defaults."""
    default = type(instance)()
    fields = [f.name for f in dataclasses.fields(instance)]
    shown = [n for n in always if n in fields] + [
        n for n in fields if n not in always and getattr(instance, n) != getattr(default, n)
    ]
    return call(name, [f"{n}={literal(getattr(instance, n))}" for n in shown], lead)


@dataclass
class Block:
    node: str
    lines: list[str]
    title: str = ""


class Emitter:
    """What a node's `emit` writes to: statements per section, output expressions, imports."""

    def __init__(self, builder: Builder, node: Node) -> None:
        self.builder = builder
        self.analysis = builder.analysis
        self.node = node
        self.p = builder.prefix[node.id]

    # --- names --------------------------------------------------------------------------------
    def var(self, name: str) -> str:
        """A variable private to this node (`<prefix>_<name>`)."""
        return f"{self.p}_{name}"

    def out(self, port: str) -> str:
        """The expression of this node's output `port` (a variable unless set_out changed it)."""
        return self.builder.outputs.get((self.node.id, port)) or self.builder.default_out(
            self.node.id, port
        )

    def set_out(self, port: str, expr: str) -> None:
        self.builder.outputs[(self.node.id, port)] = expr

    def inp(self, name: str) -> str | None:
        """The expression feeding input `name` (None when unlinked)."""
        link = self.analysis.resolved.links[self.node.id].get(name)
        if link is None:
            return None
        if self.analysis.resolved.is_loop_input(self.node.id, name):
            return self.builder.carry_var(self.node.id, name)
        return self.builder.expr(link.node, link.port)

    def prefix_of(self, node_id: str) -> str:
        return self.builder.prefix[node_id]

    def spec(self, port: str) -> PortSpec | None:
        return self.analysis.specs.get((self.node.id, port))

    def input_spec(self, name: str) -> PortSpec | None:
        link = self.analysis.resolved.links[self.node.id].get(name)
        return None if link is None else self.analysis.specs.get((link.node, link.port))

    def setting(self, name: str) -> Any:
        return self.analysis.settings[name]

    def input_of(self, node_id: str, name: str) -> str:
        """The expression feeding another node's input."""
        link = self.analysis.resolved.links[node_id][name]
        return self.builder.expr(link.node, link.port)

    def obs_space(self, spec: PortSpec) -> str:
        """How the program gets an observation space: the env's own, or a flat Box."""
        if spec.raw and spec.env is not None:
            return f"{self.prefix_of(spec.env)}.observation_space"
        return f"rt.box({spec.space.shape[0]})"

    def action_space(self, spec: PortSpec) -> str:
        """How the program gets an action space: the env's the actions reach, else the agent's
        (its model's `action_space`)."""
        if spec.env is not None:
            return f"{self.prefix_of(spec.env)}.action_space"
        if spec.agent is not None and spec.agent != self.node.id:
            return f"{self.prefix_of(spec.agent)}.action_space"
        space = spec.space
        if isinstance(space, gym.spaces.Discrete):
            return f'rt.action_space("discrete", {int(space.n)})'
        return f'rt.action_space("continuous", {int(space.shape[0])})'

    def actions(self, name: str) -> str:
        """The env actions feeding input `name` (`.action` of a POLICY_OUTPUT)."""
        expr = self.inp(name)
        spec = self.input_spec(name)
        return f"{expr}.action" if spec is not None and spec.type == POLICY_OUTPUT else expr

    # --- statements ---------------------------------------------------------------------------
    def imports(self, *lines: str) -> None:
        for line in lines:
            if line not in self.builder.imports:
                self.builder.imports.append(line)

    def setup(self, *lines: str) -> None:
        self.builder.add("setup", self.node.id, lines)

    def tick(self, *lines: str) -> None:
        self.builder.add("tick", self.node.id, lines)

    def before(self, node_id: str, title: str, *lines: str) -> None:
        """Tick statements placed just before another node's (a trainer finishing its rollout
        with the observations its agent is about to act on)."""
        self.builder.hooks.setdefault(node_id, []).append(Block(self.node.id, list(lines), title))

    def final(self, *lines: str) -> None:
        self.builder.add("final", self.node.id, lines)

    def end(self, *lines: str) -> None:
        """Statements right after the last tick, before any node's `final` ones (a trainer's
        final checkpoint holds the state the loop ended with, as `ppokit train`'s does)."""
        self.builder.add("end", self.node.id, lines)

    def teardown(self, *lines: str) -> None:
        self.builder.add("teardown", self.node.id, lines)

    def loop_condition(self, expr: str) -> None:
        """The loop runs while any of these is true (trainers that still have updates to do)."""
        self.builder.conditions.append(expr)


@dataclass
class Span:
    first: int
    last: int
    node: str
    phase: str  # setup | tick | final (end and final) | teardown


@dataclass
class Program:
    graph: Graph
    analysis: Analysis
    source: str
    spans: list[Span]

    @property
    def filename(self) -> str:
        return f"<ppokit graph {self.graph.name}>"

    def locate(self, lineno: int) -> Span | None:
        for span in self.spans:
            if span.first <= lineno <= span.last:
                return span
        return None


class Builder:
    def __init__(self, analysis: Analysis) -> None:
        self.analysis = analysis
        self.prefix = make_prefixes(list(analysis.resolved.nodes))
        self.outputs: dict[tuple[str, str], str] = {}
        self.imports: list[str] = []
        self.sections: dict[str, list[Block]] = {
            "setup": [],
            "tick": [],
            "end": [],
            "final": [],
            "teardown": [],
        }
        self.hooks: dict[str, list[Block]] = {}
        self.conditions: list[str] = []
        self.carries: dict[tuple[str, str], str] = {}

    def default_out(self, node: str, port: str) -> str:
        p = self.prefix[node]
        return p if port == p else f"{p}_{port}"

    def expr(self, node: str, port: str) -> str:
        return self.outputs.get((node, port)) or self.default_out(node, port)

    def carry_var(self, node: str, name: str) -> str:
        var = self.carries.get((node, name))
        if var is None:
            var = self.carries[(node, name)] = f"{self.prefix[node]}_{name}"
        return var

    def add(self, section: str, node: str, lines: tuple[str, ...] | list[str]) -> None:
        blocks = self.sections[section]
        if blocks and blocks[-1].node == node:
            blocks[-1].lines.extend(lines)
        else:
            blocks.append(Block(node, list(lines)))


def import_lines(imports: list[str]) -> list[str]:
    """Standard library, third party, ppokit: sorted, one `from` line per module."""
    groups: list[list[str]] = [[], [], []]
    names: dict[str, set[str]] = {}
    for line in imports:
        if line.startswith("from "):
            module, _, what = line[5:].partition(" import ")
            names.setdefault(module, set()).update(w.strip() for w in what.split(","))
        else:
            groups[1].append(line)
    for module, what in names.items():
        text = f"from {module} import {', '.join(sorted(what, key=lambda w: (w.lower(), w)))}"
        top = module.split(".")[0]
        groups[2 if top == "ppokit" else 0 if top in ("pathlib", "math") else 1].append(text)
    out: list[str] = []
    for group in groups:
        if group:
            out.extend(sorted(set(group)))
            out.append("")
    return out[:-1]


def make_prefixes(node_ids: list[str]) -> dict[str, str]:
    """Python identifiers for node ids ("1" -> "n1", "my-env" -> "my_env"), unique."""
    taken: set[str] = set()
    out = {}
    for node_id in node_ids:
        base = re.sub(r"\W", "_", node_id)
        if not base or base[0].isdigit():
            base = f"n{base}"
        if keyword.iskeyword(base) or base in RESERVED or base.startswith("__"):
            base = f"{base}_node"
        name, k = base, 1
        while name in taken:
            k += 1
            name = f"{base}_{k}"
        taken.add(name)
        out[node_id] = name
    return out


def build_program(graph: Graph) -> Program:
    """Validate, infer and emit; raises GraphValidationError listing every problem."""
    analysis = analyse(graph)
    if analysis.issues:
        raise GraphValidationError(analysis.issues, graph.source)
    builder = Builder(analysis)
    builder.imports.extend(
        ["from pathlib import Path", "import torch", "from ppokit.nodes import runtime as rt"]
    )
    for node_id in analysis.resolved.order:
        node = analysis.nodes[node_id]
        node.emit(Emitter(builder, node))
    return assemble(graph, analysis, builder)


def assemble(graph: Graph, analysis: Analysis, b: Builder) -> Program:
    lines: list[str] = []
    spans: list[Span] = []
    settings = analysis.settings

    def emit_blocks(blocks: list[Block], phase: str, depth: int, header: bool = True) -> None:
        for block in blocks:
            if not block.lines:
                continue
            node = analysis.nodes[block.node]
            pad = INDENT * depth
            if header:
                title = f": {block.title}" if block.title else ""
                lines.append(f"{pad}# {block.node} ({node.type}){title}")
            first = len(lines) + 1
            for text in block.lines:
                lines.extend(f"{pad}{t}" if t else "" for t in text.split("\n"))
            spans.append(Span(first, len(lines), block.node, phase))

    name = graph.name
    # (inside the docstring: no backslashes or triple quotes from file names)
    source_note = f" {graph.source}".replace("\\", "/").replace('"', "'") if graph.source else ""
    doc = [
        f'"""{name}: a ppokit training program generated from the node graph{source_note}.',
        "",
        "`ppokit graph run` executes this same code, so running this script gives the same result",
        "as `graph run` on the graph, with the same seed. Each block is one node of the graph, in",
        "execution order; one pass of the `while` loop is one tick.",
        "",
        "    python <this file> [--out DIR] [--device cpu] [--quiet]",
        '"""',
        "",
        "from __future__ import annotations",
        "",
    ]
    lines.extend(doc)
    lines.extend(import_lines(b.imports))
    lines.extend(["", ""])
    seed, device = settings["seed"], settings["device"] or "cpu"
    lines.extend(
        [
            'def run(out_dir: str | Path = "out", device: str | None = None, quiet: bool = False) -> dict:',
            f'{INDENT}"""Run the graph; returns the results of its nodes (evaluations, files written)."""',
            f"{INDENT}device = rt.start(seed={seed}, device=device or {literal(device)},"
            f" torch_threads={literal(settings['torch_threads'])}, quiet=quiet)",
            f"{INDENT}out = Path(out_dir)",
            f"{INDENT}results: dict = {{}}",
            "",
        ]
    )
    emit_blocks(b.sections["setup"], "setup", 1)
    lines.append("")
    for (node, port), var in b.carries.items():
        link = analysis.resolved.links[node][port]
        lines.append(f"{INDENT}{var} = None  # {node}.{port}: {link} of the previous tick")
    conditions = list(b.conditions)
    cond = " or ".join(conditions) if conditions else "True"
    if settings.get("max_ticks"):
        cond = f"tick < {settings['max_ticks']}" + (
            f" and ({cond})" if len(conditions) > 1 else f" and {cond}" if conditions else ""
        )
    lines.append(f"{INDENT}tick = 0")
    lines.append(f"{INDENT}while {cond}:")
    for node_id in analysis.resolved.order:
        for hook in b.hooks.get(node_id, []):
            emit_blocks([hook], "tick", 2)
        emit_blocks([blk for blk in b.sections["tick"] if blk.node == node_id], "tick", 2)
    for (node, port), var in b.carries.items():
        link = analysis.resolved.links[node][port]
        first = len(lines) + 1
        lines.append(
            f"{INDENT * 2}{var} = {b.expr(link.node, link.port)}  # carried to the next tick"
        )
        spans.append(Span(first, first, node, "tick"))
    lines.append(f"{INDENT * 2}tick += 1")
    lines.append("")
    lines.append(f'{INDENT}results["ticks"] = tick')
    emit_blocks(b.sections["end"], "final", 1)
    emit_blocks(b.sections["final"], "final", 1)
    emit_blocks(b.sections["teardown"], "teardown", 1)
    lines.append(f"{INDENT}return results")
    lines.extend(
        [
            "",
            "",
            'if __name__ == "__main__":',
            f"{INDENT}rt.main(run, {literal(name)}, seed={seed}, device={literal(device)})",
        ]
    )
    return Program(graph, analysis, "\n".join(lines) + "\n", spans)
