"""The studio's queue: prompts waiting, the one running in its worker process, and the history,
in the shapes ComfyUI's /queue, /history and /jobs answer; worker events become ComfyUI
websocket events (`execution_start`, `executing`, `progress`, `executed`, `execution_success`,
`execution_error`, `execution_interrupted`, `status`).

One workflow runs at a time (as in ComfyUI), in a process of its own started with `spawn`, so the
server stays responsive, torch stays out of the server, and an interrupt is a signal.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import queue as stdqueue
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ppokit.studio.curves import Curve, draw

Broadcast = Callable[[str, dict], None]


@dataclass
class Job:
    prompt_id: str
    number: float
    prompt: dict
    extra_data: dict
    graph: dict  # the native graph the worker runs
    out: str
    status: str = "pending"  # pending | in_progress | completed | failed | cancelled
    outputs: dict[str, dict] = field(default_factory=dict)
    messages: list = field(default_factory=list)
    created: float = field(default_factory=time.time)
    started: float | None = None
    ended: float | None = None
    error: dict | None = None
    process: Any = None
    curves: dict[str, Curve] = field(default_factory=dict)  # trainer node -> its curve
    summarized: set[str] = field(default_factory=set)  # trainers whose final summary arrived

    def item(self) -> list:
        """ComfyUI's queue item: [number, prompt_id, prompt, extra_data, outputs_to_execute]."""
        return [self.number, self.prompt_id, self.prompt, self.extra_data, list(self.prompt)]

    def history_entry(self) -> dict:
        done = self.status in ("completed", "failed", "cancelled")
        return {
            "prompt": self.item(),
            "outputs": self.outputs,
            "status": {
                "status_str": "success" if self.status == "completed" else "error",
                "completed": self.status == "completed",
                "messages": self.messages,
            },
            "meta": {node: {"node_id": node, "display_node": node} for node in self.outputs},
            "ppokit": {"run_dir": self.out, "finished": done},
        }

    def job_entry(self) -> dict:
        """An entry of the newer /jobs API."""
        ms = lambda t: None if t is None else int(t * 1000)  # noqa: E731
        entry = {
            "id": self.prompt_id,
            "status": self.status,
            "create_time": ms(self.created),
            "execution_start_time": ms(self.started),
            "execution_end_time": ms(self.ended),
            "outputs_count": len(self.outputs),
            "previewable_outputs_count": sum(1 for o in self.outputs.values() if o.get("images")),
            "priority": self.number,
        }
        if self.error is not None:
            entry["execution_error"] = self.error
        return entry


