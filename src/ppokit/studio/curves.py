"""A trainer's learning curve as a PNG, drawn by the server (off the training process) from the
numbers its worker streams: episode return above, value and policy loss below, with the update,
steps, SPS and ETA in the title. A new file name per drawing, so the editor reloads it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Curve:
    """What a trainer node has reported so far."""

    node: str
    rows: list[dict] = field(default_factory=list)  # one per update: step and metrics
    last_drawn: float = -math.inf
    image: Path | None = None
    drawing: bool = False

    def text(self) -> str:
        """update u/total | steps | return | SPS | ETA: the node's result line during training."""
        r = self.rows[-1]
        ret = f"{r['return']:.1f}" if r.get("return") is not None else "-"
        return (
            f"update {r['updates']}/{r['total']} | {r['step']:,} steps | return {ret} |"
            f" {r['sps']:,.0f} SPS | ETA {eta(r):.0f} s"
        )


def eta(row: dict) -> float:
    left = (row["total"] - row["updates"]) * row["steps_per_update"]
    return left / row["sps"] if row.get("sps") else float("nan")


def draw(curve: Curve, folder: Path) -> Path:
    """Draw the curve into folder/curve_<node>_<update>.png; the previous drawing is removed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # no pyplot: no global state across threads

    rows = list(curve.rows)
    steps = [r["step"] for r in rows]
    fig = Figure(figsize=(4.8, 4.2))
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    ret = [(r["step"], r["return"]) for r in rows if r.get("return") is not None]
    if ret:
        ax1.plot(*zip(*ret), color="tab:blue")
    ax1.set_ylabel("episode return")
    for key, color in (("value_loss", "tab:orange"), ("policy_loss", "tab:green")):
        ax2.plot(steps, [r.get(key, float("nan")) for r in rows], color=color, label=key)
    ax2.set_ylabel("loss")
    ax2.set_xlabel("env steps")
    ax2.legend(fontsize=7)
    last = rows[-1]
    fig.suptitle(f"{curve.node}: {curve.text()}".replace(" | ", ", ", 2), fontsize=8)
    fig.tight_layout()
    path = folder / f"curve_{curve.node}_{last['updates']:06d}.png"
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    if curve.image is not None and curve.image != path:
        curve.image.unlink(missing_ok=True)
    curve.image = path
    return path
