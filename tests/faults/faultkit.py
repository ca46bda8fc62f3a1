"""Helpers shared by the fault tests: test videos, a misbehaving HTTP camera, fake runners,
and an in-process daemon whose model can be swapped for a fake one.

Kept out of conftest.py so tests import exactly what they use; the name is unique because
pytest puts this folder (it has no ``__init__.py``) on ``sys.path``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np

from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from ports import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "configs" / "demo"




def shade(i: int) -> int:
    """Grey level of frame ``i`` in the test videos (identifies the frame after decoding)."""
    return (i * 12) % 240


def make_video(path: Path, n: int = 20, fps: int = 25, size: tuple[int, int] = (64, 48),
               fmt: str | None = None, start: int = 0) -> Path:
    """Write ``n`` solid frames (frame i has grey level ``shade(start + i)``); size is (w, h)."""
    w, h = size
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.options = {"qscale": "2"}
        for i in range(n):
            img = np.full((h, w, 3), shade(start + i), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def make_resizing_video(path: Path, sizes: list[tuple[int, int]], n_each: int = 15,
                        fps: int = 25) -> Path:
    """One MPEG-TS stream whose picture size changes (w, h per segment), as a camera does
    when its resolution is switched: one muxer, continuous packets, new size in-band."""
    from fractions import Fraction

    with av.open(str(path), "w", format="mpegts") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = sizes[0][0], sizes[0][1], "yuv420p"
        pts = 0
        for k, (w, h) in enumerate(sizes):
            if k == 0:
                ctx = stream.codec_context
            else:
                ctx = av.CodecContext.create("mpeg4", "w")
                ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
                ctx.time_base, ctx.framerate = stream.codec_context.time_base, Fraction(fps)
            ctx.options = {"qscale": "2"}
            for _ in range(n_each):
                frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), shade(pts), np.uint8),
                                                   format="rgb24")
                frame.pts = pts
                pts += 1
                for packet in ctx.encode(frame):
                    packet.stream = stream
                    out.mux(packet)
            for packet in ctx.encode():
                packet.stream = stream
                out.mux(packet)
    return path


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def wait_until(cond: Callable[[], bool], timeout: float = 10.0, step: float = 0.01) -> bool:
    """Poll ``cond`` until true or ``timeout``; returns its last value (never asserts time)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


class HttpCamera:
    """Serves an MPEG-TS payload over HTTP, misbehaving as told, one behaviour per request.

    Behaviours (the last one repeats): ``"full"`` sends everything and closes; ``("cut", f)``
    sends the first fraction ``f`` and closes; ``("stall", f)`` sends fraction ``f`` and then
    keeps the connection open without sending anything until the server stops.
    :meth:`down` closes the listening socket (connections are refused) and :meth:`up` binds the
    same port again: a camera that disconnects and comes back.
    """

    def __init__(self, payload: bytes, behaviours: list[Any]) -> None:
        self.payload = payload
        self.behaviours = list(behaviours)
        self.hits = 0
        self._stop = threading.Event()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/cam.ts"
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # no Content-Length: closing the socket ends it

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                hit = owner.hits
                owner.hits += 1
                how = owner.behaviours[min(hit, len(owner.behaviours) - 1)]
                kind, frac = (how, 1.0) if isinstance(how, str) else how
                data = owner.payload[: int(len(owner.payload) * frac)]
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                try:
                    self.wfile.write(data)
                    self.wfile.flush()
                    if kind == "stall":
                        owner._stop.wait(60)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def up(self) -> None:
        """Listen (again) on the camera's port."""
        ThreadingHTTPServer.allow_reuse_address = True
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening; open connections are left to end by themselves."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(2)
            self._httpd = None

    def __enter__(self) -> HttpCamera:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.down()


class FakeRunner(PoseRunner):
    """A model without a framework: keypoint 0 at the frame centre, keypoint 1 at (grey, grey).

    Faults on demand: ``fail_every`` makes every n-th call raise, ``nan_every`` makes every
    n-th call return NaN for keypoint 1, ``delay_s`` makes each call that slow.
    """

    engine = "fake"

    def __init__(self, bundle: ModelBundle, *, fail_every: int = 0, nan_every: int = 0,
                 delay_s: float = 0.0) -> None:
        super().__init__(bundle)
        self.fail_every = fail_every
        self.nan_every = nan_every
        self.delay_s = delay_s
        self.calls = 0
        self.frames = 0
        self.closed = False

    @classmethod
    def load(cls, bundle: ModelBundle, **options: Any) -> FakeRunner:
        return cls(bundle, **options)

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_every and self.calls % self.fail_every == 0:
            raise RuntimeError("injected model failure")
        n, h, w, _ = frames.shape
        self.frames += n
        out = np.zeros((n, 2, 3), np.float32)
        out[:, 0] = (w / 2, h / 2, 1.0)
        grey = frames.reshape(n, -1).mean(axis=1)
        out[:, 1, 0] = out[:, 1, 1] = grey
        out[:, 1, 2] = 0.9
        if self.nan_every and self.calls % self.nan_every == 0:
            out[:, 1, :] = np.nan
        return out

    def close(self) -> None:
        self.closed = True


def fake_bundle() -> ModelBundle:
    return ModelBundle(engine="fake", format="none", bodyparts=["centre", "grey"],
                       architecture={"net": "fake"}, stride=8.0, locref_stdev=7.2801,
                       source={"scorer": "posed_fake"})


def make_service(tmp_path: Path, cameras: list[dict], runner: PoseRunner | None = None,
                 **sections: Any) -> Any:
    """A :class:`~posed.daemon.service.Service` on loopback; ``runner`` replaces the model.

    Without ``runner`` the demo bundle (tiny PyTorch model) is loaded for real.
    """
    from posed.daemon.config import parse_config
    from posed.daemon.metrics import Metrics
    from posed.daemon.notify import Notifier
    from posed.daemon.service import Service

    data = {"model": {"bundle": str(DEMO / "model"), "device": "cpu", "threads": 1},
            "cameras": cameras,
            "publisher": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
            "metrics": {"enabled": False}}
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value}
    cfg = parse_config(data, "faults.yaml", tmp_path)
    service = Service(cfg, metrics=Metrics(), notifier=Notifier(""))
    if runner is not None:
        service._load_model = lambda: runner  # type: ignore[method-assign]
    return service


class Running:
    """Runs a started service's :meth:`run` loop in a thread; ``stop()`` ends and joins it."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        self.code = self.service.run()

    def __enter__(self) -> Running:
        try:
            self.service.start()
        except BaseException:
            self.service.stop()  # release what start() had opened (sockets, threads)
            raise
        self.thread.start()
        return self

    def stop(self) -> None:
        self.service.stop_event.set()
        self.thread.join(10)
        self.service.stop()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def reaped(proc: subprocess.Popen) -> Iterator[subprocess.Popen]:
    """Yield ``proc``; on the way out kill it if it still runs, and reap it."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def counter(metric: Any, **labels: str) -> float:
    """Current value of a labelled prometheus counter or gauge."""
    return metric.labels(**labels)._value.get()