class JobQueue:
    def __init__(self, runs_root: Path, broadcast: Broadcast, curve_every: float) -> None:
        self.runs_root, self.broadcast, self.curve_every = runs_root, broadcast, curve_every
        self.pending: list[Job] = []
        self.running: Job | None = None
        self.history: dict[str, Job] = {}
        self.number = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    # --- queueing -------------------------------------------------------------------------------
    def put(self, prompt: dict, extra_data: dict, graph: dict, out: Path, front: bool) -> Job:
        self.number += 1
        job = Job(
            str(uuid.uuid4()),
            -self.number if front else self.number,
            prompt,
            extra_data,
            graph,
            str(out),
        )
        self.pending.append(job)
        self.pending.sort(key=lambda j: j.number)
        self.status()
        self.pump()
        return job

    def remaining(self) -> int:
        return len(self.pending) + (self.running is not None)

    def status(self) -> None:
        self.broadcast("status", {"status": self.queue_info()})

    def queue_info(self) -> dict:
        return {"exec_info": {"queue_remaining": self.remaining()}}

    def pump(self) -> None:
        if self.running is None and self.pending:
            self.start(self.pending.pop(0))

    def start(self, job: Job) -> None:
        from ppokit.studio.worker import run_job

        self.loop = asyncio.get_running_loop()
        self.running, job.status, job.started = job, "in_progress", time.time()
        ctx = mp.get_context("spawn")  # no fork of a server with threads; torch loads there
        events = ctx.Queue()
        spec = {"graph": job.graph, "out": job.out}
        job.process = ctx.Process(target=run_job, args=(spec, events), daemon=True)
        job.process.start()
        self.event(job, "execution_start", {"timestamp": int(time.time() * 1000)})
        threading.Thread(target=self._read, args=(job, events), daemon=True).start()

    def _read(self, job: Job, events: Any) -> None:
        """Forward the worker's events to the event loop until it ends."""
        finished = False
        while not finished:
            try:
                event, data = events.get(timeout=0.2)
            except stdqueue.Empty:
                if job.process.is_alive():
                    continue
                event, data = "exit", {"exitcode": job.process.exitcode}
            finished = event in ("done", "execution_error", "exit")
            self.loop.call_soon_threadsafe(self.on_worker_event, job, event, data)

    # --- events ---------------------------------------------------------------------------------
    def event(self, job: Job, name: str, data: dict) -> None:
        data = {**data, "prompt_id": job.prompt_id}
        if name in (
            "execution_start",
            "execution_success",
            "execution_error",
            "execution_interrupted",
            "execution_cached",
        ):
            job.messages.append([name, data])
        self.broadcast(name, data)

    def on_worker_event(self, job: Job, event: str, data: dict) -> None:
        if job.status not in ("in_progress",):
            return  # already finished (an exit after done)
        if event == "executed":
            output = dict(data["output"])
            curve = job.curves.get(data["node"])
            if curve is not None:  # a trainer's summary: with its curve
                job.summarized.add(data["node"])
                if curve.image is not None:
                    output["images"] = [self.image_ref(curve.image)]
            job.outputs[data["node"]] = output
            self.event(job, event, {**data, "output": output})
        elif event in ("progress", "executing"):
            self.event(job, event, data)
        elif event == "metrics":
            self.add_metrics(job, data["node"], data["row"])
        elif event == "done":
            if data.get("interrupted"):
                end = (
                    "cancelled",
                    "execution_interrupted",
                    {"node_id": None, "executed": list(job.outputs)},
                )
            else:
                end = ("completed", "execution_success", {"timestamp": int(time.time() * 1000)})
            asyncio.ensure_future(self.finish_after_curves(job, *end))
        elif event == "execution_error":
            data = {
                **data,
                "executed": list(job.outputs),
                "current_inputs": {},
                "current_outputs": {},
            }
            job.error = data
            self.finish(job, "failed", "execution_error", data)
        elif event == "exit":
            message = f"the worker process ended with exit code {data.get('exitcode')}"
            err = {
                "node_id": None,
                "node_type": None,
                "exception_message": message,
                "exception_type": "WorkerExit",
                "traceback": [],
                "executed": list(job.outputs),
                "current_inputs": {},
                "current_outputs": {},
            }
            job.error = err
            self.finish(job, "failed", "execution_error", err)

    # --- learning curves (drawn here, in a thread: the worker only trains) ----------------------
    def add_metrics(self, job: Job, node: str, row: dict) -> None:
        curve = job.curves.setdefault(node, Curve(node))
        curve.rows.append(row)
        due = time.monotonic() - curve.last_drawn >= self.curve_every
        if not curve.drawing and (due or row["updates"] >= row["total"]):
            curve.drawing, curve.last_drawn = True, time.monotonic()
            asyncio.ensure_future(self.draw(job, curve))

    async def draw(self, job: Job, curve: Curve) -> None:
        """Draw in a thread; again when the last update arrived meanwhile (it is the one kept)."""
        try:
            path = await asyncio.to_thread(draw, curve, Path(job.out))
        finally:
            curve.drawing = False
        last = curve.rows[-1]
        if last["updates"] >= last["total"] and not path.name.endswith(
            f"_{last['updates']:06d}.png"
        ):
            curve.drawing = True
            await self.draw(job, curve)
            return
        # After the trainer's summary arrived, the drawing joins the summary's text.
        done = curve.node in job.summarized
        text = job.outputs[curve.node]["text"] if done else [curve.text()]
        output = {"images": [self.image_ref(path)], "text": text}
        job.outputs[curve.node] = output
        self.event(
            job, "executed", {"node": curve.node, "display_node": curve.node, "output": output}
        )

    def image_ref(self, path: Path) -> dict:
        rel = path.relative_to(self.runs_root)
        return {"filename": rel.name, "subfolder": rel.parent.as_posix(), "type": "output"}

    async def finish_after_curves(self, job: Job, status: str, event: str, data: dict) -> None:
        """End the job once its curves are drawn (the last drawing belongs to its history)."""
        while any(c.drawing for c in job.curves.values()):
            await asyncio.sleep(0.05)
        for node, curve in job.curves.items():
            if curve.image is not None and node in job.outputs:
                job.outputs[node]["images"] = [self.image_ref(curve.image)]
        self.finish(job, status, event, data)

    def finish(self, job: Job, status: str, event: str, data: dict) -> None:
        job.status, job.ended = status, time.time()
        self.event(job, event, data)
        self.event(job, "executing", {"node": None})
        self.history[job.prompt_id] = job
        self.running = None
        self.status()
        self.pump()

    # --- control --------------------------------------------------------------------------------
    def interrupt(self, prompt_id: str | None = None) -> None:
        """SIGINT to the running worker: its trainers stop after their update and checkpoint (a
        second interrupt stops it at once)."""
        job = self.running
        if job is None or (prompt_id and prompt_id != job.prompt_id):
            return
        if job.process is not None and job.process.is_alive():
            os.kill(job.process.pid, signal.SIGINT)

    def delete(self, ids: list[str]) -> None:
        for job in [j for j in self.pending if j.prompt_id in ids]:
            job.status = "cancelled"
            self.pending.remove(job)
        self.status()

    def clear(self) -> None:
        self.delete([j.prompt_id for j in self.pending])

    def shutdown(self) -> None:
        job = self.running
        if job is not None and job.process is not None and job.process.is_alive():
            job.process.terminate()
            job.process.join(5)

    # --- views ----------------------------------------------------------------------------------
    def queue(self) -> dict:
        running = [self.running.item()] if self.running else []
        return {"queue_running": running, "queue_pending": [j.item() for j in self.pending]}

    def history_view(self, max_items: int | None = None, prompt_id: str | None = None) -> dict:
        jobs = list(self.history.values())
        if prompt_id is not None:
            jobs = [j for j in jobs if j.prompt_id == prompt_id]
        if max_items is not None:
            jobs = jobs[-max_items:] if max_items > 0 else []
        return {j.prompt_id: j.history_entry() for j in jobs}

    def all_jobs(self) -> list[Job]:
        jobs = (
            ([self.running] if self.running else [])
            + self.pending
            + list(self.history.values())[::-1]
        )
        return jobs

    def jobs_view(self, statuses: list[str] | None, limit: int, offset: int) -> dict:
        jobs = [j for j in self.all_jobs() if not statuses or j.status in statuses]
        page = jobs[offset : offset + limit]
        return {
            "jobs": [j.job_entry() for j in page],
            "pagination": {
                "offset": offset,
                "limit": limit,
                "total": len(jobs),
                "has_more": offset + limit < len(jobs),
            },
        }

    def find(self, prompt_id: str) -> Job | None:
        return next((j for j in self.all_jobs() if j.prompt_id == prompt_id), None)
