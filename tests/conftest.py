# --- environments, config, checkpoint and CLI tests -------------------------------------------
import signal as _signal
import sys as _sys
import threading as _threading
import warnings as _warnings
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


# --- a test leaves the process's signal handlers as it found them ------------------------------
# Code under test installs SIGINT/SIGTERM handlers (the trainer's graceful stop, asyncio runners,
# torch's elastic agent). One left behind by a test changes what Ctrl-C does in the next test that
# this xdist worker runs (CI saw it once, without naming the leaker). This restores the handlers
# after every test and warns with the test's name when it had to.
_GUARDED_SIGNALS = (_signal.SIGINT, _signal.SIGTERM, _signal.SIGALRM)


@_pytest.fixture(autouse=True)
def _restore_signal_handlers(request):
    if _threading.current_thread() is not _threading.main_thread():
        yield
        return
    before = {sig: _signal.getsignal(sig) for sig in _GUARDED_SIGNALS}
    yield
    for sig, handler in before.items():
        if _signal.getsignal(sig) is not handler:
            _warnings.warn(
                f"{request.node.nodeid} left a {_signal.Signals(sig).name} handler installed"
                f" ({_signal.getsignal(sig)!r}); restored",
                stacklevel=1,
            )
            _signal.signal(sig, handler)
