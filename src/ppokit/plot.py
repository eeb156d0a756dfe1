"""Figures: learning curves of runs (`ppokit plot`) and the value analysis of `ppokit eval`.

Learning curves read each run's metrics.csv. Runs whose config.yaml agree on everything but the
seed (and logging, device and evaluation settings, which do not change learning) form a group,
drawn as the mean over its seeds with a shaded band (min-max or one std); a group's label names
what sets it apart from the other groups.
"""

from __future__ import annotations

import csv
import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import yaml

from ppokit.choices import BANDS, DEFAULT_METRIC
from ppokit.config import TrainConfig, to_dict
from ppokit.errors import ConfigError, OutputError

if TYPE_CHECKING:
    from ppokit.value_analysis import EpisodeTrace

# Config keys that do not change what is learned: ignored when grouping runs.
IGNORED_FOR_GROUPING = ("seed", "log", "eval", "device", "torch_threads", "preset")
# What needs matplotlib (the `plot` extra), as the error for a missing one names it.
PLOT_FEATURE = "plotting (ppokit plot, eval --analyze-value, bench learning)"


def _pyplot():
    from ppokit.extras import require

    matplotlib = require("matplotlib", "plot", PLOT_FEATURE)
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    from ppokit.outputs import make_dir

    plt = _pyplot()
    try:
        make_dir(Path(path).parent, "figure")
        fig.savefig(path, dpi=100, bbox_inches="tight")
    except OSError as e:
        raise OutputError(f"cannot write figure {str(path)!r}: {e.strerror or e}") from None
    finally:
        plt.close(fig)


# ----------------------------------------------------------------------------------------------
# Learning curves
# ----------------------------------------------------------------------------------------------


@dataclass
class RunCurve:
    run_dir: Path
    config: dict
    steps: np.ndarray
    values: np.ndarray  # NaN where the metric was not logged yet (no finished episode)


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "kwargs":
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def read_run(run_dir: str | Path, metric: str = DEFAULT_METRIC) -> RunCurve:
    """One run's curve of `metric` against global_step, from its metrics.csv."""
    p = Path(run_dir)
    csv_path = p / "metrics.csv" if p.is_dir() else p
    run = csv_path.parent
    if not csv_path.is_file():
        what = "does not exist" if not p.exists() else "has no metrics.csv"
        raise ConfigError(f"run {str(p)!r} {what}; pass run directories written by ppokit train")
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    if metric not in columns:
        close = difflib.get_close_matches(metric, columns, n=1, cutoff=0.4)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{str(csv_path)!r} has no column {metric!r}{hint}")
    if "global_step" not in columns or not rows:
        raise ConfigError(f"{str(csv_path)!r} has no logged updates yet")

    def number(text: str | None) -> float:
        try:
            return float(text) if text not in (None, "") else math.nan
        except ValueError:
            return math.nan

    steps = np.array([number(r["global_step"]) for r in rows])
    values = np.array([number(r[metric]) for r in rows])
    config: dict = {}
    if (run / "config.yaml").is_file():
        config = yaml.safe_load((run / "config.yaml").read_text()) or {}
    return RunCurve(run, config, steps, values)


