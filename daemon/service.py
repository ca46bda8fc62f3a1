"""``posed serve``: wires capture → batching inference → processors → publisher/recorder.

Start-up order matters for a service manager: the model is loaded and warmed up, the
publisher and metrics endpoints are bound, and only then is READY=1 sent and capture
started. Stopping (SIGTERM/SIGINT) stops capture, lets inference finish the batch in
progress and what is queued (for at most ``shutdown_timeout_s``; frames left are counted as
dropped), flushes the publisher and the recorder, and logs what became of every frame.

A run whose cameras are all non-looping files ends by itself when every frame has been
published. A stage thread that dies, or every camera failing for good, ends the run with
status 1 (see :mod:`posed.daemon.lifecycle`).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Any

import numpy as np

import posed
from posed.daemon.config import DaemonConfig, non_loopback_endpoints
from posed.daemon.inference import InferenceStage, Preprocess
from posed.daemon.lifecycle import Lifecycle
from posed.daemon.queues import FrameQueue, FrameSignal
from posed.daemon.stage import StageThread
from posed.daemon.types import Pose
from posed.daemon.validate import Startup, camera_spec, check_startup, runner_options
from posed.engines.dynamic import DynamicSettings

__all__ = ["Service", "runner_options", "serve"]

log = logging.getLogger(__name__)

WATCHDOG_STALL_S = 5.0  # no inference heartbeat for this long: stop pinging systemd


class Service(Lifecycle):
    """The daemon: build it from a config, :meth:`start`, :meth:`run`, :meth:`stop`.

    Args:
        cfg: Validated config.
        metrics: A :class:`~posed.daemon.metrics.Metrics` (a new one by default).
        notifier: A :class:`~posed.daemon.notify.Notifier` (``$NOTIFY_SOCKET`` by default).
    """

    def __init__(self, cfg: DaemonConfig, *, metrics: Any = None, notifier: Any = None) -> None:
        from posed.daemon.metrics import Metrics
        from posed.daemon.notify import Notifier

        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.notifier = notifier or Notifier()
        self.stop_event = threading.Event()
        # Inference has its own stop so that capture stops first and queued frames still drain.
        self._inference_stop = threading.Event()
        self.runner: Any = None
        self.cameras: list[Any] = []
        self.inference: InferenceStage | None = None
        self.publisher: Any = None
        self.recorder: Any = None
        self.metrics_server: Any = None
        self._post_queue: queue.Queue[Pose | None] = queue.Queue(maxsize=256)
        self._post_thread: StageThread | None = None
        self._post_done = threading.Event()  # set once nothing more will be emitted
        self._processors: Any = None
        self._startup: Startup | None = None
        self._queues: list[FrameQueue] = []
        self._preprocess: dict[str, Preprocess] = {}
        self.published = 0
        self.fatal: str | None = None  # why run() gave up, one line
        self.stuck: list[str] = []  # stages still running when stop() gave up on them
        self._stopped = False

    # ------------------------------------------------------------------ start

    def _load_model(self) -> Any:
        from posed.engines import api

        startup = self._startup or check_startup(self.cfg)  # start() has checked it already
        bundle, engine, options = startup.bundle, startup.engine, startup.options
        runner = api.load_model(bundle, engine, **options)
        log.info("model %s (%s/%s, %d body parts) on %s%s", bundle.path, engine.value, bundle.format,
                 len(bundle.bodyparts), getattr(runner, "provider", getattr(runner, "device", "?")),
                 f", {runner.precision}" if hasattr(runner, "precision") else "")
        return runner

    def _warmup(self) -> None:
        """Run the shapes the cameras will send once, so the first real frame is fast."""
        from posed.daemon.capture import CameraSpec
        from posed.engines.video import probe_video

        sizes: set[tuple[int, int]] = set()
        for cam in self.cfg.cameras:
            h = w = None
            if cam.resize is not None:
                w, h = cam.resize
            elif cam.crop is not None:
                w, h = cam.crop[2], cam.crop[3]
            elif cam.width and cam.height:
                w, h = cam.width, cam.height
            elif CameraSpec(id=cam.id, source=cam.source, kind=cam.kind).resolved_kind() == "file":
                try:
                    info = probe_video(cam.source)
                    w, h = info.width, info.height
                except Exception:  # the camera reports an unreadable file itself
                    continue
            if h and w:
                sizes.add((h, w))
        size = self.runner.bundle.input_size
        if size:
            sizes = {tuple(size)}  # type: ignore[arg-type]
        for h, w in sorted(sizes):
            for n in sorted({1, min(self.cfg.batching.max_batch, len(self.cfg.cameras))}):
                t0 = time.perf_counter()
                self.runner.predict(np.zeros((n, h, w, 3), np.uint8))
                log.info("warm-up %dx%d batch %d: %.1f ms", w, h, n, (time.perf_counter() - t0) * 1e3)

    def start(self) -> None:
        """Load, bind, warm up, then start capturing; sends READY=1 when serving."""
        cfg = self.cfg
        # The checks `posed config check` runs, before anything starts (ConfigError, exit 2).
        self._startup = check_startup(cfg)
        self._warn_exposed()
        self.notifier.status("loading model")
        self.runner = self._load_model()
        for cam in cfg.cameras:
            self.metrics.add_camera(cam.id)
        self.metrics.set_build_info(posed.__version__, self.runner.engine, _where(self.runner),
                                    self.runner.bundle.scorer)
        self._processors = self._make_processors()
        if cfg.model.warmup:
            self.notifier.status("warming up")
            self._warmup()
        # From here on the inference thread runs the model: let the engine drop what it holds
        # for this thread (PyTorch: an OpenMP pool that would halve the inference thread's speed).
        self.runner.handoff()
        self._open_outputs()
        signal = self._make_cameras()
        self.inference = InferenceStage(
            self.runner, self._queues, signal, self._emit, max_batch=cfg.batching.max_batch,
            max_delay_ms=cfg.batching.max_delay_ms, preprocess=self._preprocess,
            metrics=self.metrics, stop=self._inference_stop, on_reject=self._reject_camera)
        # Not a daemon thread either: it runs user hooks and the recorder; stop() joins it.
        self._post_thread = StageThread("post", self._post_done, daemon=False,
                                        target=self._post_loop)
        self._post_thread.start()
        self.inference.start()
        self._wait_for_subscribers()
        for camera in self.cameras:
            camera.start()
        self.metrics.ready.set(1)
        self.notifier.ready()
        self.notifier.status(f"serving {len(self.cameras)} camera(s) on {cfg.publisher.endpoint}")
        log.info("ready: %d camera(s), poses on %s%s", len(self.cameras), cfg.publisher.endpoint,
                 f", metrics on {self.metrics_server.url}" if self.metrics_server else "")

    def _warn_exposed(self) -> None:
        for endpoint in non_loopback_endpoints(self.cfg):
            if self.cfg.publisher.curve is None or endpoint.startswith("http"):
                log.warning("%s listens beyond this machine%s", endpoint,
                            "" if endpoint.startswith("http") else " without CurveZMQ encryption")

    def _make_processors(self) -> Any:
        from posed.daemon.processors import KalmanPredictor, Processors

        hook = self._startup.hook if self._startup is not None else None
        k = self.cfg.processors.kalman
        kalman = (KalmanPredictor(k.process_noise, k.measurement_noise, k.lead_ms / 1000.0,
                                  k.min_likelihood) if k.enabled else None)
        return Processors(self.runner.bundle.bodyparts, hook=hook, kalman=kalman,
                          metrics=self.metrics)

    def _open_outputs(self) -> None:
        """Bind the metrics endpoint and the publisher; open the recorder."""
        from posed.daemon.publisher import Publisher

        cfg = self.cfg
        bundle = self.runner.bundle
        if cfg.metrics.enabled:
            self.metrics_server = self.metrics.serve(cfg.metrics.host, cfg.metrics.port)
        curve = None
        if cfg.publisher.curve is not None:
            from posed.daemon.keys import CurveServer

            curve = CurveServer(cfg.publisher.curve.server_secret_key,
                                cfg.publisher.curve.allowed_clients)
        self.publisher = Publisher(cfg.publisher.endpoint, bundle.bodyparts, metrics=self.metrics,
                                   hwm=cfg.publisher.hwm, queue_size=cfg.publisher.queue_size,
                                   nodrop=cfg.publisher.nodrop,
                                   curve=curve, model={"scorer": bundle.scorer,
                                                       "engine": self.runner.engine})
        self.publisher.start()
        if cfg.recorder.path is not None:
            from posed.daemon.recorder import Recorder

            self.recorder = Recorder(cfg.recorder.path, bundle.bodyparts, bundle.scorer,
                                     [c.id for c in cfg.cameras], csv=cfg.recorder.csv,
                                     flush_every_s=cfg.recorder.flush_every_s, metrics=self.metrics)

    def _make_cameras(self) -> FrameSignal:
        """One queue, preprocessing and (not yet started) capture thread per camera."""
        from posed.daemon.capture import Camera, make_queue

        signal = FrameSignal()
        self._queues = []
        self._preprocess = {}
        for cam in self.cfg.cameras:
            spec = camera_spec(cam)
            q = make_queue(spec, signal, self.metrics)
            self._queues.append(q)
            dyn = cam.dynamic
            settings = DynamicSettings(dyn.pcutoff, dyn.margin) if dyn and dyn.enabled else None
            self._preprocess[cam.id] = Preprocess(cam.crop, cam.resize, settings)
            # Each camera its own stop event, so that one can be stopped for good alone.
            self.cameras.append(Camera(spec, q, threading.Event(), metrics=self.metrics))
        return signal

    def _wait_for_subscribers(self) -> None:
        pub = self.cfg.publisher
        if not pub.wait_for_subscribers:
            return
        want = pub.wait_for_subscribers
        self.notifier.status(f"waiting for {want} subscriber(s) on {pub.endpoint}")
        log.info("waiting for %d subscriber(s) on %s", want, pub.endpoint)
        if not self.publisher.wait_for_subscribers(want, pub.wait_timeout_s):
            log.warning("only %d subscriber(s) after %.0f s; starting anyway",
                        self.publisher.subscribers(), pub.wait_timeout_s)

    def _emit(self, pose: Pose) -> None:
        while True:
            try:
                self._post_queue.put(pose, timeout=0.1)
                return
            except queue.Full:
                if self._post_thread is None or not self._post_thread.is_alive():
                    # Nobody will take it (the post stage died or was given up on): count it.
                    self.metrics.frames_dropped.labels(camera=pose.camera,
                                                       reason="shutdown").inc()
                    return

    def _post_loop(self) -> None:
        while True:
            try:
                pose = self._post_queue.get(timeout=0.1)
            except queue.Empty:
                if self._post_done.is_set():
                    return
                continue
            if pose is None:
                return
            pose = self._processors(pose)
            if self.recorder is not None:
                self.recorder.add(pose)
            self.publisher.publish(pose)
            self.published += 1

    # ------------------------------------------------------------------ run / stop

    def _files_done(self) -> bool:
        files = [c for c in self.cameras if c.spec.resolved_kind() == "file" and not c.spec.loop]
        if len(files) != len(self.cameras) or not all(c.finished.is_set() for c in files):
            return False
        return (self.inference is not None and self.inference.pending() == 0
                and not self.inference.in_flight and self._post_queue.empty())

    def _healthy(self, now: float) -> bool:
        """True while frames flow: WATCHDOG=1 is sent only then, so systemd restarts a stall.

        Frames flow when the inference loop is turning and some camera delivered a frame
        recently (or every camera is a file that has finished).
        """
        if self.inference is None or not self.inference.is_alive():
            return False
        if now - self.inference.heartbeat >= WATCHDOG_STALL_S:
            return False
        if all(c.finished.is_set() for c in self.cameras):
            return True
        return any(c.last_frame_mono is not None and now - c.last_frame_mono < WATCHDOG_STALL_S
                   for c in self.cameras)

    def run(self, timeout: float | None = None) -> int:
        """Serve until stopped (or, for file-only configs, until every frame is out).

        Returns:
            0; 1 when serving cannot go on (a stage thread died, every camera failed for
            good: one log line, ``posed_ready``/``posed_healthy`` 0, sd_notify ``ERRNO``) or
            when a file-only run ends with a failed camera.
        """
        interval = self.notifier.watchdog_interval() or 1.0
        last_beat = 0.0
        last_count, last_t = 0, time.monotonic()
        end = None if timeout is None else time.monotonic() + timeout
        while not self.stop_event.is_set():
            fatal = self._fatal_condition()
            if fatal is not None:
                return self._fail(*fatal)
            if self._files_done():
                # Let the last poses leave the post stage before declaring the run complete.
                time.sleep(0.05)
                if self._files_done():
                    return self._files_finished()
            if end is not None and time.monotonic() > end:
                break
            down = self._update_gauges()
            now = time.monotonic()
            if now - last_beat >= interval:
                last_beat = now
                fps = (self.published - last_count) / max(now - last_t, 1e-6)
                last_count, last_t = self.published, now
                self._beat(now, fps, down)
            self.stop_event.wait(0.05)
        return 0

    def _update_gauges(self) -> list[str]:
        """Queue depths and per-camera up/down; returns the cameras that are down."""
        for q in self._queues:
            self.metrics.queue_depth.labels(queue=f"capture:{q.camera}").set(len(q))
        self.metrics.queue_depth.labels(queue="post").set(self._post_queue.qsize())
        return self._down_cameras()

    def _beat(self, now: float, fps: float, down: list[str]) -> None:
        """Status line, ``posed_healthy`` and the watchdog ping (only while healthy)."""
        status = f"serving {len(self.cameras)} camera(s), {fps:.1f} poses/s"
        self.notifier.status(status + (f"; down: {', '.join(down)}" if down else ""))
        healthy = self._healthy(now)
        self.metrics.healthy.set(1 if healthy else 0)
        if healthy:
            self.notifier.watchdog()

    def _files_finished(self) -> int:
        failed = [c.failed for c in self.cameras if c.failed]
        if failed:
            log.error("all file sources finished: %d poses published; %d camera(s) failed "
                      "(%s)", self.published, len(failed), "; ".join(failed)[:120])
            return 1
        log.info("all file sources finished: %d poses published", self.published)
        return 0

    def stop(self) -> None:
        """Stop capture, drain (within ``shutdown_timeout_s``), flush and release everything;
        logs what became of every captured frame (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        t0 = time.monotonic()
        self.notifier.stopping()
        self.metrics.ready.set(0)
        self.metrics.healthy.set(0)
        self.stop_event.set()
        try:
            self.stuck = self._stop_stages()
            # The last word on each camera: the run loop updates the gauges every 50 ms and
            # may have ended before it saw a camera fail (or stop) just now.
            self._down_cameras()
        finally:
            self._release_stages()  # even after an error here: non-daemon threads must end
        if self.publisher is not None:
            left = t0 + self.cfg.shutdown_timeout_s - time.monotonic()
            self.publisher.stop(timeout=min(max(left, 0.2), 1.0))
        if self.recorder is not None:
            self.recorder.close()
        if self.metrics_server is not None:
            self.metrics_server.close()
        if self.runner is not None and not self.stuck:  # a stuck batch still uses the model
            self.runner.close()
        lost = self._lost()
        # A run that lost frames says so above INFO, so a quiet log level still shows it.
        lossless = not any(lost.values()) and sum(c.seq for c in self.cameras) == self.published
        log.log(logging.INFO if lossless else logging.WARNING, "%s", self._summary(lost))


def _where(runner: Any) -> str:
    """Where a runner runs: its execution provider (ONNX) or device."""
    return str(getattr(runner, "provider", getattr(runner, "device", "")))


def serve(cfg: DaemonConfig, *, install_signals: bool = True, metrics: Any = None,
          notifier: Any = None) -> int:
    """Run the daemon in this thread until SIGTERM/SIGINT or the end of file sources."""
    import signal

    service = Service(cfg, metrics=metrics, notifier=notifier)
    if install_signals:
        def _stop(signum: int, _frame: Any) -> None:
            log.info("signal %d: stopping", signum)
            service.stop_event.set()

        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    code = 1
    try:
        service.start()
        code = service.run()
    finally:
        service.stop()
    if service.stuck:
        code = 1
    if install_signals:
        _exit_if_threads_remain(service, code)
    return code


def _exit_if_threads_remain(service: Service, code: int) -> None:
    """Exit now (flushing logs) when a stage thread is still running, e.g. a batch past
    ``shutdown_timeout_s`` or a capture read inside FFmpeg: letting the interpreter tear
    down a thread inside native code aborts the process (C++: exit 134)."""
    stages = [s for s in (service.inference, service._post_thread, *service.cameras)
              if s is not None]
    if not any(s.is_alive() for s in stages):
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(code)

