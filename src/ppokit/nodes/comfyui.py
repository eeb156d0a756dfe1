"""ComfyUI / DNNE interop: node definitions generated from the declarations, and workflow import.

Definitions: `object_info()` is the JSON ComfyUI's `/object_info` serves for these nodes, and
`NODE_CLASS_MAPPINGS` / `NODE_DISPLAY_NAME_MAPPINGS` are the classes a ComfyUI custom-node
package exports (``from ppokit.nodes.comfyui import NODE_CLASS_MAPPINGS,
NODE_DISPLAY_NAME_MAPPINGS`` in its ``__init__.py``), so the graph can be drawn in the editor.
ComfyUI's own executor runs a graph once, without loops, so the classes do not execute there:
save the workflow and run it with `ppokit graph run workflow.json`.

Import: `from_comfyui` reads a workflow in the UI format (``nodes`` + ``links``) or the
API-prompt format (``{id: {"class_type", "inputs"}}``) into a native Graph. Links are resolved by
port name: in the UI format each link id is looked up in the origin node's ``outputs[].links``
and the target node's ``inputs[].link`` (the slot numbers stored with links are not trusted);
in the API format, where a link is ``[node id, output index]``, the index is read against the
node type's declared outputs. Widget values given as a list are matched to params in the order
the definitions list them.
"""

from __future__ import annotations

import json
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any

from ppokit import config as C
from ppokit.errors import ConfigError
from ppokit.nodes import dnne
from ppokit.nodes.base import Node, node_class, node_classes
from ppokit.nodes.declarations import ANY, REQUIRED, Param
from ppokit.nodes.errors import GraphError, GraphIssue
from ppokit.nodes.graph import Graph, NodeDef

OUTPUT_NODES = {"EvaluateNode", "SaveCheckpointNode", "ExportPolicyNode"}
# UI-only node types: notes are dropped, reroutes are followed.
NOTE_TYPES = {"Note", "MarkdownNote"}
REROUTE = "Reroute"
SEED_CONTROL = {"fixed", "increment", "decrement", "randomize"}
ENV_ID_ALIASES = ("env_name", "task", "env")


