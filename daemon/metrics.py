"""Prometheus metrics of the daemon, on a private registry, served over HTTP.

Every metric lives in the :class:`Metrics` object's own ``CollectorRegistry``, never in
``prometheus_client``'s global ``REGISTRY``: two daemons (or two tests) in one process must not
share counters, and nothing a library imports can leak series into posed's endpoint.

Names follow the Prometheus conventions: the ``posed_`` prefix, ``_total`` on counters (the
client adds it), base units (seconds) on histograms. Counters that count frames carry a
``camera`` label; :meth:`Metrics.add_camera` creates a camera's series at zero so that
``rate()`` and alerts work before its first frame.

Typical use::

    metrics = Metrics()
    metrics.set_build_info(__version__, "onnx", "CPUExecutionProvider", "openfield")
    metrics.add_camera("cam0")
    server = metrics.serve("127.0.0.1", 9108)
    metrics.frames_captured.labels(camera="cam0").inc()
    ...
    server.close()
"""

from __future__ import annotations

import logging
import socket
import socketserver
import threading
from functools import partial
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from posed.errors import ConfigError, PublishError

__all__ = [
    "BATCH_BUCKETS",
    "DROP_REASONS",
    "ERROR_STAGES",
    "LATENCY_BUCKETS",
    "Metrics",
    "MetricsServer",
]

log = logging.getLogger(__name__)

# Seconds. Dense below 30 ms, where a pose model on a GPU lives, and sparse up to 0.5 s, which
# is already far too slow for closed-loop experiments; 0.5 ms .. 250 ms is resolved.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1,
    0.15, 0.25, 0.5,
)
# Frames per batch; the batcher's max_batch is usually a power of two or 1.5x one.
BATCH_BUCKETS: tuple[float, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)

# Why a frame was lost; each reason's series is created at zero for every camera, so a seq gap
# on the stream can always be matched against a counter that exists. "preprocess": the
# camera's crop/resize does not fit its frames; "shutdown": still queued or being inferred
# when shutdown_timeout_s ran out.
DROP_REASONS: tuple[str, ...] = (
    "policy", "decode", "inference", "publish_queue", "hwm", "processor", "preprocess",
    "shutdown",
)
# Pipeline stages whose errors are counted by posed_errors_total{stage}.
ERROR_STAGES: tuple[str, ...] = ("capture", "inference", "processor", "publish", "recorder")

