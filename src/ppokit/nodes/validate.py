"""Static validation: node types, params, links, port types, cycles. Collects every problem.

The result, when there are no problems, is a `Resolved` graph: node instances with their params
converted and defaulted, links resolved to (node, output), and the execution order.
Size and space checks that need the environments come after, in `program.infer` (run by
`validate_graph` when this step passed).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from ppokit import config as C
from ppokit.errors import ConfigError
from ppokit.nodes.base import UNSUPPORTED, Node, node_class, type_names
from ppokit.nodes.declarations import ANY, Input
from ppokit.nodes.errors import GraphIssue, closest
from ppokit.nodes.graph import NODE_ID, SETTINGS, Graph, parse_link


@dataclass(frozen=True)
class Link:
    node: str
    port: str

    def __str__(self) -> str:
        return f"{self.node}.{self.port}"


@dataclass
class Resolved:
    graph: Graph
    nodes: dict[str, Node]
    links: dict[str, dict[str, Link]]  # node id -> input name -> source
    order: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def consumers(self, node: str, port: str) -> list[tuple[str, str]]:
        """(node, input) pairs linked from node.port, in execution order."""
        out = []
        for target in self.order or list(self.nodes):
            for name, link in self.links[target].items():
                if link.node == node and link.port == port:
                    out.append((target, name))
        return out

    def is_loop_input(self, node: str, name: str) -> bool:
        inp = self.nodes[node].spec.input(name)
        return bool(inp and inp.loop)


def check(graph: Graph) -> tuple[Resolved, list[GraphIssue]]:
    issues: list[GraphIssue] = list(graph.load_issues)
    settings = _check_settings(graph, issues)
    nodes: dict[str, Node] = {}
    for node_id, nd in graph.nodes.items():
        if not NODE_ID.match(node_id):
            issues.append(
                GraphIssue(
                    node_id,
                    None,
                    "bad_id",
                    "node ids may hold letters, digits, '_' and '-' only",
                    None,
                    nd.type,
                )
            )
            continue
        cls = node_class(nd.type)
        if cls is None:
            if nd.type in UNSUPPORTED:
                use, why = UNSUPPORTED[nd.type]
                issues.append(
                    GraphIssue(
                        node_id,
                        "type",
                        "unsupported_node_type",
                        f"{nd.type} cannot run in ppokit ({why}); use {use} instead",
                        None,
                        nd.type,
                    )
                )
            else:
                issues.append(
                    GraphIssue(
                        node_id,
                        "type",
                        "unknown_node_type",
                        f"unknown node type {nd.type!r} (`ppokit graph nodes` lists them)",
                        closest(nd.type, type_names()),
                    )
                )
            continue
        params, explicit = _check_params(node_id, nd.params, cls, issues)
        nodes[node_id] = cls(node_id, params, explicit)

    links: dict[str, dict[str, Link]] = {n: {} for n in nodes}
    for node_id, node in nodes.items():
        _check_inputs(graph, node, nodes, links[node_id], issues)
    _check_types(nodes, links, issues)
    resolved = Resolved(graph, nodes, links, settings=settings)
    cycles = _cycles(resolved)
    for cycle in cycles:
        path = " -> ".join([*cycle, cycle[0]])
        issues.append(
            GraphIssue(
                cycle[0],
                None,
                "cycle",
                f"cycle {path} has no loop-closing input; close loops through an input that"
                " takes the previous tick's value (ObservationRouterNode's 'loop')",
                None,
                nodes[cycle[0]].type,
            )
        )
    if not any(n.type == "PPOTrainerNode" for n in nodes.values()) and not settings.get(
        "max_ticks"
    ):
        issues.append(
            GraphIssue(
                None,
                "max_ticks",
                "no_stop",
                "the graph has no PPOTrainerNode to end it; set 'max_ticks'",
            )
        )
    if not cycles:
        resolved.order = _schedule(resolved)
    return resolved, issues


CONFIG_SETTINGS = ("seed", "torch_threads")  # graph settings that set these config fields


def _check_settings(graph: Graph, issues: list[GraphIssue]) -> dict[str, Any]:
    out = {}
    for name, (tp, default, _) in SETTINGS.items():
        value = graph.settings.get(name, default)
        if value is None:
            out[name] = None
            continue
        try:
            value = C.coerce(value, tp, name)
        except ConfigError:
            issues.append(
                GraphIssue(None, name, "bad_value", f"expected {C.type_name(tp)}, got {value!r}")
            )
            continue
        # seed and torch_threads are the config fields' own; max_ticks counts ticks.
        if name in CONFIG_SETTINGS:
            rng = C.field_range(C.field_info(name)[1])
        else:
            rng = C.Range(ge=1) if tp is int else C.Range()
        problem = C.range_problem(value, rng)
        if problem is not None:
            issues.append(
                GraphIssue(None, name, "out_of_range", f"{value!r} is out of range: {problem}")
            )
            continue
        out[name] = value
    return out


def _check_params(
    node_id: str, given: dict[str, Any], cls: type[Node], issues: list[GraphIssue]
) -> tuple[dict[str, Any], set[str]]:
    spec = cls.spec
    values: dict[str, Any] = {}
    explicit: set[str] = set()
    given_as: dict[str, str] = {}
    for key, value in given.items():
        p = spec.param(key)
        if p is None:
            issues.append(
                GraphIssue(
                    node_id,
                    f"params.{key}",
                    "unknown_param",
                    f"unknown param {key!r}",
                    closest(key, spec.param_names()),
                    spec.type,
                )
            )
            continue
        if p.name in explicit:
            issues.append(
                GraphIssue(
                    node_id,
                    f"params.{key}",
                    "duplicate_param",
                    f"param {p.name!r} is given twice (as {given_as[p.name]!r} and as {key!r})",
                    None,
                    spec.type,
                )
            )
            continue
        converted, code, message, suggestion = p.check(value)
        if code is not None:
            issues.append(
                GraphIssue(node_id, f"params.{key}", code, message or "", suggestion, spec.type)
            )
            continue
        values[p.name] = converted
        explicit.add(p.name)
        given_as[p.name] = key
    for p in spec.params:
        if p.name in values:
            continue
        if p.required:
            issues.append(
                GraphIssue(
                    node_id,
                    f"params.{p.name}",
                    "missing_param",
                    f"required param {p.name!r} ({p.type_name()}: {p.help}) is not set",
                    None,
                    spec.type,
                )
            )
            continue
        default = p.default
        values[p.name] = list(default) if isinstance(default, list) else default
    return values, explicit


def _check_inputs(
    graph: Graph,
    node: Node,
    nodes: dict[str, Node],
    links: dict[str, Link],
    issues: list[GraphIssue],
) -> None:
    spec = node.spec
    for name, text in graph.nodes[node.id].inputs.items():

        def issue(code: str, message: str, suggestion: str | None = None, name: str = name) -> None:
            issues.append(
                GraphIssue(node.id, f"inputs.{name}", code, message, suggestion, spec.type)
            )

        inp = spec.input(name)
        if inp is None:
            issue(
                "unknown_input",
                f"{spec.type} has no input {name!r}",
                closest(name, [i.name for i in spec.inputs]),
            )
            continue
        parsed = parse_link(text)
        if parsed is None:
            issue("bad_link", f"link {text!r} is not of the form 'node.output'")
            continue
        src_id, port = parsed
        if src_id not in graph.nodes:
            issue(
                "dangling_link",
                f"link {text!r} names node {src_id!r}, which is not in the graph",
                closest(src_id, list(graph.nodes)),
            )
            continue
        src = nodes.get(src_id)
        if src is None:  # its own problem was reported
            continue
        if src.spec.output(port) is None:
            outputs = [o.name for o in src.spec.outputs]
            hint = closest(port, outputs)
            issue(
                "unknown_output",
                f"link {text!r}: {src.type} has no output {port!r} (outputs: {', '.join(outputs)})",
                f"{src_id}.{hint}" if hint else None,
            )
            continue
        links[name] = Link(src_id, port)
    given = graph.nodes[node.id].inputs
    for inp in spec.inputs:
        if not inp.optional and inp.name not in given:
            issues.append(
                GraphIssue(
                    node.id,
                    f"inputs.{inp.name}",
                    "missing_input",
                    f"required input {inp.name!r} ({' or '.join(inp.types)}) is not linked",
                    None,
                    spec.type,
                )
            )


def output_type(
    nodes: dict[str, Node],
    links: dict[str, dict[str, Link]],
    link: Link,
    seen: frozenset = frozenset(),
) -> str:
    """The type of node.port; a "*" output takes the type of its node's "*" inputs."""
    declared = nodes[link.node].spec.output(link.port)
    assert declared is not None
    if declared.type != ANY or link.node in seen:
        return declared.type
    node = nodes[link.node]
    for inp in node.spec.inputs:
        if ANY in inp.types and inp.name in links[link.node]:
            return output_type(nodes, links, links[link.node][inp.name], seen | {link.node})
    return ANY


