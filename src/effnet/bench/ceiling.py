"""The measured ceiling of this machine: the GEMM throughput reached for fp32 (the best of torch, NumPy's BLAS and
ONNX Runtime), bf16 and int8 (torch), and the memory bandwidth, on the threads in use; measured once and cached per
machine.

    c = machine_ceiling()          # cached; measured on the first call for this CPU, threads and torch
    c.fp32_gmacs, c.bf16_gmacs, c.int8_gmacs, c.bandwidth_gbs

Throughput is in GMAC/s: multiply-accumulates, not FLOPs (one MAC = 2 FLOPs).  A square n×n by n×n product is
n³ MACs; the ceiling is the best of a few repeats (the least disturbed), since it stands for what the hardware *can*
do.  For fp32 that is the best of three libraries on the same threads: torch's `mm`, NumPy's `matmul` (its BLAS)
and, where installed, an ONNX Runtime MatMul: on one CPU they have differed by up to 2x, and a ceiling from torch
alone let other engines run "above 100%" of it.  int8 uses `torch._int_mm` (int8 × int8 → int32); where torch lacks
it or this CPU's build cannot run it, the int8 ceiling is None and `notes` says why.

Bandwidth is a large tensor copy (`dst.copy_(src)`, far bigger than the caches), counted as STREAM counts a copy:
bytes read plus bytes written, in GB/s (10⁹ bytes).

Why measured: a formula (FMA ports × lanes × clock) misses what matters — a virtual machine's real clock, and that
torch's own fp32 kernels can run at half of the GEMM peak another library reaches on the same cores.  The roofline
of `effnet.bench.layers` and the "% fp32 peak" of `effnet bench` are fractions of this measurement.

The cache is one small JSON file per key (CPU model, CPU flags, threads, torch version, method) in
`$XDG_CACHE_HOME/effnet` (default `~/.cache/effnet`), written atomically; a file that cannot be read or parsed is
ignored and replaced.  The load average at measurement is kept with it: a ceiling measured while other jobs ran is
low (on 2 cores, half of the quiet value has been seen), so a cached one measured under load is measured again when
the machine is quieter, and the higher of the two is kept; `effnet bench --refresh-ceiling` measures again anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone
from pathlib import Path

import torch

from effnet.cpu import cpu_flags, cpu_model
from effnet.files import CACHE_ENV, atomic_write_text, cache_dir

# How the ceiling is measured; a cached ceiling of another method is measured again (3: NumPy's BLAS limited to
# torch's threads).
METHOD = 3


@dataclass(frozen=True)
class Ceiling:
    """What the GEMMs and the copy of `measure_ceiling` reached (GMAC/s, GB/s) and how they were measured."""

    fp32_gmacs: float
    bf16_gmacs: float | None
    int8_gmacs: float | None
    bandwidth_gbs: float
    threads: int
    gemm_size: int
    copy_mb: int
    repeats: int
    measured_at: str  # UTC, ISO 8601
    notes: tuple[str, ...] = ()
    load_average: float = 0.0  # 1-minute load average when it was measured: a loaded machine measures low
    fp32_library: str = "torch"  # which library reached the fp32 ceiling

    def gmacs(self, dtype: torch.dtype) -> float | None:
        """The GEMM ceiling for operands of `dtype` (None when not measured for it)."""
        return {torch.float32: self.fp32_gmacs, torch.bfloat16: self.bf16_gmacs, torch.int8: self.int8_gmacs,
                torch.uint8: self.int8_gmacs}.get(dtype)

    def describe(self) -> str:
        def rate(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.0f}"

        return (f"measured {self.measured_at[:10]}: best of {self.repeats} {self.gemm_size}² matmuls on "
                f"{self.threads} threads, fp32 {rate(self.fp32_gmacs)} ({self.fp32_library}) / bf16 "
                f"{rate(self.bf16_gmacs)} / int8 {rate(self.int8_gmacs)} GMAC/s (torch); copy of {self.copy_mb} MB "
                f"{self.bandwidth_gbs:.1f} GB/s; load average {self.load_average:.1f} then"
                + "".join(f"; {n}" for n in self.notes))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Ceiling:
        names = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING}
        if not required <= set(data):
            raise KeyError(f"a ceiling record needs {sorted(required)}")
        values = {k: v for k, v in data.items() if k in names}
        values["notes"] = tuple(values.get("notes", ()))
        return cls(**values)


def _best_seconds(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-call allocation, kernel selection, page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-9)


def _gemm_gmacs(dtype: torch.dtype, size: int, repeats: int) -> tuple[float | None, str]:
    """GMAC/s of an n×n by n×n product in `dtype`, or (None, why) where torch cannot run it here."""
    name = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.int8: "int8"}[dtype]
    if dtype is torch.int8:
        if not hasattr(torch, "_int_mm"):
            return None, "int8: unavailable (this torch has no torch._int_mm)"
        a = torch.randint(-64, 64, (size, size), dtype=torch.int8)
        b = torch.randint(-64, 64, (size, size), dtype=torch.int8)
        fn: Callable[[], object] = lambda: torch._int_mm(a, b)
    else:
        a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
        out = torch.empty(size, size, dtype=dtype)
        fn = lambda: torch.mm(a, b, out=out)
    try:
        seconds = _best_seconds(fn, repeats)
    except RuntimeError as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"{name}: unavailable ({first})"
    return size**3 / seconds / 1e9, ""


def _numpy_fp32(size: int) -> Callable[[], object]:
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    out = np.empty((size, size), dtype=np.float32)
    return lambda: np.matmul(a, b, out=out)


def _numpy_gmacs(size: int, repeats: int) -> float | None:
    """NumPy's fp32 GEMM rate on torch's thread count, or None where its BLAS threads cannot be limited (without
    threadpoolctl NumPy's BLAS uses every core, which would put a many-thread rate in a one-thread ceiling)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    with threadpool_limits(limits=torch.get_num_threads(), user_api="blas"):
        return size**3 / _best_seconds(_numpy_fp32(size), repeats) / 1e9


def _onnxruntime_fp32(size: int) -> Callable[[], object] | None:
    """An ONNX Runtime session of one MatMul on torch's threads, or None without onnxruntime/onnx."""
    try:
        import numpy as np
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [size, size]) for n in ("a", "b", "c")]
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "gemm", io[:2], io[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {"a": rng.random((size, size), dtype=np.float32), "b": rng.random((size, size), dtype=np.float32)}
    return lambda: session.run(None, feed)


def _fp32_gmacs(size: int, repeats: int) -> tuple[float, str, str]:
    """The best fp32 GEMM rate of torch, NumPy and ONNX Runtime: (GMAC/s, library, a note with every rate)."""
    torch_rate, why = _gemm_gmacs(torch.float32, size, repeats)
    if torch_rate is None:
        raise RuntimeError(f"measure_ceiling: an fp32 matmul failed: {why}")
    rates = {"torch": torch_rate}
    numpy_rate = _numpy_gmacs(size, repeats)
    if numpy_rate is not None:
        rates["numpy"] = numpy_rate
    ort_gemm = _onnxruntime_fp32(size)
    if ort_gemm is not None:
        rates["onnxruntime"] = size**3 / _best_seconds(ort_gemm, repeats) / 1e9
    library = max(rates, key=rates.get)
    return rates[library], library, "fp32 " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items())


