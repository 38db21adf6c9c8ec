"""Small file helpers shared across effnet, with no effnet imports of their own: whole-or-nothing text writes,
the folder where effnet keeps what it measures about this machine, and the check of an output file's place."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

CACHE_ENV = "XDG_CACHE_HOME"
TMP_PREFIX = ".tmp-"


def atomic_write(path: str | Path, write: Callable[[IO], object], *, binary: bool = False) -> None:
    """Call `write(f)` on a temporary file beside `path`, flush and fsync it, then rename it over `path`: a reader
    (or a crash) sees the old file or the new one, never half of one.  The temporary is removed on failure."""
    path = Path(path)
    mode = file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX + path.name + ".", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8") as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def file_mode(path: Path) -> int:
    """The permissions a plain `open(path, "w")` would leave: the file's own when it exists, else 0o666 less the
    umask (a temporary file is created 0o600, which would hide a written report or weights file from others)."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would, for a moment, in every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(text: str, path: str | Path) -> None:
    """`text` written to `path` whole or not at all (`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text))


def output_problem(path: str | Path, suffixes: tuple[str, ...] = ()) -> str | None:
    """Why `path` cannot take an output file, as the words that follow "PATH: " in an error line, or None when it
    can: it is a folder, its folder is missing or not a folder, its suffix is not one of `suffixes` (when given, lower
    case with the dot), or a file cannot be created there (tried: a file this creates is removed again).  Checked
    before any work, so a long job does not fail at its last step."""
    path = Path(path)
    if path.is_dir():
        example = path / ("out" + (suffixes[0] if suffixes else ""))
        return f"is a folder; expected a file name (e.g. {example})"
    if not path.parent.is_dir():
        what = "is not a folder" if path.parent.exists() else "does not exist"
        return f"the folder {path.parent} {what}; create it first or choose another path"
    if suffixes and path.suffix.lower() not in suffixes:
        got = f"suffix {path.suffix!r}" if path.suffix else "no suffix"
        expected = suffixes[0] if len(suffixes) == 1 else f"{', '.join(suffixes[:-1])} or {suffixes[-1]}"
        return f"got {got}, expected a {expected} file"
    existed = path.exists()
    try:
        with open(path, "ab"):
            pass
    except OSError as exc:
        return f"cannot write there ({exc.strerror}); choose a path in a folder you can write to"
    if not existed:
        path.unlink(missing_ok=True)
    return None


def checked_output(path: str | Path, error: type[Exception], suffixes: tuple[str, ...] = (),
                   name: str | None = None) -> Path:
    """`path` when an output file can be written there (`output_problem`); else `error` with one line that starts
    with `name` (default: the path), checked before any work."""
    problem = output_problem(path, suffixes)
    if problem is not None:
        raise error(f"{path if name is None else name}: {problem}")
    return Path(path)


def cache_dir() -> Path:
    """Where effnet keeps what it measures about this machine: `$XDG_CACHE_HOME/effnet`, else `~/.cache/effnet`
    (a relative XDG_CACHE_HOME is ignored, as the XDG spec says)."""
    base = os.environ.get(CACHE_ENV, "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "effnet"


__all__ = ["CACHE_ENV", "TMP_PREFIX", "atomic_write", "atomic_write_text", "cache_dir", "checked_output", "file_mode",
           "output_problem"]