def _check_types(
    nodes: dict[str, Node], links: dict[str, dict[str, Link]], issues: list[GraphIssue]
) -> None:
    for node_id, node in nodes.items():
        generic: tuple[str, str] | None = None  # (input, type) of the first "*" input
        for name, link in links[node_id].items():
            inp = node.spec.input(name)
            assert inp is not None
            t = output_type(nodes, links, link)
            if not inp.accepts(t):
                issues.append(_mismatch(node, inp, link, t, " or ".join(inp.types)))
                continue
            if ANY in inp.types and t != ANY:
                if generic is None:
                    generic = (name, t)
                elif t != generic[1]:
                    issues.append(
                        _mismatch(
                            node, inp, link, t, f"{generic[1]}, the type of input {generic[0]!r}"
                        )
                    )


def _mismatch(node: Node, inp: Input, link: Link, got: str, expected: str) -> GraphIssue:
    return GraphIssue(
        node.id,
        f"inputs.{inp.name}",
        "type_mismatch",
        f"{link} is {got}; input {inp.name!r} takes {expected}",
        None,
        node.type,
    )


def _dependencies(resolved: Resolved, node_id: str) -> list[str]:
    """Nodes that must run before node_id within a tick (loop inputs excluded)."""
    return [
        link.node
        for name, link in resolved.links[node_id].items()
        if not resolved.is_loop_input(node_id, name)
    ]


