"""Running the daemon in-process for a case: its config, a receiving subscriber, timings."""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posed.bench.assets import write_video


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def daemon_config(model: Path, source: str | Path, *, engine: str | None = None,
                  pace: str = "fast", wait: int = 0, max_batch: int = 1, cameras: int = 1,
                  model_options: dict[str, Any] | None = None, max_delay_ms: float = 0) -> Any:
    """A daemon config serving ``source`` on ``cameras`` lossless file cameras, no metrics."""
    from posed.daemon.config import parse_config

    return parse_config({
        "model": {"bundle": str(model), **({"engine": engine} if engine else {}),
                  **(model_options or {})},
        "cameras": [{"id": f"cam{i}", "source": str(source), "kind": "file", "pace": pace,
                     "policy": "lossless"} for i in range(cameras)],
        "batching": {"max_batch": max_batch, "max_delay_ms": max_delay_ms},
        "publisher": {"endpoint": f"tcp://127.0.0.1:{free_port()}", "hwm": 100000,
                      "queue_size": 100000, "wait_for_subscribers": wait, "wait_timeout_s": 10},
        "metrics": {"enabled": False},
        "log_level": "warning",
    }, "bench")


class QuietNotifier:
    """A notifier that does nothing (no systemd in a benchmark)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *a, **k: None

    def watchdog_interval(self) -> None:
        return None


def _timed_service(cfg: Any, runner_times: list[float]) -> Any:
    """A :class:`~posed.daemon.service.Service` whose model calls append their ms to
    ``runner_times``."""
    from posed.daemon.service import Service

    def timed(call: Any) -> Any:
        def run(frames: np.ndarray, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            out = call(frames, **kwargs)
            runner_times.append((time.perf_counter() - t0) * 1000)
            return out

        return run

    class _Timed(Service):
        def _load_model(self) -> Any:
            runner = super()._load_model()
            # the daemon calls predict_animals for multi-animal models, predict otherwise
            name = "predict_animals" if getattr(runner, "multianimal", False) else "predict"
            setattr(runner, name, timed(getattr(runner, name)))
            return runner

    return _Timed(cfg, notifier=QuietNotifier())


def run_service(cfg: Any, expect: int, timeout: float, runner_times: list[float]) -> list[Any]:
    """Run an in-process daemon, receiving every pose; the received messages in order."""
    from posed.daemon.client import Subscriber

    received: list[Any] = []
    sub = Subscriber(cfg.publisher.endpoint, rcvhwm=100000)
    service = _timed_service(cfg, runner_times)
    done = threading.Event()

    def receive() -> None:
        deadline = time.monotonic() + timeout
        while len(received) < expect and time.monotonic() < deadline and not done.is_set():
            msg = sub.recv(0.1)
            if msg is not None:
                received.append(msg)

    thread = threading.Thread(target=receive, name="bench-sub", daemon=True)
    thread.start()
    try:
        service.start()
        runner_times.clear()  # warm-up calls are not pipeline frames
        service.run(timeout=timeout)
    finally:
        service.stop()
        thread.join(2.0)
        done.set()
        thread.join(1.0)
        sub.close()
    return received


def camera_rates(msgs: list[Any]) -> dict[str, Any]:
    """Aggregate frames/s over the received span and each camera's share."""
    if len(msgs) < 2:
        return {"frames": len(msgs), "frames_per_s": 0.0, "per_camera": {}}
    span = (max(m.publish_ns for m in msgs) - min(m.capture_ns for m in msgs)) / 1e9
    counts: dict[str, int] = {}
    for m in msgs:
        counts[m.camera] = counts.get(m.camera, 0) + 1
    return {"frames": len(msgs), "frames_per_s": round(len(msgs) / span, 2),
            "per_camera": {c: round(n / span, 2) for c, n in sorted(counts.items())}}


def multicam(model: Path, frames: np.ndarray, counts: tuple[int, ...], per_camera: int,
             model_options: dict[str, Any], fps: int = 30) -> list[dict[str, Any]]:
    """The daemon on 1..N copies of one file, with and without dynamic batching."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "cam.mp4"
        write_video(video, frames[np.arange(per_camera) % len(frames)], fps)
        for n in counts:
            for batching in ((False, True) if n > 1 else (False,)):
                cfg = daemon_config(model, video, wait=1, cameras=n,
                                    max_batch=n if batching else 1,
                                    max_delay_ms=2 if batching else 0, model_options=model_options)
                times: list[float] = []
                msgs = run_service(cfg, n * per_camera, 120, times)
                rows.append({"cameras": n, "dynamic_batching": batching, **camera_rates(msgs),
                             "expected": n * per_camera})
    return rows
