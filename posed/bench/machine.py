"""The machine a benchmark ran on."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

from posed.engines.cpu import cpu_model, simd_flags


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
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": cpu_model(), "cpu_flags": simd_flags(),
        "cores": os.cpu_count(), "usable_cores": affinity, "memory_gib": _memory_gib(),
        "os": platform.platform(), "python": sys.version.split()[0], "versions": versions,
    }
