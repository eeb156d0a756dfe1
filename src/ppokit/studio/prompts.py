"""A prompt queued by the editor as a ppokit graph, its problems as ComfyUI `node_errors`, and
the example graphs as the editor's templates.

The editor posts `{"prompt": {id: {"class_type", "inputs"}}, "extra_data": {"extra_pnginfo":
{"workflow": <the UI workflow>}}}`: the API-format prompt names every widget value, and the UI
workflow carries the graph's settings (`extra.ppokit`: seed, name, ...). Only node types
declared by ppokit can be in a graph, so a prompt can never name a Python callable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TEMPLATE_MODULE = "ppokit"


def examples_dir() -> Path | None:
    """examples/graphs of the source checkout ppokit runs from (None in a wheel install)."""
    import ppokit

    folder = Path(ppokit.__file__).resolve().parents[2] / "examples" / "graphs"
    return folder if folder.is_dir() else None


def graph_from_prompt(body: dict, env_map: dict[str, str] | None = None) -> Any:
    """The ppokit Graph of a POST /prompt body (raises GraphError when it is not a workflow)."""
    from ppokit.nodes.comfyui import from_comfyui, graph_settings
    from ppokit.nodes.errors import GraphError

    prompt = body.get("prompt")
    if not isinstance(prompt, dict) or not prompt:
        raise GraphError("the request has no prompt")
    graph = from_comfyui(prompt, "prompt", env_map=env_map)
    workflow = ((body.get("extra_data") or {}).get("extra_pnginfo") or {}).get("workflow")
    graph.settings.update(graph_settings(workflow))
    return graph


def check_prompt(graph: Any) -> list:
    """Every problem of the graph (ppokit's validation, which the run would raise)."""
    from ppokit.nodes.program import analyse

    return analyse(graph).issues


def node_errors(issues: list, graph: Any) -> dict[str, dict]:
    """ComfyUI's `node_errors`: {node id: {"errors": [...], "dependent_outputs": [],
    "class_type"}}, so the editor outlines each bad node and shows our message on it."""
    out: dict[str, dict] = {}
    for issue in issues:
        if issue.node is None or issue.node not in graph.nodes:
            continue
        entry = out.setdefault(
            issue.node,
            {"errors": [], "dependent_outputs": [], "class_type": graph.nodes[issue.node].type},
        )
        field = issue.field or ""
        name = field.split(".", 1)[1] if "." in field else field
        message = issue.message + (
            f" (did you mean {issue.suggestion!r}?)" if issue.suggestion else ""
        )
        # ComfyUI's type for a node's own check, whose details the editor shows verbatim;
        # ppokit's code (docs/graphs.md) rides along.
        extra: dict[str, Any] = {"ppokit_code": issue.code}
        if name:
            extra["input_name"] = name
        entry["errors"].append(
            {
                "type": "custom_validation_failed",
                "message": message,
                "details": f"{field}: {message}" if field else message,
                "extra_info": extra,
            }
        )
    return out


def prompt_error(issues: list, where: str = "prompt") -> dict:
    """The top-level `error` of a refused prompt (problems of no node are listed in details)."""
    general = [str(i) for i in issues if i.node is None]
    return {
        "type": "prompt_outputs_failed_validation",
        "message": f"{where}: {len(issues)} problem{'s' if len(issues) != 1 else ''} (ppokit graph validate)",
        "details": "; ".join(general),
        "extra_info": {},
    }


def template_names() -> list[str]:
    folder = examples_dir()
    return sorted(p.stem for p in folder.glob("*.json")) if folder else []


def template(name: str) -> dict | None:
    """The example graph `name` as a ComfyUI UI-format workflow, or None."""
    folder = examples_dir()
    if folder is None or name not in template_names():
        return None
    from ppokit.nodes import load_graph
    from ppokit.nodes.comfyui_export import to_ui_workflow

    return to_ui_workflow(load_graph(folder / f"{name}.json"))
