"""effnet's C kernels: compiled once per machine from the source shipped in this package, then loaded with ctypes.

A kernel is a plain C file with no Python or torch headers, so building it takes a fraction of a second with the
system's C compiler (`$CC`, else `cc`).  It is built with `-march=native` for the CPU it runs on (`$EFFNET_MARCH`
names another, e.g. `haswell` to measure the AVX2 code on an AVX-512 CPU) and kept in effnet's
cache folder under a name that hashes the source, the compiler and the CPU's feature flags: a different CPU (or a
changed kernel) builds its own copy, and a build is written under a temporary name and renamed into place, so two
processes building at once each load a whole library.  Without a working compiler the caller falls back to ATen's
kernel; `build_problem()` says why.

Threads: a kernel that splits its work (`over_chunks`, `over_channels`) is called once with the number of threads
to use, and splits it itself on OpenMP's threads (`parallel.h`).  Built with `-fopenmp`, the library runs on the
process's libgomp, torch's own, so the kernels share the threads of torch's operators instead of a second pool
competing with them for the cores (a Python thread pool did that, and made two threads slower than one on a
2-core machine); a compiler without OpenMP builds the same kernels serial.
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
from functools import cache
from pathlib import Path

import torch

from effnet.cpu import cpu_flag_list
from effnet.files import cache_dir

SOURCE_DIR = Path(__file__).parent
MARCH_ENV = "EFFNET_MARCH"  # e.g. "haswell": build for another ISA than this CPU's (to measure AVX2 on an AVX-512 CPU)
FLAGS = ("-O3", "-ffp-contract=fast", "-shared", "-fPIC", "-std=c99", "-fopenmp")  # contract: fused multiply-adds
OPENMP_FLAG = "-fopenmp"  # dropped when the compiler has no OpenMP: the same kernels, serial
HEADERS = ("parallel.h",)  # included by the kernels: part of every build's identity
_problems: dict[str, str] = {}


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CC", "") or "cc") or shutil.which("gcc") or shutil.which("clang")


@cache
def _compiler_version(compiler: str) -> str:
    return subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout


def _library_path(name: str, compiler: str) -> Path:
    """Where the build of `name` for this source, compiler, CPU and flags is kept."""
    source = b"".join((SOURCE_DIR / f).read_bytes() for f in (f"{name}.c", *HEADERS))
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
        if done.returncode != 0:  # no OpenMP here (e.g. clang without libomp): the same kernels, serial
            done = subprocess.run([c for c in command if c != OPENMP_FLAG], capture_output=True, text=True, timeout=300)
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
        lib = ctypes.CDLL(str(target))
        if not _same_openmp_as_torch(lib):  # a second pool of threads would fight torch's for the cores
            _serial.add(name)
        return lib
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


GRAIN = 65536  # elements a thread should get at least: below that, handing work to a thread costs more than it saves
_serial: set[str] = set()  # libraries whose OpenMP runtime is not torch's: then every kernel runs on one thread


def _same_openmp_as_torch(lib: ctypes.CDLL) -> bool:
    """Whether `lib` runs its parallel regions on torch's OpenMP runtime (its GOMP_parallel is the one torch's
    libtorch_cpu resolves: the same libgomp, loaded once), or has no OpenMP at all (built serial).  Another copy
    of libgomp in the process (scikit-learn ships its own, under another name) does not matter."""
    try:
        ours = ctypes.cast(lib.GOMP_parallel, ctypes.c_void_p).value
    except AttributeError:
        return True  # built without OpenMP: its kernels run their ranges one after another
    try:
        torch_cpu = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
        return ours == ctypes.cast(torch_cpu.GOMP_parallel, ctypes.c_void_p).value
    except (OSError, AttributeError):  # another layout, or torch without libgomp: keep to one thread
        return False


def _threads(units: int, elements: int) -> int:
    """Threads for `units` of work holding `elements` together: torch's thread count, at most one thread per unit
    and per `GRAIN` elements; one where a kernel library runs another OpenMP runtime than torch's."""
    if _serial:
        return 1
    return max(1, min(torch.get_num_threads(), units, elements // GRAIN))


def _run(call: Callable[[int, int, int], int], end: int, threads: int, failure: str) -> None:
    if call(0, end, threads):
        raise RuntimeError(failure)


def over_chunks(chunks: int, call: Callable[[int, int, int], int], what: str, chunk_elements: int = GRAIN) -> None:
    """Run `call(0, chunks, threads)` (a kernel entry that returns 0 on success and splits the chunks [0, chunks)
    into `threads` contiguous ranges itself, `parallel.h`), each thread getting at least `GRAIN` elements (a chunk
    holds `chunk_elements`).  A kernel writes each chunk's sums to the chunk's own slot, so its result never depends
    on the split."""
    _run(call, chunks, _threads(chunks, chunks * chunk_elements), f"effnet's {what} kernel failed ({chunks} chunks)")


def over_channels(channels: int, call: Callable[[int, int, int], int], what: str,
                  channel_elements: int = GRAIN) -> None:
    """Run `call(0, channels, threads)` (a kernel entry that returns 0 on success and splits the channels itself in
    multiples of 16, `parallel.h`), each thread getting at least `GRAIN` elements (a channel holds
    `channel_elements`).  A kernel's sums per channel never depend on the split, so neither does its result."""
    threads = _threads(math.ceil(channels / 16), channels * channel_elements)
    _run(call, channels, threads, f"effnet's {what} kernel failed ({channels} channels)")


def build_problem(name: str) -> str | None:
    """Why `load(name)` returned None, or None if it did not (or was not called)."""
    return _problems.get(name)


__all__ = ["build_problem", "entry", "load", "over_channels", "over_chunks"]
