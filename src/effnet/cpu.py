"""What this CPU is and which units it has: the model name and flags /proc/cpuinfo reports, and the fastest unit for
bf16 and int8 matrix products that the flags imply.

A leaf: it imports nothing from effnet, so the inference paths (`effnet.optimize`), the engines (`effnet.runtime`)
and the benchmark's machine report (`effnet.bench`) all ask it the same questions.
"""

from __future__ import annotations

import platform


def cpu_flag_list() -> list[str]:
    """The CPU's feature flags in the order /proc/cpuinfo (and lscpu) lists them: its "flags" line on x86 (e.g.
    "avx2", "avx512f", "amx_tile"), its "Features" line on ARM; empty where that file is not readable."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].split()
    except OSError:
        pass
    return []


def cpu_flags() -> set[str]:
    """The CPU's feature flags (`cpu_flag_list`) as a set."""
    return set(cpu_flag_list())


def cpu_model() -> str:
    """The CPU's model name as /proc/cpuinfo gives it (e.g. "AMD EPYC 9454"), else what Python's platform says."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _amx(flags: set[str], kind: str) -> bool:
    return "amx_tile" in flags and f"amx_{kind}" in flags


def bf16_unit(flags: set[str]) -> str:
    """The fastest unit for bf16 matrix products: "amx_bf16" (tiles), "avx512_bf16" (VDPBF16PS dot products) or
    "none" (bf16 is converted and multiplied in fp32)."""
    return "amx_bf16" if _amx(flags, "bf16") else "avx512_bf16" if "avx512_bf16" in flags else "none"


def int8_unit(flags: set[str]) -> str:
    """The fastest unit for int8 matrix products: "amx_int8", "avx512_vnni", "avx_vnni" or "none" (AVX2's
    VPMADDUBSW, whose 16-bit sums can saturate)."""
    if _amx(flags, "int8"):
        return "amx_int8"
    return next((f for f in ("avx512_vnni", "avx_vnni") if f in flags), "none")


def amx_available() -> bool:
    """Whether this CPU has AMX-BF16 tiles (Sapphire Rapids and later), which make bf16 convolutions fast."""
    return bf16_unit(cpu_flags()) == "amx_bf16"


__all__ = ["amx_available", "bf16_unit", "cpu_flag_list", "cpu_flags", "cpu_model", "int8_unit"]
