"""`ppokit plot` end to end, through the real command in a subprocess, plus the grouping rules."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import yaml

from ppokit.config import to_dict
from ppokit.plot import aggregate, group_runs, read_run
from ppokit_runs import (
    assert_main_error,
    assert_one_line_error,
    ppokit_cli,
    run_main,
    train_tiny,
)
from ppokit_testutil import tiny_train_config

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_run(root: Path, name: str, seed: int, lr: float, returns: list[float]) -> Path:
    """A run directory as ppokit train writes it: config.yaml and metrics.csv."""
    cfg = to_dict(tiny_train_config(root, seed=seed))
    cfg["algo"]["lr"] = lr
    cfg["log"]["run_name"] = name
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    with (run / "metrics.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["global_step", "losses/approx_kl", "charts/episode_return"])
        for k, value in enumerate(returns):
            writer.writerow([32 * (k + 1), 0.01, "" if value is None else value])
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("plot")
    return {
        # Two seeds of one config, one run of another (lr differs); the first rows have no
        # finished episode yet, as in real runs.
        "a1": fake_run(root, "a1", 1, 3e-4, [None, -900, -700, -500]),
        "a2": fake_run(root, "a2", 2, 3e-4, [None, None, -800, -300]),
        "b1": fake_run(root, "b1", 1, 1e-3, [None, -1000, -1100, -1200]),
        "real": train_tiny(root / "real", "pendulum"),
    }


def test_plot_groups_seeds_and_labels_what_differs(runs, tmp_path):
    out = tmp_path / "curves.png"
    proc = ppokit_cli(
        "plot", runs["a1"], runs["a2"], runs["b1"], "--out", out, "--band", "std", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # Mean of the seeds at the last step: (-500 + -300) / 2.
    assert "Pendulum-v1 (algo.lr=0.0003), 2 seeds: final -400.0" in lines, lines
    assert "Pendulum-v1 (algo.lr=0.001), 1 seed: final -1200.0" in lines, lines
    assert lines[-1] == f"plot written to {out}"
    assert out.read_bytes()[:8] == PNG_SIGNATURE and out.stat().st_size > 10_000


def test_plot_reads_a_real_run(runs, tmp_path):
    proc = ppokit_cli("plot", runs["real"], "--metric", "losses/approx_kl", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert "Pendulum-v1, 1 seed: final " in proc.stdout


def test_unwritable_output_is_a_one_line_error(runs, tmp_path):
    (tmp_path / "afile").write_text("a file")
    proc = ppokit_cli("plot", runs["a1"], "--out", tmp_path / "afile" / "x.png", cwd=tmp_path)
    assert_one_line_error(proc, "cannot write plot", "afile")


@pytest.mark.parametrize(
    ("make_args", "fragments"),
    [
        (lambda r, tmp: [tmp], ["has no metrics.csv", "ppokit train"]),
        (lambda r, tmp: [tmp / "nope"], ["does not exist"]),
        (lambda r, tmp: [r["a1"], "--metric", "charts/episode_retrun"], ["no column", "did you mean 'charts/episode_return'"]),
        (lambda r, tmp: [r["a1"], "--out", tmp / "x.jpg"], ["must be a .png"]),
        (lambda r, tmp: [r["a1"], "--band", "iqr"], ["invalid choice: 'iqr'"]),
    ],
    ids=["not-a-run", "missing", "unknown-metric", "not-png", "unknown-band"],
)  # fmt: skip
def test_more_bad_input(runs, tmp_path, capsys, make_args, fragments):
    assert_main_error(run_main(capsys, "plot", *make_args(runs, tmp_path)), *fragments)
    assert list(tmp_path.iterdir()) == []


def test_aggregate_counts_each_run_within_its_own_range(runs):
    curves = [read_run(runs["a1"]), read_run(runs["a2"])]
    ((label, members),) = group_runs(curves)
    assert label == "Pendulum-v1, 2 seeds" and len(members) == 2
    steps, mean, std, low, high = aggregate(members)
    assert steps.tolist() == [64, 96, 128]  # step 32: no episode finished in either run
    assert mean.tolist() == [-900, -750, -400]  # at 64 only a1 has a value
    assert low.tolist() == [-900, -800, -500] and high.tolist() == [-900, -700, -300]
    assert std[0] == 0 and np.isclose(std[2], 100)