def _copy_gbs(megabytes: int, repeats: int) -> float:
    src = torch.ones(megabytes * 2**20 // 4)
    dst = torch.empty_like(src)
    seconds = _best_seconds(lambda: dst.copy_(src), repeats)
    return 2 * src.nbytes / seconds / 1e9  # read + write, as STREAM counts a copy


def measure_ceiling(size: int = 2048, repeats: int = 3, copy_mb: int = 256) -> Ceiling:
    """Measure the GEMM ceilings (an n×n product, n = `size`, best of `repeats` after one warm-up) and the copy
    bandwidth (`copy_mb` MB) on torch's current threads.  Seconds at the defaults where the CPU has bf16 and int8
    units (AMX, AVX512-BF16/VNNI); much longer without them, where those products take torch's slow paths."""
    if size < 16 or repeats < 1 or copy_mb < 1:
        raise ValueError(f"measure_ceiling: size {size}, repeats {repeats}, copy_mb {copy_mb}; expected size >= 16, "
                         "repeats >= 1, copy_mb >= 1")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    fp32, library, fp32_note = _fp32_gmacs(size, repeats)
    notes = [fp32_note]
    rates = {}
    for dtype in (torch.bfloat16, torch.int8):
        rates[dtype], why = _gemm_gmacs(dtype, size, repeats)
        if why:
            notes.append(why)
    measured = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return Ceiling(fp32, rates[torch.bfloat16], rates[torch.int8], _copy_gbs(copy_mb, repeats),
                   torch.get_num_threads(), size, copy_mb, repeats, measured, tuple(notes), round(load, 2), library)


def ceiling_key() -> dict:
    """What the ceiling depends on: CPU model, CPU flags (hashed), torch's threads, torch's version and how it is
    measured."""
    flags = " ".join(sorted(cpu_flags()))
    return {"cpu": cpu_model(), "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
            "threads": torch.get_num_threads(), "torch": torch.__version__, "method": METHOD}


def _cache_file(key: dict, folder: Path) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return folder / f"ceiling-{digest}.json"


def _load(path: Path, key: dict) -> Ceiling | None:
    """The cached ceiling for `key`, or None when the file is missing, unreadable, corrupt or for another key."""
    try:
        record = json.loads(path.read_text())
        if record.get("key") != key:
            return None
        return Ceiling.from_dict(record["ceiling"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


LOADED = 0.5  # a 1-minute load average above this (besides the measurement) counts as measured under load


def _quieter_now(cached: Ceiling) -> bool:
    """Was `cached` measured under load, and is the machine quieter now?"""
    now = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return cached.load_average > LOADED and now < cached.load_average - LOADED


def machine_ceiling(*, refresh: bool = False, folder: str | Path | None = None, size: int = 2048, repeats: int = 3,
                    copy_mb: int = 256, log: Callable[[str], None] | None = None) -> Ceiling:
    """This machine's ceiling on torch's current threads: the cached measurement for this CPU, threads and torch
    (whatever size it was measured at; measured again when it was taken under load and the machine is quieter now),
    else a new one (`measure_ceiling(size, repeats, copy_mb)`), cached.
    `refresh` measures again; `folder` overrides `cache_dir()`; `log` hears that a measurement starts (it can take
    minutes where the CPU has no bf16 or int8 unit).  A cache that cannot be written is left alone."""
    key = ceiling_key()
    path = _cache_file(key, Path(folder) if folder is not None else cache_dir())
    cached = None if refresh else _load(path, key)
    if cached is not None and not _quieter_now(cached):
        return cached
    if log is not None:
        log(f"measuring this machine's GEMM and copy ceilings on {torch.get_num_threads()} thread(s), once per CPU, "
            f"thread count and torch (cached in {path}) ...")
    ceiling = measure_ceiling(size, repeats, copy_mb)
    if cached is not None and cached.fp32_gmacs > ceiling.fp32_gmacs:
        return cached  # measured again, and still lower: the cached one stands
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(json.dumps({"key": key, "ceiling": ceiling.to_dict()}, indent=2) + "\n", path)
    except OSError:
        pass  # a read-only home still gets its measurement, only not remembered
    return ceiling


__all__ = ["CACHE_ENV", "Ceiling", "cache_dir", "ceiling_key", "machine_ceiling", "measure_ceiling"]
