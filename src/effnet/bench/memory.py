"""Peak memory of one call: the resident high-water mark (what the OS sees), the live tensor bytes (what the step
needs) and the bytes autograd saves for backward; and a training step's peak in a process of its own.

"peak MB" is the rise in resident memory (VmHWM) during one call, after `malloc_trim` has returned freed memory to
the OS, so it includes freed memory the C allocator keeps; "tensor MB" is the peak of live tensor bytes from the
profiler's allocation events; "act MB" is what autograd saves for backward.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
import sys
from collections.abc import Callable

import torch
from torch import nn

from effnet import allocator
from effnet.bench.candidates import BenchError
from effnet.spec import NetSpec


def _trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def peak_memory_mb(fn: Callable[[], object]) -> float:
    """Rise of the resident-set high-water mark during fn(), in MB (Linux; 0.0 elsewhere)."""
    import gc

    gc.collect()
    _trim()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        before = _status_kb("VmRSS")
    except OSError:
        fn()
        return 0.0
    fn()
    return max(0, _status_kb("VmHWM") - before) / 1024


def peak_tensor_mb(fn: Callable[[], object]) -> float | None:
    """Peak of live CPU tensor bytes allocated during fn() above what was live before, in MB, from the profiler's
    allocation events: what the step needs, without the C allocator's retained free memory that VmHWM includes
    (glibc keeps freed blocks under its mmap threshold in the heap).  None if the profiler gives no events."""
    from torch.autograd import DeviceType
    from torch.profiler import profile

    with profile(profile_memory=True) as prof:
        fn()
    try:
        events = prof.profiler.kineto_results.events()
    except AttributeError:  # pragma: no cover - a torch without kineto results
        return None
    changes = sorted((e.start_ns(), e.nbytes()) for e in events
                     if e.name() == "[memory]" and e.device_type() == DeviceType.CPU)
    if not changes:
        return None
    live = peak = 0
    for _, nbytes in changes:
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


_ISOLATED_TRAIN_MEMORY = r"""
import json, sys
import torch
from effnet.bench import peak_memory_mb, peak_tensor_mb, train_candidate
from effnet.spec import NetSpec
args = json.loads(sys.argv[1])
if args["keep_freed_memory"]:  # the parent's allocator policy (effnet.allocator), as the user's run has it
    from effnet.allocator import keep_freed_memory
    keep_freed_memory()
torch.set_num_threads(args["threads"])
spec = NetSpec.from_dict(args["spec"])
candidate = train_candidate(args["model"], args["path"], spec=spec)
x = torch.randn(args["batch"], spec.in_channels, spec.resolution, spec.resolution)
for _ in range(2):
    candidate.step(x)
print(json.dumps([peak_memory_mb(lambda: candidate.step(x)), peak_tensor_mb(lambda: candidate.step(x))]))
"""


def isolated_train_memory(model_name: str, path: str, spec: NetSpec, batch: int) -> tuple[float, float | None]:
    """(peak MB, tensor MB) of one training step of `path`, measured in a fresh Python process after two warm-up
    steps, with this process's allocator policy (`effnet.allocator`).  In one shared process the C allocator's heap
    keeps the other candidates' freed memory and fragments, so the resident peak depends on what ran before; a
    process of its own is what a user's training run sees."""
    args = json.dumps({"model": model_name, "path": path, "spec": spec.to_dict(), "batch": batch,
                       "threads": torch.get_num_threads(), "keep_freed_memory": allocator.kept()})
    env = dict(os.environ, KINETO_LOG_LEVEL="5")
    proc = subprocess.run([sys.executable, "-c", _ISOLATED_TRAIN_MEMORY, args], capture_output=True, text=True,
                          env=env, check=False)
    lines = proc.stdout.strip().splitlines()
    try:
        if proc.returncode != 0 or not lines:
            raise ValueError((proc.stderr.strip().splitlines() or ["no output"])[-1])
        rss, tensors = json.loads(lines[-1])
    except ValueError as exc:  # includes json.JSONDecodeError and a wrong number of values
        raise BenchError(f"bench: measuring {path}'s memory in its own process failed: {exc}") from None
    return rss, tensors


def saved_activation_mb(step: Callable[[], object]) -> float:
    """Bytes autograd keeps for backward during one training step (distinct storages), in MB."""
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor):
        if t.device.type == "cpu" and not isinstance(t, nn.Parameter):
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(seen.values()) / 2**20


__all__ = ["isolated_train_memory", "peak_memory_mb", "peak_tensor_mb", "saved_activation_mb"]
