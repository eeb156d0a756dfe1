"""`ppokit tune` end to end: real `ppokit train` trials on CartPole, shared by worker processes
through SQLite and PostgreSQL storages; a killed worker's trial re-queued; pruning; a crashing
trial; best.yaml trained again gives the best trial's value; optuna-dashboard on a study; bad
input as one-line errors.

Two xdist groups: the tests on one shared study, and those that run a study of their own; each
study runs two worker processes, so two studies at a time is what 2 cores take."""

from __future__ import annotations

import csv
import glob
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from ppokit_runs import assert_main_error, assert_one_line_error, ppokit_cli, run_main
from ppokit_testutil import cli_env

pytest.importorskip("optuna", reason="ppokit tune needs the tune extra")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# CartPole trials of a few seconds: 4 envs x 32 steps per update, 16-unit networks.
TINY = [
    "--preset", "cartpole",
    "--set", "env.num_envs=4",
    "--set", "policy.actor_hidden=[16]",
    "--set", "policy.critic_hidden=[16]",
    "--eval-episodes", "3",
    "--periodic-episodes", "2",
]  # fmt: skip
SPACE = """\
algo.lr: {low: 3.0e-4, high: 3.0e-3, log: true}
algo.num_epochs: {choices: [5, 10]}
"""


def write_space(folder: Path, text: str = SPACE) -> Path:
    path = folder / "space.yaml"
    path.write_text(text)
    return path


def read_trials(out: Path) -> list[dict]:
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def trial_records(out: Path) -> list[dict]:
    """Every trial.json a worker wrote (one per trial it started: created exclusively)."""
    return [json.loads(p.read_text()) for p in sorted(out.glob("trials/*/*/trial.json"))]


# No pruner: these tests are about sharing a study, and the median pruner (on by default, from
# the 6th trial) would prune a last trial below the median whenever one worker ran a trial ahead
# of the other (--jobs 1 prunes it on two sampler seeds of three); its own test is below.
STUDY_ARGS = [*TINY, "--steps", "1024", "--eval-every", "512", "--pruner", "none"]


@pytest.fixture(scope="module")
def shared_study(tmp_path_factory) -> Path:
    """A finished study of 6 trials that two workers shared through the default SQLite storage."""
    folder = tmp_path_factory.mktemp("tune")
    out = folder / "study"
    args = [*STUDY_ARGS, "--space", write_space(folder), "--trials", "6", "--jobs", "2"]
    proc = ppokit_cli("tune", *args, "--out", out, cwd=folder)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.slow
@pytest.mark.xdist_group("tune")
def test_two_workers_share_a_study_and_run_each_trial_once(shared_study):
    out = shared_study
    rows = read_trials(out)
    # 6, or 7 if both workers started a last trial at once (as Optuna's MaxTrialsCallback)
    assert len(rows) in (6, 7), rows
    assert [r["number"] for r in rows] == [str(n) for n in range(len(rows))]
    assert {r["state"] for r in rows} == {"COMPLETE"}, rows
    assert rows[0]["baseline"] == "True"  # the preset's own lr first
    assert float(rows[0]["params.algo.lr"]) == 1e-3
    records = trial_records(out)
    assert sorted(r["number"] for r in records) == list(range(len(rows)))  # each ran exactly once
    assert {r["worker"] for r in records} == {0, 1}  # both workers took trials
    for name in ("history.png", "parallel_coordinate.png", "importance.png"):
        assert (out / name).read_bytes()[:8] == PNG_SIGNATURE, name
    best = max(rows, key=lambda r: float(r["value"]))
    assert f"Best: trial {best['number']}" in (out / "summary.md").read_text()


