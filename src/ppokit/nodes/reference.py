"""The node reference, generated from the declarations: docs/nodes.md (`markdown`), the listing
of `ppokit graph nodes` (`listing`, `describe`) and the declarations as JSON (`as_json`)."""

from __future__ import annotations

import re
from typing import Any

from ppokit.nodes.base import Node, node_class, node_classes
from ppokit.nodes.declarations import PORT_TYPES, REQUIRED, Param
from ppokit.nodes.errors import GraphError, closest


def _default(p: Param) -> str:
    if p.default is REQUIRED:
        return "required"
    if p.default is None:
        return "—"
    if isinstance(p.default, str):
        return f'"{p.default}"'
    if isinstance(p.default, bool):
        return str(p.default).lower()
    return str(p.default)


def _constraint(p: Param) -> str:
    if p.choices is not None:
        return " \\| ".join(f'"{c}"' for c in p.choices)
    return p.range_text()


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    lines = [
        "# Node reference",
        "",
        "Generated from the node declarations (`ppokit graph nodes --markdown`); do not edit by",
        "hand. docs/graphs.md explains graphs, execution and the tools.",
        "",
        "## Port types",
        "",
        "| type | carries |",
        "| --- | --- |",
        *(f"| `{name}` | {_cell(text)} |" for name, text in PORT_TYPES.items()),
        "",
    ]
    categories: dict[str, list[type[Node]]] = {}
    for cls in node_classes():
        categories.setdefault(cls.spec.category, []).append(cls)
    for category, classes in categories.items():
        lines += [f"## {category}", ""]
        for cls in classes:
            lines += _node_markdown(cls)
    return "\n".join(lines).rstrip() + "\n"


def _node_markdown(cls: type[Node]) -> list[str]:
    s = cls.spec
    lines = [f"### {s.type}", "", s.description, ""]
    if s.aliases:
        lines += [f"Also accepted as: {', '.join(f'`{a}`' for a in s.aliases)}.", ""]
    if s.inputs:
        lines += ["| input | type | |", "| --- | --- | --- |"]
        for i in s.inputs:
            notes = []
            if i.optional:
                notes.append("optional")
            if i.loop:
                notes.append("loop: previous tick's value")
            note = f" ({', '.join(notes)})" if notes else ""
            lines.append(f"| `{i.name}` | {' or '.join(i.types)} | {_cell(i.help)}{note} |")
        lines.append("")
    if s.outputs:
        lines += ["| output | type | |", "| --- | --- | --- |"]
        lines += [f"| `{o.name}` | {o.type} | {_cell(o.help)} |" for o in s.outputs]
        lines.append("")
    if s.params:
        lines += [
            "| param | type | default | allowed | |",
            "| --- | --- | --- | --- | --- |",
        ]
        for p in s.params:
            extra = []
            if p.aliases:
                extra.append(f"aliases: {', '.join(f'`{a}`' for a in p.aliases)}")
            if p.config:
                extra.append(f"sets `{p.config}`")
            note = f" ({'; '.join(extra)})" if extra else ""
            lines.append(
                f"| `{p.name}` | {_cell(p.type_name())} | {_cell(_default(p))} |"
                f" {_constraint(p)} | {_cell(p.help)}{note} |"
            )
        lines.append("")
    return lines


def listing() -> str:
    """One line per node type: name, category, description's first sentence."""
    classes = node_classes()
    width = max(len(c.spec.type) for c in classes)
    out = []
    for cls in classes:
        first = re.split(r"\.\s+(?=[A-Z])", cls.spec.description)[0].rstrip(".")
        out.append(f"{cls.spec.type:<{width}}  {cls.spec.category:<10}  {first}")
    out.append("")
    out.append("`ppokit graph nodes NAME` shows a node's ports and params.")
    return "\n".join(out) + "\n"


def describe(type_name: str) -> str:
    """A node type's ports and params as text."""
    cls = node_class(type_name)
    if cls is None:
        hint = closest(type_name, [c.spec.type for c in node_classes()])
        extra = f"; did you mean {hint!r}?" if hint else ""
        raise GraphError(f"unknown node type {type_name!r}{extra}")
    s = cls.spec
    out = [f"{s.type} ({s.category})", "", s.description, ""]
    if s.aliases:
        out += [f"aliases: {', '.join(s.aliases)}", ""]
    if s.inputs:
        out.append("inputs:")
        for i in s.inputs:
            flags = (" [optional]" if i.optional else "") + (" [loop]" if i.loop else "")
            out.append(f"  {i.name}: {' or '.join(i.types)}{flags} - {i.help}")
    if s.outputs:
        out.append("outputs:")
        out += [f"  {o.name}: {o.type} - {o.help}" for o in s.outputs]
    if s.params:
        out.append("params:")
        for p in s.params:
            allowed = _constraint(p).replace("\\|", "|")
            allowed = f", {allowed}" if allowed else ""
            aliases = f" (aliases: {', '.join(p.aliases)})" if p.aliases else ""
            out.append(f"  {p.name}: {p.type_name()} = {_default(p)}{allowed}{aliases} - {p.help}")
    return "\n".join(out) + "\n"


def as_json() -> dict[str, Any]:
    """The declarations as plain data."""
    out = {}
    for cls in node_classes():
        s = cls.spec
        out[s.type] = {
            "category": s.category,
            "description": s.description,
            "aliases": list(s.aliases),
            "inputs": [
                {
                    "name": i.name,
                    "types": list(i.types),
                    "optional": i.optional,
                    "loop": i.loop,
                    "help": i.help,
                }
                for i in s.inputs
            ],
            "outputs": [{"name": o.name, "type": o.type, "help": o.help} for o in s.outputs],
            "params": [
                {
                    "name": p.name,
                    "type": p.type_name(),
                    "default": None if p.default is REQUIRED else p.default,
                    "required": p.required,
                    "choices": list(p.choices) if p.choices is not None else None,
                    "range": p.range_text() or None,
                    "aliases": list(p.aliases),
                    "config": p.config,
                    "help": p.help,
                }
                for p in s.params
            ],
        }
    return out
