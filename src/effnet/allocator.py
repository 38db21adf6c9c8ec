"""How an effnet process's C allocator treats freed memory: keep it, instead of handing it back to the kernel.

Why: a training step on a CPU allocates and frees the same activation-sized blocks every step.  glibc's malloc
serves blocks above its mmap threshold (128 KB, raised as blocks are freed, at most 32 MB) with fresh `mmap`
pages and returns them with `munmap` on free, and trims the top of its heap when enough of it is free; so every
step faults the same memory in again, one 4 KB page at a time.  `benchmarks/train_process.py` measures the
step with and without this setting, each in a process of its own (docs/RESULTS.md "Training speed"): on one
thread of a Xeon, 1,300 page faults a step for the experiments' baseline and 185,000–266,000 (a quarter of the
step in the kernel) for its 62 px model and for EfficientNet-B0 at 224 px, batch 16, which then train 1.35×
faster.

What: `keep_freed_memory()` sets glibc's `M_MMAP_MAX` to 0 (blocks come from the heap, not from mmaps of their own;
a worker thread's arena still maps blocks over 64 MB) and `M_TRIM_THRESHOLD` to its largest value, 2 GiB (the heap
is not trimmed below that), so freed blocks are reused at once.  The cost is memory: the heap keeps its peak and
fragments, so a process's resident peak is higher (measured in docs/RESULTS.md "Training speed").  Every `effnet`
command and every training run (`effnet.train`) calls it; `EFFNET_KEEP_FREED_MEMORY=0` turns it off.  Elsewhere
than glibc on Linux it does nothing.  Large-batch inference gains most (B0 at 224 px on 2 threads: 2.24× the
images/s at batch 32, 1.13× at batch 1; docs/RESULTS.md "Speed and memory").

A leaf: it imports nothing from effnet but its error class.
"""

from __future__ import annotations

import ctypes
import os
import platform

from effnet.errors import EffnetError

ENV = "EFFNET_KEEP_FREED_MEMORY"  # "0" leaves the allocator as it is
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_MAX = -4
LARGEST_INT = 2**31 - 1
_outcome: str | None = None  # None until keep_freed_memory() ran; then "" (set) or why it was not


def _mallopt_or_reason():
    """glibc's mallopt, or why it is not used here (a string).  Raises EffnetError for a value of `ENV` other than
    0 or 1."""
    value = os.environ.get(ENV, "").strip()
    if value not in ("", "0", "1"):
        raise EffnetError(f"{ENV}: got {value!r}, expected 0 (leave the allocator as it is) or 1 (keep freed memory)")
    if value == "0":
        return f"{ENV}=0"
    if platform.system() != "Linux":
        return f"not Linux ({platform.system()})"
    try:
        libc = ctypes.CDLL(None)  # the C library this process already runs on
        libc.gnu_get_libc_version  # noqa: B018  (only glibc has it; musl's mallopt does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "not glibc"
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt


def keep_freed_memory() -> str | None:
    """Make glibc's malloc keep freed memory for reuse (see the module's docstring).  Returns None when set, else
    why not (turned off by the environment, not Linux with glibc, or mallopt refused); EffnetError for a value of
    `ENV` other than 0 or 1."""
    global _outcome
    mallopt = _mallopt_or_reason()
    if isinstance(mallopt, str):
        reason = mallopt
    elif mallopt(M_MMAP_MAX, 0) != 1 or mallopt(M_TRIM_THRESHOLD, LARGEST_INT) != 1:
        reason = "glibc's mallopt refused the settings"
    else:
        reason = ""
    _outcome = reason
    return reason or None


def kept() -> bool:
    """Whether `keep_freed_memory` set this process's allocator."""
    return _outcome == ""


def state() -> str:
    """This process's allocator, for a benchmark's report: whether `keep_freed_memory` set it."""
    return "glibc keeps freed memory" if kept() else "the C library's default"


def describe() -> str:
    """What a training run does with its allocator here, in one line (nothing is changed): what happened when
    `keep_freed_memory` already ran in this process, else what it will do."""
    reason = _outcome if _outcome is not None else _mallopt_or_reason()
    if isinstance(reason, str) and reason:
        return f"as the C library has it ({reason})"
    return f"glibc's malloc keeps freed memory for reuse ({ENV}=0 turns it off)"


__all__ = ["ENV", "describe", "keep_freed_memory", "kept", "state"]
