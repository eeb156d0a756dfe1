"""`export_script`: the graph's program as a standalone Python script.

It is the very source `ppokit graph run` executes, so running the script with the same seed gives
the same result (same parameters, same evaluation), and it reads as a plain ppokit training loop
that can be edited by hand.
"""

from __future__ import annotations

from pathlib import Path

from ppokit.nodes.files import load_graph
from ppokit.nodes.graph import Graph
from ppokit.nodes.program import build_program
from ppokit.outputs import output_file, write_text


def export_script(graph: Graph | str | Path | dict) -> str:
    """The script's source (raises GraphValidationError when the graph is invalid)."""
    if not isinstance(graph, Graph):
        graph = load_graph(graph)
    return build_program(graph).source


def write_script(graph: Graph | str | Path | dict, path: str | Path) -> Path:
    source = export_script(graph)
    p = output_file(path, "script")
    write_text(p, source, "script")
    return p
