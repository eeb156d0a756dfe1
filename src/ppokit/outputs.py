"""Output paths checked before the work that fills them, so a typo costs a one-line error and
not a finished evaluation that cannot be saved."""

from __future__ import annotations

import os
from pathlib import Path

from ppokit.errors import OutputError


def _creatable_dir(folder: Path, what: str, path: Path) -> None:
    """Make `folder` (and parents); raise OutputError when it cannot be made or written."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(
            f"cannot write {what} {str(path)!r}: {str(folder)!r} is a file, not a directory"
        ) from None
    except OSError as e:
        raise OutputError(f"cannot write {what} {str(path)!r}: {e.strerror}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write {what} {str(path)!r}: {str(folder)!r} is not writable")


def output_file(path: str | Path, what: str) -> Path:
    """`path` as a file that can be written: parent directories made, permissions checked."""
    p = Path(path)
    if p.is_dir():
        raise OutputError(f"cannot write {what} {str(p)!r}: it is a directory; give a file name")
    _creatable_dir(p.parent if str(p.parent) else Path("."), what, p)
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"cannot write {what} {str(p)!r}: the file is not writable")
    return p


def output_dir(path: str | Path, what: str) -> Path:
    """`path` as a directory that exists (made if needed) and can be written."""
    p = Path(path)
    _creatable_dir(p, what, p)
    return p


def write_text(path: Path, text: str, what: str) -> None:
    """Write a text file, turning OS errors into OutputError."""
    try:
        Path(path).write_text(text)
    except OSError as e:
        raise OutputError(f"cannot write {what} {str(path)!r}: {e.strerror}") from None
