"""Timing a runner and summarising latencies (also used by ``benchmarks/*.py``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np


def percentiles(ms: list[float] | np.ndarray) -> dict[str, float]:
    """``p50_ms``, ``p95_ms`` and ``p99_ms`` of latencies in ms (NaN when there are none)."""
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def measure(runner: Any, frames: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    """Run ``runner.predict`` on batches until ``seconds`` pass (after warm-up).

    Args:
        runner: Any engine's runner (uint8 N×H×W×3 in).
        frames: Frames to cycle through.
        batch: Frames per call.
        seconds: Measuring time; at least 5 calls are made.

    Returns:
        ``batch``, ``calls``, ``frames_per_s`` and per-call latency percentiles in ms.
    """
    batches = [frames[i:i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    for b in batches[:2]:
        runner.predict(b)
    lat = []
    start = time.perf_counter()
    i = 0
    while time.perf_counter() - start < seconds or len(lat) < 5:
        t0 = time.perf_counter()
        runner.predict(batches[i % len(batches)])
        lat.append((time.perf_counter() - t0) * 1000)
        i += 1
    total = time.perf_counter() - start
    return {"batch": batch, "calls": len(lat), "frames_per_s": round(len(lat) * batch / total, 2),
            **percentiles(lat)}


def measure_in_thread(runner: Any, frames: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    """:func:`measure` run in a new thread, as the daemon's inference stage runs the model
    (after the same :meth:`~posed.engines.base.PoseRunner.handoff` from this thread)."""
    runner.handoff()
    out: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: out.update(measure(runner, frames, batch, seconds)),
                              name="bench-engine")
    thread.start()
    thread.join()
    return out