def display_name(type_name: str) -> str:
    """ "PPOAgentNode" -> "PPO Agent"."""
    stem = type_name[:-4] if type_name.endswith("Node") else type_name
    return re.sub(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", " ", stem)


# ----------------------------------------------------------------------------------------------
# Definitions
# ----------------------------------------------------------------------------------------------


def _optional_widget(p: Param) -> bool:
    """Params whose default is None are STRING widgets in "optional" ("" = the default)."""
    return p.default is None or p.nullable


def _in_optional(p: Param) -> bool:
    """Listed in ComfyUI's optional section: text widgets whose "" means the default, and
    params declared late (after them, so older positional workflows keep their values)."""
    return _optional_widget(p) or p.late


def widget_params(cls: type[Node]) -> list[Param]:
    """Params in widget order: required section first, then optional (ComfyUI's order), the
    late ones last."""
    params = cls.spec.params
    return (
        [p for p in params if not _in_optional(p)]
        + [p for p in params if _optional_widget(p) and not p.late]
        + [p for p in params if p.late]
    )


def widget(p: Param) -> list:
    """A param as a ComfyUI input: ["INT", {...}], [[choices], {...}], ["STRING", {...}], ..."""
    tip = p.help + (f" ({p.range_text()})" if p.range_text() else "")
    if _optional_widget(p):
        if p.choices is not None:  # a combo whose empty entry means "inferred / the default"
            return [["", *p.choices], {"default": "", "tooltip": tip + " (empty: default)"}]
        default = "" if p.default is None or p.required else _text(p.default)
        return ["STRING", {"default": default, "tooltip": tip + " (empty: default)"}]
    if p.choices is not None:
        return [list(p.choices), {"default": p.default, "tooltip": tip}]
    tp = p.type
    if tp is bool:
        return ["BOOLEAN", {"default": p.default, "tooltip": tip}]
    if tp in (int, float):
        opts: dict[str, Any] = {"default": p.default, "tooltip": tip}
        low = p.ge if p.ge is not None else p.gt
        if low is not None:
            opts["min"] = low
        if p.le is not None:
            opts["max"] = p.le
        if tp is float:
            opts["step"] = 0.0001
        return ["INT" if tp is int else "FLOAT", opts]
    default = "" if p.required else _text(p.default)
    return ["STRING", {"default": default, "tooltip": tip}]


def _text(value: Any) -> str:
    """A list or mapping default as widget text ("64,64", JSON)."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _port_type(types: tuple[str, ...]) -> str:
    return ANY if ANY in types else ",".join(types)


def node_definition(cls: type[Node]) -> dict:
    spec = cls.spec
    required: dict[str, Any] = {}
    optional: dict[str, Any] = {}
    for i in spec.inputs:
        entry = [_port_type(i.types), {"tooltip": i.help}]
        (optional if i.optional else required)[i.name] = entry
    for p in widget_params(cls):
        (optional if _in_optional(p) else required)[p.name] = widget(p)
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": [o.type for o in spec.outputs],
        "output_is_list": [False] * len(spec.outputs),
        "output_name": [o.name for o in spec.outputs],
        "output_tooltips": [o.help for o in spec.outputs],
        "name": spec.type,
        "display_name": display_name(spec.type),
        "description": spec.description,
        "python_module": "ppokit.nodes",
        "category": spec.category,
        "output_node": spec.type in OUTPUT_NODES,
    }


def object_info() -> dict:
    """The definitions of all node types, as ComfyUI's /object_info serves them."""
    return {cls.spec.type: node_definition(cls) for cls in node_classes()}


def _refuse(self: Any, **_: Any) -> tuple:
    raise RuntimeError(
        "ppokit nodes form a training loop that ComfyUI's executor cannot run (it runs a graph"
        " once, without loops): install the custom-node pack ppokit.comfyui (docs/studio.md),"
        " which hands the workflow to `ppokit studio` or `ppokit graph run`, or save the"
        " workflow and run `ppokit graph run workflow.json`"
    )


def comfy_class(cls: type[Node], run: Callable[..., Any] = _refuse) -> type:
    """A ComfyUI node class for `cls`: its definition, and `run` as the function ComfyUI calls
    (with the hidden inputs `prompt`, `extra_pnginfo` and `unique_id`). Loop inputs are lazy and
    never requested, so ComfyUI's executor sees no cycle."""
    definition = node_definition(cls)
    loops = {i.name for i in cls.spec.inputs if i.loop}

    def input_types(_cls: type) -> dict:
        sections: dict[str, Any] = {}
        for section, entries in definition["input"].items():
            sections[section] = {
                k: (v[0], {**v[1], "lazy": True}) if k in loops else tuple(v)
                for k, v in entries.items()
            }
        sections["hidden"] = {
            "prompt": "PROMPT",
            "extra_pnginfo": "EXTRA_PNGINFO",
            "unique_id": "UNIQUE_ID",
        }
        return sections

    def check_lazy_status(self: Any, **_: Any) -> list:
        return []  # the loop's value comes from the previous tick, inside ppokit

    return type(
        cls.spec.type,
        (),
        {
            "INPUT_TYPES": classmethod(input_types),
            "RETURN_TYPES": tuple(definition["output"]),
            "RETURN_NAMES": tuple(definition["output_name"]),
            "FUNCTION": "run",
            "CATEGORY": cls.spec.category,
            "DESCRIPTION": cls.spec.description,
            "OUTPUT_NODE": definition["output_node"],
            "run": run,
            "check_lazy_status": check_lazy_status,
        },
    )


def class_mappings(
    run: Callable[..., Any] = _refuse,
) -> tuple[dict[str, type], dict[str, str]]:
    classes = {cls.spec.type: comfy_class(cls, run) for cls in node_classes()}
    names = {name: display_name(name) for name in classes}
    return classes, names


# ----------------------------------------------------------------------------------------------
# Import
# ----------------------------------------------------------------------------------------------


def is_ui_format(data: Any) -> bool:
    return isinstance(data, dict) and isinstance(data.get("nodes"), list)


def is_api_format(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and bool(data)
        and all(isinstance(v, dict) and "class_type" in v for v in data.values())
    )


def from_comfyui(
    data: Any, source: str | None = None, env_map: dict[str, str] | None = None
) -> Graph:
    """A ComfyUI/DNNE workflow as a native Graph; `env_map` replaces env ids the workflow names
    (simulators ppokit does not ship, e.g. {"IsaacGymCartpole": "CartPole-v1"})."""
    where = source or "workflow"
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict):
        data = data["prompt"]  # the body of a /prompt request
    if is_ui_format(data):
        return map_envs(dnne.adapt(_from_ui(data, where), env_map), env_map)
    if is_api_format(data):
        return map_envs(dnne.adapt(_from_api(data, where), env_map), env_map)
    raise GraphError(
        f'{where}: not a ppokit graph ("format": "ppokit-graph") nor a ComfyUI workflow'
        " (UI format with 'nodes' and 'links', or API format with 'class_type' entries)"
    )


