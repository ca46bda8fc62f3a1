"""Camera capture: files (paced, fast, looped), live HTTP streams that die, refused URLs."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import pytest

from posed.daemon.capture import Camera, CameraSpec, make_queue, open_source
from posed.daemon.queues import FrameQueue, FrameSignal
from posed.daemon.types import Frame
from posed.errors import CaptureError

W, H = 64, 48


def _red(i: int) -> int:
    return (i * 12) % 240


def make_video(path: Path, n: int = 20, fps: int = 25, fmt: str | None = None) -> Path:
    """Write ``n`` solid-colour frames; frame i has red = _red(i), green = 255 - red."""
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.codec_context.options = {"qscale": "2"}  # near-lossless: colours stay checkable
        for i in range(n):
            img = np.empty((H, W, 3), np.uint8)
            img[..., 0], img[..., 1], img[..., 2] = _red(i), 255 - _red(i), 64
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


class _Child:
    def __init__(self, rec: dict, key: tuple) -> None:
        self.rec, self.key = rec, key

    def inc(self, n: float = 1) -> None:
        self.rec[self.key] = self.rec.get(self.key, 0) + n

    def set(self, v: float) -> None:
        self.rec[self.key] = v


class _Family:
    def __init__(self, rec: dict, name: str) -> None:
        self.rec, self.name = rec, name

    def labels(self, **kw: str) -> _Child:
        return _Child(self.rec, (self.name, tuple(sorted(kw.items()))))


class StubMetrics:
    """Records every metric call as {(name, labels): value}."""

    def __init__(self) -> None:
        self.rec: dict[tuple, float] = {}
        for name in ("frames_captured", "frames_dropped", "reconnects", "errors",
                     "capture_fps"):
            setattr(self, name, _Family(self.rec, name))

    def get(self, name: str, **labels: str) -> float:
        return self.rec.get((name, tuple(sorted(labels.items()))), 0)


def start_camera(spec: CameraSpec, metrics: Any = None) -> tuple[Camera, FrameQueue,
                                                                 threading.Event]:
    stop = threading.Event()
    queue = make_queue(spec, FrameSignal(), metrics)
    cam = Camera(spec, queue, stop, metrics=metrics)
    cam.start()
    return cam, queue, stop


def drain(queue: FrameQueue, until: Callable[[list[Frame]], bool], timeout: float = 10.0,
          delay: float = 0.0) -> list[Frame]:
    """Consume frames (sleeping ``delay`` after each) until ``until(frames)`` or timeout."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until(frames):
        frame = queue.get_nowait()
        if frame is None:
            time.sleep(0.005)
            continue
        frames.append(frame)
        if delay:
            time.sleep(delay)
    return frames


def stop_and_join(cam: Camera, stop: threading.Event, timeout: float = 3.0) -> None:
    stop.set()
    cam.join(timeout)
    assert not cam.is_alive()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_video(tmp_path / "clip.mp4", n=20)


def test_spec_resolution_and_validation() -> None:
    assert CameraSpec("a", "/dev/video0").resolved_kind() == "v4l2"
    v4l2 = CameraSpec("a", "v4l2:///dev/video2", width=640, height=480, fps=30)
    assert (v4l2.resolved_kind(), v4l2.target(), v4l2.is_live()) == ("v4l2", "/dev/video2", True)
    rtsp = CameraSpec("a", "rtsp://127.0.0.1/cam")
    assert (rtsp.resolved_kind(), rtsp.resolved_policy()) == ("stream", "latest")
    f = CameraSpec("a", "videos/m1.mp4")
    assert (f.resolved_kind(), f.resolved_policy(), f.is_live()) == ("file", "lossless", False)
    assert CameraSpec("a", "file:///x/m1.mp4").resolved_kind() == "file"
    assert CameraSpec("a", "rtsp://h/c", policy="lossless").resolved_policy() == "lossless"
    assert CameraSpec("a", "/dev/video0", kind="file").resolved_kind() == "file"

    for kwargs, word in [
        (dict(kind="webcam"), "kind"),
        (dict(pace="slow"), "pace"),
        (dict(policy="newest"), "policy"),
        (dict(queue_size=0), "queue_size"),
        (dict(reconnect_initial_s=0), "reconnect_initial_s"),
        (dict(reconnect_initial_s=2.0, reconnect_max_s=1.0), "reconnect_max_s"),
        (dict(width=640, height=480), "v4l2"),
    ]:
        with pytest.raises(ValueError, match=word):
            CameraSpec("cam0", "m1.mp4", **kwargs)
    with pytest.raises(ValueError, match="id"):
        CameraSpec("", "m1.mp4")
    with pytest.raises(ValueError, match="source"):
        CameraSpec("cam0", "")


def test_open_source_errors(tmp_path: Path) -> None:
    with pytest.raises(CaptureError, match=r"^c: .*nope\.mp4: cannot open \(no such file\)$"):
        open_source(CameraSpec("c", str(tmp_path / "nope.mp4")))
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 20)
    with pytest.raises(CaptureError, match="cannot open"):
        open_source(CameraSpec("c", str(text)))