@pytest.mark.slow
@pytest.mark.xdist_group("tune")
def test_best_yaml_trains_the_best_trial_again(shared_study, tmp_path):
    # best.yaml as is: the same training as the best trial, so the same final evaluation.
    best = max(read_trials(shared_study), key=lambda r: float(r["value"]))
    run = tmp_path / "again"
    proc = ppokit_cli(
        "train", "--config", shared_study / "best.yaml", "--run-dir", run, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((run / "eval.json").read_text())["mean_return"] == float(best["value"])


@pytest.mark.slow
@pytest.mark.xdist_group("tune")
def test_the_same_command_continues_a_study_but_not_with_another_space(shared_study, tmp_path):
    out = tmp_path / "study"
    shutil.copytree(shared_study, out)
    n = len(read_trials(out))
    args = [*STUDY_ARGS, "--space", write_space(tmp_path), "--out", out]
    proc = ppokit_cli("tune", *args, "--trials", n + 1, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"{n} of {n + 1} trials finished" in proc.stdout
    assert [r["number"] for r in read_trials(out)] == [str(k) for k in range(n + 1)]
    other = write_space(tmp_path, "algo.lr: {low: 1.0e-4, high: 1.0e-2, log: true}\n")
    proc = ppokit_cli("tune", *STUDY_ARGS, "--space", other, "--out", out, cwd=tmp_path)
    assert_one_line_error(proc, "was created with another search space", "--study")


@pytest.mark.slow
@pytest.mark.xdist_group("tune")
def test_optuna_dashboard_serves_the_study(shared_study, tmp_path):
    """`optuna-dashboard STORAGE` on the study: its API lists the trials; with Chromium at hand,
    a headless screenshot of the study page (what docs/tune.md shows)."""
    dashboard = shutil.which("optuna-dashboard", path=str(Path(sys.executable).parent))
    if dashboard is None:
        pytest.skip("optuna-dashboard is not installed (the dev extra installs it)")
    port = _free_port()
    url = f"sqlite:///{shared_study / 'study.db'}"
    server = subprocess.Popen(
        [dashboard, url, "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        studies = None
        for _ in range(120):  # start-up takes a few seconds
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as r:
                    studies = json.loads(r.read())["study_summaries"]
                break
            except OSError:
                time.sleep(0.5)
        assert studies is not None, "optuna-dashboard did not answer"
        (study,) = studies
        assert study["study_name"] == "cartpole-1024"
        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        if chromium:
            shot = tmp_path / "dashboard.png"
            page = f"http://127.0.0.1:{port}/dashboard/studies/{study['study_id']}"
            subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                 "--window-size=1400,1000", "--virtual-time-budget=10000",
                 f"--screenshot={shot}", page],
                capture_output=True, timeout=120,
            )  # fmt: skip
            assert shot.read_bytes()[:8] == PNG_SIGNATURE
            assert shot.stat().st_size > 20_000  # a rendered page, not a blank one
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.xdist_group("tune-own-study")
def test_a_killed_worker_s_trial_is_retried_and_the_study_completes(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "ppokit", "tune", *TINY, "--steps", "2048", "--trials", "2"]
    cmd += ["--jobs", "2", "--heartbeat", "2", "--space", str(write_space(tmp_path))]
    cmd += ["--out", str(out)]
    parent = subprocess.Popen(
        cmd, cwd=tmp_path, env=cli_env(tmp_path), stdout=subprocess.PIPE, text=True
    )
    pids, lines, killed = {}, [], None
    # a study that never completes fails the test instead of hanging it (the read below blocks)
    watchdog = threading.Timer(300, parent.kill)
    watchdog.start()
    try:
        for line in parent.stdout:
            lines.append(line)
            if m := re.match(r"worker (\d+): pid (\d+)", line):
                pids[int(m[1])] = int(m[2])
            if killed is None and (m := re.match(r"\[worker 0\] trial (\d+): started", line)):
                # `ppokit train` takes seconds to start: the trial is surely running.
                os.kill(pids[0], signal.SIGKILL)
                killed = int(m[1])
        assert parent.wait(timeout=240) == 0, "".join(lines)
    finally:
        watchdog.cancel()
        if parent.poll() is None:
            parent.kill()
    rows = {int(r["number"]): r for r in read_trials(out)}
    assert rows[killed]["state"] == "FAIL", rows
    retries = [r for r in rows.values() if r["retry_of"] == str(killed)]
    assert len(retries) == 1 and retries[0]["state"] == "COMPLETE", rows
    assert retries[0]["params.algo.lr"] == rows[killed]["params.algo.lr"]
    finished = [r for r in rows.values() if r["state"] == "COMPLETE"]
    assert len(finished) in (2, 3), rows  # 3: both workers started a last trial at once
    # The killed worker's training died with it (no orphan finished it).
    assert not list((out / "trials").glob(f"*/{killed:04d}/seed1/eval.json"))


@pytest.mark.slow
@pytest.mark.xdist_group("tune-own-study")
def test_the_median_pruner_stops_a_trial_that_learns_nothing(tmp_path):
    # Trial 0 is the preset's lr (1e-3: learns); lr 1e-7 learns nothing. With one finished
    # trial the median pruner stops a trial below it after the first third of training.
    # CartPole steps that sleep 2 ms: the 2,048 steps left after the pruner's verdict take
    # >= 4 s on any CPU, so the stop is seen (plain CartPole's took < 1 s, under the 0.5 s poll).
    space = write_space(tmp_path, "algo.lr: {choices: [1.0e-3, 1.0e-7]}\n")
    out = tmp_path / "study"
    args = [*TINY, "--set", "env.id=ppokit_test_envs:ppokit-test/SlowCartPole-v0"]
    args += ["--steps", "3072", "--eval-every", "256", "--space", space, "--trials", "2"]
    args += ["--sampler", "random", "--sampler-seed", "3", "--prune-after", "1", "--out", out]
    proc = ppokit_cli("tune", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_trials(out)
    assert rows[0]["state"] == "COMPLETE"
    pruned = [r for r in rows if r["state"] == "PRUNED"]
    assert pruned, rows
    for row in pruned:
        assert float(row["params.algo.lr"]) == 1e-7
        step = int(row["pruned_at_step"])
        assert 3072 // 3 <= step < 3072
        metrics = out / "trials" / "cartpole-3072" / f"{int(row['number']):04d}" / "seed1"
        with (metrics / "metrics.csv").open() as f:
            last = int(list(csv.DictReader(f))[-1]["global_step"])
        assert last < 3072  # its training was stopped early
        assert not (metrics / "eval.json").exists()


@pytest.mark.slow
@pytest.mark.xdist_group("tune-own-study")
def test_a_crashing_trial_is_recorded_failed_with_its_error_and_the_study_goes_on(tmp_path):
    # An env the policy cannot act in: `ppokit train` exits with a one-line error.
    space = write_space(
        tmp_path, "env.id: {choices: [ppokit_test_envs:ppokit-test/MatrixAction-v0]}\n"
    )
    out = tmp_path / "study"
    args = [*TINY, "--steps", "256", "--space", space, "--trials", "2", "--no-baseline"]
    proc = ppokit_cli("tune", *args, "--out", out, cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr  # no trial completed
    assert "no trial completed" in proc.stdout
    rows = read_trials(out)
    assert [r["state"] for r in rows] == [
        "FAIL",
        "FAIL",
    ]  # the second trial ran after the first failed
    for row in rows:
        assert "Box action space of shape (2, 2) is not supported" in row["error"], row
    assert "Box action space of shape (2, 2)" in (out / "summary.md").read_text()
    assert not (out / "best.yaml").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own in a temporary folder (initdb + pg_ctl), trust auth on
    127.0.0.1; as the postgres (or nobody) user when we are root, which the server refuses."""
    initdb = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or list(
        filter(None, [shutil.which("initdb")])
    )
    if not initdb:
        pytest.skip("PostgreSQL's initdb/pg_ctl not found: `make system-deps-pg` installs them")
    bindir = Path(initdb[-1]).parent
    folder = Path(tempfile.mkdtemp(prefix="ppokit-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres").pw_name
        except KeyError:
            user = "nobody"
        shutil.chown(folder, user)
        folder.chmod(0o755)
        run_as = ["runuser", "-u", user, "--"]
    data, port = folder / "data", _free_port()
    subprocess.run(
        [*run_as, bindir / "initdb", "-D", data, "-U", "tune", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*run_as, bindir / "pg_ctl", "-D", data]
    subprocess.run(
        [*pg_ctl, "-l", folder / "log", "-w", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql://tune@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.xdist_group("tune-own-study")
def test_two_workers_share_a_study_on_a_postgresql_server(tmp_path, postgres_url):
    import optuna

    out = tmp_path / "study"
    args = [*TINY, "--steps", "512", "--space", write_space(tmp_path), "--trials", "3"]
    args += ["--jobs", "2", "--storage", postgres_url, "--study", "pg", "--out", out]
    proc = ppokit_cli("tune", *args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = read_trials(out)
    assert len(rows) in (3, 4) and {r["state"] for r in rows} == {"COMPLETE"}, rows
    records = trial_records(out)
    assert sorted(r["number"] for r in records) == list(range(len(rows)))  # each ran once
    assert {r["worker"] for r in records} == {0, 1}
    study = optuna.load_study(study_name="pg", storage=postgres_url)  # the server holds it
    assert len(study.trials) == len(rows)
    assert study.best_value == max(t.value for t in study.trials)


def test_bad_input_is_one_line(tmp_path, capsys):
    base = ["tune", *TINY, "--steps", "512", "--out", tmp_path / "o"]
    space = write_space(tmp_path, "algo.lrr: {low: 1.0e-4, high: 1.0e-2}\n")
    assert_main_error(run_main(capsys, *base, "--space", space), "algo.lrr", "did you mean algo.lr")
    space = write_space(tmp_path, "algo.lr_schedule: {low: 0, high: 1}\n")
    assert_main_error(run_main(capsys, *base, "--space", space), "algo.lr_schedule", "not numeric")
    space = write_space(tmp_path)
    unreachable = "postgresql://nobody@127.0.0.1:9/nowhere"  # port 9: nothing listens
    err = assert_main_error(
        run_main(capsys, *base, "--space", space, "--storage", unreachable),
        "cannot open the storage",
    )
    assert "127.0.0.1:9" in err
    assert_main_error(run_main(capsys, *base, "--aggregate", "q200"), "--aggregate")
    assert_main_error(run_main(capsys, *base, "--storage", "study.db"), "not a storage URL")
