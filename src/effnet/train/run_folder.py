"""A run folder holds one run, whole: who may write it, what it records, and which checkpoint to trust.

- **One run per folder.**  A folder is *occupied* once it holds `config.json`, `metrics.jsonl` or `checkpoints/`.
  A new run refuses it unless told to resume it or to overwrite it; overwriting removes only files effnet wrote.
- **One process per folder.**  `run.lock` carries a POSIX record lock (`fcntl.lockf`) of the training process.
  The kernel drops it when that process dies, however it dies, so a resume right after `kill -9` is never refused;
  record locks are not inherited by forked children, so DataLoader workers never hold it.
- **The run record** (`run.json`) says what the run is (the settings a resume must match, seed, total steps,
  versions) and where it stands (steps done, best validation top-1, state), kept current by the trainer; it is
  what `effnet runs` lists.
- **Past a damaged checkpoint.**  Step checkpoints are tried newest first; one that does not load with the safe
  loader, or whose step or settings are not this run's, is renamed `*.damaged` (pruning then never keeps it in place
  of a good one) and named in a warning; `best.pt` is never a resume source (`checkpoint.good_checkpoint`).

Like Orbax's `CheckpointManager` and PyTorch's distributed checkpointing, nothing that was not committed in full
is read back: the checkpoint files themselves are written atomically (`effnet.train.checkpoint`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from effnet.errors import EffnetError
from effnet.files import atomic_write_text
from effnet.train import checkpoint as ckpt

RECORD = "run.json"
LOCK = "run.lock"
OCCUPYING = ("config.json", "metrics.jsonl", "checkpoints")
# Everything effnet writes into a run folder; `record.json` is the experiment runner's record of a finished run.
WRITTEN = frozenset({RECORD, LOCK, "config.json", "recipe.txt", "metrics.jsonl", "steps.jsonl", "test.json",
                     "record.json", "curves.png"})
_WRITTEN_PREFIXES = ("events.out.tfevents.", ckpt.TMP_PREFIX)
STATES = ("running", "finished", "interrupted", "diverged")

_held: dict[Path, int] = {}  # folders this process has locked -> the lock file's descriptor


class RunFolderError(EffnetError):
    """A run folder cannot be used as asked (occupied, locked, holding files effnet did not write, not writable)."""


# -- one run per folder -----------------------------------------------------------------------------------------------


def is_occupied(folder: str | Path) -> bool:
    folder = Path(folder)
    return any((folder / name).exists() for name in OCCUPYING)


def refuse_if_occupied(folder: str | Path) -> None:
    """A new run (neither resume nor overwrite) into a folder that holds another run: one line, the choices."""
    folder = Path(folder)
    if is_occupied(folder):
        steps = ckpt.step_checkpoints(folder)
        what = f"a run with checkpoints up to step {steps[-1][0]}" if steps else "another run's files"
        raise RunFolderError(f"{folder}: holds {what}; use --resume to continue it, another --out, or --overwrite "
                             "to remove it first")


def _written_by_effnet(path: Path) -> bool:
    return path.name in WRITTEN or path.name.startswith(_WRITTEN_PREFIXES)


def _written_checkpoint(path: Path) -> bool:
    name = path.name
    return (ckpt.is_step_file(name) or name == "best.pt" or name.endswith(ckpt.DAMAGED_SUFFIX)
            or name.startswith(ckpt.TMP_PREFIX))


def overwrite(folder: str | Path) -> list[Path]:
    """Remove the files effnet wrote in `folder` (the lock file of this process stays); refuse while another
    process holds the folder or when it holds anything else (a user's file is never deleted)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    holder = None if folder.resolve() in _held else lock_holder(folder)
    if holder is not None:
        raise RunFolderError(f"{folder}: in use by {holder}; --overwrite waits until that run has ended")
    foreign = [p for p in folder.iterdir() if not (_written_by_effnet(p) or p.name == "checkpoints")]
    cdir = ckpt.checkpoint_dir(folder)
    if cdir.is_dir():
        foreign += [p for p in cdir.iterdir() if not _written_checkpoint(p)]
    elif cdir.exists():
        foreign.append(cdir)
    if foreign:
        names = ", ".join(str(p.relative_to(folder)) for p in sorted(foreign)[:3])
        raise RunFolderError(f"{folder}: holds files effnet did not write ({names}{', ...' if len(foreign) > 3 else ''}"
                             "); --overwrite removes only effnet's own files: move them, or use another --out")
    removed = []
    if cdir.is_dir():
        shutil.rmtree(cdir)
        removed.append(cdir)
    for p in folder.iterdir():
        if p.name != LOCK:
            p.unlink()
            removed.append(p)
    return removed


# -- one process per folder -------------------------------------------------------------------------------------------


def _holder_text(text: str) -> str:
    info = dict(part.split("=", 1) for part in text.split() if "=" in part)
    return f"pid {info.get('pid', '?')} on {info.get('host', '?')}"


def lock_holder(folder: str | Path) -> str | None:
    """'pid N on HOST' of the process holding `folder`'s lock (this process included), or None when it is free."""
    folder = Path(folder)
    if folder.resolve() in _held:
        return f"pid {os.getpid()} on {socket.gethostname()} (this process)"
    path = folder / LOCK
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EAGAIN):
                raise
            return _holder_text(os.pread(fd, 4096, 0).decode(errors="replace"))
        return None
    finally:
        os.close(fd)  # no lock of this process lives on this file (checked above), so closing releases nothing


