"""The studio's web server: ComfyUI's frontend (static files of the pinned
`comfyui-frontend-package`) and the part of ComfyUI's API it uses, answered by ppokit.

Request and event shapes follow ComfyUI's server.py and app/user_manager.py. Safe by default:
loopback unless `--listen`; a request whose Origin is not the Host it was sent to is refused
(a page on another site cannot queue runs or read files); request bodies are size-limited;
`/view` serves only images inside the runs folder and userdata stays inside the user folder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from ppokit.studio.jobs import JobQueue
from ppokit.studio.paths import inside

MAX_REQUEST_BYTES = 16 * 1024 * 1024  # workflows are kilobytes; settings and userdata small
IMAGE_TYPES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}
SETTINGS_FILE = "comfy.settings.json"
WEB = Path(__file__).resolve().parent / "web"  # our frontend extension (result lines on nodes)


def frontend_root() -> Path:
    """The static files of the installed comfyui-frontend-package."""
    from ppokit.extras import require

    package = require("comfyui_frontend_package", "studio", "ppokit studio")
    return Path(package.__file__).resolve().parent / "static"


def _object_info() -> dict:
    from ppokit.nodes import comfyui  # torch and the node registry: first use only

    return comfyui.object_info()


def version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


@web.middleware
async def same_origin_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Refuse requests a browser sent from a page of another origin (its Origin's host:port is
    not the Host it was sent to): browsers let any site POST to 127.0.0.1."""
    origin = request.headers.get("Origin")
    if origin is not None:
        host = request.headers.get("Host", "").lower()
        parsed = urlsplit(origin)
        if not parsed.netloc or parsed.netloc.lower() != host:
            return web.json_response(
                {"error": f"cross-origin request refused (Origin {origin}, Host {host})"},
                status=403,
            )
    return await handler(request)


@web.middleware
async def no_cache_scripts(request: web.Request, handler: Any) -> web.StreamResponse:
    response = await handler(request)
    if request.path.endswith((".js", ".css", ".html")) or request.path == "/":
        response.headers.setdefault("Cache-Control", "no-cache")
    return response


