"""Machine and version facts recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return sorted(f for f in flags if f.startswith(("avx512", "amx")) or f == "avx2")
    except OSError:
        pass
    return []


def machine_info() -> dict:
    """CPU, cores, memory, OS, Python and package versions."""
    versions = {}
    for pkg in ("posed", "torch", "torchvision", "timm", "numpy", "onnxruntime", "av", "pandas"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__)).stdout.strip() or None
    except OSError:
        commit = None
    return {
        "cpu": _cpu_model(), "cpu_flags": _cpu_flags(), "cores": os.cpu_count(),
        "memory_gib": mem_gib, "os": platform.platform(), "python": sys.version.split()[0],
        "versions": versions, "git_commit": commit,
    }