def map_envs(graph: Graph, env_map: dict[str, str] | None) -> Graph:
    """Env ids replaced per `env_map` (EnvNode's env_id, as written or by alias)."""
    if not env_map:
        return graph
    for nd in graph.nodes.values():
        if nd.type != "EnvNode":
            continue
        for key in ("env_id", *ENV_ID_ALIASES):
            if isinstance(nd.params.get(key), str) and nd.params[key] in env_map:
                nd.params[key] = env_map[nd.params[key]]
    return graph


def parse_env_map(items: list[str] | None) -> dict[str, str]:
    """["IsaacGymCartpole=CartPole-v1", ...] -> {"IsaacGymCartpole": "CartPole-v1"}."""
    out = {}
    for item in items or []:
        name, sep, env_id = item.partition("=")
        if not sep or not name.strip() or not env_id.strip():
            raise GraphError(
                f"--env-map {item!r}: expected NAME=ENV_ID, e.g. IsaacGymCartpole=CartPole-v1"
            )
        out[name.strip()] = env_id.strip()
    return out


def param_value(p: Param | None, value: Any) -> Any:
    """A widget value as the param's value: "" is the default, text is read as YAML/JSON."""
    if p is None or not isinstance(value, str):
        return value
    if value.strip() == "":
        return p.default
    if p.type is str or (p.choices is not None and value in p.choices):
        return value
    union = typing.get_origin(p.type) in (typing.Union, types.UnionType)
    inner = [a for a in typing.get_args(p.type) if a is not type(None)] if union else [p.type]
    if dict in inner:
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    for a in inner:
        if typing.get_origin(a) is list:  # "64,64" or "[64, 64]"
            try:
                return C.coerce(value, a, p.name)
            except ConfigError:
                return value
    return C.parse_cli_value(value)


def _params_from_widgets(
    cls: type[Node] | None, values: Any, node_id: str, names: list[str] | None = None
) -> dict[str, Any]:
    """Params from a node's widget values: by name where the file names them (a dict, or the
    widget names of the node's `inputs`), else by position in the definitions' order."""
    if values is None:
        return {}
    if isinstance(values, dict):
        if cls is None:
            return dict(values)
        return {k: param_value(cls.spec.param(k), v) for k, v in values.items()}
    values = list(values)
    named = _named_values(names, values) if names else None
    if cls is None:  # an unknown type (DNNE's: renamed later, else refused by validation)
        if named is not None or not values:
            return dict(named or {})
        return {"widgets_values": values}
    if named is not None:
        params = {}
        for name, value in named.items():
            p = cls.spec.param(name)
            value = param_value(p, value)
            if p is None or p.required or value != p.default:  # unknown names: validation says
                params[name] = value
        return params
    if values:
        note(
            f"node {node_id} ({cls.spec.type}): its widget values carry no names; read by"
            " position in ppokit's widget order (check the params: `ppokit graph export"
            " workflow.json -o graph.json` shows them)"
        )
    params = {}
    order = widget_params(cls)
    i = 0
    for p in order:
        if i >= len(values):
            break
        value = values[i]
        i += 1
        if p.name == "seed" and i < len(values) and values[i] in SEED_CONTROL:
            i += 1  # ComfyUI's "control after generate" widget
        value = param_value(p, value)
        if value is not REQUIRED and (value != p.default or p.required):
            params[p.name] = value
    return params


def note(message: str) -> None:
    """A warning that does not stop the import (one line on stderr)."""
    print(f"note: {message}", file=sys.stderr)


def _named_values(names: list[str], values: list) -> dict[str, Any] | None:
    """Widget names (in widget order) zipped with their values, skipping ComfyUI's "control
    after generate" value after a seed; None when the counts do not match."""
    out: dict[str, Any] = {}
    i = 0
    for name in names:
        if i >= len(values):
            return None
        out[name] = values[i]
        i += 1
        if name in ("seed", "noise_seed") and i < len(values) and values[i] in SEED_CONTROL:
            i += 1
    return out if i == len(values) else None


def _link_table(data: dict, where: str) -> dict[int, tuple[Any, Any]]:
    """link id -> (origin node id, target node id), from list or object links."""
    table = {}
    for link in data.get("links") or []:
        if isinstance(link, dict):
            table[link["id"]] = (link["origin_id"], link["target_id"])
        elif isinstance(link, list) and len(link) >= 5:
            table[link[0]] = (link[1], link[3])
        else:
            raise GraphError(f"{where}: malformed link {link!r}")
    return table


