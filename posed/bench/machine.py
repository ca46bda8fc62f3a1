"""The machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any


def _cpu_field(prefix: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _memory_gib() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS, Python and package versions (as benchmarks/_machine.py)."""
    versions: dict[str, str | None] = {}
    for pkg in ("posed", "torch", "timm", "numpy", "onnxruntime", "av", "pyzmq"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    flags = (_cpu_field("flags") or "").split()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": _cpu_field("model name") or platform.processor() or "unknown",
        "cpu_flags": sorted(f for f in set(flags)
                            if f.startswith(("avx512", "amx")) or f == "avx2"),
        "cores": os.cpu_count(), "usable_cores": affinity, "memory_gib": _memory_gib(),
        "os": platform.platform(), "python": sys.version.split()[0], "versions": versions,
    }
