"""Crash-safe checkpoints: written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
the target (`os.replace` is atomic on POSIX), and the folder fsync'ed.  A kill at any instant leaves either the old
file or the new one, never a truncated one; stray temporaries from a killed write are removed on the next start.

Layout: `RUN_DIR/checkpoints/step-0000123.pt` (the last k kept) and `RUN_DIR/checkpoints/best.pt`; a step
checkpoint found damaged on resume is renamed `step-0000123.pt.damaged` (no longer a step checkpoint, so pruning
never keeps it in place of a good one).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from effnet.errors import EffnetError

_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
TMP_PREFIX = _TMP_PREFIX = ".tmp-"
DAMAGED_SUFFIX = ".damaged"


class CheckpointError(EffnetError):
    """A checkpoint is missing or unreadable."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(text: str, path: str | Path) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=_TMP_PREFIX + path.name + ".", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temporaries(folder: str | Path) -> int:
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = [p for p in folder.iterdir() if p.name.startswith(_TMP_PREFIX)]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def is_step_file(name: str) -> bool:
    return _STEP_FILE.match(name) is not None


def step_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the periodic checkpoints, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _STEP_FILE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def save_step_checkpoint(run_dir: str | Path, state: dict[str, Any], step: int, keep_last: int) -> Path:
    path = checkpoint_dir(run_dir) / f"step-{step:07d}.pt"
    atomic_save(state, path)
    for _, old in step_checkpoints(run_dir)[: -max(1, keep_last)]:
        old.unlink(missing_ok=True)
    return path


def save_best(run_dir: str | Path, state: dict[str, Any]) -> Path:
    path = checkpoint_dir(run_dir) / "best.pt"
    atomic_save(state, path)
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = step_checkpoints(run_dir)
    return found[-1][1] if found else None


def good_checkpoint(run_dir: str | Path, *, accept: Callable[[dict[str, Any]], str | None] | None = None,
                    reject: Callable[[Path, str], None] | None = None) -> dict[str, Any] | None:
    """The newest step checkpoint that loads with the safe loader, holds the step its name says, and that
    `accept(state)` finds no fault with (it returns the fault, or None).  Each bad one, newest first, goes to
    `reject(path, reason)` (default: a warning).  None when the folder has no step checkpoint; a CheckpointError
    naming the folder when none of them is good.  `best.pt` is never considered: it is not a point to resume from."""
    found = step_checkpoints(run_dir)
    bad: list[str] = []
    for step, path in reversed(found):
        try:
            state = load_checkpoint(path)
            fault = None if state.get("step") == step else f"records step {state.get('step')!r}, not {step}"
            fault = fault or (accept(state) if accept else None)
        except CheckpointError as exc:
            fault = str(exc).removeprefix(f"{path}: ")
        if fault is None:
            return state
        bad.append(path.name)
        if reject is not None:
            reject(path, fault)
        else:
            warnings.warn(f"{path}: {fault}; trying the previous checkpoint", stacklevel=2)
    if bad:
        raise CheckpointError(f"{checkpoint_dir(run_dir)}: no good checkpoint left ({len(bad)} damaged: "
                              f"{', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''}); start the run again with "
                              "--overwrite")
    return None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint file, or a run folder's newest good step checkpoint (`good_checkpoint`)."""
    path = Path(path)
    if path.is_dir():
        state = good_checkpoint(path)
        if state is None:
            raise CheckpointError(f"{path}: no checkpoints/step-*.pt in this run folder; nothing to resume or evaluate")
        return state
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a damaged file
        if path.stat().st_size == 0:
            why = "empty file"
        elif isinstance(exc, pickle.UnpicklingError | KeyError | EOFError) or "zip archive" in str(exc):
            why = "not a PyTorch checkpoint, or cut short"
        else:
            why = f"{type(exc).__name__}: {exc}".rstrip(": ").splitlines()[0][:160]
        raise CheckpointError(f"{path}: unreadable checkpoint ({why})") from None
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise CheckpointError(f"{path}: not an effnet training checkpoint (no 'model'/'spec' entries)")
    state["path"] = str(path)
    return state
