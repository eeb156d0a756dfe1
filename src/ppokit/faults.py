"""What training does when something goes wrong mid-run: a watchdog for env steps that hang, the
one-line description of a fault, the run directory's error.log with the full traceback, and
Ctrl-C held while training starts up.

The policy it serves (docs/reliability.md): every stop leaves the last complete update saved,
and the user reads one line naming the env, the env index, the vector step and the exception's
own message.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from pathlib import Path

from ppokit.errors import EnvError, PPOKitError

ERROR_LOG = "error.log"


class HeldInterrupt:
    """A Ctrl-C (SIGINT) during the block is held, not raised: `interrupted` says whether one
    came; a second one raises KeyboardInterrupt at once. For the start of training, which
    imports torch and MuJoCo and builds the envs: a KeyboardInterrupt raised inside an
    extension's callback there can abort the process (pybind11 calls std::terminate) or be
    swallowed by it, so that the run goes on as if no Ctrl-C had come. A no-op outside the main
    thread."""

    def __init__(self) -> None:
        self.interrupted = False
        self._previous = None
        self._installed = False

    def __enter__(self) -> HeldInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._hold)
            self._installed = True
        return self

    def _hold(self, *_: object) -> None:
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True

    def __exit__(self, *_: object) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous or signal.default_int_handler)


class EnvStepTimeout(EnvError):
    """A vector step took longer than env.step_timeout seconds."""


class StepWatchdog:
    """Raises EnvStepTimeout in the main thread when one env step runs past `timeout` seconds.

    A daemon thread looks at the start time of the step in progress; on a timeout it sends the
    main thread SIGALRM, whose handler raises. Python runs the handler between bytecodes, so a
    step stuck in Python code or a sleep is interrupted; one stuck inside a C call is
    interrupted when that call returns. Off (a no-op) with timeout 0 or outside the main thread.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = float(timeout)
        self.enabled = self.timeout > 0 and threading.current_thread() is threading.main_thread()
        self.started: float | None = None
        self.fired = False
        self._stop = threading.Event()
        self._previous = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> StepWatchdog:
        if self.enabled:
            self._previous = signal.signal(signal.SIGALRM, self._on_alarm)
            self._thread = threading.Thread(target=self._watch, name="ppokit-step-watchdog")
            self._thread.daemon = True
            self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.enabled:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            signal.signal(signal.SIGALRM, self._previous or signal.SIG_DFL)

    def _watch(self) -> None:
        main = threading.main_thread().ident
        poll = min(1.0, self.timeout / 4)
        while not self._stop.wait(poll):
            started = self.started
            if started is not None and not self.fired and time.monotonic() - started > self.timeout:
                self.fired = True
                signal.pthread_kill(main, signal.SIGALRM)

    def _on_alarm(self, *_: object) -> None:
        if self.fired and self.started is not None:
            raise EnvStepTimeout(
                f"an env step has run for more than env.step_timeout {self.timeout:g} s (a hung"
                " env?); raise --env.step_timeout for slow envs, 0 turns the limit off"
            )


def describe(error: BaseException, env_id: str, vector_step: int | None) -> str:
    """The fault in one line: ppokit's own errors as they are (they name env and step already),
    anything an env raised with the env id, env index and vector step added."""
    if isinstance(error, PPOKitError):
        return str(error)
    where = f"env {env_id!r}"
    index = getattr(error, "ppokit_env_index", None)
    if index is not None:
        where += f" (env index {index})"
    at = f" at vector step {vector_step}" if vector_step is not None else ""
    message = str(error).strip().splitlines()[0] if str(error).strip() else "(no message)"
    return f"{where} raised {type(error).__name__}{at}: {message}"


def write_error_log(run_dir: Path, error: BaseException, summary: str) -> Path | None:
    """Append the summary and the full traceback to <run dir>/error.log; None if that fails
    (a full disk must not hide the original error)."""
    path = Path(run_dir) / ERROR_LOG
    try:
        with path.open("a") as f:
            f.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {summary}\n")
            f.write("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            cause = error.__cause__
            worker = getattr(error, "ppokit_worker_traceback", None) or getattr(
                cause, "ppokit_worker_traceback", None
            )
            if worker:
                f.write(f"in the env's subprocess worker:\n{worker}\n")
    except OSError:
        return None
    return path