def acquire(folder: str | Path) -> Path:
    """Lock `folder` for this process until `release` (or until the process dies); one line if another holds it."""
    folder = Path(folder)
    key = folder.resolve() if folder.exists() else folder.absolute()
    if key in _held:
        raise RunFolderError(f"{folder}: already in use by a run of this process (pid {os.getpid()})")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise RunFolderError(f"{folder}: cannot create the run's lock file ({exc.strerror or exc})") from None
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _holder_text(os.pread(fd, 4096, 0).decode(errors="replace"))
        os.close(fd)
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise RunFolderError(f"{folder}: cannot lock {LOCK} ({exc.strerror or exc})") from None
        raise RunFolderError(f"{folder}: in use by {holder} (a run is training there); wait for it to end, or "
                             "use another --out") from None
    text = f"pid={os.getpid()} host={socket.gethostname()} since={now()}\n".encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, text, 0)
    _held[folder.resolve()] = fd
    return folder


def release(folder: str | Path) -> None:
    fd = _held.pop(Path(folder).resolve(), None)
    if fd is not None:
        os.close(fd)  # closing the descriptor drops the record lock


@dataclass(frozen=True)
class FolderBefore:
    """A run folder as a claim found it, so that `abandon` can put it back: the names it held and its times, or
    (when it did not exist) the outermost folder the claim would create."""

    names: frozenset[str] | None
    times: tuple[int, int] | None
    created: Path | None

    @classmethod
    def of(cls, folder: str | Path) -> FolderBefore:
        folder = Path(folder)
        if folder.is_dir():
            st = folder.stat()
            return cls(frozenset(os.listdir(folder)), (st.st_atime_ns, st.st_mtime_ns), None)
        created = folder.absolute()
        while not created.parent.exists():
            created = created.parent
        return cls(None, None, created)


def abandon(folder: str | Path, before: FolderBefore) -> None:
    """Undo the claim of a run that never started (its set-up failed on bad input), so that a failed command
    leaves the folder as it was `before`: the files effnet wrote there since are removed (files that were there
    stay, whoever wrote them), the lock file while still held, then the folders the claim created when they are
    empty again, or else the folder's times are put back."""
    folder = Path(folder)
    old = before.names or frozenset()
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name not in old and p.name != LOCK and p.is_file() and _written_by_effnet(p):
                p.unlink()
        if LOCK not in old:
            (folder / LOCK).unlink(missing_ok=True)
    release(folder)
    with contextlib.suppress(OSError):
        if before.times is not None:
            os.utime(folder, ns=before.times)
            return
        here = folder.absolute()
        while True:  # only empty folders go, from the run folder up to the outermost one the claim created
            here.rmdir()
            if before.created is None or here == before.created:
                break
            here = here.parent


