"""Timing a runner and summarising latencies (also used by ``benchmarks/*.py``)."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np


def percentiles(ms: list[float] | np.ndarray) -> dict[str, float]:
    """``p50_ms``, ``p95_ms`` and ``p99_ms`` of latencies in ms (NaN when there are none)."""
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


# Issue 21's bound for a closed loop: p99 within 1.5x p50. Calls slower than this count as slow.
SLOW_FACTOR = 1.5


def flatness(ms: list[float] | np.ndarray) -> dict[str, float]:
    """How flat latencies are, in call order: ``p99_over_p50``, ``slow_share`` (the share of
    calls slower than :data:`SLOW_FACTOR` x p50) and ``slow_episodes`` (runs of consecutive
    slow calls: a machine that slows down for a second shows as one long run, a runtime that
    hiccups as many single calls)."""
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"p99_over_p50": float("nan"), "slow_share": float("nan"), "slow_episodes": 0}
    p50 = float(np.percentile(a, 50))
    ratio = float(np.percentile(a, 99)) / p50 if p50 > 0 else float("nan")
    slow = a > SLOW_FACTOR * p50
    episodes = int(slow[0]) + int(np.count_nonzero(slow[1:] & ~slow[:-1]))
    return {"p99_over_p50": round(ratio, 3), "slow_share": round(float(slow.mean()), 4),
            "slow_episodes": episodes}


def time_calls(fn: Callable[[int], Any], seconds: float, min_calls: int = 5) -> list[float]:
    """Milliseconds of each ``fn(i)`` call (i = 0, 1, ...) until ``seconds`` pass and at least
    ``min_calls`` calls were made."""
    lat: list[float] = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds or len(lat) < min_calls:
        t0 = time.perf_counter()
        fn(len(lat))
        lat.append((time.perf_counter() - t0) * 1000)
    return lat


def measure(runner: Any, frames: np.ndarray, batch: int, seconds: float) -> dict[str, Any]:
    """Run ``runner.predict`` on batches until ``seconds`` pass (after warm-up).

    Args:
        runner: Any engine's runner (uint8 N×H×W×3 in).
        frames: Frames to cycle through.
        batch: Frames per call.
        seconds: Measuring time; at least 5 calls are made.

    Returns:
        ``batch``, ``calls``, ``frames_per_s``, per-call latency percentiles in ms and their
        :func:`flatness`.
    """
    batches = [frames[i:i + batch] for i in range(0, len(frames) - batch + 1, batch)]
    for b in batches[:2]:
        runner.predict(b)
    start = time.perf_counter()
    lat = time_calls(lambda i: runner.predict(batches[i % len(batches)]), seconds)
    total = time.perf_counter() - start
    return {"batch": batch, "calls": len(lat), "frames_per_s": round(len(lat) * batch / total, 2),
            **percentiles(lat), **flatness(lat)}


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
