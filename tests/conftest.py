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


# --- pytest-xdist groups under pytest >= 9.2 ---------------------------------------------------
# `--dist loadgroup` (make test) runs the tests of one `xdist_group` on one worker: xdist's worker
# appends "@<group>" to each item's node id, which its scheduler reads. pytest-xdist 3.8 does that
# by assigning `item._nodeid`, which pytest 9.2 no longer reads (node ids are `item._id`), so every
# group was silently ignored and e.g. two multi-process tests could run at once on 2 cores.
@_pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if not getattr(config.option, "loadgroup", False):
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # pytest < 9.2: xdist's own suffix works
        return
    for item in items:
        names = sorted(
            {
                str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                for m in item.iter_markers("xdist_group")
            }
        )
        if names and not item.nodeid.endswith(f"@{'_'.join(names)}"):
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")
