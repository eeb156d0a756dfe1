"""ppokit's nodes as a custom-node pack for your own ComfyUI, whose Run trains for real.

Install into ComfyUI (ppokit installed in ComfyUI's Python):

    # ComfyUI/custom_nodes/ppokit/__init__.py
    from ppokit.comfyui import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

ComfyUI's executor runs a graph once, without loops, so these nodes do not train inside it:
when ComfyUI executes the workflow's first output node (EvaluateNode, SaveCheckpointNode,
ExportPolicyNode), the whole workflow is handed over, once per queued prompt:

- to a running `ppokit studio` when PPOKIT_STUDIO_URL is set (e.g. http://127.0.0.1:8189): it is
  queued there (POST /api/prompt) and the node shows the prompt id; watch it in the studio;
- else to `ppokit graph run` in a subprocess (the Python running ComfyUI), into
  PPOKIT_RUNS (default runs/comfyui); the node shows the run's result lines when it ends.

The other nodes return placeholders; their loop inputs are lazy, so ComfyUI sees no cycle.
"""

from __future__ import annotations

from ppokit.comfyui.handoff import run_node
from ppokit.nodes.comfyui import class_mappings

NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = class_mappings(run_node)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
