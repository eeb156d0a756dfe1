"""A native graph as a ComfyUI workflow in the UI format (`nodes` + `links`), the file the
editor opens: the studio's templates, and `ppokit graph export g.json -o g.comfyui.json`.

Widget values are written in the order of the definitions (`comfyui.widget_params`) and also by
name, as the frontend does (`inputs[].widget.name`), so the import reads them by name. The
graph's settings (seed, name, ...) travel in the workflow's `extra.ppokit`, which the editor
keeps when it saves, and node ids in each node's title.
"""

from __future__ import annotations

from typing import Any

from ppokit.nodes.base import node_class
from ppokit.nodes.comfyui import _port_type, _text, widget_params
from ppokit.nodes.declarations import REQUIRED, Param
from ppokit.nodes.graph import Graph, parse_link

COLUMN = 380  # canvas units between columns of nodes
ROW_GAP = 40
SLOT = 24  # height of a slot or widget row


def widget_value(p: Param, value: Any) -> Any:
    """A param value as its widget shows it: lists as "64,64", None as "" (the default)."""
    if value is None or value is REQUIRED:
        return ""
    if isinstance(value, (list, dict)):
        return _text(value)
    if p.default is None or p.nullable:  # optional text widgets
        return value if p.choices is not None else _text(value)
    return value


def _depths(graph: Graph) -> dict[str, int]:
    """Column of each node: the longest chain of links from a source (loop links ignored)."""
    depth: dict[str, int] = {}

    def visit(node_id: str, seen: frozenset) -> int:
        if node_id in depth:
            return depth[node_id]
        nd = graph.nodes[node_id]
        cls = node_class(nd.type)
        best = 0
        for name, link in nd.inputs.items():
            spec = cls.spec.input(name) if cls is not None else None
            parsed = parse_link(link)
            if parsed is None or parsed[0] not in graph.nodes or parsed[0] in seen:
                continue
            if spec is not None and spec.loop:
                continue
            best = max(best, visit(parsed[0], seen | {node_id}) + 1)
        depth[node_id] = best
        return best

    for node_id in graph.nodes:
        visit(node_id, frozenset())
    return depth


def to_ui_workflow(graph: Graph) -> dict:
    """The graph as a ComfyUI UI-format workflow (ids 1..n in the graph's order)."""
    ids = {node_id: i + 1 for i, node_id in enumerate(graph.nodes)}
    depth = _depths(graph)
    column_y: dict[int, float] = {}
    links: list[list] = []
    out_links: dict[tuple[str, str], list[int]] = {}
    nodes: list[dict] = []
    for node_id, nd in graph.nodes.items():
        cls = node_class(nd.type)
        assert cls is not None, f"unknown node type {nd.type!r}"
        spec = cls.spec
        params = widget_params(cls)
        inputs: list[dict] = []
        for slot, port in enumerate(spec.inputs):
            link_id = None
            parsed = parse_link(nd.inputs.get(port.name))
            if parsed is not None and parsed[0] in ids:
                src, out_name = parsed
                src_cls = node_class(graph.nodes[src].type)
                names = [o.name for o in src_cls.spec.outputs]
                origin_slot = names.index(out_name) if out_name in names else 0
                link_id = len(links) + 1
                port_type = src_cls.spec.outputs[origin_slot].type
                links.append([link_id, ids[src], origin_slot, ids[node_id], slot, port_type])
                out_links.setdefault((src, out_name), []).append(link_id)
            inputs.append({"name": port.name, "type": _port_type(port.types), "link": link_id})
        for p in params:  # widget inputs: the frontend's own way of naming widget values
            inputs.append({"name": p.name, "type": "*", "widget": {"name": p.name}, "link": None})
        values = []
        for p in params:
            given = nd.params.get(
                p.name, next((nd.params[a] for a in p.aliases if a in nd.params), p.default)
            )
            values.append(widget_value(p, given))
        col = depth[node_id]
        height = SLOT * (max(len(spec.inputs), len(spec.outputs)) + len(params)) + 40
        y = column_y.get(col, 40.0)
        column_y[col] = y + height + ROW_GAP
        nodes.append(
            {
                "id": ids[node_id],
                "type": nd.type,
                "title": node_id,
                "pos": [40 + col * COLUMN, y],
                "size": [320, height],
                "flags": {},
                "order": ids[node_id] - 1,
                "mode": 0,
                "inputs": inputs,
                "outputs": [],  # filled below, when every link is known
                "properties": {"Node name for S&R": nd.type},
                "widgets_values": values,
            }
        )
    for node, (node_id, nd) in zip(nodes, graph.nodes.items()):
        cls = node_class(nd.type)
        node["outputs"] = [
            {"name": o.name, "type": o.type, "links": out_links.get((node_id, o.name), [])}
            for o in cls.spec.outputs
        ]
    return {
        "last_node_id": len(nodes),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ppokit": dict(graph.settings)},
        "version": 0.4,
    }
