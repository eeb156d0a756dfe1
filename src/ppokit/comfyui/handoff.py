"""What a ppokit node does when ComfyUI executes it: hand the workflow to ppokit, once per
prompt (see ppokit.comfyui)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

OUTPUT_NODES = {"EvaluateNode", "SaveCheckpointNode", "ExportPolicyNode"}
_handled: dict[str, list[str]] = {}  # prompt digest -> result lines (one hand-over per prompt)


def run_node(
    self: Any,
    prompt: dict | None = None,
    extra_pnginfo: Any = None,
    unique_id: Any = None,
    **_: Any,
) -> Any:
    """ComfyUI's FUNCTION of every ppokit node class."""
    outputs = getattr(self, "RETURN_TYPES", ())
    if type(self).__name__ not in OUTPUT_NODES:
        return tuple(None for _ in outputs)  # placeholders: ppokit runs the loop
    if not isinstance(prompt, dict):
        raise RuntimeError("ComfyUI passed no prompt to the node; is this ComfyUI recent enough?")
    lines = hand_over(prompt, extra_pnginfo)
    return {"ui": {"text": lines}, "result": tuple(None for _ in outputs)}


def digest(prompt: dict) -> str:
    return hashlib.sha256(json.dumps(prompt, sort_keys=True, default=str).encode()).hexdigest()


def hand_over(prompt: dict, extra_pnginfo: Any = None) -> list[str]:
    key = digest(prompt)
    if key not in _handled:
        studio = os.environ.get("PPOKIT_STUDIO_URL")
        _handled[key] = (
            to_studio(studio, prompt, extra_pnginfo) if studio else to_subprocess(prompt)
        )
    return _handled[key]


def to_studio(url: str, prompt: dict, extra_pnginfo: Any) -> list[str]:
    """Queue the prompt in a running `ppokit studio` (its validation errors come back here)."""
    body = {"prompt": prompt, "extra_data": {"extra_pnginfo": extra_pnginfo or {}}}
    req = urllib.request.Request(
        url.rstrip("/") + "/api/prompt",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            reply = json.loads(r.read())
    except urllib.error.HTTPError as e:
        raise RuntimeError(
            f"ppokit studio at {url} refused the workflow: {e.read().decode()}"
        ) from None
    except OSError as e:
        raise RuntimeError(
            f"no ppokit studio at {url} ({e}); start it or unset PPOKIT_STUDIO_URL"
        ) from None
    return [f"queued in ppokit studio {url}: prompt {reply['prompt_id']}"]


def to_subprocess(prompt: dict) -> list[str]:
    """`ppokit graph run` on the prompt (API format) in a subprocess; its result lines."""
    runs = Path(os.environ.get("PPOKIT_RUNS", "runs/comfyui"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "workflow.json"
        path.write_text(json.dumps(prompt))
        out = runs / f"workflow_{digest(prompt)[:8]}"
        cmd = [sys.executable, "-m", "ppokit", "graph", "run", str(path), "--out", str(out)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(
            f"ppokit graph run failed:\n{proc.stderr.strip() or proc.stdout[-2000:]}"
        )
    return [line for line in proc.stdout.splitlines() if not line.startswith("[")][-8:]