# Addresses that expose the endpoint on every interface.
_ALL_INTERFACES = frozenset({"", "0.0.0.0", "::", "[::]"})
# serve_forever()'s poll period bounds how long close() waits; prometheus_client's own
# start_http_server uses 0.5 s, a quarter of the daemon's 2 s shutdown budget.
_POLL_S = 0.05


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not write an access-log line to stderr per scrape."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib's name)
        pass


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per scrape, so a stalled client cannot block others or shutdown."""

    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind() calls socket.getfqdn(), a reverse DNS lookup that can stall
        # startup for seconds on a lab machine without DNS; the name is only used in CGI env.
        socketserver.TCPServer.server_bind(self)
        self.server_name = str(self.server_address[0])
        self.server_port = int(self.server_address[1])
        self.setup_environ()


class MetricsServer:
    """A running ``/metrics`` HTTP endpoint; returned by :meth:`Metrics.serve`.

    Attributes:
        host: The address it was asked to bind.
        port: The port actually bound (useful when 0 was asked for).
        url: ``http://host:port/metrics``.
    """

    def __init__(self, server: WSGIServer, thread: threading.Thread, host: str) -> None:
        self._server = server
        self._thread = thread
        self._closed = False
        self.host = host
        self.port: int = int(server.server_port)
        # A wildcard address is reachable on loopback of the same family.
        shown = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1", "[::]": "::1"}.get(
            host, host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"  # an IPv6 literal needs brackets in a URL
        self.url = f"http://{shown}:{self.port}/metrics"

    def close(self, timeout: float = 2.0) -> None:
        """Stop serving, release the port and join the thread. Idempotent.

        Args:
            timeout: Seconds to wait for the server thread to end.
        """
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()  # makes serve_forever() return
        self._server.server_close()  # releases the listening socket
        self._thread.join(timeout)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Metrics:
    """All of the daemon's metrics, registered in one private registry.

    Args:
        registry: Registry to register in; a new, private one by default. Pass one to
            combine posed's metrics with others in a single exposition.

    Attributes:
        registry: The registry holding every metric below.
        frames_captured: ``posed_frames_captured_total{camera}``.
        frames_dropped: ``posed_frames_dropped_total{camera,reason}``, reasons in
            :data:`DROP_REASONS`.
        frames_inferred: ``posed_frames_inferred_total{camera}``.
        frames_published: ``posed_frames_published_total{camera}``.
        errors: ``posed_errors_total{stage}``, stages in :data:`ERROR_STAGES`.
        reconnects: ``posed_reconnects_total{camera}``.
        inference_seconds: ``posed_inference_seconds``, one observation per batch.
        end_to_end_seconds: ``posed_end_to_end_seconds{camera}``, capture to publish.
        processor_seconds: ``posed_processor_seconds{processor}``.
        batch_size: ``posed_batch_size``, frames per inferred batch.
        queue_depth: ``posed_queue_depth{queue}``.
        capture_fps: ``posed_capture_fps{camera}``.
        ready: ``posed_ready``, 1 once warmed up and serving, else 0.
        healthy: ``posed_healthy``, 1 while frames flow through every stage (when the
            systemd watchdog is pinged), else 0; 0 for good once a stage thread died.
        camera_up: ``posed_camera_up{camera}``, 1 while the camera delivers frames, 0 while
            it is starting, reconnecting, finished or failed.
        build_info: ``posed_build_info{version,engine,provider,model}``, always 1; set it
            with :meth:`set_build_info`.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        counter, histogram, gauge = (partial(kind, registry=self.registry)
                                     for kind in (Counter, Histogram, Gauge))
        per_camera = ["camera"]
        self.frames_captured = counter("posed_frames_captured", "Frames read from a camera.",
                                       per_camera)
        self.frames_dropped = counter("posed_frames_dropped",
                                      "Frames lost before publication, by reason.",
                                      ["camera", "reason"])
        self.frames_inferred = counter("posed_frames_inferred",
                                       "Frames that went through the model.", per_camera)
        self.frames_published = counter("posed_frames_published",
                                        "Pose messages sent on the stream.", per_camera)
        self.errors = counter("posed_errors", "Errors caught and survived, by pipeline stage.",
                              ["stage"])
        self.reconnects = counter("posed_reconnects",
                                  "Times a camera was reopened after a failure.", per_camera)
        self.inference_seconds = histogram("posed_inference_seconds", "Model time per batch.",
                                           buckets=LATENCY_BUCKETS)
        self.end_to_end_seconds = histogram(
            "posed_end_to_end_seconds", "Time from capture to publication of a frame.",
            per_camera, buckets=LATENCY_BUCKETS)
        self.processor_seconds = histogram("posed_processor_seconds",
                                           "Time spent in a pose processor per frame.",
                                           ["processor"], buckets=LATENCY_BUCKETS)
        self.batch_size = histogram("posed_batch_size", "Frames per inferred batch.",
                                    buckets=BATCH_BUCKETS)
        self.queue_depth = gauge("posed_queue_depth", "Items waiting in an internal queue.",
                                 ["queue"])
        self.capture_fps = gauge("posed_capture_fps",
                                 "Recent capture rate of a camera, frames per second.", per_camera)
        self.ready = gauge("posed_ready", "1 when the daemon is warmed up and serving, else 0.")
        self.healthy = gauge("posed_healthy",
                             "1 while frames flow through every pipeline stage, else 0.")
        self.camera_up = gauge("posed_camera_up",
                               "1 while a camera delivers frames; 0 while starting, "
                               "reconnecting, finished or failed.", per_camera)
        # A gauge (not Info) so the series is exactly posed_build_info with the four labels.
        self.build_info = gauge("posed_build_info",
                                "Build and model of the running daemon; the value is always 1.",
                                ["version", "engine", "provider", "model"])
        # Errors are rare; create every stage at zero so increase() sees the first one.
        for stage in ERROR_STAGES:
            self.errors.labels(stage=stage)
        self._cameras: set[str] = set()

    @property
    def cameras(self) -> frozenset[str]:
        """Cameras announced with :meth:`add_camera`."""
        return frozenset(self._cameras)

    def add_camera(self, camera: str) -> None:
        """Create a camera's per-camera series at zero. Calling it again is harmless.

        Args:
            camera: Camera id, as used in the ``camera`` label and the stream topic.
        """
        self.frames_captured.labels(camera=camera)
        self.frames_inferred.labels(camera=camera)
        self.frames_published.labels(camera=camera)
        self.reconnects.labels(camera=camera)
        self.camera_up.labels(camera=camera)
        for reason in DROP_REASONS:
            self.frames_dropped.labels(camera=camera, reason=reason)
        self._cameras.add(camera)

    def set_build_info(self, version: str, engine: str, provider: str, model: str) -> None:
        """Publish what is running as ``posed_build_info{...} 1``, replacing any earlier value.

        Args:
            version: posed version.
            engine: Engine name (``onnx``, ``pytorch``...).
            provider: Execution provider or device (``CUDAExecutionProvider``, ``cpu``...).
            model: Model bundle name.
        """
        self.build_info.clear()  # one series only, even after a model reload
        self.build_info.labels(version=version, engine=engine, provider=provider,
                               model=model).set(1)

    def serve(self, host: str = "127.0.0.1", port: int = 9108) -> MetricsServer:
        """Serve ``/metrics`` over HTTP from a daemon thread (prometheus_client's WSGI app).

        Args:
            host: Address to bind; loopback by default. ``0.0.0.0``, ``::`` or ``""`` expose
                the endpoint on every interface (logged as a warning).
            port: TCP port; 0 picks a free one (read it back from ``MetricsServer.port``).

        Returns:
            The running server; call ``close()`` on shutdown.

        Raises:
            ConfigError: ``port`` is not an integer in 0..65535.
            PublishError: The address cannot be resolved or bound (e.g. the port is in use).
        """
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ConfigError(f"metrics port: {port!r} is not an integer in 0..65535")
        if host in _ALL_INTERFACES:
            log.warning("metrics endpoint %s:%d listens on all interfaces; bind 127.0.0.1 "
                        "unless a scraper on another host needs it", host or "*", port)
        # getaddrinfo() rejects "" and bracketed literals; give it what the user meant.
        addr = "0.0.0.0" if host == "" else host.removeprefix("[").removesuffix("]")
        try:
            family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM,
                                        flags=socket.AI_PASSIVE)[0][0]
            # A subclass per server: address_family is a class attribute (IPv4 or IPv6).
            server_cls = type("_MetricsHTTPServer", (_ThreadingServer,),
                              {"address_family": family})
            server = make_server(addr, port, make_wsgi_app(self.registry), server_cls,
                                 handler_class=_QuietHandler)
        except OSError as exc:  # EADDRINUSE, EACCES, EADDRNOTAVAIL, gaierror
            raise PublishError(f"metrics {host}:{port}: cannot bind ({exc})") from exc
        thread = threading.Thread(target=server.serve_forever, args=(_POLL_S,),
                                  name=f"metrics-{server.server_port}", daemon=True)
        thread.start()
        srv = MetricsServer(server, thread, host)
        log.info("metrics on %s", srv.url)
        return srv
