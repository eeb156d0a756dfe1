"""Reading and writing graph files: native ppokit graphs and ComfyUI/DNNE workflows (converted
by comfyui.py), so that graph.py (the model) and comfyui.py (the conversion) need not import
each other."""

from __future__ import annotations

from pathlib import Path

from ppokit.nodes import comfyui
from ppokit.nodes.graph import Graph, dumps, from_native, is_native, read_json


def load_graph(
    source: str | Path | dict, name: str | None = None, env_map: dict[str, str] | None = None
) -> Graph:
    """Read a graph: a path, or already parsed JSON. Native graphs and ComfyUI/DNNE workflows
    (UI format and API-prompt format) are accepted; the latter are converted by port name.
    `env_map` replaces the env ids EnvNodes name ({"IsaacGymCartpole": "CartPole-v1"})."""
    if isinstance(source, (str, Path)):
        data, where = read_json(source), str(source)
    else:
        data, where = source, name
    if is_native(data):
        return comfyui.map_envs(from_native(data, where), env_map)
    return comfyui.from_comfyui(data, where, env_map)


def save_graph(graph: Graph, path: str | Path) -> None:
    from ppokit.outputs import output_file, write_text

    p = output_file(path, "graph")
    write_text(p, dumps(graph), "graph")