def group_runs(runs: Sequence[RunCurve]) -> list[tuple[str, list[RunCurve]]]:
    """Runs grouped by config (seed and logging ignored), each group with a readable label."""
    keys: list[dict] = []
    groups: dict[str, list[RunCurve]] = {}
    # A key missing from an older run's config.yaml had today's default (it did not exist yet).
    defaults = _flatten(to_dict(TrainConfig()))
    for run in runs:
        flat = {
            k: v
            for k, v in {**defaults, **_flatten(run.config)}.items()
            if k.split(".")[0] not in IGNORED_FOR_GROUPING
        }
        key = repr(sorted(flat.items(), key=lambda kv: kv[0]))
        if not run.config:  # no config.yaml: nothing to group by
            key = f"run:{run.run_dir.resolve()}"
        if key not in groups:
            groups[key] = []
            keys.append(flat)
        groups[key].append(run)
    differing = sorted(
        {k for flat in keys for k in flat if any(other.get(k) != flat.get(k) for other in keys)}
    )
    labelled = []
    for flat, members in zip(keys, groups.values()):
        head = members[0].config.get("preset") or flat.get("env.id") or members[0].run_dir.name
        extra = [f"{k}={flat.get(k)}" for k in differing if k != "env.id"][:3]
        if "env.id" in differing and flat.get("env.id") != head:
            extra.insert(0, str(flat.get("env.id")))
        label = head + (f" ({', '.join(extra)})" if extra else "")
        seeds = len(members)
        label = f"{label}, {seeds} seed{'s' if seeds > 1 else ''}"
        if not members[0].config:  # no config.yaml: every run is its own group
            label = members[0].run_dir.name
        labelled.append((label, members))
    return labelled


def aggregate(
    members: Sequence[RunCurve],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, std, min, max) over runs on the union of their steps; a run counts only
    within its own step range (interpolated between its logged points)."""
    steps = np.unique(np.concatenate([m.steps[np.isfinite(m.steps)] for m in members]))
    table = np.full((len(members), len(steps)), np.nan)
    for r, m in enumerate(members):
        ok = np.isfinite(m.steps) & np.isfinite(m.values)
        if not ok.any():
            continue
        xs, ys = m.steps[ok], m.values[ok]
        inside = (steps >= xs[0]) & (steps <= xs[-1])
        table[r, inside] = np.interp(steps[inside], xs, ys)
    keep = np.isfinite(table).any(axis=0)
    steps, table = steps[keep], table[:, keep]
    with np.errstate(invalid="ignore"):
        mean = np.nanmean(table, axis=0)
        std = np.nanstd(table, axis=0)
    return steps, mean, std, np.nanmin(table, axis=0), np.nanmax(table, axis=0)


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average over `window` points (NaN-aware)."""
    if window <= 1:
        return values
    out = np.empty_like(values)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1) : i + 1]
        chunk = chunk[np.isfinite(chunk)]
        out[i] = chunk.mean() if len(chunk) else np.nan
    return out


def plot_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path = "learning_curves.png",
    metric: str = DEFAULT_METRIC,
    band: str = "minmax",
    smooth_window: int = 1,
    title: str | None = None,
) -> dict:
    """Write one PNG of `metric` against env steps for runs, grouped by config; returns a
    summary (groups, runs, final mean per group)."""
    from ppokit.outputs import output_file

    if not run_dirs:
        raise ConfigError("give at least one run directory")
    if band not in BANDS:
        raise ConfigError(f"--band {band!r} is not one of {list(BANDS)}")
    if smooth_window < 1:
        raise ConfigError(f"--smooth must be >= 1, got {smooth_window}")
    out_path = output_file(out, "plot")
    if out_path.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise ConfigError(f"plot output must be a .png (or .svg/.pdf) file, not {str(out_path)!r}")
    runs = [read_run(d, metric) for d in run_dirs]
    groups = group_runs(runs)

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    summary = []
    for color, (label, members) in zip(_colors(len(groups)), groups):
        steps, mean, std, low, high = aggregate(members)
        if not len(steps):
            summary.append(
                {"label": label, "runs": [str(m.run_dir) for m in members], "final": None}
            )
            continue
        mean = smooth(mean, smooth_window)
        ax.plot(steps, mean, color=color, lw=2, label=label)
        if band == "minmax" and len(members) > 1:
            ax.fill_between(
                steps,
                smooth(low, smooth_window),
                smooth(high, smooth_window),
                color=color,
                alpha=0.2,
                lw=0,
            )
        elif band == "std" and len(members) > 1:
            s = smooth(std, smooth_window)
            ax.fill_between(steps, mean - s, mean + s, color=color, alpha=0.2, lw=0)
        summary.append(
            {
                "label": label,
                "runs": [str(m.run_dir) for m in members],
                "final": float(mean[np.isfinite(mean)][-1]) if np.isfinite(mean).any() else None,
            }
        )
    ax.set_xlabel("environment steps")
    ylabel = {
        "charts/episode_return": "episode return (mean of recent training episodes)",
        "charts/episode_length": "episode length (mean of recent training episodes)",
    }.get(metric, metric)
    ax.set_ylabel(ylabel)
    band_text = {
        "minmax": "band: min-max over seeds",
        "std": "band: ±1 std over seeds",
        "none": "",
    }[band]
    envs = sorted({str(m.config.get("env", {}).get("id", "")) for m in runs} - {""})
    ax.set_title(title or (" / ".join(envs) or "learning curves"))
    if band_text and any(len(m) > 1 for _, m in groups):
        ax.text(
            0.99,
            0.01,
            band_text,
            transform=ax.transAxes,
            ha="right",
            va="bottom",
            fontsize=8,
            color="0.4",
        )
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    ax.legend(loc="best", fontsize=9)
    _save(fig, out_path)
    return {"out": str(out_path), "metric": metric, "groups": summary}


