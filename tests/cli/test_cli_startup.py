"""Start-up of the CLI: help, --version and argument errors import no heavy module.

Each case runs in a fresh interpreter (a subprocess), the way a user's shell starts `ppokit`,
and reports which of the heavy modules ended up in sys.modules. Wall times are measured by
benchmarks/cli_startup.py, not asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import ppokit
from ppokit import cli
from ppokit_testutil import cli_env

HEAVY = ("torch", "gymnasium", "matplotlib", "numpy", "optuna")

# Runs `python -m ppokit ARGS...` in this interpreter (runpy, as -m does), then writes the exit
# code and the heavy modules loaded to the JSON file named by the first argument.
PROBE = f"""
import json, runpy, sys
out, args = sys.argv[1], sys.argv[2:]
code = None
if args == ["<import>"]:
    import ppokit
else:
    sys.argv = ["ppokit", *args]
    try:
        runpy.run_module("ppokit", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
loaded = [m for m in {HEAVY!r} if m in sys.modules]
with open(out, "w") as f:
    json.dump({{"code": code, "loaded": loaded}}, f)
"""


def probe(tmp_path: Path, *args: str) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path / "probe.json"
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *args],
        cwd=tmp_path,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.is_file(), proc.stderr
    return json.loads(out.read_text()), proc


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--help"], 0),
        (["--version"], 0),
        (["train", "--help"], 0),
        (["train", "--bogus"], 2),
        (["eval"], 2),  # missing PATH
        (["plot", "--help"], 0),
        (["bench", "learning", "--help"], 0),
        (["tune", "--help"], 0),
        (["tune", "--trials"], 2),  # missing value
        (["<import>"], None),  # a bare `import ppokit`
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else None,
)
def test_parser_and_package_root_import_no_heavy_module(tmp_path, args, code):
    result, proc = probe(tmp_path, *args)
    assert result["code"] == code, (result, proc.stderr)
    assert result["loaded"] == [], f"`ppokit {' '.join(args)}` imported {result['loaded']}"
    if code == 2:  # an argument error: one line, no traceback
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr


def test_bogus_flag_error_names_the_fix(tmp_path):
    _, proc = probe(tmp_path, "train", "--bogus")
    assert "unknown config key 'bogus'" in proc.stderr, proc.stderr


def test_version(tmp_path):
    _, proc = probe(tmp_path, "--version")
    try:
        expected = metadata.version("ppokit")
    except metadata.PackageNotFoundError:
        expected = ppokit.__version__
    assert proc.stdout == f"ppokit {expected}\n", (proc.stdout, proc.stderr)
    assert proc.stderr == ""


def test_version_falls_back_to_the_package_attribute(monkeypatch):
    def not_installed(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", not_installed)
    assert cli.package_version() == ppokit.__version__


def test_lazy_package_root_resolves_every_public_name():
    import ppokit.algo.gae
    import ppokit.trainer

    for name in ppokit.__all__:
        assert name in dir(ppokit)
        assert callable(getattr(ppokit, name)), name
    assert ppokit.Trainer is ppokit.trainer.Trainer
    assert ppokit.compute_gae is ppokit.algo.gae.compute_gae
    assert "__version__" in dir(ppokit)
    from ppokit import Trainer

    assert Trainer is ppokit.trainer.Trainer
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ppokit.nonexistent  # noqa: B018
