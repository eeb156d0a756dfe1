"""Optional dependencies: a feature that needs a package outside the core install imports it
through `require`, which turns a missing package into one line naming the extra to install.

The extras are defined in pyproject.toml: onnx (export to and load .onnx), video (eval --record),
plot (ppokit plot, eval --analyze-value, bench learning), wandb (--log.wandb), tune (ppokit
tune), and dev/all.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ppokit.errors import MissingDependencyError


def require(module: str, extra: str, feature: str) -> ModuleType:
    """Import and return `module` (e.g. "matplotlib.pyplot"), which `feature` needs.

    Raises MissingDependencyError, e.g. `ppokit plot needs the matplotlib package: pip install
    "ppokit[plot]"`, when its package is not installed, or is installed but fails to import.
    """
    package = module.split(".")[0].replace("_", "-")
    fix = f'pip install "ppokit[{extra}]"'
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name is not None and module.split(".")[0] == e.name.split(".")[0]:
            raise MissingDependencyError(f"{feature} needs the {package} package: {fix}") from None
        problem = e
    except ImportError as e:  # installed but broken (a missing shared library, a bad version)
        problem = e
    message = " ".join(str(problem).split())
    raise MissingDependencyError(
        f"{feature} needs the {package} package, which is installed but fails to import"
        f" ({message}); reinstall it: {fix}"
    ) from None
