"""Output paths checked before the work that fills them, so a typo costs a one-line error and
not a finished evaluation that cannot be saved. Checks create nothing; `make_dir` (called when
the output is written) creates the missing folders."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ppokit.errors import OutputError


def _check_creatable(folder: Path, what: str, path: Path) -> None:
    """Raise OutputError unless `folder` exists as a writable directory or can be created."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(
            f"cannot write {what} {str(path)!r}: {str(existing)!r} is a file, not a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {str(path)!r}: {str(existing)!r} is not writable")


def output_file(path: str | Path, what: str) -> Path:
    """`path` checked as a file that can be written (its folders may still be missing)."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write {what} {str(p)!r}: it is a directory; give a file name")
    _check_creatable(p.parent, what, p)
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"cannot write {what} {str(p)!r}: the file is not writable")
    return p


def output_dir(path: str | Path, what: str) -> Path:
    """`path` checked as a directory that exists or can be created, and can be written."""
    p = Path(path)
    _check_creatable(p, what, p)
    return p


def make_dir(folder: Path, what: str) -> Path:
    """Create `folder` (and parents), turning OS errors into OutputError."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write {what} {str(folder)!r}: {e.strerror or e}") from None
    return folder


def write_text(path: Path, text: str, what: str) -> None:
    """Write a text file atomically (temp file + rename; its folder created), turning OS errors
    into an OutputError that names the path and the free space."""
    path = Path(path)
    make_dir(path.parent, what)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(path, what, e) from None


def free_space(folder: Path) -> str:
    """'N MB free on <folder>' (or why that is unknown), for messages about failed writes."""
    folder = Path(folder).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return f"{shutil.disk_usage(folder).free / 1e6:,.1f} MB free on {folder}"
    except OSError:
        return f"free space on {folder} unknown"


def write_error(path: Path, what: str, e: OSError) -> OutputError:
    """The one-line OutputError for an OSError writing `path`."""
    return OutputError(
        f"cannot write {what} {str(path)!r}: {e.strerror or e} ({free_space(Path(path).parent)})"
    )


def new_run_dir(root: str | Path, label: str, seed: int) -> Path:
    """<root>/<label>_s<seed>_<date-time>, or with -2, -3, ... when that exists: the run
    directory name of `ppokit train` and `ppokit graph run` alike (nothing is created)."""
    stem = f"{label}_s{seed}_{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = Path(root) / stem, 1
    while path.exists():
        n += 1
        path = Path(root) / f"{stem}-{n}"
    return path