def _from_ui(data: dict, where: str) -> Graph:
    issues: list[GraphIssue] = []
    by_id = {}
    for n in data["nodes"]:
        if not isinstance(n, dict) or "id" not in n or "type" not in n:
            raise GraphError(f"{where}: every node needs an 'id' and a 'type'")
        by_id[n["id"]] = n
    links = _link_table(data, where)

    def output_name(origin: dict, link_id: int) -> str | None:
        for out in origin.get("outputs") or []:
            if link_id in (out.get("links") or []):
                return out.get("name")
        return None

    def source_of(link_id: int, seen: frozenset = frozenset()) -> str | None:
        """ "node.output" the link comes from, following reroutes."""
        if link_id not in links:
            return None
        origin_id, _ = links[link_id]
        origin = by_id.get(origin_id)
        if origin is None:
            return f"{origin_id}.?"
        if origin["type"] == REROUTE and origin_id not in seen:
            upstream = [
                i.get("link") for i in origin.get("inputs") or [] if i.get("link") is not None
            ]
            return source_of(upstream[0], seen | {origin_id}) if upstream else None
        name = output_name(origin, link_id)
        return f"{origin_id}.{name}" if name is not None else f"{origin_id}.?"

    nodes: dict[str, NodeDef] = {}
    for n in data["nodes"]:
        if n["type"] in NOTE_TYPES or n["type"] == REROUTE:
            continue
        node_id = str(n["id"])
        cls = node_class(n["type"])
        names = [
            i["widget"]["name"]
            for i in n.get("inputs") or []
            if isinstance(i.get("widget"), dict) and "name" in i["widget"]
        ]
        params = _params_from_widgets(cls, n.get("widgets_values"), node_id, names)
        inputs: dict[str, str] = {}
        for entry in n.get("inputs") or []:
            link_id = entry.get("link")
            if link_id is None:
                continue
            name = entry.get("name")
            widget = entry.get("widget")
            if widget is not None:
                issues.append(
                    GraphIssue(
                        node_id,
                        f"params.{widget.get('name', name)}",
                        "linked_param",
                        "a param fed by a link (e.g. a PrimitiveNode) is not supported; give it a value",
                        None,
                        n["type"],
                    )
                )
                continue
            src = source_of(link_id)
            if src is None:
                issues.append(
                    GraphIssue(
                        node_id,
                        f"inputs.{name}",
                        "dangling_link",
                        f"link {link_id} is not in 'links'",
                        None,
                        n["type"],
                    )
                )
                continue
            if name in inputs:
                issues.append(
                    GraphIssue(
                        node_id,
                        f"inputs.{name}",
                        "duplicate_link",
                        f"two links into input {name!r}; an input takes one link",
                        None,
                        n["type"],
                    )
                )
                continue
            inputs[name] = src
        meta = {k: n[k] for k in ("title", "pos") if k in n}
        nodes[node_id] = NodeDef(node_id, n["type"], params, inputs, meta)
    return Graph(nodes, graph_settings(data), where, issues)


def graph_settings(workflow: Any) -> dict[str, Any]:
    """The ppokit graph settings a UI workflow carries in `extra.ppokit` (seed, name, ...)."""
    extra = workflow.get("extra") if isinstance(workflow, dict) else None
    settings = extra.get("ppokit") if isinstance(extra, dict) else None
    return dict(settings) if isinstance(settings, dict) else {}


def _from_api(data: dict, where: str) -> Graph:
    nodes: dict[str, NodeDef] = {}
    for node_id, n in data.items():
        cls = node_class(n["class_type"])
        params: dict[str, Any] = {}
        inputs: dict[str, str] = {}
        for name, value in (n.get("inputs") or {}).items():
            if _is_api_link(value):
                src_id, slot = str(value[0]), value[1]
                src = data.get(src_id)
                src_cls = node_class(src["class_type"]) if src else None
                outputs = [o.name for o in src_cls.spec.outputs] if src_cls else []
                if src is not None:  # DNNE's types name their outputs in their own order
                    outputs = dnne.output_names(src["class_type"]) or outputs
                port = outputs[slot] if 0 <= slot < len(outputs) else f"output_{slot}"
                inputs[name] = f"{src_id}.{port}"
            else:
                p = cls.spec.param(name) if cls else None
                value = param_value(p, value)
                # A widget left at its default is a param not given (as in the UI format), so
                # "the one given wins" rules (minibatch_size / num_minibatches) see what was set.
                if p is None or p.required or value != p.default:
                    params[name] = value
        meta = (
            {"title": n["_meta"]["title"]}
            if isinstance(n.get("_meta"), dict) and "title" in n["_meta"]
            else {}
        )
        nodes[str(node_id)] = NodeDef(str(node_id), n["class_type"], params, inputs, meta)
    return Graph(nodes, {}, where, [])


def _is_api_link(value: Any) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = class_mappings()
