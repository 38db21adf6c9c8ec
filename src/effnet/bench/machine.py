"""The machine a benchmark ran on, and the fp32 ceiling its speeds are a fraction of.

Ceiling: the fp32 FMA peak of the cores in use (2 FMA ports × 16 fp32 lanes per cycle with AVX-512, 8 with AVX2,
at the clock /proc/cpuinfo reports); bf16/int8 paths on AMX can exceed it, and their fraction says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from effnet.optimize import cpu_flags


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


def machine(threads: int | None = None) -> Machine:
    """The fp32 multiply-accumulate ceiling of the cores torch uses, from the ISA and clock this CPU reports."""
    flags, threads = cpu_flags(), threads or torch.get_num_threads()
    isa, lanes = ("avx512", 16) if "avx512f" in flags else ("avx2", 8) if "avx2" in flags else ("sse", 4)
    ghz = 0.0
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        ghz = max(mhz) / 1000 if mhz else 0.0
    except OSError:
        pass
    ghz = ghz or 2.0
    ceiling = threads * 2 * lanes * ghz  # 2 FMA ports per core
    amx = "amx_bf16" in flags
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return Machine(os.cpu_count() or 1, threads, isa + ("+amx" if amx else ""), ghz, ceiling, amx,
                   f"{threads} threads x 2 FMA x {lanes} fp32 lanes x {ghz:.2f} GHz (clock as /proc/cpuinfo reports)",
                   tuple(round(v, 2) for v in load), os.environ.get("OMP_WAIT_POLICY", ""))


__all__ = ["Machine", "machine"]
