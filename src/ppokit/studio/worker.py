"""The process that runs one queued workflow: ppokit's executor (`run_program`, the code `ppokit
graph run` runs), with its progress reported to the studio as ComfyUI events.

Events go to the server through a multiprocessing queue as (event, data) pairs; data carries
node ids as the editor knows them. After every update of a trainer: `progress` (update/total on
the trainer node); every `curve_every` seconds and at the end: a learning-curve PNG of the
trainer (episode return and losses, with steps, SPS and ETA in its title) as the node's image
output. At the end each node's result is an `executed` output (text, and the numbers).
The studio's interrupt sends SIGINT: the trainers stop after their update and checkpoint, as
Ctrl-C does for `ppokit graph run`.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

CURVE_EVERY_S = 5.0  # seconds between curve images (a plot costs ~0.1 s)


class Reporter:
    """Turns trainer updates into progress events and curve images."""

    def __init__(self, events: Any, out: Path, runs_root: Path, curve_every: float) -> None:
        self.events, self.out, self.runs_root = events, out, runs_root
        self.curve_every = curve_every
        self.history: dict[str, list[tuple[int, dict]]] = {}
        self.last_plot: dict[str, float] = {}
        self.images: dict[str, Path] = {}
        self.t0 = time.perf_counter()

    def send(self, event: str, data: dict) -> None:
        self.events.put((event, data))

    def __call__(self, name: str, trainer: Any, metrics: dict) -> None:
        keep = ("charts/episode_return", "losses/value_loss", "losses/policy_loss", "charts/SPS")
        self.history.setdefault(name, []).append(
            (trainer.global_step, {k: float(metrics[k]) for k in keep if k in metrics})
        )
        updates, total = trainer.ppo.updates, trainer.total_updates
        self.send("progress", {"node": name, "value": updates, "max": total})
        now = time.perf_counter()
        if updates == total or now - self.last_plot.get(name, -1e9) >= self.curve_every:
            self.last_plot[name] = now
            self.executed(name, self.curve(name, trainer, metrics))

    def executed(self, node: str, output: dict) -> None:
        self.send("executed", {"node": node, "display_node": node, "output": output})

    def curve(self, name: str, trainer: Any, metrics: dict) -> dict:
        """The trainer's learning curve as a new PNG in the run directory (a new name each time,
        so the editor reloads it); the previous one is removed."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rows = self.history[name]
        steps = [s for s, _ in rows]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(4.8, 4.2), sharex=True)
        ret = [(s, m["charts/episode_return"]) for s, m in rows if "charts/episode_return" in m]
        if ret:
            ax1.plot(*zip(*ret), color="tab:blue")
        ax1.set_ylabel("episode return")
        for key, color in (
            ("losses/value_loss", "tab:orange"),
            ("losses/policy_loss", "tab:green"),
        ):
            ax2.plot(steps, [m.get(key, float("nan")) for _, m in rows], color=color, label=key[7:])
        ax2.set_ylabel("loss")
        ax2.set_xlabel("env steps")
        ax2.legend(fontsize=7)
        updates, total = trainer.ppo.updates, trainer.total_updates
        sps = metrics.get("charts/SPS", 0.0)
        eta = (total - updates) * trainer.steps_per_update / sps if sps > 0 else float("nan")
        last = f"{ret[-1][1]:.1f}" if ret else "-"
        fig.suptitle(
            f"{name}: update {updates}/{total}, {trainer.global_step:,} steps\n"
            f"return {last}, {sps:,.0f} SPS, ETA {eta:.0f} s",
            fontsize=9,
        )
        fig.tight_layout()
        path = self.out / f"curve_{name}_{updates:06d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        old = self.images.get(name)
        if old is not None and old != path:
            old.unlink(missing_ok=True)
        self.images[name] = path
        text = f"update {updates}/{total} | {trainer.global_step:,} steps | return {last} | {sps:,.0f} SPS | ETA {eta:.0f} s"
        return {"images": [self.image_ref(path)], "text": [text]}

    def image_ref(self, path: Path) -> dict:
        rel = path.relative_to(self.runs_root)
        return {"filename": rel.name, "subfolder": rel.parent.as_posix(), "type": "output"}


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
    reporter = Reporter(events, Path(job["out"]), Path(job["runs_root"]), job["curve_every"])
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
            summary = result_output(result.results[node])
            if node in reporter.images:
                summary["images"] = [reporter.image_ref(reporter.images[node])]
            reporter.executed(node, summary)
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