def test_file_fast_lossless_delivers_every_frame(clip: Path) -> None:
    metrics = StubMetrics()
    cam, queue, stop = start_camera(CameraSpec("cam0", str(clip), pace="fast"), metrics)
    frames = drain(queue, lambda fr: len(fr) >= 20)
    assert cam.finished.wait(5)
    cam.join(2)
    assert not cam.is_alive() and cam.error is None
    assert [f.seq for f in frames] == list(range(20))
    assert [f.index for f in frames] == list(range(20))
    for i, f in enumerate(frames):
        assert f.camera == "cam0" and f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        red, green = f.image[..., 0].mean(), f.image[..., 1].mean()
        assert abs(red - _red(i)) < 8 and abs(green - (255 - _red(i))) < 8, i
        assert f.pts == pytest.approx(i / 25, abs=1e-3)
        assert f.capture_ns > 0 and f.capture_mono > 0
    assert cam.seq == 20 and queue.get_nowait() is None
    assert metrics.get("frames_captured", camera="cam0") == 20
    assert metrics.get("errors", stage="capture") == 0


def test_lossless_slow_consumer_gets_all(clip: Path) -> None:
    spec = CameraSpec("c", str(clip), pace="fast", queue_size=2)
    cam, queue, stop = start_camera(spec)
    frames = drain(queue, lambda fr: len(fr) >= 20, delay=0.01)
    assert cam.finished.wait(5)
    assert [f.seq for f in frames] == list(range(20))
    assert queue.dropped == 0 and cam.decode_errors == 0
    stop_and_join(cam, stop)


def test_latest_slow_consumer_drops_and_counts_add_up(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "c30.mp4", n=30)
    metrics = StubMetrics()
    spec = CameraSpec("c", str(clip), pace="fast", policy="latest", queue_size=2)
    cam, queue, stop = start_camera(spec, metrics)
    frames = drain(queue, lambda fr: cam.finished.is_set() and len(queue) == 0, delay=0.03)
    stop_and_join(cam, stop)
    assert cam.seq == 30
    assert queue.dropped > 0
    assert len(frames) + queue.dropped == cam.seq
    assert metrics.get("frames_dropped", camera="c", reason="policy") == queue.dropped
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and seqs[-1] == 29  # the freshest frame always survives


def test_native_pacing_takes_about_the_clip_duration(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "paced.mp4", n=15, fps=30)  # 0.5 s
    t0 = time.monotonic()
    cam, queue, stop = start_camera(CameraSpec("c", str(clip), pace="native"))
    frames = drain(queue, lambda fr: len(fr) >= 15)
    assert cam.finished.wait(5)
    elapsed = time.monotonic() - t0
    assert len(frames) == 15
    assert elapsed >= 0.6 * 14 / 30
    # Frames are released in time with their timestamps (loose: shared CI cores).
    span = frames[-1].capture_mono - frames[0].capture_mono
    assert span >= 0.6 * (frames[-1].pts - frames[0].pts)
    stop_and_join(cam, stop)


def test_loop_continues_seq_and_restarts_index(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "short.mp4", n=8)
    cam, queue, stop = start_camera(CameraSpec("c", str(clip), pace="fast", loop=True))
    frames = drain(queue, lambda fr: len(fr) >= 20)
    stop_and_join(cam, stop)
    assert [f.seq for f in frames] == list(range(20))
    assert [f.index for f in frames] == [i % 8 for i in range(20)]
    assert not cam.finished.is_set() and cam.opened >= 3


def test_stop_ends_threads_promptly(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "slow.mp4", n=30, fps=5)  # 6 s if paced
    stop = threading.Event()
    signal = FrameSignal()
    paced = Camera(CameraSpec("p", str(clip), loop=True), make_queue(
        CameraSpec("p", str(clip)), signal), stop)
    # No consumer: this one blocks in a full lossless queue.
    blocked_spec = CameraSpec("b", str(clip), pace="fast", loop=True, queue_size=1)
    blocked = Camera(blocked_spec, make_queue(blocked_spec, signal), stop)
    paced.start()
    blocked.start()
    deadline = time.monotonic() + 5
    while (paced.seq < 1 or blocked.seq < 1) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert paced.seq >= 1 and blocked.seq == 1
    t0 = time.monotonic()
    stop.set()
    paced.join(1.0)
    blocked.join(1.0)
    assert not paced.is_alive() and not blocked.is_alive()
    assert time.monotonic() - t0 < 1.0


def test_missing_file_sets_error_and_finished(tmp_path: Path) -> None:
    metrics = StubMetrics()
    cam, queue, stop = start_camera(CameraSpec("m", str(tmp_path / "gone.mp4")), metrics)
    assert cam.finished.wait(3)
    cam.join(2)
    assert not cam.is_alive()
    assert cam.error is not None and "no such file" in cam.error
    assert cam.seq == 0 and len(queue) == 0
    assert metrics.get("errors", stage="capture") == 1