# -- the run record ---------------------------------------------------------------------------------------------------


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _plain(value: Any) -> Any:
    """As JSON would give it back (tuples as lists), so a record and a live config compare equal."""
    return json.loads(json.dumps(value))


def settings_of(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return _plain({k: config[k] for k in keys if k in config})


def setting_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """'key: old -> new' for each setting in both that differs."""
    saved, now = _plain(saved), _plain(now)
    return [f"{k}: {saved[k]!r} -> {now[k]!r}" for k in saved if k in now and saved[k] != now[k]]


def read_record(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / RECORD
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        warnings.warn(f"{path}: unreadable run record ({exc}); using config.json", stacklevel=2)
        return None
    if not isinstance(record, dict) or not isinstance(record.get("state"), str):
        warnings.warn(f"{path}: not a run record (expected an object with a \"state\"); using config.json",
                      stacklevel=2)
        return None
    return record


def run_settings(folder: str | Path, keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The settings the folder's run was started with: its run record's, else the config.json of a folder written
    before run records existed; None for a folder that records neither."""
    folder = Path(folder)
    record = read_record(folder)
    if record is not None and isinstance(record.get("settings"), dict):
        return record["settings"]
    try:
        return settings_of(json.loads((folder / "config.json").read_text()), keys)
    except (OSError, ValueError):
        return None


def write_record(folder: str | Path, record: dict[str, Any]) -> None:
    atomic_write_text(json.dumps(record, indent=2) + "\n", Path(folder) / RECORD)


def new_record(*, model: str, data: str, settings: dict[str, Any], seed: int, total_steps: int,
               previous: dict[str, Any] | None) -> dict[str, Any]:
    """A run's record as it starts (a resumed run keeps its start time and counts its resumes)."""
    import torch

    from effnet._version import __version__

    record = {"format": "effnet-run/1", "model": model, "data": data, "settings": settings, "seed": seed,
              "total_steps": total_steps, "steps_done": 0, "best_val_top1": None, "state": "running",
              "started": now(), "resumes": 0}
    if previous:
        record.update({k: previous[k] for k in ("started", "steps_done", "best_val_top1") if k in previous})
        record["resumes"] = int(previous.get("resumes", 0)) + 1
    record.update(updated=now(), pid=os.getpid(), host=socket.gethostname(), effnet=__version__,
                  torch=torch.__version__)
    return record


# -- which checkpoint to trust ----------------------------------------------------------------------------------------


def choose_checkpoint(folder: str | Path, keys: tuple[str, ...], *, rename: bool) -> dict[str, Any] | None:
    """The newest good step checkpoint of the run in `folder` (None when it has none at all).

    Good: loads with the safe loader, holds the step its name says, and was written with the run's settings (run
    record, else config.json).  `rename` moves each bad one aside as `*.damaged` (training does; `effnet eval`
    only skips).  With no good one left: one line naming the folder."""
    folder = Path(folder)
    expected = run_settings(folder, keys)

    def accept(state: dict[str, Any]) -> str | None:
        if expected is None:
            return None
        theirs, ours = settings_of(state.get("config", {}), keys), _plain(expected)
        diff = [f"{k} {theirs[k]!r} vs this run's {ours[k]!r}" for k in theirs if k in ours and theirs[k] != ours[k]]
        return f"written by another run ({', '.join(diff)})" if diff else None

    def reject(path: Path, reason: str) -> None:
        if rename:
            aside = path.with_name(path.name + ckpt.DAMAGED_SUFFIX)
            os.replace(path, aside)
            warnings.warn(f"{path}: {reason}; renamed to {aside.name}, trying the previous checkpoint", stacklevel=3)
        else:
            warnings.warn(f"{path}: {reason}; skipped, trying the previous checkpoint", stacklevel=3)

    return ckpt.good_checkpoint(folder, accept=accept, reject=reject)


def repair_jsonl(path: Path, step: int) -> None:
    """Keep the lines of steps up to `step` (a resumed run writes the rest again) and drop a torn line (a kill in
    mid-write leaves the last line cut short), so the file matches an unbroken run."""
    if not path.is_file():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step", 0) <= step:
            keep.append(line)
    atomic_write_text("".join(ln + "\n" for ln in keep), path)


# -- `effnet runs` ----------------------------------------------------------------------------------------------------


def _last_json_line(path: Path) -> dict[str, Any] | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def describe(folder: str | Path) -> dict[str, Any]:
    """One row of `effnet runs`: model, data, steps done / total, best validation top-1, state.

    A record saying `running` whose folder nobody holds is `interrupted` (its process died: kill -9, power loss).
    A folder written before run records existed is described from config.json and metrics.jsonl."""
    folder = Path(folder)
    record = read_record(folder)
    holder = lock_holder(folder)
    if record is not None:
        row = {"run": str(folder), "model": record.get("model"), "data": record.get("data"),
               "steps_done": record.get("steps_done"), "total_steps": record.get("total_steps"),
               "best_val_top1": record.get("best_val_top1"), "state": record.get("state")}
        if row["state"] == "running" and holder is None:
            row["state"] = "interrupted"
        if row["state"] == "running":
            row["eta_s"] = _time_left(folder, record)
    else:
        config = {}
        try:
            config = json.loads((folder / "config.json").read_text())
        except (OSError, ValueError):
            pass
        if not isinstance(config, dict):
            config = {}
        model = config.get("model")
        last = _last_json_line(folder / "metrics.jsonl") or {}
        steps = ckpt.step_checkpoints(folder)
        done = max([last.get("step", 0)] + [s for s, _ in steps[-1:]])
        finished = (folder / "test.json").is_file() or (folder / "record.json").is_file()
        row = {"run": str(folder), "model": model.get("name") if isinstance(model, dict) else model,
               "data": config.get("data"), "steps_done": done, "total_steps": config.get("steps"),
               "best_val_top1": None, "state": "finished" if finished else ("running" if holder else "unknown")}
    row["holder"] = holder
    row.setdefault("eta_s", None)
    return row


def _time_left(folder: Path, record: dict[str, Any]) -> float | None:
    """Seconds of training a running run has left: its steps to go at the rate of its current epoch (steps.jsonl;
    validation passes not counted), or None before its first logged step."""
    last = _last_json_line(folder / "steps.jsonl") or {}
    batch = (record.get("settings") or {}).get("batch_size")
    total, rate = record.get("total_steps"), last.get("img_per_s")
    if not (batch and total and rate and "step" in last):
        return None
    return max(total - max(last["step"], record.get("steps_done") or 0), 0) * batch / rate


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Each path that is a run folder, else the run folders directly inside it (`effnet runs runs/`)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise RunFolderError(f"{p}: not a folder; expected a run folder or a folder of run folders")
        if (p / RECORD).is_file() or is_occupied(p):
            found.append(p)
            continue
        inner = sorted(d for d in p.iterdir() if d.is_dir() and ((d / RECORD).is_file() or is_occupied(d)))
        if not inner:
            raise RunFolderError(f"{p}: no run folder here (none holds {RECORD}, config.json or checkpoints/)")
        found += inner
    return _unique(found)


def _unique(paths: list[Path]) -> list[Path]:
    """`paths` without a folder named twice (`effnet runs runs runs/a`), in their first order."""
    first: dict[Path, Path] = {}
    for p in paths:
        first.setdefault(p.resolve(), p)
    return list(first.values())
