"""effnet's C kernels: compiled once per machine from the source shipped in this package, then loaded with ctypes.

A kernel is a plain C file with no Python or torch headers, so building it takes a fraction of a second with the
system's C compiler (`$CC`, else `cc`).  It is built with `-march=native` for the CPU it runs on (`$EFFNET_MARCH`
names another, e.g. `haswell` to measure the AVX2 code on an AVX-512 CPU) and kept in effnet's
cache folder under a name that hashes the source, the compiler and the CPU's feature flags: a different CPU (or a
changed kernel) builds its own copy, and a build is written under a temporary name and renamed into place, so two
processes building at once each load a whole library.  Without a working compiler the caller falls back to ATen's
kernel; `build_problem()` says why.
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import torch

from effnet.cpu import cpu_flag_list
from effnet.files import cache_dir

SOURCE_DIR = Path(__file__).parent
MARCH_ENV = "EFFNET_MARCH"  # e.g. "haswell": build for another ISA than this CPU's (to measure AVX2 on an AVX-512 CPU)
FLAGS = ("-O3", "-ffp-contract=fast", "-shared", "-fPIC", "-std=c99")  # contract: fused multiply-adds
_problems: dict[str, str] = {}


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "") or "cc") or shutil.which("gcc") or shutil.which("clang")


@cache
def _compiler_version(compiler: str) -> str:
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout


def _library_path(name: str, compiler: str) -> Path:
    """Where the build of `name` for this source, compiler, CPU and flags is kept."""
    source = (SOURCE_DIR / f"{name}.c").read_bytes()
    cpu = " ".join(cpu_flag_list()) or platform.machine() + platform.processor()
    key = hashlib.sha256(source + _compiler_version(compiler).encode() + cpu.encode()
                         + " ".join(_flags()).encode()).hexdigest()
    return cache_dir() / "kernels" / f"{name}-{key[:16]}.so"


def _flags() -> tuple[str, ...]:
    return (f"-march={os.environ.get(MARCH_ENV) or 'native'}", *FLAGS)


def _build(name: str, compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        command = [compiler, *_flags(), "-o", tmp, str(SOURCE_DIR / f"{name}.c"), "-lm"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            last = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else f"exit {done.returncode}"
            raise OSError(f"{compiler} failed: {last}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@cache
def load(name: str) -> ctypes.CDLL | None:
    """The compiled kernel library `name` (`ops/NAME.c`), built on first use; None if it cannot be built here."""
    compiler = _compiler()
    if compiler is None:
        _problems[name] = "no C compiler found (set CC, or install gcc)"
        return None
    try:
        target = _library_path(name, compiler)
        if not target.exists():
            _build(name, compiler, target)
        return ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as e:
        _problems[name] = f"building {name}.c: {e}"
        return None


@cache
def entry(name: str, function: str, pointers: int, longs: int, doubles: int = 0) -> Callable[..., int] | None:
    """`function` of the kernel library `name`, declared as the C signature every effnet kernel has (`pointers`
    pointers, then `longs` longs, then `doubles` doubles; it returns an int, 0 for success), or None where the
    library cannot be built."""
    lib = load(name)
    if lib is None:
        return None
    f = getattr(lib, function)
    f.argtypes = [ctypes.c_void_p] * pointers + [ctypes.c_long] * longs + [ctypes.c_double] * doubles
    f.restype = ctypes.c_int
    return f


@cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="effnet-kernel")


GRAIN = 65536  # elements a thread should get at least: below that, handing work to a thread costs more than it saves


def _thread_edges(units: int, elements: int) -> list[int]:
    """`units` cut into contiguous ranges, one per thread: torch's thread count, at most one thread per unit and
    per `GRAIN` of the `elements` they hold together."""
    threads = max(1, min(torch.get_num_threads(), units, elements // GRAIN))
    return [units * t // threads for t in range(threads + 1)]


def _run(edges: list[int], call: Callable[[int, int], int], failure: str) -> None:
    """`call(edges[t], edges[t + 1])` for every range, on the pool's threads when there is more than one."""
    threads = len(edges) - 1
    codes = [call(edges[0], edges[1])] if threads == 1 else list(
        _pool(threads).map(lambda t: call(edges[t], edges[t + 1]), range(threads)))
    if any(codes):
        raise RuntimeError(failure)


def over_channels(channels: int, call: Callable[[int, int], int], what: str, channel_elements: int = GRAIN) -> None:
    """Run `call(c_begin, c_end)` (a kernel entry that returns 0 on success) over the channel range split between
    torch's threads in multiples of 16 channels, each thread getting at least `GRAIN` elements (a channel holds
    `channel_elements`); ctypes releases the GIL, so the threads run in parallel.  A kernel's sums per channel
    never depend on the split, so neither does its result."""
    blocks = math.ceil(channels / 16)
    edges = [min(channels, 16 * e) for e in _thread_edges(blocks, channels * channel_elements)]
    _run(edges, call, f"effnet's {what} kernel failed ({channels} channels)")


def over_chunks(chunks: int, call: Callable[[int, int], int], what: str, chunk_elements: int = GRAIN) -> None:
    """Run `call(k_begin, k_end)` (a kernel entry that returns 0 on success) over the chunks [0, chunks) split
    into contiguous ranges between torch's threads, each thread getting at least `GRAIN` elements (a chunk holds
    `chunk_elements`).  A kernel writes each chunk's sums to the chunk's own slot, so its result never depends on
    the split."""
    _run(_thread_edges(chunks, chunks * chunk_elements), call, f"effnet's {what} kernel failed ({chunks} chunks)")


def build_problem(name: str) -> str | None:
    """Why `load(name)` returned None, or None if it did not (or was not called)."""
    return _problems.get(name)


__all__ = ["build_problem", "entry", "load", "over_channels", "over_chunks"]
