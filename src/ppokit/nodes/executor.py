"""`run_graph`: build the graph's program and execute it, attributing errors to nodes.

The program is compiled under a pseudo file name registered with `linecache`, so tracebacks show
its source; a failure is raised as GraphRunError naming the node whose statements raised, its
type and the tick (the original exception is chained).
"""

from __future__ import annotations

import linecache
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ppokit.nodes import runtime as rt
from ppokit.nodes.errors import GraphRunError
from ppokit.nodes.files import load_graph
from ppokit.nodes.graph import Graph
from ppokit.nodes.program import Program, build_program
from ppokit.outputs import new_run_dir
from ppokit.trainer import install_stop_handlers, restore_handlers


@dataclass
class RunResult:
    out_dir: Path
    results: dict[str, Any]
    program: Program


def load_program(program: Program) -> dict[str, Any]:
    """Execute the program's module body (definitions only) and return its namespace."""
    source = program.source
    linecache.cache[program.filename] = (
        len(source),
        None,
        source.splitlines(True),
        program.filename,
    )
    namespace: dict[str, Any] = {"__name__": "ppokit_graph_program"}
    exec(compile(source, program.filename, "exec"), namespace)
    return namespace


def run_program(
    program: Program,
    out_dir: str | Path | None = None,
    device: str | None = None,
    quiet: bool = False,
    overwrite: bool = False,
) -> RunResult:
    """Run the program into `out_dir`; `overwrite`: move a run already there aside."""
    graph = program.graph
    out = (
        Path(out_dir)
        if out_dir is not None
        else new_run_dir("runs", graph.name, program.analysis.settings["seed"])
    )
    namespace = load_program(program)
    rt.set_overwrite(overwrite)
    # Ctrl-C / SIGTERM: trainers end after their update and write their checkpoint (main thread)
    handlers = install_stop_handlers(rt.request_stop)
    try:
        results = namespace["run"](out_dir=out, device=device, quiet=quiet)
    except Exception as e:
        raise attribute(program, e) from e
    finally:
        restore_handlers(handlers)
    return RunResult(out, results, program)


def attribute(program: Program, error: BaseException) -> BaseException:
    """The GraphRunError for `error` raised by the program's statements (innermost frame in the
    program decides the node); `error` itself when it did not come from them."""
    tb = error.__traceback__
    span, tick = None, None
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_filename == program.filename:
            found = program.locate(tb.tb_lineno)
            if found is not None:
                span = found
                tick = frame.f_locals.get("tick")
        tb = tb.tb_next
    if span is None:
        return error
    node = program.analysis.nodes[span.node]
    when = {
        "setup": "during setup",
        "tick": f"at tick {tick}",
        "final": "after the last tick",
        "teardown": "after the last tick",
    }[span.phase]
    return GraphRunError(node.id, node.type, when, error)


def run_graph(
    graph: Graph | str | Path | dict,
    out_dir: str | Path | None = None,
    device: str | None = None,
    quiet: bool = False,
) -> RunResult:
    """Validate and run a graph (a Graph, a file path, or parsed JSON). Raises
    GraphValidationError listing every problem, or GraphRunError naming the failing node."""
    if not isinstance(graph, Graph):
        graph = load_graph(graph)
    return run_program(build_program(graph), out_dir, device, quiet)
