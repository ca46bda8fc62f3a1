"""Machine and version facts recorded with every benchmark result.

The facts themselves come from ``posed.bench.machine_info`` (what ``posed bench``
records); scripts here add the git commit they ran from.
"""

from __future__ import annotations

import os
import subprocess

from posed.bench import machine_info as _bench_machine_info


def machine_info() -> dict:
    """CPU, cores, memory, OS, Python and package versions, and the git commit."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__)).stdout.strip() or None
    except OSError:
        commit = None
    return {**_bench_machine_info(), "git_commit": commit}
