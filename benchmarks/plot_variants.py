"""Learning curves of single runs under names you choose (for recording what was tried).

    python benchmarks/plot_variants.py OUT.png "TITLE" "label=RUN_DIR" ["label=RUN_DIR" ...]

Each run's training return (charts/episode_return of its metrics.csv) against env steps, one
line per run, labelled as given; a run that was stopped early simply ends early.
"""

from __future__ import annotations

import sys

import numpy as np

from ppokit.plot import _pyplot, _save, read_run


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__)
        return 2
    out, title, pairs = argv[0], argv[1], argv[2:]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 5))
    for pair in pairs:
        label, _, run = pair.partition("=")
        curve = read_run(run)
        ok = np.isfinite(curve.values)
        ax.plot(curve.steps[ok], curve.values[ok], lw=1.5, label=label)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("training return (mean of recent episodes)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, out)
    print(f"plot written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
