"""Crash-safe checkpoints: written to a temporary file in the same folder, flushed and fsync'ed, then renamed over
the target (`os.replace` is atomic on POSIX), and the folder fsync'ed.  A kill at any instant leaves either the old
file or the new one, never a truncated one; stray temporaries from a killed write are removed on the next start.

Layout: `RUN_DIR/checkpoints/step-0000123.pt` (the last k kept) and `RUN_DIR/checkpoints/best.pt`; a step
checkpoint found damaged on resume is renamed `step-0000123.pt.damaged` (no longer a step checkpoint, so pruning
never keeps it in place of a good one).

A step checkpoint holds everything a run continues from (`training_state`, `restore_training_state`): the model,
EMA and optimizer states, where the run stands (`PROGRESS_KEYS`) and the RNG states.
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effnet.errors import EffnetError
from effnet.files import TMP_PREFIX, atomic_write

_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")
DAMAGED_SUFFIX = ".damaged"


class CheckpointError(EffnetError):
    """A checkpoint is missing or unreadable."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def atomic_save(obj: Any, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: torch.save(obj, f), binary=True)
    _fsync_dir(path.parent)


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
    stale = [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
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
        elif (isinstance(exc, pickle.UnpicklingError | KeyError | EOFError) or "zip archive" in str(exc)
              or (isinstance(exc, OSError) and exc.errno == errno.EINVAL)):  # EINVAL: torch seeking past the end
            why = "not a PyTorch checkpoint, or cut short"
        else:
            why = f"{type(exc).__name__}: {exc}".rstrip(": ").splitlines()[0][:160]
        raise CheckpointError(f"{path}: unreadable checkpoint ({why})") from None
    if not isinstance(state, dict) or "model" not in state or "spec" not in state:
        raise CheckpointError(f"{path}: not an effnet training checkpoint (no 'model'/'spec' entries)")
    state["path"] = str(path)
    return state


# -- the training state a step checkpoint holds ----------------------------------------------------------------

FORMAT = "effnet-train/1"
PROGRESS_KEYS = ("step", "epoch_sums", "best", "best_step", "skipped_total", "history")
"""Where a run stands, besides its weights: the step, the epoch's running sums, the best validation score and its
step, the unreadable images skipped so far, and the per-epoch history."""


def rng_state() -> dict[str, Any]:
    """The global RNG states of torch, Python and NumPy, as tensors and lists (the safe loader reads them back).
    Every batch is a function of (seed, step), so a resume needs them only for anything outside the step."""
    version, python, gauss = random.getstate()
    kind, keys, *rest = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(python), "python_version": version,
            "python_gauss": gauss, "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), *rest]}


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
    n = rng["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))


def training_state(model, ema, optimizer, *, about: dict[str, Any], progress: dict[str, Any]) -> dict[str, Any]:
    """A step checkpoint: `about` the run (spec, classes, preprocess, config), its `progress` (`PROGRESS_KEYS`), the
    model's, EMA's and optimizer's states and the RNG states."""
    return {"format": FORMAT, **about, "step": progress["step"], "model": model.state_dict(),
            "ema": ema.state_dict() if ema else None, "optimizer": optimizer.state_dict(),
            **{k: progress[k] for k in PROGRESS_KEYS if k != "step"}, "rng": rng_state()}


def restore_training_state(state: dict[str, Any], model, ema, optimizer) -> dict[str, Any]:
    """Load a step checkpoint's states into `model`, `ema` and `optimizer`, restore the RNG states, and return its
    progress (`PROGRESS_KEYS`)."""
    model.load_state_dict(state["model"])
    if ema and state.get("ema"):
        ema.load_state_dict(state["ema"])
    optimizer.load_state_dict(state["optimizer"])
    restore_rng(state["rng"])
    return {"step": int(state["step"]), "epoch_sums": state["epoch_sums"].clone(), "best": float(state["best"]),
            "best_step": state.get("best_step"), "skipped_total": int(state["skipped_total"]),
            "history": list(state["history"])}


def best_weights(run_dir: str | Path | None, best_step: int | None, ema: bool) -> dict[str, torch.Tensor] | None:
    """The chosen module's weights (EMA's if `ema`) from the run folder's best.pt, after a resume.  A best.pt of
    another step than the resumed run's best (written after the checkpoint resumed from) is not used: the continued
    run, bit-identical, reaches that step again and chooses it again."""
    path = checkpoint_dir(run_dir) / "best.pt" if run_dir else None
    if path is None or not path.is_file():
        return None
    try:
        state = load_checkpoint(path)
    except CheckpointError as exc:
        warnings.warn(f"{exc}; the test split is evaluated only if a later epoch scores better", stacklevel=3)
        return None
    if state.get("step") != best_step:
        return None
    return state["ema"]["model"] if ema and state.get("ema") else state["model"]
