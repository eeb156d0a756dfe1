"""A run directory has one owner: an OS-level lock held for the life of a training, a resume or
a graph run, and a refusal to train a new run into a directory that already holds one.

The lock is `portalocker`'s exclusive, non-blocking lock on `<run dir>/.lock` (fcntl on Linux and
macOS, LockFileEx on Windows): the OS drops it when the process ends, however it ends (kill -9
included), so a stale lock never needs cleaning up. The file holds the owner's PID and command so
that a second process can name the holder in its one-line error.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from ppokit.errors import OutputError, RunDirError

LOCK_NAME = ".lock"


class RunLock:
    """Exclusive ownership of a run directory; `release()` (or process exit) gives it up."""

    def __init__(self, run_dir: Path, what: str = "training") -> None:
        import portalocker

        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            # "a+" neither truncates a holder's record nor fails when the file exists.
            self.file = open(self.path, "a+")  # noqa: SIM115  (held open for the run's life)
        except OSError as e:
            raise OutputError(
                f"cannot write run directory {str(self.run_dir)!r}: {e.strerror or e}"
            ) from None
        try:
            portalocker.lock(self.file, portalocker.LOCK_EX | portalocker.LOCK_NB)
        except portalocker.LockException:
            holder = self._holder()
            self.file.close()
            raise RunDirError(
                f"run directory {str(self.run_dir)!r} is in use by {holder}; wait for it to"
                " finish or stop it, or write to another directory (--run-dir)"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        command = " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]) if sys.argv else "python"
        self.file.write(f"{os.getpid()} {time.strftime('%Y-%m-%d %H:%M:%S')} {what}: {command}\n")
        self.file.flush()

    def _holder(self) -> str:
        try:
            self.file.seek(0)
            record = self.file.read().strip()
        except OSError:
            record = ""
        if not record:
            return "another process"
        pid, _, rest = record.partition(" ")
        return f"process {pid} (since {rest[:19]}; {rest[21:]})" if rest else f"process {pid}"

    def release(self) -> None:
        if self.file.closed:
            return
        import portalocker

        portalocker.unlock(self.file)
        self.file.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run: a checkpoint, metrics rows or an evaluation. A directory
    with only a config (a run stopped during its start-up) holds nothing worth keeping."""
    run_dir = Path(run_dir)
    if (run_dir / "eval.json").exists() or any((run_dir / "checkpoints").glob("*.pt")):
        return True
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        with metrics.open() as f:
            return len(f.readlines()) > 1
    return False


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Delete the temp files of writes that a killed process left half done (checkpoints and
    metrics are written to `.<name>.<pid>...tmp` and renamed); call it holding the lock."""
    stale = [
        p
        for folder in (Path(run_dir), Path(run_dir) / "checkpoints")
        for p in folder.glob(".*.tmp")
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def claim_run_dir(
    run_dir: Path, new_run: bool, overwrite: bool = False, what: str = "training"
) -> tuple[RunLock, Path | None]:
    """Lock `run_dir` for this process (refused while another holds it) and, for a new run,
    check that it holds no run: refused unless `overwrite`, which moves the old run aside to
    <dir>.old-<time> (never deletes it). Returns the lock and where the old run went."""
    run_dir = Path(run_dir)
    lock = RunLock(run_dir, what)
    remove_stale_temp_files(run_dir)
    if not new_run or not holds_run(run_dir):
        return lock, None
    if not overwrite:
        lock.release()
        raise RunDirError(
            f"run directory {str(run_dir)!r} already holds a run; continue it with --resume"
            f" {run_dir}, replace it with --overwrite (the old run is moved aside, not deleted),"
            " or choose another --run-dir"
        )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}"), 1
    while aside.exists():
        n += 1
        aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}")
    try:  # under the old run's lock, which moves with it: nobody writes it while it moves
        os.replace(run_dir, aside)
    except OSError as e:
        lock.release()
        raise OutputError(
            f"--overwrite cannot move {str(run_dir)!r} aside to {str(aside)!r}: {e.strerror or e}"
        ) from None
    new_lock = RunLock(run_dir, what)
    lock.release()
    return new_lock, aside
