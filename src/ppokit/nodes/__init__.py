"""Node graphs: ppokit's training loop composed from nodes, as JSON graphs.

    from ppokit.nodes import load_graph, validate_graph, run_graph, export_script
    result = run_graph("examples/graphs/cartpole_ppo.json")

Modules, one concept each: `declarations` (ports, params, types), `base` (node class, registry),
`graph` (JSON format), `validate` (static checks), `program` (inference and code emission),
`executor` (running), `export` (scripts), `runtime` (helpers programs call), `comfyui`
(ComfyUI/DNNE definitions and workflow import), `reference` (docs and listings); node types in
`env_nodes`, `flow_nodes`, `ppo_nodes`, `output_nodes`.
"""

from ppokit.nodes import env_nodes, flow_nodes, output_nodes, ppo_nodes  # noqa: F401 (registers)
from ppokit.nodes.base import Node, node_class, node_classes
from ppokit.nodes.errors import GraphError, GraphIssue, GraphRunError, GraphValidationError
from ppokit.nodes.executor import RunResult, run_graph
from ppokit.nodes.export import export_script, write_script
from ppokit.nodes.files import load_graph, save_graph
from ppokit.nodes.graph import Graph, NodeDef, dumps
from ppokit.nodes.program import build_program, validate_graph

__all__ = [
    "Graph",
    "GraphError",
    "GraphIssue",
    "GraphRunError",
    "GraphValidationError",
    "Node",
    "NodeDef",
    "RunResult",
    "build_program",
    "dumps",
    "export_script",
    "load_graph",
    "node_class",
    "node_classes",
    "run_graph",
    "save_graph",
    "validate_graph",
    "write_script",
]
