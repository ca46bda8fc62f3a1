"""``posed bench``: a suite of named performance cases (issue 7).

Each case is a function ``case(opts) -> dict`` of figures registered in :data:`CASES`.
:func:`run` runs the selected cases and returns one record (date, machine, versions,
options, results); :func:`to_markdown` renders it as a short table. Figures are reported,
never asserted: targets are judged by whoever reads them.

Example:
    >>> record = run(["decode"], BenchOptions(seconds=0.5))
    >>> print(to_markdown(record))
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posed.errors import ConfigError, PublishError

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"
DEMO_MODEL = DEMO / "model"
DEMO_CLIP = DEMO / "clip.mp4"


@dataclass
class BenchOptions:
    """Options shared by every case.

    Attributes:
        model: Model bundle folder (the demo model by default). ``engine``, ``resources`` and
            ``matmul`` need a PyTorch ``safetensors`` bundle; ``pipeline`` runs any bundle.
        size: Input frame (width, height).
        seconds: Measuring time per measurement.
        nets: Extra architectures for ``engine`` (randomly initialised, 4 body parts), e.g.
            ``mobilenet_v2_1.0``, ``resnet_50``; the timing of a net does not depend on its weights.
        batches: Batch sizes for ``engine``.
    """

    model: Path = field(default_factory=lambda: DEMO_MODEL)
    size: tuple[int, int] = (320, 240)
    seconds: float = 3.0
    nets: tuple[str, ...] = ()
    batches: tuple[int, ...] = (1, 8)


# ----------------------------------------------------------------------------- helpers

def _cpu_field(prefix: str) -> str | None:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith(prefix):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
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
        pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        mem_gib: float | None = round(pages / 2**30, 1)
    except (ValueError, OSError):
        mem_gib = None
    flags = (_cpu_field("flags") or "").split()
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "cpu": _cpu_field("model name") or platform.processor() or "unknown",
        "cpu_flags": sorted(f for f in set(flags)
                            if f.startswith(("avx512", "amx")) or f == "avx2"),
        "cores": os.cpu_count(), "usable_cores": affinity, "memory_gib": mem_gib,
        "os": platform.platform(), "python": sys.version.split()[0], "versions": versions,
    }


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentiles(ms: list[float] | np.ndarray) -> dict[str, float]:
    a = np.asarray(ms, dtype=float)
    if a.size == 0:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "p99_ms": float("nan")}
    return {f"p{q}_ms": round(float(np.percentile(a, q)), 3) for q in (50, 95, 99)}


def _frames(size: tuple[int, int], n: int) -> np.ndarray:
    """``n`` frames of the demo clip resized to ``size`` (uint8 N×H×W×3)."""
    import cv2

    from posed.engines.video import VideoReader

    with VideoReader(DEMO_CLIP, stop=n) as reader:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for _, f in reader]
    return np.stack(frames)


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
            **_percentiles(lat)}


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


def _write_video(path: Path, frames: np.ndarray, fps: int) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _daemon_config(model: Path, source: str | Path, *, engine: str | None = None,
                   pace: str = "fast", wait: int = 0, max_batch: int = 1, cameras: int = 1,
                   model_options: dict[str, Any] | None = None, max_delay_ms: float = 0) -> Any:
    from posed.daemon.config import parse_config

    return parse_config({
        "model": {"bundle": str(model), **({"engine": engine} if engine else {}),
                  **(model_options or {})},
        "cameras": [{"id": f"cam{i}", "source": str(source), "kind": "file", "pace": pace,
                     "policy": "lossless"} for i in range(cameras)],
        "batching": {"max_batch": max_batch, "max_delay_ms": max_delay_ms},
        "publisher": {"endpoint": f"tcp://127.0.0.1:{_free_port()}", "hwm": 100000,
                      "queue_size": 100000, "wait_for_subscribers": wait, "wait_timeout_s": 10},
        "metrics": {"enabled": False},
        "log_level": "warning",
    }, "bench")


class _Notifier:
    """A notifier that does nothing (no systemd in a benchmark)."""

    def __getattr__(self, name: str) -> Callable[..., Any]:
        return lambda *a, **k: None

    def watchdog_interval(self) -> None:
        return None


# ----------------------------------------------------------------------------- cases

def _runtimes(model: Path, tmp: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """(name, bundle, load options) of every CPU runtime for one PyTorch bundle."""
    from posed.engines import compat
    from posed.engines.bundle import load_bundle

    rows: list[tuple[str, Path, dict[str, Any]]] = [("pytorch-eager", model, {"device": "cpu"})]
    rows.append(("torchscript", compat.export_model(model, "torchscript", tmp / "ts"), {"device": "cpu"}))
    rows.append(("onnx-fp32", compat.export_model(model, "onnx", tmp / "onnx"), {"provider": "cpu"}))
    try:
        # Dynamic INT8 needs no calibration set, so it works for any bundle; static INT8
        # (calibrated on the project) is timed by benchmarks/bench_runtimes.py.
        rows.append(("onnx-int8-dynamic", compat.export_model(model, "onnx", tmp / "int8",
                                                              precision="int8-dynamic"),
                      {"provider": "cpu"}))
    except Exception as exc:  # quantisation needs the export extra; report, don't stop
        rows.append(("onnx-int8-dynamic", Path(), {"error": str(exc).splitlines()[0]}))
    if compat.engine_available("tensorflow") and load_bundle(model).engine == "tensorflow":
        rows.append(("tensorflow", model, {}))
    return rows


def case_engine(opts: BenchOptions) -> dict[str, Any]:
    """Every CPU runtime (eager, TorchScript, ONNX FP32/INT8) per model and batch, same frames."""
    from posed.engines import compat
    from posed.engines.pytorch.backend import random_bundle

    frames = _frames(opts.size, 32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = [("model", opts.model)]
        for net in opts.nets:
            random_bundle(net, Path(tmp) / f"net-{net}")
            models.append((net, Path(tmp) / f"net-{net}"))
        for label, model in models:
            for name, path, extra in _runtimes(model, Path(tmp) / f"x-{label}"):
                if "error" in extra:
                    rows.append({"model": label, "runtime": name, "error": extra["error"]})
                    continue
                runner = compat.load_model(path, **extra)
                try:
                    for batch in opts.batches:
                        rows.append({"model": label, "runtime": name,
                                     **measure(runner, frames, batch, opts.seconds)})
                finally:
                    runner.close()
    return {"rows": rows}


def case_decode(opts: BenchOptions) -> dict[str, Any]:
    """PyAV decode frames/s of the bundled clip, codec threads on and off."""
    from posed.engines.video import VideoReader

    rows = []
    for threads in (True, False):
        n = 0
        passes = 0
        start = time.perf_counter()
        while (time.perf_counter() - start < opts.seconds or passes == 0) and passes < 1000:
            with VideoReader(DEMO_CLIP, threads=threads) as reader:
                for _ in reader:
                    n += 1
            passes += 1
        total = time.perf_counter() - start
        rows.append({"threads": threads, "frames": n, "passes": passes,
                     "frames_per_s": round(n / total, 1)})
    return {"clip": DEMO_CLIP.name, "rows": rows}


def _run_service(cfg: Any, expect: int, timeout: float, runner_times: list[float]) -> list[Any]:
    """Run an in-process daemon, receiving every pose; the received messages in order."""
    from posed.daemon.client import Subscriber
    from posed.daemon.service import Service

    class _Timed(Service):
        def _load_model(self) -> Any:
            runner = super()._load_model()
            predict = runner.predict

            def timed(frames: np.ndarray) -> np.ndarray:
                t0 = time.perf_counter()
                out = predict(frames)
                runner_times.append((time.perf_counter() - t0) * 1000)
                return out

            runner.predict = timed
            return runner

    received: list[Any] = []
    sub = Subscriber(cfg.publisher.endpoint, rcvhwm=100000)
    service = _Timed(cfg, notifier=_Notifier())
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


def case_pipeline(opts: BenchOptions) -> dict[str, Any]:
    """Daemon on a file, fast pace: frames/s vs raw engine; added latency at native pace."""
    from posed.engines import compat

    frames = _frames(opts.size, 64)
    runner = compat.load_model(opts.model)  # the daemon's defaults: same engine and device
    try:
        raw = measure(runner, frames, 1, opts.seconds)
        # The daemon runs the model in its inference thread (after a handoff from the loading
        # thread); both are reported and the ratio is taken against the faster one.
        in_thread = measure_in_thread(runner, frames, 1, opts.seconds)
    finally:
        runner.close()
    best = max(raw, in_thread, key=lambda r: r["frames_per_s"])
    engine_fps = best["frames_per_s"]
    n = int(min(3000, max(60, engine_fps * opts.seconds)))
    # Well below engine speed (inference in the daemon shares the cores with decoding), so
    # frames do not queue at native pace and the latency is the pipeline's own.
    rate = int(max(2, min(30, engine_fps / 3)))
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "bench.mp4"
        _write_video(video, frames[np.arange(n) % len(frames)], rate)
        times: list[float] = []
        msgs = _run_service(_daemon_config(opts.model, video, wait=1), n,
                            60 + 3 * n / engine_fps, times)
        fast = {}
        if len(msgs) >= 2:
            span = (msgs[-1].publish_ns - msgs[0].capture_ns) / 1e9
            fast = {"frames": len(msgs), "frames_per_s": round(len(msgs) / span, 2)}
        times2: list[float] = []
        native = _run_service(_daemon_config(opts.model, video, pace="native", wait=1),
                              int(rate * opts.seconds), opts.seconds + 5, times2)
    # Batch 1 and one camera: messages and inference calls pair up in order.
    k = min(len(native), len(times2))
    e2e = [(m.publish_ns - m.capture_ns) / 1e6 for m in native[:k]]
    added = [a - b for a, b in zip(e2e, times2[:k])]
    pipe_fps = fast.get("frames_per_s", 0.0)
    from posed.engines.bundle import load_bundle

    return {
        "engine": {"runtime": load_bundle(opts.model).engine, **best,
                   "main_thread_frames_per_s": raw["frames_per_s"],
                   "worker_thread_frames_per_s": in_thread["frames_per_s"]},
        "fast": fast,
        "fps_ratio": round(pipe_fps / engine_fps, 3) if engine_fps else None,
        "native": {"rate": rate, "frames": k, "capture_to_publish": _percentiles(e2e),
                   "inference": _percentiles(times2[:k]), "added": _percentiles(added)},
    }


def case_publisher(opts: BenchOptions) -> dict[str, Any]:
    """ZeroMQ messages/s and latency from ``Publisher.publish`` to a loopback Subscriber."""
    from posed.daemon.client import Subscriber
    from posed.daemon.publisher import Publisher
    from posed.daemon.types import Pose

    endpoint = f"tcp://127.0.0.1:{_free_port()}"
    bodyparts = ["snout", "leftear", "rightear", "tailbase"]
    kp = np.ones((4, 3), np.float32)
    n_max = int(min(200000, max(200, 20000 * opts.seconds)))
    pub = Publisher(endpoint, bodyparts, hwm=n_max + 10, queue_size=n_max + 10)
    pub.start()
    sub = Subscriber(endpoint, rcvhwm=n_max + 10)
    try:
        if not sub.wait_for_meta(5.0):
            raise PublishError(f"{endpoint}: the bench subscriber did not connect within 5 s")
        # Throughput: bursts of 100, reading behind by at most 200 so the queues never drop.
        got = 0
        sent = 0
        start = time.perf_counter()
        deadline = start + opts.seconds / 2
        while sent < n_max and time.perf_counter() < deadline:
            for _ in range(100):
                now = time.time_ns()
                pub.publish(Pose(camera="cam0", seq=sent, index=sent, pts=None, capture_ns=now,
                                 capture_mono=time.monotonic(), infer_ns=now, keypoints=kp))
                sent += 1
            while got < sent - 200 and sub.recv(1.0) is not None:
                got += 1
        while got < sent and sub.recv(1.0) is not None:
            got += 1
        rate = got / (time.perf_counter() - start)
        # Latency: one message in flight at a time, publish() call to receive.
        lat: list[float] = []
        deadline = time.perf_counter() + opts.seconds / 2
        while (time.perf_counter() < deadline or len(lat) < 20) and len(lat) < n_max:
            now = time.time_ns()
            pub.publish(Pose(camera="cam0", seq=sent, index=sent, pts=None, capture_ns=now,
                             capture_mono=time.monotonic(), infer_ns=now, keypoints=kp))
            sent += 1
            msg = sub.recv(1.0)
            if msg is None:
                break
            lat.append((msg.receive_ns - msg.capture_ns) / 1e6)
    finally:
        sub.close()
        pub.stop(1.0)
    return {"endpoint": "tcp loopback", "sent": sent, "received": got + len(lat),
            "messages_per_s": round(rate, 1), "latency_samples": len(lat),
            "latency": _percentiles(lat)}


_RESOURCE_SCRIPT = r"""
import json, resource, sys, time
t_proc = time.perf_counter()
from posed.bench import _daemon_config, _Notifier, DEMO_CLIP
from posed.daemon.service import Service
cfg = _daemon_config(sys.argv[1], DEMO_CLIP, engine=sys.argv[2], pace="native")
t0 = time.perf_counter()
service = Service(cfg, notifier=_Notifier())
try:
    service.start()
    ready = time.perf_counter()
