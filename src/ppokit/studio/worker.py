"""The process that runs one queued workflow: ppokit's executor (`run_program`, the code `ppokit
graph run` runs), with its progress reported to the studio as ComfyUI events.

Events go to the server through a multiprocessing queue as (event, data) pairs; data carries
node ids as the editor knows them. After every update of a trainer: `progress` (update/total on
the trainer node) and `metrics` (the numbers of its learning curve, which the server draws: this
process only trains). At the end each node's result is an `executed` output (text, and the
numbers of an evaluation). The studio's interrupt sends SIGINT: the trainers stop after their
update and checkpoint, as Ctrl-C does for `ppokit graph run`.
"""

from __future__ import annotations

import traceback
from typing import Any


class Reporter:
    """Turns trainer updates into progress and metrics events."""

    def __init__(self, events: Any) -> None:
        self.events = events

    def send(self, event: str, data: dict) -> None:
        self.events.put((event, data))

    def __call__(self, name: str, trainer: Any, metrics: dict) -> None:
        updates, total = trainer.ppo.updates, trainer.total_updates
        self.send("progress", {"node": name, "value": updates, "max": total})
        row = {
            "updates": updates,
            "total": total,
            "step": trainer.global_step,
            "steps_per_update": trainer.steps_per_update,
            "return": metrics.get("charts/episode_return"),
            "value_loss": metrics.get("losses/value_loss"),
            "policy_loss": metrics.get("losses/policy_loss"),
            "sps": metrics.get("charts/SPS"),
        }
        self.send("metrics", {"node": name, "row": {k: v for k, v in row.items() if v is not None}})

    def executed(self, node: str, output: dict) -> None:
        self.send("executed", {"node": node, "display_node": node, "output": output})


def result_output(value: Any) -> dict:
    """A node's result as an `executed` output: text lines, and the numbers of an evaluation."""
    from ppokit.nodes.runtime import format_results

    (line,) = format_results({"_": value}) or ["_: -"]
    text = line.split(": ", 1)[1]
    out: dict[str, Any] = {"text": [text]}
    if isinstance(value, dict) and "mean_return" in value and "episodes" in value:
        out["ppokit_eval"] = [
            {k: value[k] for k in ("mean_return", "std_return", "mean_length", "episodes")}
        ]
    return out


def run_job(job: dict, events: Any) -> None:
    """Process entry point: run `job["graph"]` (a native graph) into `job["out"]`."""
    reporter = Reporter(events)
    try:
        from ppokit.nodes import runtime as rt
        from ppokit.nodes.errors import GraphRunError
        from ppokit.nodes.executor import run_program
        from ppokit.nodes.files import load_graph
        from ppokit.nodes.program import build_program

        program = build_program(load_graph(job["graph"], "prompt"))
        trainers = [n for n, nd in program.analysis.nodes.items() if nd.type == "PPOTrainerNode"]
        rt.observers.append(reporter)
        reporter.send("executing", {"node": trainers[0] if trainers else None})
        try:
            result = run_program(program, job["out"], quiet=False)
        except GraphRunError as e:
            reporter.send(
                "execution_error",
                {
                    "node_id": e.node,
                    "node_type": e.node_type,
                    "exception_message": str(e),
                    "exception_type": type(e.error).__name__,
                    "traceback": traceback.format_exception(e.error),
                },
            )
            return
        for node, value in result.results.items():
            if node in program.analysis.nodes and node not in trainers:
                reporter.send("executing", {"node": node})
                reporter.executed(node, result_output(value))
        for node in trainers:
            reporter.executed(node, result_output(result.results[node]))
        reporter.send("done", {"interrupted": rt.interrupted(), "out": str(result.out_dir)})
    except KeyboardInterrupt:
        reporter.send("done", {"interrupted": True, "out": job["out"]})
    except Exception as e:  # anything else: reported to the editor, not swallowed
        reporter.send(
            "execution_error",
            {
                "node_id": None,
                "node_type": None,
                "exception_message": f"{type(e).__name__}: {e}",
                "exception_type": type(e).__name__,
                "traceback": traceback.format_exception(e),
            },
        )
