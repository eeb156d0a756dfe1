"""The native graph format: JSON with nodes keyed by stable id and inputs linked by port name.

```json
{
  "format": "ppokit-graph",
  "version": 1,
  "seed": 1,
  "nodes": {
    "env": {"type": "EnvNode", "params": {"env_id": "CartPole-v1"}},
    "router": {"type": "ObservationRouterNode",
               "inputs": {"initial": "env.observations", "loop": "step.next_observations"}}
  }
}
```

A link is ``"<node id>.<output name>"``, never a slot index. `load` keeps what was written (a
node's type as spelled, params as given) so `dumps(load(text))` gives the text back; checking
it is validation's job. Duplicate keys, which JSON parsers silently merge, are recorded so
validation can report them (two links into one input).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppokit.nodes.errors import GraphError, GraphIssue, closest

FORMAT = "ppokit-graph"
VERSION = 1

# Graph-level settings: name -> (type annotation, default, help). Order is the dump order.
SETTINGS: dict[str, tuple[Any, Any, str]] = {
    "name": (str, None, "a name for the graph (used for run directories and generated scripts)"),
    "description": (str, None, "what the graph does"),
    "seed": (int, 1, "random seed: torch, numpy and env resets (EnvNode seed defaults to it)"),
    "device": (str, "cpu", "cpu | cuda | cuda:N | auto"),
    "torch_threads": (
        int,
        1,
        "torch intra-op threads (1 is fastest for small MLPs); null: torch's default",
    ),
    "max_ticks": (
        int,
        None,
        "stop after this many ticks (graphs without a PPOTrainerNode need it)",
    ),
}
NODE_KEYS = ("type", "params", "inputs", "meta")
NODE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass
class NodeDef:
    """One node as written: `inputs` maps an input name to a link "node.output"."""

    id: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    nodes: dict[str, NodeDef]
    settings: dict[str, Any] = field(default_factory=dict)
    source: str | None = None
    # Problems found while reading (duplicate keys, unknown fields); validation reports them.
    load_issues: list[GraphIssue] = field(default_factory=list)

    def setting(self, name: str) -> Any:
        return self.settings.get(name, SETTINGS[name][1])

    @property
    def name(self) -> str:
        if self.settings.get("name"):
            return str(self.settings["name"])
        return Path(self.source).stem if self.source else "graph"


def parse_link(link: Any) -> tuple[str, str] | None:
    """ "node.output" -> (node, output); None when it is not of that form."""
    if not isinstance(link, str):
        return None
    node, sep, port = link.rpartition(".")
    if not sep or not node or not port:
        return None
    return node, port


class _Object(dict):
    """A JSON object that remembers keys given more than once."""

    duplicates: list[str]


def _object_hook(pairs: list[tuple[str, Any]]) -> _Object:
    obj = _Object()
    obj.duplicates = []
    for key, value in pairs:
        if key in obj:
            obj.duplicates.append(key)
        obj[key] = value
    return obj


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise GraphError(f"graph file {str(p)!r} does not exist") from None
    except OSError as e:
        raise GraphError(f"cannot read graph file {str(p)!r}: {e.strerror}") from None
    return parse_json(text, str(p))


def parse_json(text: str, where: str = "graph") -> Any:
    try:
        return json.loads(text, object_pairs_hook=_object_hook)
    except json.JSONDecodeError as e:
        raise GraphError(
            f"{where} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}"
        ) from None


def is_native(data: Any) -> bool:
    return isinstance(data, dict) and (
        data.get("format") == FORMAT or isinstance(data.get("nodes"), dict)
    )


def from_native(data: Any, source: str | None = None) -> Graph:
    """A Graph from parsed native JSON. Structural problems that leave nothing to check raise
    GraphError; everything else is left for validation."""
    where = source or "graph"
    if not isinstance(data, dict):
        raise GraphError(f"{where}: expected a JSON object with a 'nodes' object")
    if data.get("format", FORMAT) != FORMAT:
        raise GraphError(f"{where}: 'format' is {data.get('format')!r}, expected {FORMAT!r}")
    version = data.get("version", VERSION)
    if not isinstance(version, int) or version > VERSION:
        raise GraphError(
            f"{where}: graph format version {version!r} is newer than this ppokit ({VERSION})"
        )
    nodes_data = data.get("nodes")
    if not isinstance(nodes_data, dict):
        raise GraphError(f"{where}: 'nodes' must be an object mapping node ids to nodes")
    issues: list[GraphIssue] = []
    for key in getattr(data, "duplicates", []):
        issues.append(GraphIssue(None, key, "duplicate_key", f"{key!r} is given more than once"))
    for key in getattr(nodes_data, "duplicates", []):
        issues.append(
            GraphIssue(key, None, "duplicate_node", f"node id {key!r} is used more than once")
        )
    settings = {}
    for key, value in data.items():
        if key in ("format", "version", "nodes"):
            continue
        if key not in SETTINGS:
            valid = ["format", "version", "nodes", *SETTINGS]
            issues.append(
                GraphIssue(
                    None, key, "unknown_field", f"unknown graph field {key!r}", closest(key, valid)
                )
            )
            continue
        settings[key] = value
    nodes: dict[str, NodeDef] = {}
    for node_id, nd in nodes_data.items():
        if not isinstance(nd, dict):
            raise GraphError(f"{where}: node {node_id!r} must be an object with a 'type'")
        if not isinstance(nd.get("type"), str):
            raise GraphError(f"{where}: node {node_id!r} has no 'type' (a node type name string)")
        for key in nd:
            if key not in NODE_KEYS:
                issues.append(
                    GraphIssue(
                        node_id,
                        key,
                        "unknown_field",
                        f"unknown node field {key!r} (a node has {', '.join(NODE_KEYS)})",
                        closest(key, list(NODE_KEYS)),
                        nd["type"],
                    )
                )
        for key in getattr(nd, "duplicates", []):
            issues.append(
                GraphIssue(
                    node_id,
                    key,
                    "duplicate_key",
                    f"{key!r} is given more than once",
                    None,
                    nd["type"],
                )
            )
        parts = {}
        for part in ("params", "inputs", "meta"):
            value = nd.get(part, {})
            if not isinstance(value, dict):
                raise GraphError(f"{where}: node {node_id!r}: {part!r} must be an object")
            parts[part] = value
        for key in getattr(parts["params"], "duplicates", []):
            issues.append(
                GraphIssue(
                    node_id,
                    f"params.{key}",
                    "duplicate_param",
                    f"param {key!r} is given more than once",
                    None,
                    nd["type"],
                )
            )
        for key in getattr(parts["inputs"], "duplicates", []):
            issues.append(
                GraphIssue(
                    node_id,
                    f"inputs.{key}",
                    "duplicate_link",
                    f"two links into input {key!r}; an input takes one link",
                    None,
                    nd["type"],
                )
            )
        nodes[node_id] = NodeDef(
            node_id, nd["type"], dict(parts["params"]), dict(parts["inputs"]), _plain(parts["meta"])
        )
    return Graph(nodes, settings, source, issues)


def _plain(value: Any) -> Any:
    """_Object -> dict recursively (for values kept as written)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_native(graph: Graph) -> dict:
    out: dict[str, Any] = {"format": FORMAT, "version": VERSION}
    for key in SETTINGS:
        if key in graph.settings:
            out[key] = graph.settings[key]
    nodes = {}
    for node_id, nd in graph.nodes.items():
        entry: dict[str, Any] = {"type": nd.type}
        if nd.params:
            entry["params"] = _plain(nd.params)
        if nd.inputs:
            entry["inputs"] = dict(nd.inputs)
        if nd.meta:
            entry["meta"] = _plain(nd.meta)
        nodes[node_id] = entry
    out["nodes"] = nodes
    return out


def dumps(graph: Graph) -> str:
    """Canonical text: two-space indents, short objects and lists on one line."""
    return _render(to_native(graph), 0) + "\n"


LINE = 100


def _render(value: Any, indent: int, lead: int = 0) -> str:
    """`value` as it appears after `indent` spaces and `lead` characters of its line."""
    flat = json.dumps(value, separators=(", ", ": "))
    if not isinstance(value, (dict, list)) or (
        indent + lead + len(flat) <= LINE and _shallow(value)
    ):
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, list):
        items = [pad + _render(v, indent + 2) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [
        pad + json.dumps(k) + ": " + _render(v, indent + 2, len(json.dumps(k)) + 2)
        for k, v in value.items()
    ]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def _shallow(value: Any) -> bool:
    """Objects holding other objects are written one entry per line (nodes, a node's parts)."""
    if isinstance(value, dict):
        return not any(isinstance(v, dict) and v for v in value.values())
    return True