def _colors(n: int) -> list:
    plt = _pyplot()
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return [cycle[i % len(cycle)] for i in range(n)]


# ----------------------------------------------------------------------------------------------
# Value analysis
# ----------------------------------------------------------------------------------------------


def plot_value_analysis(
    traces: Sequence[EpisodeTrace],
    gamma: float,
    analysis: dict,
    out: str | Path,
    title: str = "",
    max_series: int = 5,
) -> None:
    """Left: V(s_t) (solid) and the realised discounted return G_t (dashed) along the first
    episodes. Right: V against G at every step, with the y = x line."""
    from ppokit.value_analysis import discounted_returns

    plt = _pyplot()
    fig, (ax_t, ax_s) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [1.6, 1]})
    colors = _colors(max(len(traces), 1))
    for k, trace in enumerate(traces):
        g = discounted_returns(trace.rewards, gamma, trace.bootstrap)
        color = colors[k]
        if k < max_series:
            t = np.arange(len(g))
            ax_t.plot(t, trace.values, color=color, lw=1.3)
            ax_t.plot(t, g, color=color, lw=1.1, ls="--")
        ax_s.scatter(g, trace.values, s=4, alpha=0.35, color=color, lw=0)
    # One legend entry per line style; colours are episodes.
    ax_t.plot([], [], color="0.3", lw=1.3, label="critic V(s_t)")
    ax_t.plot([], [], color="0.3", lw=1.1, ls="--", label="realised G_t")
    ax_t.set_xlabel("step t within the episode")
    ax_t.set_ylabel(f"discounted return (gamma={gamma:g}), env reward units")
    shown = min(len(traces), max_series)
    ax_t.set_title(f"along the episodes ({shown} of {len(traces)} shown, one colour each)")
    ax_t.grid(alpha=0.3)
    ax_t.legend(fontsize=8, loc="lower right")
    all_v = np.concatenate([t.values for t in traces])
    all_g = np.concatenate([discounted_returns(t.rewards, gamma, t.bootstrap) for t in traces])
    lo = float(min(all_v.min(), all_g.min()))
    hi = float(max(all_v.max(), all_g.max()))
    pad = 0.05 * (hi - lo or 1.0)
    ax_s.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="k", lw=1, label="y = x")
    ax_s.set_xlim(lo - pad, hi + pad)
    ax_s.set_ylim(lo - pad, hi + pad)
    ax_s.set_aspect("equal")
    ax_s.set_xlabel("realised discounted return G_t")
    ax_s.set_ylabel("critic V(s_t)")
    ax_s.set_title(
        f"explained variance {analysis['explained_variance']:.3f}, bias (V-G) {analysis['bias']:+.3g}"
    )
    ax_s.grid(alpha=0.3)
    ax_s.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    _save(fig, Path(out))
