"""Optional features without their extra: one line naming `pip install "ppokit[extra]"`.

A package is made missing by putting None in sys.modules (what `import` reports as not
installed), through the command's `main` in this process.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ppokit.errors import MissingDependencyError
from ppokit.extras import require
from ppokit_runs import assert_main_error, run_main, train_tiny


def uninstall(monkeypatch, *packages: str) -> None:
    """`import PACKAGE` (and its submodules) fails as if it were not installed."""
    for package in packages:
        loaded = [m for m in sys.modules if m == package or m.startswith(package + ".")]
        for name in {package, *loaded}:
            monkeypatch.setitem(sys.modules, name, None)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("extras") / "runs", "pendulum")


@pytest.mark.parametrize("missing", ["onnx", "onnxscript", "onnxruntime"])
def test_onnx_export_names_the_onnx_extra(run, tmp_path, capsys, monkeypatch, missing):
    uninstall(monkeypatch, missing)
    out = tmp_path / "policy.onnx"
    result = run_main(capsys, "export", run, "--format", "onnx", "--out", out)
    assert_main_error(
        result, f'ONNX export needs the {missing} package: pip install "ppokit[onnx]"'
    )
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary file


def test_torchscript_export_needs_no_extra(run, tmp_path, capsys, monkeypatch):
    uninstall(monkeypatch, "onnx", "onnxscript", "onnxruntime")
    code, out, err = run_main(
        capsys, "export", run, "--format", "torchscript", "--out", tmp_path / "p.pt"
    )
    assert code == 0, err
    assert (tmp_path / "p.pt").is_file()


def test_loading_an_onnx_policy_names_the_onnx_extra(run, tmp_path, capsys, monkeypatch):
    from ppokit.export import export_policy

    exported = export_policy(run, "onnx", tmp_path / "p.onnx").path
    uninstall(monkeypatch, "onnxruntime")
    result = run_main(capsys, "eval", exported, "--episodes", "1")
    assert_main_error(
        result, 'loading an ONNX policy needs the onnxruntime package: pip install "ppokit[onnx]"'
    )


@pytest.mark.parametrize("missing", ["imageio_ffmpeg", "imageio"])
def test_record_names_the_video_extra(run, tmp_path, capsys, monkeypatch, missing):
    uninstall(monkeypatch, missing)
    package = missing.replace("_", "-")
    result = run_main(capsys, "eval", run, "--episodes", "1", "--record", tmp_path / "videos")
    assert_main_error(
        result, f'eval --record needs the {package} package: pip install "ppokit[video]"'
    )
    assert not (tmp_path / "videos").exists()


@pytest.mark.parametrize(
    "make_args",
    [
        lambda run, tmp: ["plot", run, "--out", tmp / "curves.png"],
        lambda run, tmp: ["eval", run, "--episodes", "1", "--analyze-value", tmp / "v.png"],
        lambda run, tmp: ["bench", "learning", "--tasks", "pendulum", "--seeds", "1", "--out", tmp / "bench"],
    ],
    ids=["plot", "eval-analyze-value", "bench-learning"],
)  # fmt: skip
def test_figures_name_the_plot_extra(run, tmp_path, capsys, monkeypatch, make_args):
    uninstall(monkeypatch, "matplotlib")
    result = run_main(capsys, *make_args(run, tmp_path))
    assert_main_error(result, 'needs the matplotlib package: pip install "ppokit[plot]"')
    assert list(tmp_path.iterdir()) == []  # bench: no run trained, no output directory


def test_require_reports_a_broken_install(monkeypatch):
    """A package that is installed but fails to import (its own dependency missing) says so,
    with the original message, instead of claiming it is not installed."""

    def broken(name, *args, **kwargs):
        raise ModuleNotFoundError("No module named 'kiwisolver'", name="kiwisolver")

    monkeypatch.setattr("importlib.import_module", broken)
    with pytest.raises(MissingDependencyError) as info:
        require("matplotlib", "plot", "ppokit plot")
    message = str(info.value)
    assert "installed but fails to import (No module named 'kiwisolver')" in message
    assert 'pip install "ppokit[plot]"' in message
    assert isinstance(info.value, ImportError)  # `except ImportError` in user code still works
