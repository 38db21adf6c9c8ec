"""The machine a benchmark ran on: CPU model, ISA, the units that run bf16 and int8 matrix products, and the
ceiling its speeds are a fraction of.

bf16 and int8 matrix products run on different hardware on different CPUs, and the flags tell them apart:
AMX (`amx_tile` with `amx_bf16` / `amx_int8`, Sapphire Rapids and later) multiplies whole tiles; AVX512-BF16
(`avx512_bf16`, e.g. Zen 4/5, Cooper Lake) and VNNI (`avx512_vnni`, `avx_vnni`) are vector dot-product instructions,
several times slower than AMX per core.  A CPU can have both (Sapphire Rapids has AVX512-BF16 and AMX); the unit
named is the faster one.

Ceiling: the measured GEMM throughput of `effnet.bench.ceiling` when given (what `run_bench` does).  Without one,
an estimate from the ISA and clock (2 FMA ports × 16 fp32 lanes per cycle with AVX-512, 8 with AVX2, at the clock
/proc/cpuinfo reports), which can be far from what torch's kernels reach; the note says which it is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from effnet import allocator
from effnet.bench.ceiling import Ceiling
from effnet.cpu import bf16_unit, cpu_flags, cpu_model, int8_unit

# Matrix extensions worth naming, in the order they are listed in `Machine.isa`.
_EXTENSIONS = ("avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_int8")


@dataclass
class Machine:
    cpus: int
    threads: int
    isa: str
    ghz: float
    fp32_gmacs_ceiling: float
    amx: bool
    note: str
    load_average: tuple[float, float, float] = (0.0, 0.0, 0.0)
    omp_wait_policy: str = ""
    cpu_model: str = ""
    bf16: str = "none"  # what runs bf16 matrix products: amx_bf16, avx512_bf16 or none (converted to fp32)
    int8: str = "none"  # what runs int8 matrix products: amx_int8, avx512_vnni, avx_vnni or none
    ceiling: Ceiling | None = None  # the measured ceiling, when one was given
    allocator: str = ""  # effnet.allocator.state(): whether freed memory is kept for reuse


def isa_name(flags: set[str]) -> str:
    """The vector ISA and the matrix extensions present, e.g. "avx512+avx512_bf16+avx512_vnni" (Zen 4/5) or
    "avx512+avx512_bf16+avx512_vnni+amx_bf16+amx_int8" (Sapphire Rapids).  AMX counts only with `amx_tile`."""
    base = "avx512" if "avx512f" in flags else "avx2" if "avx2" in flags else "sse"
    extras = [f for f in _EXTENSIONS if f in flags and (not f.startswith("amx_") or "amx_tile" in flags)]
    return "+".join([base, *extras])


def _ghz() -> float:
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        return max(mhz) / 1000 if mhz else 0.0
    except (OSError, ValueError):
        return 0.0


def machine(threads: int | None = None, ceiling: Ceiling | None = None) -> Machine:
    """This machine as a benchmark reports it; the fp32 ceiling is `ceiling`'s measured one when given, else the
    estimate from the ISA and clock."""
    flags, threads = cpu_flags(), threads or torch.get_num_threads()
    lanes = 16 if "avx512f" in flags else 8 if "avx2" in flags else 4
    ghz = _ghz() or 2.0
    if ceiling is not None:
        fp32, note = ceiling.fp32_gmacs, ceiling.describe()
    else:
        fp32 = threads * 2 * lanes * ghz  # 2 FMA ports per core
        note = (f"estimate: {threads} threads x 2 FMA x {lanes} fp32 lanes x {ghz:.2f} GHz "
                "(clock as /proc/cpuinfo reports)")
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return Machine(os.cpu_count() or 1, threads, isa_name(flags), ghz, fp32, bf16_unit(flags) == "amx_bf16", note,
                   tuple(round(v, 2) for v in load), os.environ.get("OMP_WAIT_POLICY", ""), cpu_model(),
                   bf16_unit(flags), int8_unit(flags), ceiling, allocator.state())


__all__ = ["Machine", "isa_name", "machine"]
