"""The import structure stays layered and acyclic: `lint-imports` (import-linter, on grimp) checks
the contracts in pyproject.toml's [tool.importlinter], and every module of the package has its
place in the layers (a new module must be placed deliberately)."""

from __future__ import annotations

import pkgutil
from pathlib import Path

from importlinter.api import read_configuration

import ppokit

REPO = Path(__file__).resolve().parents[2]


def contracts() -> list[dict]:
    return read_configuration(str(REPO / "pyproject.toml"))["contracts_options"]


def test_imports_keep_the_layers_and_have_no_cycles(monkeypatch, capsys):
    from importlinter.cli import lint_imports

    monkeypatch.chdir(REPO)
    code = lint_imports(config_filename=str(REPO / "pyproject.toml"), no_cache=True, no_logo=True)
    out = capsys.readouterr().out
    assert code == 0, out
    assert "2 kept, 0 broken" in out


def test_every_module_of_the_package_sits_in_a_layer():
    (layers,) = [c["layers"] for c in contracts() if c["type"] == "layers"]
    placed = {name.strip() for layer in layers for name in layer.replace("|", ":").split(":")}
    modules = {m.name for m in pkgutil.iter_modules(ppokit.__path__)}
    assert modules == placed, (sorted(modules - placed), sorted(placed - modules))
