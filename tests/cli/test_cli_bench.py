"""`ppokit bench learning`: the results table against the runs it trained, reuse of finished
runs, and the summary arithmetic against numpy."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from ppokit.bench import RunRecord, markdown_table, reusable, summarize
from ppokit.errors import ConfigError
from ppokit.plot import read_run
from ppokit_runs import assert_main_error, assert_one_line_error, ppokit_cli, run_main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TINY = ("--steps", "1024", "--episodes", "2")


def record(task: str, seed: int, eval_mean: float, train: float, wall: float) -> RunRecord:
    return RunRecord(task, f"{task}-v0", seed, 1000, eval_mean, 1.0, 10, train, wall, f"/r/{seed}")


def test_summary_is_mean_and_std_over_seeds_per_task():
    records = [
        record("hopper", 1, 3000.0, 2500.0, 60.0),
        record("hopper", 2, 2000.0, math.nan, 80.0),  # no training episode logged
        record("ant", 1, 100.0, 90.0, 10.0),
        record("hopper", 3, 2600.0, 2100.0, 70.0),
    ]
    hopper, ant = summarize(records)
    assert [hopper["task"], ant["task"]] == ["hopper", "ant"]
    assert hopper["seeds"] == [1, 2, 3]
    assert hopper["eval_mean"] == pytest.approx(np.mean([3000, 2000, 2600]))
    assert hopper["eval_std"] == pytest.approx(np.std([3000, 2000, 2600]))
    assert hopper["train_mean"] == pytest.approx(2300.0)  # the NaN seed left out
    assert hopper["train_std"] == pytest.approx(200.0)
    assert hopper["wall_s_mean"] == pytest.approx(70.0)
    assert hopper["target"] == 3000.0 and hopper["rl_zoo"] == 2410.0
    assert ant["eval_std"] == 0.0
    table = markdown_table([hopper, ant])
    assert (
        "| hopper-v0 | 1,000 | 3 | 2533 ± 411 | 2300 ± 200 | 1.2 min | 3000 | 2383 | 2410 |"
        in table
    )
    assert "| ant-v0 | 1,000 | 1 | 100 ± 0 | 90 ± 0 | 0.2 min | 3000 | — | 1327 |" in table


def test_a_stored_run_is_reused_only_with_the_same_config(tmp_path):
    path = tmp_path / "bench.json"
    assert reusable(path, {"seed": 1}) is None
    rec = record("hopper", 1, 1.0, 2.0, 3.0)
    stored = {"seed": 1, "algo": {"lr": 1e-3, "lam": 0.95}}
    path.write_text(json.dumps({"config": stored, "record": rec.__dict__}))
    assert reusable(path, stored) == rec
    with pytest.raises(ConfigError, match=r"algo.lr: 0.001 -> 0.0003.*another --out"):
        reusable(path, {"seed": 1, "algo": {"lr": 3e-4, "lam": 0.95}})
    path.write_text("{not json")  # an unreadable record: the run is trained again
    assert reusable(path, stored) is None


@pytest.mark.slow
def test_bench_trains_evaluates_tabulates_and_reuses(tmp_path):
    out = tmp_path / "bench"
    args = ("bench", "learning", "--tasks", "cartpole", "pendulum", "--seeds", "2", *TINY)
    proc = ppokit_cli(*args, "--out", out, "--jobs", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["task"], r["seed"]) for r in rows] == [
        ("cartpole", "1"),
        ("cartpole", "2"),
        ("pendulum", "1"),
        ("pendulum", "2"),
    ]
    for row in rows:
        run = Path(row["run_dir"])
        evaluation = json.loads((run / "eval.json").read_text())
        assert float(row["eval_mean"]) == pytest.approx(evaluation["mean_return"])
        assert int(row["eval_episodes"]) == 2
        curve = read_run(run)
        assert float(row["train_return"]) == pytest.approx(
            curve.values[np.isfinite(curve.values)][-1]
        )
        assert curve.steps[-1] == int(row["steps"]) >= 1024  # whole rollouts
    summary = json.loads((out / "results.json").read_text())["tasks"]
    pendulum = [float(r["eval_mean"]) for r in rows if r["task"] == "pendulum"]
    assert summary[1]["eval_mean"] == pytest.approx(np.mean(pendulum))
    assert "| Pendulum-v1 | 2,048 | 2 |" in (out / "results.md").read_text()
    assert (out / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    # Seeds differ: the two runs did not train the same thing.
    assert (
        rows[0]["eval_mean"] != rows[1]["eval_mean"]
        or rows[0]["train_return"] != rows[1]["train_return"]
    )

    # Again: nothing is retrained; a changed setting retrains only what it changes.
    logs = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*.log")}
    again = ppokit_cli(*args, "--out", out, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.count("reusing") == 4
    assert {p: p.stat().st_mtime_ns for p in logs} == logs
    # A changed setting never overwrites a finished run: one error before any training.
    sweep = ("bench", "learning", "--tasks", "cartpole", "--seeds", "1", *TINY)
    record = (out / "runs/cartpole/seed1/bench.json").read_text()
    refused = ppokit_cli(*sweep, "--out", out, "--set", "algo.gamma=0.9", cwd=tmp_path)
    assert_one_line_error(refused, "finished run with another config", "algo.gamma: 0.98 -> 0.9")
    assert (out / "runs/cartpole/seed1/bench.json").read_text() == record
    elsewhere = ppokit_cli(
        *sweep, "--out", tmp_path / "sweep", "--set", "algo.gamma=0.9", cwd=tmp_path
    )
    assert elsewhere.returncode == 0, elsewhere.stderr
    stored = json.loads((tmp_path / "sweep/runs/cartpole/seed1/bench.json").read_text())
    assert stored["config"]["algo"]["gamma"] == 0.9


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--tasks", "hoper"], ["no preset 'hoper'", "hopper"]),
        (["--seeds", "0"], ["--seeds must be >= 1"]),
        (["--steps", "1.5"], ["--steps must be a whole number"]),
        (["--episodes", "0"], ["--episodes must be >= 1"]),
        (["--jobs", "0"], ["--jobs must be >= 1"]),
        (["--set", "algo.lrr=1"], ["algo.lrr", "algo.lr"]),
        (["--set", "algo.lr"], ["KEY=VALUE"]),
        (["--set", "algo.lr=fast"], ["algo.lr"]),
    ],
)
def test_bad_bench_arguments_get_one_line_errors(capsys, tmp_path, args, fragments):
    result = run_main(
        capsys, "bench", "learning", "--tasks", "cartpole", *args, "--out", tmp_path / "b"
    )
    assert_main_error(result, *fragments)
    assert not (tmp_path / "b" / "runs").exists()  # nothing trained


def test_a_stored_run_with_old_key_names_is_reused(tmp_path, capsys):
    """A record written before env.normalize_obs became policy.normalize_obs (and so on)."""
    from ppokit import config as C

    config = C.to_dict(C.load_preset("cartpole"))
    old = C.to_dict(C.load_preset("cartpole"))
    for name, new in C.RENAMED.items():
        section, leaf = new.split(".")
        old["env"][name.split(".")[1]] = old[section].pop(leaf)
    path = tmp_path / "bench.json"
    rec = record("cartpole", 1, 1.0, 2.0, 3.0)
    path.write_text(json.dumps({"config": old, "record": rec.__dict__}))
    assert reusable(path, config) == rec
