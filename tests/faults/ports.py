"""Free TCP ports for tests that start servers: ``from ports import free_port`` beside
faultkit (also in the subprocesses that import faultkit), ``from faults.ports import
free_port`` from tests/."""

from __future__ import annotations

import os
import random
import socket


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as fh:
            return int(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port() -> int:
    """A TCP port nothing listens on right now, below the kernel's ephemeral range.

    A port the kernel hands out for ``bind(0)`` is an ephemeral one, which any outgoing
    connection of another test (another xdist worker) may take before the server binds it;
    ports below that range are never given out that way. Each xdist worker draws from its
    own block, so two workers never pick the same one.
    """
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    low = 20000 + 2000 * (index % 6)
    high = min(low + 2000, _ephemeral_low())
    for _ in range(500):
        port = random.randrange(low, high)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free TCP port in {low}..{high}")