class _FlakyServer:
    """Serves one MPEG-TS file over HTTP; the first response is cut off half-way."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.hits = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # no Content-Length: closing the socket ends it

            def do_GET(self) -> None:  # noqa: N802 - http.server API
                first = owner.hits == 0
                owner.hits += 1
                data = owner.payload[: len(owner.payload) // 2] if first else owner.payload
                self.send_response(200)
                self.send_header("Content-Type", "video/mp2t")
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/cam.ts"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,),
                                       daemon=True)

    def __enter__(self) -> _FlakyServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(2)


def test_live_stream_that_dies_is_reconnected(tmp_path: Path) -> None:
    payload = make_video(tmp_path / "live.ts", n=40, fmt="mpegts").read_bytes()
    metrics = StubMetrics()
    with _FlakyServer(payload) as server:
        spec = CameraSpec("live", server.url, kind="stream", policy="lossless",
                          reconnect_initial_s=0.05, reconnect_max_s=0.2, queue_size=8)
        cam, queue, stop = start_camera(spec, metrics)
        # Done once a frame from a later connection has arrived: index restarted, seq went on.
        frames = drain(queue, lambda fr: any(f.index == 0 and f.seq > 0 for f in fr)
                       and len(fr) >= 45)
        assert cam.is_alive()
        stop_and_join(cam, stop)
    assert server.hits >= 2
    assert cam.reconnects >= 1 and metrics.get("reconnects", camera="live") == cam.reconnects
    assert [f.seq for f in frames] == list(range(len(frames)))
    restarts = [f.seq for f in frames if f.index == 0]
    assert len(restarts) >= 2 and len(frames) >= 45
    first_pass = restarts[1]
    assert 0 < first_pass < 40  # the cut-off response gave only part of the clip
    # Frames after the reconnect are the clip from its start again, in order. (fflags
    # nobuffer may discard what FFmpeg read while probing, so match content by timestamp.)
    after = frames[first_pass:first_pass + 10]
    assert [f.index for f in after] == list(range(len(after)))
    for f in after:
        i = round(f.pts * 25)
        assert i < 12 and abs(f.image[..., 0].mean() - _red(i)) < 8, (f.index, f.pts)


def test_refused_stream_backs_off_and_stops(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on the port now: every connect is refused.
    metrics = StubMetrics()
    spec = CameraSpec("r", f"http://127.0.0.1:{port}/x.ts", reconnect_initial_s=0.02,
                      reconnect_max_s=0.1)
    cam, queue, stop = start_camera(spec, metrics)
    deadline = time.monotonic() + 5
    while cam.reconnects < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert cam.reconnects >= 3 and cam.is_alive()
    assert not cam.finished.is_set() and cam.seq == 0
    assert cam.error is not None and "cannot open" in cam.error
    assert metrics.get("errors", stage="capture") >= 3
    t0 = time.monotonic()
    stop_and_join(cam, stop, timeout=1.0)
    assert time.monotonic() - t0 < 1.0


def test_corrupt_packets_are_skipped_and_counted(tmp_path: Path) -> None:
    path = make_video(tmp_path / "bad.avi", n=30, fmt="avi")
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(0)
    for off in (len(data) // 3, len(data) // 2, 2 * len(data) // 3):
        data[off:off + 400] = rng.integers(0, 256, 400, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    metrics = StubMetrics()
    cam, queue, stop = start_camera(CameraSpec("d", str(path), pace="fast"), metrics)
    frames = drain(queue, lambda fr: cam.finished.is_set() and len(queue) == 0)
    stop_and_join(cam, stop)
    assert cam.error is None and 0 < cam.seq < 30
    assert cam.decode_errors >= 1
    assert metrics.get("frames_dropped", camera="d", reason="decode") == cam.decode_errors
    # seq counts captured frames only: no gaps even though data was lost.
    assert [f.seq for f in frames] == list(range(cam.seq))


def test_capture_fps_is_smoothed_once_per_second(clip: Path) -> None:
    metrics = StubMetrics()
    cam = Camera(CameraSpec("f", str(clip)), make_queue(CameraSpec("f", str(clip)),
                                                        FrameSignal()), threading.Event(),
                 metrics=metrics)
    # A round start: with monotonic()'s value (hours of uptime), t0 + 30/30 - t0 can round to
    # just under 1 s, and the first window would not close.
    cam._fps_start = t0 = 1000.0
    for k in range(1, 31):  # 30 frames over 1 s -> first window: 30 fps
        cam._tick_fps(t0 + k / 30, 1)
    assert cam.fps == pytest.approx(30, rel=0.05)
    assert metrics.get("capture_fps", camera="f") == pytest.approx(30, rel=0.05)
    for k in range(1, 11):  # 10 frames in the next second -> smoothed between 10 and 30
        cam._tick_fps(t0 + 1 + k / 10, 1)
    assert 10 < cam.fps < 30
    assert cam.fps == pytest.approx(20, rel=0.05)
    cam._tick_fps(t0 + 2.5)  # within the window: no update yet
    assert cam.fps == pytest.approx(20, rel=0.05)
    cam._tick_fps(t0 + 3.5)  # a frameless window: the rate decays
    assert cam.fps == pytest.approx(10, rel=0.05)
    assert metrics.get("capture_fps", camera="f") == pytest.approx(10, rel=0.05)
