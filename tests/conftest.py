# --- environments, config, checkpoint and CLI tests -------------------------------------------
import sys as _sys
from pathlib import Path as _Path

import pytest as _pytest

_TESTS_DIR = str(_Path(__file__).resolve().parent)
if _TESTS_DIR not in _sys.path:  # makes tests/ppokit_test_envs.py and ppokit_testutil.py importable
    _sys.path.insert(0, _TESTS_DIR)

import ppokit_test_envs  # noqa: E402, F401  (registers the ppokit-test/* envs)
from ppokit_testutil import tiny_train_config as _tiny_train_config  # noqa: E402


@_pytest.fixture
def tiny_config(tmp_path):
    """Factory: tiny_config(**top_level_fields) -> a 4-update Pendulum TrainConfig (CPU, seeded)
    logging under tmp_path/runs."""
    return lambda **top: _tiny_train_config(tmp_path / "runs", **top)
