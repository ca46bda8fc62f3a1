"""The daemon-side cases: the whole pipeline against the raw engine, the publisher alone, and
several cameras at once."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from posed.bench.assets import BenchOptions, frames, model_of, write_video
from posed.bench.service import daemon_config, free_port, multicam, run_service
from posed.bench.stats import measure, measure_in_thread, percentiles
from posed.errors import PublishError


def _engine_speed(model: Path, images: np.ndarray, seconds: float) -> dict[str, Any]:
    """The raw engine at batch 1 in this thread and in a worker thread; the faster one
    (with both rates) is what the pipeline is compared against."""
    from posed.engines import api
    from posed.engines.bundle import load_bundle

    runner = api.load_model(model)  # the daemon's defaults: same engine and device
    try:
        raw = measure(runner, images, 1, seconds)
        # The daemon runs the model in its inference thread (after a handoff from the loading
        # thread); both are reported and the ratio is taken against the faster one.
        in_thread = measure_in_thread(runner, images, 1, seconds)
    finally:
        runner.close()
    best = max(raw, in_thread, key=lambda r: r["frames_per_s"])
    return {"runtime": load_bundle(model).engine, **best,
            "main_thread_frames_per_s": raw["frames_per_s"],
            "worker_thread_frames_per_s": in_thread["frames_per_s"]}


def case_pipeline(opts: BenchOptions) -> dict[str, Any]:
    """Daemon on a file, fast pace: frames/s vs raw engine; added latency at native pace."""
    model = model_of(opts)
    images = frames(opts.size, 64)
    engine = _engine_speed(model, images, opts.seconds)
    engine_fps = engine["frames_per_s"]
    n = int(min(3000, max(60, engine_fps * opts.seconds)))
    # Well below engine speed (inference in the daemon shares the cores with decoding), so
    # frames do not queue at native pace and the latency is the pipeline's own.
    rate = int(max(2, min(30, engine_fps / 3)))
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.mp4"
        write_video(video, images[np.arange(n) % len(images)], rate)
        msgs = run_service(daemon_config(model, video, wait=1), n, 60 + 3 * n / engine_fps, [])
        fast = {}
        if len(msgs) >= 2:
            span = (msgs[-1].publish_ns - msgs[0].capture_ns) / 1e9
            fast = {"frames": len(msgs), "frames_per_s": round(len(msgs) / span, 2)}
        times: list[float] = []
        # 60 s like the fast run: a large model (top-down: two networks) takes that long to
        # load before the first frame, and a short timeout measured nothing.
        native = run_service(daemon_config(model, video, pace="native", wait=1),
                             int(rate * opts.seconds), 60 + opts.seconds, times)
    # Batch 1 and one camera: messages and inference calls pair up in order.
    k = min(len(native), len(times))
    e2e = [(m.publish_ns - m.capture_ns) / 1e6 for m in native[:k]]
    added = [a - b for a, b in zip(e2e, times[:k])]
    pipe_fps = fast.get("frames_per_s", 0.0)
    return {
        "engine": engine,
        "fast": fast,
        "fps_ratio": round(pipe_fps / engine_fps, 3) if engine_fps else None,
        "native": {"rate": rate, "frames": k, "capture_to_publish": percentiles(e2e),
                   "inference": percentiles(times[:k]), "added": percentiles(added)},
    }


def _pose(seq: int, keypoints: np.ndarray) -> Any:
    from posed.daemon.types import Pose

    now = time.time_ns()
    return Pose(camera="cam0", seq=seq, index=seq, pts=None, capture_ns=now,
                capture_mono=time.monotonic(), infer_ns=now, keypoints=keypoints)


def _throughput(pub: Any, sub: Any, seconds: float, n_max: int, kp: np.ndarray) -> tuple[int, int, float]:
    """Bursts of 100, reading behind by at most 200 so the queues never drop:
    (sent, received, messages/s)."""
    got = 0
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds
    while sent < n_max and time.perf_counter() < deadline:
        for _ in range(100):
            pub.publish(_pose(sent, kp))
            sent += 1
        while got < sent - 200 and sub.recv(1.0) is not None:
            got += 1
    while got < sent and sub.recv(1.0) is not None:
        got += 1
    return sent, got, got / (time.perf_counter() - start)


def _latencies(pub: Any, sub: Any, seconds: float, n_max: int, kp: np.ndarray,
               seq: int) -> tuple[list[float], int]:
    """One message in flight at a time, ``publish()`` call to receive, in ms; and how many
    were sent (one more than received when one got no answer)."""
    lat: list[float] = []
    sent = 0
    deadline = time.perf_counter() + seconds
    while (time.perf_counter() < deadline or len(lat) < 20) and len(lat) < n_max:
        pub.publish(_pose(seq + sent, kp))
        sent += 1
        msg = sub.recv(1.0)
        if msg is None:
            break
        lat.append((msg.receive_ns - msg.capture_ns) / 1e6)
    return lat, sent


def case_publisher(opts: BenchOptions) -> dict[str, Any]:
    """ZeroMQ messages/s and latency from ``Publisher.publish`` to a loopback Subscriber."""
    from posed.daemon.client import Subscriber
    from posed.daemon.publisher import Publisher

    endpoint = f"tcp://127.0.0.1:{free_port()}"
    kp = np.ones((4, 3), np.float32)
    n_max = int(min(200000, max(200, 20000 * opts.seconds)))
    pub = Publisher(endpoint, ["snout", "leftear", "rightear", "tailbase"], hwm=n_max + 10,
                    queue_size=n_max + 10)
    pub.start()
    sub = Subscriber(endpoint, rcvhwm=n_max + 10)
    try:
        if not sub.wait_for_meta(5.0):
            raise PublishError(f"{endpoint}: the bench subscriber did not connect within 5 s")
        sent, got, rate = _throughput(pub, sub, opts.seconds / 2, n_max, kp)
        lat, probes = _latencies(pub, sub, opts.seconds / 2, n_max, kp, sent)
    finally:
        sub.close()
        pub.stop(1.0)
    sent += probes
    return {"endpoint": "tcp loopback", "sent": sent, "received": got + len(lat),
            "messages_per_s": round(rate, 1), "latency_samples": len(lat),
            "latency": percentiles(lat)}


def case_multicam(opts: BenchOptions) -> dict[str, Any]:
    """Aggregate frames/s of 1, 2 and 4 file sources, with and without dynamic batching."""
    images = frames(opts.size, 32)
    return {"rows": multicam(model_of(opts), images, (1, 2, 4), int(max(30, 20 * opts.seconds)),
                             {"device": "cpu"})}
