"""The machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from posed.engines.cpu import cpu_id, cpu_model, simd_flags

# Settings that hold PyTorch, oneDNN and MKL to a smaller instruction set than the CPU has:
# with AVX2_LIMITS an AVX-512 machine computes as an AVX2-only one (``make test-avx2``), so a
# record made that way must say so.
AVX2_LIMITS = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2",
               "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def isa_limits() -> dict[str, str]:
    """The instruction-set limits (:data:`AVX2_LIMITS`' variables) set in this environment."""
    return {name: os.environ[name] for name in AVX2_LIMITS if os.environ.get(name)}


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and package versions (as benchmarks/_machine.py)."""
    versions: dict[str, str | None] = {}
    for pkg in ("posed", "torch", "timm", "numpy", "onnxruntime", "av", "pyzmq"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu_model(), "cpu_id": cpu_id(), "cpu_flags": simd_flags(),
        "isa_limits": isa_limits(),
        "cores": os.cpu_count(), "usable_cores": affinity, "memory_gib": _memory_gib(),
        "os": platform.platform(), "python": sys.version.split()[0], "versions": versions,
    }
