"""`ppokit check-env`: a good env passes, each broken env of ppokit_check_envs fails the row that
names its defect (exit 1), and bad input is one `error:` line (exit 2)."""

from __future__ import annotations

import re

import pytest

from ppokit_check_envs import NAN_AT, NAN_OBS, TUPLE_OBS, UNSEEDED_RESET
from ppokit_runs import assert_main_error, ppokit_cli, run_main

ROW = re.compile(r"^(?P<check>[a-z ]+?)\s{2,}(?P<verdict>ok|warn|fail)\s{2,}(?P<detail>.*)$")


def table(stdout: str) -> list[tuple[str, str, str]]:
    """The (check, verdict, detail) rows of the printed table."""
    return [
        (m["check"], m["verdict"], m["detail"])
        for m in map(ROW.match, stdout.splitlines())
        if m is not None
    ]


def verdicts(stdout: str, check: str) -> list[str]:
    return [verdict for name, verdict, _ in table(stdout) if name == check]


def detail(stdout: str, check: str) -> str:
    return next(d for name, _, d in table(stdout) if name == check)


def test_pendulum_passes_through_the_real_command(tmp_path):
    proc = ppokit_cli("check-env", "Pendulum-v1", "--steps", "300", "--seed", "3", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.startswith("ppokit check-env: Pendulum-v1 (300 random steps, seed 3)\n")
    checks = {name for name, _, _ in table(out)}
    assert {
        "gymnasium checker",
        "observation space",
        "action space",
        "finite observations",
        "finite rewards",
        "truncation",
        "reward scale",
        "step rate",
        "reset determinism",
        "step determinism",
    } <= checks
    assert all(verdict == "ok" for _, verdict, _ in table(out)), out
    assert "time limit 200 steps" in detail(out, "truncation")
    assert re.fullmatch(r"[\d,]+ steps/s .*", detail(out, "step rate"))
    assert out.splitlines()[-1].startswith("verdict: ok")


@pytest.mark.parametrize(
    ("target", "check", "fragment"),
    [
        (NAN_OBS, "finite observations", f"NaN/inf at random step {NAN_AT} (episode 0, step 7)"),
        (UNSEEDED_RESET, "reset determinism", "reset(seed=0) twice gave different observations"),
        (TUPLE_OBS, "observation space", "Tuple(Box"),
    ],
)
def test_a_broken_env_fails_the_row_of_its_defect(capsys, target, check, fragment):
    code, out, err = run_main(capsys, "check-env", target, "--steps", "200")
    assert code == 1, out + err
    assert verdicts(out, check) == ["fail"], out
    assert fragment in detail(out, check)
    failed = {name for name, verdict, _ in table(out) if verdict == "fail"}
    # Gymnasium's own checker finds the unseeded reset too; nothing else fails.
    assert failed <= {check, "gymnasium checker"}, out
    assert out.splitlines()[-1].startswith("verdict: FAIL")


def test_a_factory_without_time_limit_warns_about_truncation(capsys):
    code, out, _ = run_main(
        capsys, "check-env", "ppokit_check_envs:make_walk_without_time_limit", "--steps", "100"
    )
    assert code == 0, out
    assert verdicts(out, "truncation") == ["warn"]
    assert "gymnasium.wrappers.TimeLimit" in detail(out, "truncation")
    assert out.splitlines()[-1].startswith("verdict: ok with 1 warning (truncation)")


def test_module_id_and_module_factory_forms(capsys):
    code, out, _ = run_main(capsys, "check-env", f"ppokit_check_envs:{NAN_OBS}", "--steps", "20")
    assert code == 1 and verdicts(out, "finite observations") == ["fail"]
    code, out, _ = run_main(capsys, "check-env", "ppokit_check_envs:make_nan_obs", "--steps", "20")
    assert code == 1 and verdicts(out, "finite observations") == ["fail"]


@pytest.mark.parametrize(
    ("target", "fragments"),
    [
        ("Pendulm-v1", ("unknown environment id 'Pendulm-v1'", "did you mean Pendulum-v1")),
        ("no_such_module:make_env", ("cannot import module 'no_such_module'",)),
        ("ppokit_check_envs:make_not_an_env", ("returned a dict, not a gymnasium.Env",)),
        ("ppokit_check_envs:NOT_CALLABLE", ("NOT_CALLABLE is not callable",)),
        ("ppokit_check_envs:nope", ("has no callable 'nope'", "unknown environment id 'nope'")),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, target, fragments):
    assert_main_error(run_main(capsys, "check-env", target), *fragments)


def test_bad_steps_is_one_line_and_exit_2(capsys):
    assert_main_error(run_main(capsys, "check-env", "Pendulum-v1", "--steps", "0"), "--steps")
