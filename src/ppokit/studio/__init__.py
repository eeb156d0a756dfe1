"""`ppokit studio`: the ComfyUI web editor (the `comfyui-frontend-package` wheel) served by a small
aiohttp backend that speaks the part of ComfyUI's API the editor uses, backed by ppokit.

Modules, one concept each: `server` (the app: routes, origin and size checks, static files),
`jobs` (the queue, history and the worker process of the running workflow), `worker` (the
process that runs a workflow with ppokit's executor and reports progress), `prompts` (a queued
prompt as a ppokit graph; validation problems as ComfyUI `node_errors`; templates), `paths`
(file names from requests, kept inside their folder). Nothing here imports torch at start-up:
the node declarations are loaded on first use, the graphs run in the worker.
"""