finally:
    service.stop()
# Linux keeps ru_maxrss across execve (it would show the parent's peak); VmHWM is per image.
hwm = next((int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")), None)
print(json.dumps({"ready_s": round(ready - t0, 3), "ready_s_with_imports": round(ready - t_proc, 3),
                  "peak_rss_mb": round((hwm or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                                       / 1024, 1),
                  "torch_imported": "torch" in sys.modules}))
"""


def case_resources(opts: BenchOptions) -> dict[str, Any]:
    """Start-up time to READY and peak RSS of a daemon, one fresh process per engine."""
    from posed.engines import compat

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = compat.export_model(opts.model, "onnx", Path(tmp) / "onnx")
        for engine, path in (("pytorch", opts.model), ("onnx", onnx_path)):
            proc = subprocess.run([sys.executable, "-c", _RESOURCE_SCRIPT, str(path), engine],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
                rows.append({"engine": engine, "error": tail})
                continue
            rows.append({"engine": engine, **json.loads(proc.stdout.strip().splitlines()[-1])})
    return {"rows": rows}


def case_matmul(opts: BenchOptions) -> dict[str, Any]:
    """Matmul GFLOP/s (numpy, torch) as peak; the model's achieved GFLOP/s as a fraction."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from posed.engines import compat

    n = 1024
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    peaks = {}
    for name, mm, x in (("numpy", np.matmul, a), ("torch", torch.matmul, torch.from_numpy(a))):
        mm(x, x)
        calls = 0
        start = time.perf_counter()
        while (time.perf_counter() - start < opts.seconds / 2 or calls < 3) and calls < 100000:
            mm(x, x)
            calls += 1
        peaks[name] = round(2 * n**3 * calls / (time.perf_counter() - start) / 1e9, 2)
    peak = max(peaks.values())
    models = []
    with tempfile.TemporaryDirectory() as tmp:
        from posed.engines.pytorch.backend import random_bundle

        for label, model in [("model", opts.model)] + [(net, Path(tmp) / net) for net in opts.nets]:
            if label != "model":
                random_bundle(label, model)
            w, h = opts.size
            frames = _frames(opts.size, 16)
            # The same graph on both runtimes, so one FLOP count serves both.
            for runtime, path, options in (
                    ("pytorch-eager", model, {"device": "cpu"}),
                    ("onnx-fp32", compat.export_model(model, "onnx", Path(tmp) / f"{label}-onnx"),
                     {"provider": "cpu"})):
                runner = compat.load_model(path, **options)
                try:
                    if runtime == "pytorch-eager":
                        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
                            runner.model(torch.zeros(1, 3, h, w))
                        gflop = counter.get_total_flops() / 1e9
                    raw = measure(runner, frames, 1, opts.seconds)
                finally:
                    runner.close()
                achieved = gflop * raw["frames_per_s"]
                models.append({"model": label, "runtime": runtime, "gflop_per_frame": round(gflop, 3),
                               "frames_per_s": raw["frames_per_s"], "gflops": round(achieved, 2),
                               "fraction_of_peak": round(achieved / peak, 4) if peak else None})
    first = models[0]
    return {"matmul_n": n, "matmul_gflops": peaks, "model_gflop_per_frame": first["gflop_per_frame"],
            "model_frames_per_s": first["frames_per_s"], "model_gflops": first["gflops"],
            "fraction_of_peak": first["fraction_of_peak"], "models": models}


def _camera_rates(msgs: list[Any]) -> dict[str, Any]:
    """Aggregate frames/s over the received span and each camera's share."""
    if len(msgs) < 2:
        return {"frames": len(msgs), "frames_per_s": 0.0, "per_camera": {}}
    span = (max(m.publish_ns for m in msgs) - min(m.capture_ns for m in msgs)) / 1e9
    counts: dict[str, int] = {}
    for m in msgs:
        counts[m.camera] = counts.get(m.camera, 0) + 1
    return {"frames": len(msgs), "frames_per_s": round(len(msgs) / span, 2),
            "per_camera": {c: round(n / span, 2) for c, n in sorted(counts.items())}}


def _multicam(model: Path, frames: np.ndarray, counts: tuple[int, ...], per_camera: int,
              model_options: dict[str, Any], fps: int = 30) -> list[dict[str, Any]]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = Path(tmp) / "cam.mp4"
        _write_video(video, frames[np.arange(per_camera) % len(frames)], fps)
        for n in counts:
            for batching in ((False, True) if n > 1 else (False,)):
                cfg = _daemon_config(model, video, wait=1, cameras=n,
                                     max_batch=n if batching else 1,
                                     max_delay_ms=2 if batching else 0, model_options=model_options)
                times: list[float] = []
                msgs = _run_service(cfg, n * per_camera, 120, times)
                rows.append({"cameras": n, "dynamic_batching": batching, **_camera_rates(msgs),
                             "expected": n * per_camera})
    return rows


def case_multicam(opts: BenchOptions) -> dict[str, Any]:
    """Aggregate frames/s of 1, 2 and 4 file sources, with and without dynamic batching."""
    frames = _frames(opts.size, 32)
    return {"rows": _multicam(opts.model, frames, (1, 2, 4), int(max(30, 20 * opts.seconds)),
                              {"device": "cpu"})}


GPU_MODES = {  # name: pytorch runner options
    "fp32-eager": {"precision": "fp32", "cuda_graphs": False, "channels_last": False},
    "fp16-eager": {"precision": "fp16", "cuda_graphs": False, "channels_last": True},
    "fp16-graph": {"precision": "fp16", "cuda_graphs": True, "channels_last": True},
    "bf16-graph": {"precision": "bf16", "cuda_graphs": True, "channels_last": True},
}


def case_gpu(opts: BenchOptions) -> dict[str, Any]:
    """CUDA: raw engine per precision/graph mode and batch; daemon 640×480 at 200 fps; 1/4/8 cameras."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False)"}
    return {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
            **gpu_figures(opts, "cuda", GPU_MODES)}


def gpu_figures(opts: BenchOptions, device: str, modes: dict[str, dict[str, Any]], *,
                size: tuple[int, int] = (640, 480), batches: tuple[int, ...] = (1, 8, 64),
                daemon_frames: int = 800, daemon_fps: int = 200,
                cameras: tuple[int, ...] = (1, 4, 8), per_camera: int = 400) -> dict[str, Any]:
    """The figures of :func:`case_gpu` on ``device`` (a CPU run checks the procedure)."""
    from posed.engines import compat
    from posed.engines.pytorch.backend import random_bundle

    frames = _frames(size, 64)
    out: dict[str, Any] = {"size": list(size), "rows": []}
    with tempfile.TemporaryDirectory() as tmp:
        nets = opts.nets or ("resnet_50", "mobilenet_v2_0.35")
        for net in nets:
            model = Path(tmp) / net
            random_bundle(net, model, keypoints=4, output_stride=16)
            for mode, options in modes.items():
                runner = compat.load_model(model, device=device, **options)
                for batch in batches:
                    pool = np.concatenate([frames] * (1 + 2 * batch // len(frames)))
                    out["rows"].append({"model": net, "mode": mode,
                                        **measure(runner, pool, batch, opts.seconds)})
                runner.close()
        # Keypoint error of each mode against the first (fp32) on a trained model and its clip.
        if opts.model == DEMO_MODEL:
            clip = _frames((128, 128), 64)
            first, *others = modes
            ref = compat.load_model(opts.model, device=device, **modes[first]).predict(clip)
            for mode in others:
                got = compat.load_model(opts.model, device=device, **modes[mode]).predict(clip)
                out.setdefault("accuracy", {})[f"{mode} vs {first}"] = {
                    "max_px": round(float(np.nanmax(np.hypot(*(got[..., :2] - ref[..., :2])
                                                             .transpose(2, 0, 1)))), 4),
                    "max_likelihood": round(float(np.nanmax(np.abs(got[..., 2] - ref[..., 2]))), 5)}
        # The daemon end to end: one file paced at daemon_fps, then several cameras.
        model = Path(tmp) / nets[0]
        video = Path(tmp) / "paced.mp4"
        _write_video(video, frames[np.arange(daemon_frames) % len(frames)], daemon_fps)
        times: list[float] = []
        msgs = _run_service(_daemon_config(model, video, pace="native", wait=1,
                                           model_options={"device": device}),
                            daemon_frames, 60, times)
        skip = daemon_frames // 16  # the first frames pay for allocator and cache warm-up
        e2e = [(m.publish_ns - m.capture_ns) / 1e6 for m in msgs[skip:]]
        out["daemon"] = {"model": nets[0], "fps": daemon_fps, "frames": len(msgs),
                         "expected": daemon_frames, "capture_to_publish": _percentiles(e2e),
                         "inference": _percentiles(times[skip:])}
        out["cameras"] = _multicam(model, frames, cameras, per_camera, {"device": device},
                                   fps=daemon_fps)
    return out


CASES: dict[str, Callable[[BenchOptions], dict[str, Any]]] = {
    "engine": case_engine,
    "decode": case_decode,
    "pipeline": case_pipeline,
    "publisher": case_publisher,
    "resources": case_resources,
    "matmul": case_matmul,
    "multicam": case_multicam,
    "gpu": case_gpu,
}


# ----------------------------------------------------------------------------- suite

def list_cases() -> list[tuple[str, str]]:
    """Every case as (name, one-line description), in run order."""
    return [(name, (fn.__doc__ or "").strip().splitlines()[0]) for name, fn in CASES.items()]


def run(cases: list[str] | None, opts: BenchOptions) -> dict[str, Any]:
    """Run the named cases (all when empty) and return the record.

    Raises:
        ConfigError: A case name is unknown.
    """
    names = list(cases or CASES)
    unknown = [c for c in names if c not in CASES]
    if unknown:
        raise ConfigError(f"unknown bench case '{unknown[0]}' (cases: {', '.join(CASES)})")
    results: dict[str, Any] = {}
    for name in names:
        t0 = time.perf_counter()
        figures = CASES[name](opts)
        results[name] = {**figures, "case_s": round(time.perf_counter() - t0, 2)}
    config = asdict(opts)
    config["model"] = str(opts.model)
    return {"benchmark": "posed bench",
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "machine": machine_info(), "config": config, "results": results}


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def to_markdown(record: dict[str, Any]) -> str:
    """A Markdown table (case, what, frames/s or rate, p50/p95/p99 ms, note) of a record."""
    m = record.get("machine", {})
    cfg = record.get("config", {})
    lines = [f"posed bench, {record.get('date', '?')}: {m.get('cpu', '?')}, "
             f"{m.get('usable_cores', m.get('cores', '?'))} cores; size {cfg.get('size')}, "
             f"{cfg.get('seconds')} s per measurement", "",
             "| case | what | per s | p50 ms | p95 ms | p99 ms | note |",
             "|---|---|---|---|---|---|---|"]

    def row(case: str, what: str, rate: Any, pct: dict | None = None, note: str = "") -> None:
        pct = pct or {}
        lines.append(f"| {case} | {what} | {_fmt(rate)} | {_fmt(pct.get('p50_ms'))} | "
                     f"{_fmt(pct.get('p95_ms'))} | {_fmt(pct.get('p99_ms'))} | {note} |")

    for case, res in record.get("results", {}).items():
        if case == "engine":
            for r in res["rows"]:
                what = f"{r['model']} {r['runtime']}" if "model" in r else r["runtime"]
                if "error" in r:
                    row(case, what, None, None, r["error"])
                else:
                    row(case, f"{what} batch {r['batch']}", r["frames_per_s"], r, "frames/s")
        elif case in ("multicam", "gpu") and "skipped" in res:
            row(case, "skipped", None, None, res["skipped"])
        elif case == "multicam":
            for r in res["rows"]:
                row(case, f"{r['cameras']} camera(s){', batching' if r['dynamic_batching'] else ''}",
                    r["frames_per_s"], None, f"{r['frames']}/{r['expected']} frames; per camera "
                    + ", ".join(f"{v:g}" for v in r["per_camera"].values()))
        elif case == "gpu":
            for r in res["rows"]:
                row(case, f"{r['model']} {r['mode']} batch {r['batch']}", r["frames_per_s"], r,
                    res["device"])
            for what, acc in res.get("accuracy", {}).items():
                row(case, what, None, None,
                    f"max {acc['max_px']} px, likelihood {acc['max_likelihood']}")
            d = res["daemon"]
            row(case, f"daemon {d['model']} {d['fps']} fps", None, d["capture_to_publish"],
                f"capture→publish, {d['frames']}/{d['expected']} frames")
            for r in res["cameras"]:
                row(case, f"{r['cameras']} camera(s){', batching' if r['dynamic_batching'] else ''}",
                    r["frames_per_s"], None, "per camera " + ", ".join(
                        f"{v:g}" for v in r["per_camera"].values()))
        elif case == "decode":
            for r in res["rows"]:
                row(case, f"threads {'on' if r['threads'] else 'off'}", r["frames_per_s"], None,
                    "frames/s")
        elif case == "pipeline":
            raw = res["engine"]
            row(case, f"raw {raw['runtime']} batch 1", raw["frames_per_s"], raw,
                "frames/s" + (f" (main thread {_fmt(raw['main_thread_frames_per_s'])}, worker thread "
                              f"{_fmt(raw['worker_thread_frames_per_s'])})"
                              if "main_thread_frames_per_s" in raw else ""))
            row(case, "daemon, fast file", res["fast"].get("frames_per_s"), None,
                f"ratio to engine {_fmt(res['fps_ratio'])}")
            nat = res["native"]
            row(case, "capture→publish", None, nat["capture_to_publish"],
                f"native pace {nat['rate']} fps, {nat['frames']} frames")
            row(case, "added latency", None, nat["added"], "capture→publish minus inference")
        elif case == "publisher":
            row(case, res["endpoint"], res["messages_per_s"], res["latency"],
                f"messages/s, {res['received']}/{res['sent']} received")
        elif case == "resources":
            for r in res["rows"]:
                note = r.get("error") or (f"ready {_fmt(r['ready_s'])} s "
                                          f"({_fmt(r['ready_s_with_imports'])} s with imports), "
                                          f"peak RSS {_fmt(r['peak_rss_mb'])} MB")
                row(case, r["engine"], None, None, note)
        elif case == "matmul":
            for name, g in res["matmul_gflops"].items():
                row(case, f"{name} matmul {res['matmul_n']}", g, None, "GFLOP/s")
            for r in res.get("models") or [{"model": "model", "gflops": res["model_gflops"],
                                             "gflop_per_frame": res["model_gflop_per_frame"],
                                             "fraction_of_peak": res["fraction_of_peak"]}]:
                row(case, f"{r['model']} {r.get('runtime', '')}".strip(), r["gflops"], None,
                    f"GFLOP/s ({r['gflop_per_frame']} GFLOP/frame); "
                    f"{_fmt(r['fraction_of_peak'])} of peak")
    return "\n".join(lines) + "\n"