def _cycles(resolved: Resolved) -> list[list[str]]:
    """One cycle per strongly connected component that has one (Tarjan), in graph order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = [0]
    succ = {n: [] for n in resolved.nodes}  # edges source -> consumer
    for n in resolved.nodes:
        for dep in _dependencies(resolved, n):
            if dep in succ:
                succ[dep].append(n)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in succ[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in succ[v]:
                components.append(comp)

    for v in resolved.nodes:
        if v not in index:
            visit(v)
    order = {n: i for i, n in enumerate(resolved.nodes)}
    cycles = []
    for comp in components:
        members = set(comp)
        start = min(comp, key=order.__getitem__)
        # Shortest way round from the start and back inside the component: one concrete cycle.
        parent: dict[str, str] = {}
        frontier, end = [start], None
        while end is None:
            nxt_frontier = []
            for v in frontier:
                for w in sorted(succ[v], key=order.__getitem__):
                    if w == start:
                        end = v
                        break
                    if w in members and w not in parent:
                        parent[w] = v
                        nxt_frontier.append(w)
                if end is not None:
                    break
            frontier = nxt_frontier
        path = [end]
        while path[-1] != start:
            path.append(parent[path[-1]])
        path.reverse()
        cycles.append(path)
    return sorted(cycles, key=lambda c: order[c[0]])


def _schedule(resolved: Resolved) -> list[str]:
    """Topological order; among ready nodes, those without inputs first, then graph order."""
    position = {n: i for i, n in enumerate(resolved.nodes)}
    deps = {n: set(_dependencies(resolved, n)) for n in resolved.nodes}
    waiting = {n: len(d) for n, d in deps.items()}
    consumers: dict[str, list[str]] = {n: [] for n in resolved.nodes}
    for n, d in deps.items():
        for m in d:
            consumers[m].append(n)

    def key(n: str) -> tuple[int, int]:
        return (1 if resolved.links[n] else 0, position[n])

    ready = [(key(n), n) for n, w in waiting.items() if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for m in consumers[n]:
            waiting[m] -= 1
            if waiting[m] == 0:
                heapq.heappush(ready, (key(m), m))
    return order
