"""What this CPU is: its model name and the instruction sets that decide which kernels run.

Read from ``/proc/cpuinfo`` (Linux); elsewhere the answers are empty, never guessed. Used to
record where a measurement was made (benchmarks, ``precision: auto``) and to notice when a
choice measured on one CPU is used on another.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

__all__ = ["NATIVE_BF16", "SIMD_PREFIXES", "cpu_flags", "cpu_id", "cpu_model",
           "isa_limit_allows_bf16", "native_bf16", "simd_flags"]

CPUINFO = "/proc/cpuinfo"
# The flags that change which convolution/GEMM kernels runtimes pick (and so their speed).
SIMD_PREFIXES = ("avx2", "avx512", "amx", "avx_vnni")
# The flags of native bf16 arithmetic, best first; without one, bf16 is emulated (slower).
NATIVE_BF16 = ("amx_bf16", "avx512_bf16")


def _field(name: str, cpuinfo: str | Path) -> str | None:
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(name) and ":" in line:
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags(cpuinfo: str | Path = CPUINFO) -> set[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo is absent)."""
    return set((_field("flags", cpuinfo) or "").split())


def simd_flags(cpuinfo: str | Path = CPUINFO) -> list[str]:
    """The sorted vector/matrix instruction-set flags (AVX2, AVX-512*, AMX*, AVX-VNNI)."""
    return sorted(f for f in cpu_flags(cpuinfo) if f.startswith(SIMD_PREFIXES))


def cpu_id(cpuinfo: str | Path = CPUINFO) -> dict[str, str | int]:
    """Vendor, family, model and stepping (empty where /proc/cpuinfo is absent).

    Cloud VMs often hide the model name ("AMD EPYC"), and CPUs of different generations then
    read alike; these numbers still tell them apart.
    """
    out: dict[str, str | int] = {}
    vendor = _field("vendor_id", cpuinfo)
    if vendor:
        out["vendor"] = vendor
    for key, name in (("family", "cpu family"), ("model", "model\t"), ("stepping", "stepping")):
        value = _field(name, cpuinfo)
        if value is not None and value.isdigit():
            out[key] = int(value)
    return out


def cpu_model(cpuinfo: str | Path = CPUINFO) -> str:
    """The CPU's model name, else the platform's processor string, else ``unknown``."""
    return _field("model name", cpuinfo) or platform.processor() or "unknown"


# oneDNN ISA limits (ONEDNN_MAX_CPU_ISA, as `make test-avx2` sets it) under which its bf16
# kernels exist; any other limit leaves bf16 to emulation, or to a crash in OpenVINO's plugin.
BF16_ISAS = ("AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_FP16", "AVX512_CORE_AMX",
             "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512",
             "AVX10_2_512_AMX_2", "ALL", "DEFAULT")


def isa_limit_allows_bf16(environ: dict[str, str] | None = None) -> bool:
    """False where ``ONEDNN_MAX_CPU_ISA`` holds oneDNN below its bf16 kernels: the CPU's own
    bf16 is then out of this process's reach, whatever its flags say."""
    limit = (os.environ if environ is None else environ).get("ONEDNN_MAX_CPU_ISA", "")
    return not limit.strip() or limit.strip().upper() in BF16_ISAS


def native_bf16(flags: set[str] | None = None, environ: dict[str, str] | None = None
                ) -> str | None:
    """The native bf16 instruction set (``amx_bf16``/``avx512_bf16``) or None.

    By default for this process: its CPU's flags, within its oneDNN ISA limit. Given
    ``flags``, for a CPU with those flags and no limit unless ``environ`` names one.
    """
    if (flags is None or environ is not None) and not isa_limit_allows_bf16(environ):
        return None
    flags = cpu_flags() if flags is None else flags
    return next((name for name in NATIVE_BF16 if name in flags), None)
