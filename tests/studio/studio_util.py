"""Helpers of the studio tests: a studio server on a free port, and the API-format prompt the
ComfyUI frontend builds from a UI workflow (its graphToPrompt, for the API-level tests)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ppokit_testutil import cli_env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class StudioProcess:
    """`ppokit studio` as a subprocess (the real command), stopped on exit."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = tmp
        cmd = [sys.executable, "-m", "ppokit", "studio", "--port", str(self.port)]
        cmd += ["--user-dir", str(tmp / "user"), "--runs", str(tmp / "runs"), *args]
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            cwd=tmp,
            env=cli_env(tmp),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.startup_s = self.wait_up()

    def wait_up(self, timeout: float = 30) -> float:
        while time.perf_counter() - self.t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"studio exited: {self.proc.stdout.read()}")
            try:
                urllib.request.urlopen(self.url + "/api/users", timeout=1).read()
                return time.perf_counter() - self.t0
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("studio did not start")

    def stop(self) -> str:
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out


def request(url: str, data=None, method=None, headers=None) -> tuple[int, bytes]:
    body = None if data is None else data if isinstance(data, bytes) else json.dumps(data).encode()
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api_prompt(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt of a UI workflow: widget values by name, links as [node, slot]."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        info = object_info[node["type"]]
        order = info["input_order"]["required"] + info["input_order"].get("optional", [])
        sockets = {i["name"] for i in node["inputs"] if "widget" not in i}
        widgets = [n for n in order if n not in sockets]
        inputs = dict(zip(widgets, node["widgets_values"]))
        for i in node["inputs"]:
            if i.get("link") is not None:
                link = links[i["link"]]
                inputs[i["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {
            "class_type": node["type"],
            "inputs": inputs,
            "_meta": {"title": node.get("title", "")},
        }
    return prompt
