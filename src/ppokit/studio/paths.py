"""File names from requests, resolved inside their folder or refused: `/view` and the userdata
routes cannot reach a file outside the folder they serve."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from urllib.parse import unquote


def inside(root: Path, *parts: str) -> Path | None:
    """`root/parts...` when it stays inside `root` (no absolute parts, no `..`, no symlink out);
    None otherwise. `parts` may be URL-encoded ("workflows%2Fa.json")."""
    rel = PurePosixPath()
    for part in parts:
        text = unquote(part or "").replace("\\", "/")
        if "\x00" in text:
            return None
        p = PurePosixPath(text)
        if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
            return None
        rel = rel / p
    base = root.resolve()
    path = (base / rel).resolve()
    if path != base and base not in path.parents:
        return None
    return path
