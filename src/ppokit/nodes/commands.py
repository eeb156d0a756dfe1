"""The `ppokit graph` subcommands (the parser is in ppokit.cli)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ppokit.config import parse_cli_value
from ppokit.nodes import comfyui, reference
from ppokit.nodes import runtime as rt
from ppokit.nodes.errors import GraphError, GraphValidationError
from ppokit.nodes.executor import run_program
from ppokit.nodes.export import write_script
from ppokit.nodes.files import load_graph, save_graph
from ppokit.nodes.graph import Graph
from ppokit.nodes.program import analyse, build_program
from ppokit.nodes.runtime import format_results


def apply_sets(graph: Graph, sets: list[str]) -> None:
    """`--set node.param=value` on the graph as written (validation checks the result)."""
    for item in sets:
        key, sep, text = item.partition("=")
        node, dot, param = key.strip().rpartition(".")
        if not sep or not dot or not node or not param:
            raise GraphError(
                f"--set {item!r}: expected NODE.PARAM=VALUE, e.g. trainer.total_steps=2048"
            )
        if node not in graph.nodes:
            from ppokit.nodes.errors import closest

            hint = closest(node, list(graph.nodes))
            extra = f"; did you mean {hint!r}?" if hint else ""
            raise GraphError(f"--set {item!r}: no node {node!r} in the graph{extra}")
        value: Any = parse_cli_value(text)
        graph.nodes[node].params[param] = value


def read(ns: argparse.Namespace) -> Graph:
    return load_graph(ns.graph, env_map=dict(getattr(ns, "env_map", None) or []))


def cmd_validate(ns: argparse.Namespace) -> int:
    graph = read(ns)
    analysis = analyse(graph)
    if analysis.issues:
        raise GraphValidationError(analysis.issues, ns.graph)
    order = analysis.resolved.order
    print(f"{ns.graph}: valid ({len(order)} nodes; execution order: {', '.join(order)})")
    return 0


def cmd_run(ns: argparse.Namespace) -> int:
    graph = read(ns)
    apply_sets(graph, ns.set)
    if ns.seed is not None:
        graph.settings["seed"] = ns.seed
    program = build_program(graph)
    result = run_program(program, ns.out, ns.device, ns.quiet, ns.overwrite)
    for line in format_results(result.results):
        print(line)
    print(f"output directory: {result.out_dir}")
    return 130 if rt.interrupted() else 0  # as `ppokit train` after Ctrl-C


def cmd_export(ns: argparse.Namespace) -> int:
    graph = read(ns)
    out = Path(ns.out)
    if out.name.endswith(".comfyui.json"):  # a workflow the ComfyUI editor (ppokit studio) opens
        from ppokit.nodes.comfyui_export import to_ui_workflow
        from ppokit.outputs import output_file, write_text

        write_text(
            output_file(out, "workflow"), json.dumps(to_ui_workflow(graph), indent=1), "workflow"
        )
        print(f"ComfyUI workflow written to {out} ({len(graph.nodes)} nodes)")
        return 0
    if out.suffix == ".json":
        save_graph(graph, out)
        print(f"graph written to {out} ({len(graph.nodes)} nodes)")
        return 0
    if out.suffix != ".py":
        raise GraphError(f"--out {ns.out!r}: give a .py file (script) or a .json file (graph)")
    path = write_script(graph, out)
    print(f"script written to {path}; run it with: python {path}")
    return 0


def cmd_nodes(ns: argparse.Namespace) -> int:
    if ns.comfyui:
        info = comfyui.object_info()
        if ns.name:
            info = {k: v for k, v in info.items() if k == ns.name} or _unknown(ns.name)
        print(json.dumps(info, indent=2))
    elif ns.json:
        data = reference.as_json()
        if ns.name:
            data = {k: v for k, v in data.items() if k == ns.name} or _unknown(ns.name)
        print(json.dumps(data, indent=2))
    elif ns.markdown:
        print(reference.markdown(), end="")
    elif ns.name:
        print(reference.describe(ns.name), end="")
    else:
        print(reference.listing(), end="")
    return 0


def _unknown(name: str) -> dict:
    reference.describe(name)  # raises with a did-you-mean
    return {}


COMMANDS = {"validate": cmd_validate, "run": cmd_run, "export": cmd_export, "nodes": cmd_nodes}