class Studio:
    def __init__(
        self,
        user_dir: Path,
        runs_root: Path,
        web_root: Path | None = None,
        env_map: dict[str, str] | None = None,
        curve_every: float = 5.0,
    ) -> None:
        self.user_dir, self.runs_root = user_dir.resolve(), runs_root.resolve()
        self.web_root = web_root or frontend_root()
        self.env_map = env_map or {}
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.jobs = JobQueue(self.runs_root, self.broadcast, curve_every)
        self._object_info: asyncio.Future | None = None
        self.app = web.Application(
            client_max_size=MAX_REQUEST_BYTES, middlewares=[same_origin_only, no_cache_scripts]
        )
        # Every API route with and without the /api prefix, as ComfyUI serves them (the
        # frontend opens its websocket at /ws).
        routes = self.routes()
        self.app.add_routes(routes)
        self.app.add_routes(
            [
                web.route(r.method, r.path[4:], r.handler)
                for r in routes
                if r.path.startswith("/api/")
            ]
        )
        self.app.router.add_static("/extensions/ppokit", WEB, follow_symlinks=False)
        self.app.router.add_static("/", self.web_root, follow_symlinks=False)
        self.app.on_shutdown.append(self.on_shutdown)

    # --- routes ---------------------------------------------------------------------------------
    def routes(self) -> list[web.RouteDef]:
        g, p, d = web.get, web.post, web.delete
        return [
            g("/", self.index),
            g("/api/ws", self.websocket),
            g("/api/object_info", self.object_info),
            g("/api/object_info/{node_class}", self.object_info_one),
            g("/api/prompt", self.get_prompt),
            p("/api/prompt", self.post_prompt),
            g("/api/queue", self.get_queue),
            p("/api/queue", self.post_queue),
            g("/api/history", self.get_history),
            g("/api/history/{prompt_id}", self.get_history_one),
            p("/api/history", self.post_history),
            p("/api/interrupt", self.interrupt),
            g("/api/jobs", self.get_jobs),
            p("/api/jobs/cancel", self.cancel_jobs),
            g("/api/jobs/{prompt_id}", self.get_job),
            p("/api/jobs/{prompt_id}/cancel", self.cancel_job),
            g("/api/view", self.view),
            g("/api/settings", self.get_settings),
            p("/api/settings", self.post_settings),
            g("/api/settings/{id}", self.get_setting),
            p("/api/settings/{id}", self.post_setting),
            g("/api/userdata", self.list_userdata),
            g("/api/v2/userdata", self.list_userdata_v2),
            g("/api/userdata/{file}", self.get_userdata),
            p("/api/userdata/{file}", self.post_userdata),
            d("/api/userdata/{file}", self.delete_userdata),
            p("/api/userdata/{file}/move/{dest}", self.move_userdata),
            g("/api/system_stats", self.system_stats),
            g("/api/users", self.users),
            g("/api/features", self.features),
            g("/api/extensions", self.extensions),
            g("/api/workflow_templates", self.workflow_templates),
            g("/api/workflow_templates/{module}/{name}", self.workflow_template),
            g("/api/i18n", lambda r: web.json_response({})),
            g("/api/global_subgraphs", lambda r: web.json_response({})),
            g("/api/experiment/models", lambda r: web.json_response([])),
            g("/api/embeddings", lambda r: web.json_response([])),
            g("/api/models", lambda r: web.json_response([])),
        ]

    async def index(self, request: web.Request) -> web.StreamResponse:
        # The node declarations import torch (seconds, holding the GIL): load them while the
        # browser loads the editor's scripts, not at start-up and not on its request for them.
        asyncio.ensure_future(self.node_definitions())
        return web.FileResponse(self.web_root / "index.html", headers={"Cache-Control": "no-cache"})

    # --- websocket ------------------------------------------------------------------------------
    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sid = request.query.get("clientId") or os.urandom(16).hex()
        self.sockets[sid] = ws
        try:
            await ws.send_json(
                {"type": "status", "data": {"status": self.jobs.queue_info(), "sid": sid}}
            )
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            if self.sockets.get(sid) is ws:
                del self.sockets[sid]
        return ws

    def broadcast(self, event: str, data: dict) -> None:
        message = {"type": event, "data": data}
        for ws in list(self.sockets.values()):
            if not ws.closed:
                asyncio.ensure_future(self._send(ws, message))

    @staticmethod
    async def _send(ws: web.WebSocketResponse, message: dict) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError):  # a closed tab
            await ws.send_json(message)

    # --- nodes and prompts ----------------------------------------------------------------------
    async def node_definitions(self) -> dict:
        """ppokit's node declarations as /object_info (computed once, off the event loop)."""
        if self._object_info is None:  # imported in the thread too: torch takes seconds
            self._object_info = asyncio.ensure_future(asyncio.to_thread(_object_info))
        return await self._object_info

    async def object_info(self, request: web.Request) -> web.Response:
        return web.json_response(await self.node_definitions())

    async def object_info_one(self, request: web.Request) -> web.Response:
        info = await self.node_definitions()
        name = request.match_info["node_class"]
        return web.json_response({name: info[name]} if name in info else {})

    async def get_prompt(self, request: web.Request) -> web.Response:
        return web.json_response(self.jobs.queue_info())

    async def post_prompt(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return self.refused("invalid_prompt", "the request body is not JSON")
        if not isinstance(body, dict):
            return self.refused("invalid_prompt", "the request body is not a JSON object")
        try:
            graph, issues = await asyncio.to_thread(self.check, body)
        except Exception as e:  # GraphError (not a workflow), a broken file: one line back
            return self.refused("invalid_prompt", str(e))
        from ppokit.studio import prompts

        if issues:
            return web.json_response(
                {
                    "error": prompts.prompt_error(issues),
                    "node_errors": prompts.node_errors(issues, graph),
                },
                status=400,
            )
        from ppokit.nodes.graph import to_native
        from ppokit.outputs import new_run_dir

        out = new_run_dir(self.runs_root, graph.name, graph.setting("seed"))
        job = self.jobs.put(
            body["prompt"],
            body.get("extra_data") or {},
            to_native(graph),
            out,
            bool(body.get("front")),
        )
        return web.json_response(
            {"prompt_id": job.prompt_id, "number": job.number, "node_errors": {}}
        )

    def check(self, body: dict) -> tuple[Any, list]:
        from ppokit.studio import prompts

        graph = prompts.graph_from_prompt(body, self.env_map)
        if not graph.settings.get("name"):
            graph.settings["name"] = "studio"
        return graph, prompts.check_prompt(graph)

    @staticmethod
    def refused(kind: str, message: str) -> web.Response:
        error = {"type": kind, "message": message, "details": "", "extra_info": {}}
        return web.json_response({"error": error, "node_errors": {}}, status=400)

    # --- queue, history, jobs -------------------------------------------------------------------
    async def get_queue(self, request: web.Request) -> web.Response:
        return web.json_response(self.jobs.queue())

    async def post_queue(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        if body.get("clear"):
            self.jobs.clear()
        if isinstance(body.get("delete"), list):
            self.jobs.delete([str(x) for x in body["delete"]])
        return web.Response(status=200)

    async def get_history(self, request: web.Request) -> web.Response:
        max_items = request.query.get("max_items")
        limit = int(max_items) if max_items and max_items.isdigit() else None
        return web.json_response(self.jobs.history_view(limit))

    async def get_history_one(self, request: web.Request) -> web.Response:
        return web.json_response(self.jobs.history_view(prompt_id=request.match_info["prompt_id"]))

    async def post_history(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        if body.get("clear"):
            self.jobs.history.clear()
        for prompt_id in body.get("delete") or []:
            self.jobs.history.pop(str(prompt_id), None)
        return web.Response(status=200)

    async def interrupt(self, request: web.Request) -> web.Response:
        body = await self.json_body(request)
        self.jobs.interrupt(body.get("prompt_id"))
        return web.Response(status=200)

    async def get_jobs(self, request: web.Request) -> web.Response:
        statuses = [s for s in request.query.get("status", "").split(",") if s]
        limit = int(request.query.get("limit", "200") or 200)
        offset = int(request.query.get("offset", "0") or 0)
        return web.json_response(self.jobs.jobs_view(statuses, limit, offset))

    async def get_job(self, request: web.Request) -> web.Response:
        job = self.jobs.find(request.match_info["prompt_id"])
        if job is None:
            return web.json_response({"error": "no such job"}, status=404)
        workflow = (job.extra_data.get("extra_pnginfo") or {}).get("workflow")
        return web.json_response({**job.job_entry(), "outputs": job.outputs, "workflow": workflow})

    async def cancel_job(self, request: web.Request) -> web.Response:
        self.cancel(request.match_info["prompt_id"])
        return web.json_response({})

    async def cancel_jobs(self, request: web.Request) -> web.Response:
        for prompt_id in (await self.json_body(request)).get("job_ids") or []:
            self.cancel(str(prompt_id))
        return web.json_response({})

    def cancel(self, prompt_id: str) -> None:
        if self.jobs.running is not None and self.jobs.running.prompt_id == prompt_id:
            self.jobs.interrupt(prompt_id)
        else:
            self.jobs.delete([prompt_id])

    @staticmethod
    async def json_body(request: web.Request) -> dict:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise web.HTTPBadRequest(text="the request body is not JSON") from None
        return body if isinstance(body, dict) else {}

    # --- files ----------------------------------------------------------------------------------
    async def view(self, request: web.Request) -> web.StreamResponse:
        """An image of a run (learning curves): only `type=output`, only inside the runs folder."""
        q = request.query
        if q.get("type", "output") != "output" or "filename" not in q:
            return web.Response(status=400, text="only type=output images are served")
        path = inside(self.runs_root, q.get("subfolder", ""), q["filename"])
        if path is None:
            return web.Response(status=403, text="outside the runs folder")
        if path.suffix.lower() not in IMAGE_TYPES or not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    def settings_path(self) -> Path:
        return self.user_dir / SETTINGS_FILE

    def read_settings(self) -> dict:
        try:
            return json.loads(self.settings_path().read_text())
        except (OSError, json.JSONDecodeError):
            return {}

    def write_settings(self, settings: dict) -> None:
        self.user_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.settings_path().with_suffix(".tmp")
        tmp.write_text(json.dumps(settings, indent=2))
        tmp.replace(self.settings_path())

    async def get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self.read_settings())

    async def post_settings(self, request: web.Request) -> web.Response:
        self.write_settings({**self.read_settings(), **(await self.json_body(request))})
        return web.Response(status=200)

    async def get_setting(self, request: web.Request) -> web.Response:
        return web.json_response(self.read_settings().get(request.match_info["id"]))

    async def post_setting(self, request: web.Request) -> web.Response:
        try:
            value = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return web.Response(status=400, text="the request body is not JSON")
        self.write_settings({**self.read_settings(), request.match_info["id"]: value})
        return web.Response(status=200)

    def user_path(self, rel: str) -> Path:
        path = inside(self.user_dir, rel)
        if path is None or path == self.user_dir:
            raise web.HTTPForbidden(text="outside the user folder")
        return path

    def file_info(self, path: Path) -> dict:
        st = path.stat()
        return {
            "path": path.relative_to(self.user_dir).as_posix(),
            "size": st.st_size,
            "modified": int(st.st_mtime * 1000),
            "created": int(st.st_ctime * 1000),
        }

    async def list_userdata(self, request: web.Request) -> web.Response:
        q = request.query
        if not q.get("dir"):
            return web.Response(status=400, text="Directory not provided")
        folder = self.user_path(q["dir"])
        if not folder.is_dir():
            return web.Response(status=404, text="Directory not found")
        files = sorted(
            p
            for p in (folder.rglob("*") if q.get("recurse") == "true" else folder.glob("*"))
            if p.is_file()
        )
        out: list[Any] = []
        for f in files:
            rel = f.relative_to(folder).as_posix()
            if q.get("full_info") == "true":
                out.append({**self.file_info(f), "path": rel})
            elif q.get("split") == "true":
                out.append([rel, *rel.split("/")])
            else:
                out.append(rel)
        return web.json_response(out)

    async def list_userdata_v2(self, request: web.Request) -> web.Response:
        rel = request.query.get("path", "")
        folder = self.user_path(rel) if rel else self.user_dir
        if not folder.exists():
            return web.json_response([]) if not rel else web.Response(status=404)
        if not folder.is_dir():
            return web.Response(status=400, text="Requested path is not a directory")
        out = []
        for p in sorted(folder.rglob("*"), key=lambda p: (p.is_file(), p.name.lower())):
            entry = {
                "name": p.name,
                "path": p.relative_to(self.user_dir).as_posix(),
                "type": "directory" if p.is_dir() else "file",
            }
            if p.is_file():
                entry |= {"size": p.stat().st_size, "modified": p.stat().st_mtime}
            out.append(entry)
        return web.json_response(out)

    async def get_userdata(self, request: web.Request) -> web.StreamResponse:
        path = self.user_path(request.match_info["file"])
        if not path.is_file():
            return web.Response(status=404)
        css = path.name == "user.css" and path.parent == self.user_dir
        headers = {
            "Content-Type": "text/css"
            if css
            else "application/octet-stream"
            if path.suffix != ".json"
            else "application/json",
            "X-Content-Type-Options": "nosniff",
            "Content-Disposition": "inline" if css else "attachment",
        }
        return web.FileResponse(path, headers=headers)

    async def post_userdata(self, request: web.Request) -> web.Response:
        path = self.user_path(request.match_info["file"])
        if request.query.get("overwrite", "true") == "false" and path.exists():
            return web.Response(status=409, text="File already exists")
        body = await request.read()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(body)
        tmp.replace(path)
        if request.query.get("full_info") == "true":
            return web.json_response(self.file_info(path))
        return web.json_response(path.relative_to(self.user_dir).as_posix())

    async def delete_userdata(self, request: web.Request) -> web.Response:
        path = self.user_path(request.match_info["file"])
        if not path.is_file():
            return web.Response(status=404)
        path.unlink()
        return web.Response(status=204)

    async def move_userdata(self, request: web.Request) -> web.Response:
        source = self.user_path(request.match_info["file"])
        dest = self.user_path(request.match_info["dest"])
        if not source.is_file():
            return web.Response(status=404)
        if request.query.get("overwrite", "true") == "false" and dest.exists():
            return web.Response(status=409, text="File already exists")
        dest.parent.mkdir(parents=True, exist_ok=True)
        source.replace(dest)
        if request.query.get("full_info") == "true":
            return web.json_response(self.file_info(dest))
        return web.json_response(dest.relative_to(self.user_dir).as_posix())

    # --- about the server -----------------------------------------------------------------------
    async def system_stats(self, request: web.Request) -> web.Response:
        pages = os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
        page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 0
        free = os.sysconf("SC_AVPHYS_PAGES") * page if hasattr(os, "sysconf") else 0
        return web.json_response(
            {
                "system": {
                    "os": os.name,
                    "ram_total": pages * page,
                    "ram_free": free,
                    "comfyui_version": f"ppokit {version('ppokit')}",
                    "required_frontend_version": version("comfyui-frontend-package"),
                    "comfyui_frontend_version": version("comfyui-frontend-package"),
                    "python_version": sys.version,
                    "pytorch_version": version("torch"),
                    "embedded_python": False,
                    "argv": sys.argv,
                },
                "devices": [
                    {
                        "name": f"cpu ({platform.machine()})",
                        "type": "cpu",
                        "index": 0,
                        "vram_total": 0,
                        "vram_free": 0,
                        "torch_vram_total": 0,
                        "torch_vram_free": 0,
                    }
                ],
            }
        )

    async def users(self, request: web.Request) -> web.Response:
        # No "users" key: a single-user server, the editor opens directly (no user picker).
        return web.json_response({"storage": "server", "migrated": True})

    async def features(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"supports_preview_metadata": False, "max_upload_size": MAX_REQUEST_BYTES}
        )

    async def extensions(self, request: web.Request) -> web.Response:
        return web.json_response([f"/extensions/ppokit/{p.name}" for p in sorted(WEB.glob("*.js"))])

    async def workflow_templates(self, request: web.Request) -> web.Response:
        from ppokit.studio import prompts

        return web.json_response({prompts.TEMPLATE_MODULE: prompts.template_names()})

    async def workflow_template(self, request: web.Request) -> web.Response:
        from ppokit.studio import prompts

        name = request.match_info["name"].removesuffix(".json")
        if request.match_info["module"] != prompts.TEMPLATE_MODULE:
            return web.Response(status=404)
        workflow = await asyncio.to_thread(prompts.template, name)
        if workflow is None:
            return web.Response(status=404)
        return web.json_response(workflow)

    async def on_shutdown(self, app: web.Application) -> None:
        self.jobs.shutdown()
        for ws in list(self.sockets.values()):
            await ws.close()


def serve(
    host: str,
    port: int,
    user_dir: Path,
    runs_root: Path,
    env_map: dict[str, str] | None = None,
    curve_every: float = 5.0,
) -> None:
    """Run the studio until Ctrl-C."""
    studio = Studio(user_dir, runs_root, env_map=env_map, curve_every=curve_every)
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else f"[{host}]" if ":" in host else host

    def printed(*_: Any) -> None:
        print(
            f"ppokit studio: http://{shown}:{port} (workflows in {user_dir}/workflows, runs in"
            f" {runs_root}; Ctrl-C stops)",
            flush=True,
        )

    web.run_app(studio.app, host=host, port=port, print=printed, access_log=None)
