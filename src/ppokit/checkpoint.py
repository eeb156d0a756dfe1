"""Checkpoints: written atomically (temp file + rename), loaded with clear errors."""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppokit.errors import CheckpointError, OutputError

FORMAT = "ppokit-checkpoint"
VERSION = 1
LATEST = "latest.pt"


def save_atomic(obj: Any, path: Path, also: Path | None = None) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename over `path`.

    A kill at any moment leaves either the old file or the new one, never a truncated one.
    `also` gets the same checkpoint (a hard link to the one write, a copy where the filesystem
    has no links) and is renamed into place *before* `path`: `also` is latest.pt, so a kill
    between the two renames leaves latest.pt the newer one, never unused. A failed write (a full
    disk, a read-only folder) is an OutputError naming the path and the free space; the files
    written before stay untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e) from None
    tmp = _temp_name(path)
    tmp_also = _temp_name(also) if also is not None else None
    try:
        # Not tempfile.mkstemp: its files are mode 0600, which the rename would give the
        # checkpoint. os.open with 0o666 lets the umask decide, as a plain torch.save would.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        if also is not None:
            try:
                os.link(tmp, tmp_also)
            except OSError:  # no hard links here: a second write
                shutil.copyfile(tmp, tmp_also)
            os.replace(tmp_also, also)
        os.replace(tmp, path)
    except BaseException as e:
        for t in (tmp, tmp_also):
            if t is not None:
                Path(t).unlink(missing_ok=True)
        # torch.save reports a full disk as RuntimeError("[enforce fail at inline_container...").
        if isinstance(e, (OSError, RuntimeError)):
            raise _write_error(path, e) from None
        raise


def _temp_name(path: Path) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"


def _write_error(path: Path, e: BaseException) -> OutputError:
    """One line: which file could not be written, why, and how much room its disk has left."""
    from ppokit.outputs import free_space

    reason = getattr(e, "strerror", None) or str(e).splitlines()[0][:120]
    if isinstance(e, RuntimeError) and "enforce fail" in str(e):
        reason = "the write failed (disk full?)"
    return OutputError(
        f"cannot write checkpoint {str(path)!r}: {reason} ({free_space(path.parent)}); the"
        " checkpoints written before it are intact"
    )


def training_state(cfg: Any, ppo: Any, global_step: int, episodes: Any) -> dict:
    """Everything a resumed run needs, in the layout `load_checkpoint` reads.

    `cfg` is the resolved TrainConfig, `ppo` the PPO algorithm (model, optimizer, schedule,
    reward scaler, counters), `episodes` the EpisodeTracker.
    """
    from ppokit.config import to_dict

    model = ppo.model
    return {
        "format": FORMAT,
        "version": VERSION,
        "config": to_dict(cfg),
        "ppo": ppo.state_dict(),
        "global_step": global_step,
        "episodes": episodes.state_dict(),
        "rng": rng_state(),
        "spaces": {
            "observation": repr(model.observation_space),
            "action": repr(model.action_space),
        },
    }


def resolve_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """A checkpoint file, or a run directory's checkpoint `which`: latest (checkpoints/latest.pt),
    best (checkpoints/best.pt, kept by eval.every) or update_N."""
    p = Path(path)
    name = f"{which.removesuffix('.pt')}.pt"
    if p.is_dir():
        for candidate in (p / "checkpoints" / name, p / name):
            if candidate.is_file():
                return candidate
        if which == "best":
            hint = "best.pt is kept by evaluations during training (--eval.every N)"
        else:
            hint = "train it first or pass a checkpoint file"
        present = sorted(f.stem for f in (p / "checkpoints").glob("*.pt"))
        listing = f" (it has: {', '.join(present)})" if present else ""
        raise CheckpointError(
            f"{str(p)!r} has no checkpoint {which!r} (looked for checkpoints/{name}){listing};"
            f" {hint}"
        )
    if not p.exists():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    if which != "latest":
        raise CheckpointError(
            f"--checkpoint {which} picks a checkpoint of a run directory; {str(p)!r} is a file"
        )
    return p


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load and sanity-check a ppokit checkpoint (file or run directory)."""
    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location=map_location, weights_only=False)
    except Exception as e:  # torch raises many types for truncated/garbage files
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or not a torch file ({type(e).__name__}); use another"
            " checkpoint of the run (checkpoints/update_*.pt)"
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(p)!r} is not a ppokit checkpoint")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(
            f"{str(p)!r} was written by a newer ppokit (format {state['version']})"
        )
    state["path"] = str(p)
    return state


def rng_state() -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
