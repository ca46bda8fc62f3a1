"""Source faults: a stream that stalls, one that goes away and comes back, corrupt packets on a
live stream, a resolution change mid-stream, truncated files, and a broken camera beside good
ones. Already covered elsewhere (not repeated here): a stream cut off and reconnected, a refused
URL backing off, corrupt packets in a file (tests/test_capture.py).
"""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from faultkit import (FakeRunner, HttpCamera, Running, counter, fake_bundle, free_port,
                      make_resizing_video, make_service, make_video, shade, wait_until)
from posed.daemon.capture import Camera, CameraSpec, make_queue
from posed.daemon.queues import FrameSignal
from posed.daemon.types import Frame


class _Metrics:
    """Just the camera's metric families, counted in a dict."""

    def __init__(self) -> None:
        self.values: dict[tuple, float] = {}
        for name in ("frames_captured", "frames_dropped", "reconnects", "errors", "capture_fps"):
            setattr(self, name, _Family(self.values, name))

    def get(self, name: str, **labels: str) -> float:
        return self.values.get((name, tuple(sorted(labels.items()))), 0)


class _Family:
    def __init__(self, values: dict, name: str) -> None:
        self.values, self.name = values, name

    def labels(self, **labels: str) -> _Family:
        child = _Family(self.values, self.name)
        child.key = (self.name, tuple(sorted(labels.items())))  # type: ignore[attr-defined]
        return child

    def inc(self, n: float = 1) -> None:
        self.values[self.key] = self.values.get(self.key, 0) + n  # type: ignore[attr-defined]

    def set(self, v: float) -> None:
        self.values[self.key] = v  # type: ignore[attr-defined]


def _live(url: str, cam_id: str = "live", **kw) -> CameraSpec:
    opts = dict(kind="stream", policy="lossless", queue_size=64, reconnect_initial_s=0.05,
                reconnect_max_s=0.4, read_timeout_s=0.5, open_timeout_s=2.0)
    opts.update(kw)
    return CameraSpec(cam_id, url, **opts)


class _Consumer:
    """Drains a camera's queue in a thread, keeping every frame."""

    def __init__(self, spec: CameraSpec, metrics=None) -> None:
        self.stop = threading.Event()
        self.queue = make_queue(spec, FrameSignal(), metrics)
        self.camera = Camera(spec, self.queue, self.stop, metrics=metrics)
        self.frames: list[Frame] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        while not self._done.is_set():
            frame = self.queue.get_nowait()
            if frame is None:
                self._done.wait(0.005)
            else:
                self.frames.append(frame)

    def __enter__(self) -> _Consumer:
        self.camera.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.camera.join(3)
        self._done.set()
        self._thread.join(2)
        assert not self.camera.is_alive(), "capture thread did not stop"


@pytest.fixture(scope="module")
def ts_payload(tmp_path_factory) -> bytes:
    return make_video(tmp_path_factory.mktemp("ts") / "live.ts", n=40, fmt="mpegts").read_bytes()


def _passes(frames: list[Frame]) -> list[list[Frame]]:
    """Frames split at each reopen of the source (index restarts at 0)."""
    out: list[list[Frame]] = []
    for f in frames:
        if f.index == 0 or not out:
            out.append([])
        out[-1].append(f)
    return out


def test_stalled_stream_times_out_and_reconnects(ts_payload):
    metrics = _Metrics()
    # First connection: half the clip, then the server keeps the socket open and sends nothing.
    with HttpCamera(ts_payload, [("stall", 0.5), "full"]) as server, \
            _Consumer(_live(server.url), metrics) as c:
        assert wait_until(lambda: len(_passes(c.frames)) >= 2 and len(c.frames) >= 45)
    assert server.hits >= 2 and c.camera.reconnects >= 1
    assert metrics.get("reconnects", camera="live") == c.camera.reconnects
    passes = _passes(c.frames)
    assert 0 < len(passes[0]) < 40  # what came before the stall was delivered
    assert len(passes[1]) >= 5
    assert [f.seq for f in c.frames] == list(range(len(c.frames)))  # seq runs on
    assert metrics.get("errors", stage="capture") >= 1


def test_stall_reason_names_the_timeout(ts_payload):
    with HttpCamera(ts_payload, [("stall", 0.5)]) as server, \
            _Consumer(_live(server.url, reconnect_initial_s=5.0, reconnect_max_s=5.0)) as c:
        assert wait_until(lambda: c.camera.error is not None)
        error = c.camera.error
    assert error == f"live: {server.url}: stalled (no data for 0.5 s)"


def test_camera_that_goes_away_and_returns(ts_payload):
    metrics = _Metrics()
    server = HttpCamera(ts_payload, [("cut", 0.5), "full"])
    server.up()
    try:
        with _Consumer(_live(server.url), metrics) as c:
            assert wait_until(lambda: len(c.frames) > 0 and c.camera.reconnects >= 1)
            server.down()  # the camera is unplugged: every connect is refused
            before = c.camera.reconnects
            assert wait_until(lambda: c.camera.reconnects >= before + 3)
            assert "cannot open" in (c.camera.error or "")
            outage_frames = len(c.frames)
            # Backoff: attempts during the outage slow down to reconnect_max_s apart.
            t_attempts = c.camera.reconnects
            threading.Event().wait(1.0)
            during_second = c.camera.reconnects - t_attempts
            server.up()  # plugged back in
            assert wait_until(lambda: len(c.frames) >= outage_frames + 40)
    finally:
        server.down()
    assert during_second <= 4  # 0.4 s apart at most: no busy reconnect loop (1 s window)
    assert metrics.get("reconnects", camera="live") == c.camera.reconnects
    assert [f.seq for f in c.frames] == list(range(len(c.frames)))
    back = c.frames[outage_frames:outage_frames + 20]
    # After the return the clip is delivered from its start again, content intact.
    assert [f.index for f in back] == list(range(20))
    for f in back:
        i = round(f.pts * 25)
        assert abs(f.image[..., 0].mean() - shade(i)) < 8


def test_corrupt_packets_on_a_live_stream_are_counted(ts_payload):
    data = bytearray(ts_payload)
    rng = np.random.default_rng(0)
    for off in (len(data) // 3, len(data) // 2):
        data[off:off + 600] = rng.integers(0, 256, 600, dtype=np.uint8).tobytes()
    metrics = _Metrics()
    with HttpCamera(bytes(data), ["full"]) as server, \
            _Consumer(_live(server.url, reconnect_initial_s=2.0, reconnect_max_s=2.0),
                      metrics) as c:
        assert wait_until(lambda: c.camera.reconnects >= 1 or len(c.frames) >= 40, timeout=5)
        first = _passes(c.frames)[0]
        corrupt = c.camera.corrupt_packets
        errors = metrics.get("errors", stage="capture")
    # The stream went on after the damage: frames from its end arrived on the same connection.
    assert round(first[-1].pts * 25) == 39
    assert 30 <= len(first) < 40  # frames whose packets were destroyed are missing ...
    assert corrupt >= 1  # ... and the damage is counted, not silent
    assert errors >= corrupt
    assert c.camera.stats()["corrupt_packets"] == c.camera.corrupt_packets


def test_resolution_change_mid_stream_is_served(tmp_path):
    both = make_resizing_video(tmp_path / "both.ts", [(64, 48), (96, 64)], n_each=15)
    runner = FakeRunner(fake_bundle())
    service = make_service(tmp_path, [{"id": "c", "source": str(both), "pace": "fast"}],
                           runner=runner,
                           recorder={"path": str(tmp_path / "rec.h5"), "flush_every_s": 3600})
    with Running(service) as run:
        assert wait_until(lambda: not run.thread.is_alive(), timeout=30)
    m = service.metrics
    assert counter(m.frames_captured, camera="c") == 30
    assert counter(m.frames_published, camera="c") == 30
    assert counter(m.errors, stage="inference") == 0 and counter(m.errors, stage="capture") == 0
    df = pd.read_hdf(tmp_path / "rec.h5", "df_with_missing")
    centre_x = df.xs(("centre", "x"), axis=1, level=(1, 2)).iloc[:, 0].to_numpy()
    # Keypoints are in each frame's own pixels: centre of 64x48, then of 96x64.
    assert list(df.index) == list(range(30))
    np.testing.assert_allclose(centre_x, [32.0] * 15 + [48.0] * 15)
    grey = df.xs(("grey", "x"), axis=1, level=(1, 2)).iloc[:, 0].to_numpy()
    np.testing.assert_allclose(grey, [shade(i) for i in range(30)], atol=8)  # no frame lost


def test_truncated_files(tmp_path):
    """A cut-off MP4 (index lost) cannot be opened; a cut-off MPEG-TS gives what it has.
    Neither stops the daemon or the good camera beside them."""
    mp4 = make_video(tmp_path / "full.mp4", n=30)
    cut_mp4 = tmp_path / "cut.mp4"
    cut_mp4.write_bytes(mp4.read_bytes()[: mp4.stat().st_size * 2 // 3])
    ts = make_video(tmp_path / "full.ts", n=30, fmt="mpegts")
    cut_ts = tmp_path / "cut.ts"
    cut_ts.write_bytes(ts.read_bytes()[: ts.stat().st_size // 2])
    good = make_video(tmp_path / "good.mp4", n=30)
    cams = [{"id": "mp4", "source": str(cut_mp4), "pace": "fast"},
            {"id": "ts", "source": str(cut_ts), "pace": "fast"},
            {"id": "good", "source": str(good), "pace": "fast"}]
    service = make_service(tmp_path, cams, runner=FakeRunner(fake_bundle()),
                           recorder={"path": str(tmp_path / "rec.h5"), "flush_every_s": 3600})
    with Running(service) as run:
        # File-only configs end by themselves, broken files included.
        assert wait_until(lambda: not run.thread.is_alive(), timeout=30)
    m = service.metrics
    by_id = {c.spec.id: c for c in service.cameras}
    assert by_id["mp4"].finished.is_set() and "cannot open" in by_id["mp4"].error
    assert counter(m.frames_captured, camera="mp4") == 0
    n_ts = counter(m.frames_captured, camera="ts")
    assert 5 <= n_ts < 30 and by_id["ts"].finished.is_set()
    assert counter(m.frames_published, camera="ts") == n_ts
    assert counter(m.frames_published, camera="good") == 30
    assert counter(m.errors, stage="capture") >= 1
    good_rows = pd.read_hdf(tmp_path / "rec_good.h5", "df_with_missing")
    assert list(good_rows.index) == list(range(30))
    ts_rows = pd.read_hdf(tmp_path / "rec_ts.h5", "df_with_missing")
    grey = ts_rows.xs(("grey", "x"), axis=1, level=(1, 2)).iloc[:, 0].to_numpy()
    np.testing.assert_allclose(grey, [shade(i) for i in range(int(n_ts))], atol=8)
    assert not (tmp_path / "rec_mp4.h5").exists()  # no frame, no table


def test_broken_cameras_do_not_hold_up_a_good_one(tmp_path, ts_payload):
    """One camera stalls, one is refused, one serves a file: the file's frames all arrive,
    in order, while the others keep retrying; every loss is in a counter."""
    good = make_video(tmp_path / "good.mp4", n=60, fps=30)
    refused = f"http://127.0.0.1:{free_port()}/cam.ts"  # nothing listens there
    with HttpCamera(ts_payload, [("stall", 0.3)]) as stalling:
        cams = [{"id": "stall", "source": stalling.url, "reconnect_initial_s": 0.05,
                 "reconnect_max_s": 0.2},
                {"id": "gone", "source": refused, "reconnect_initial_s": 0.05,
                 "reconnect_max_s": 0.2},
                {"id": "good", "source": str(good), "pace": "native"}]
        service = make_service(tmp_path, cams, runner=FakeRunner(fake_bundle()),
                               recorder={"path": str(tmp_path / "rec.h5"), "flush_every_s": 3600})
        with Running(service):
            m = service.metrics
            assert wait_until(lambda: counter(m.frames_published, camera="good") == 60, timeout=30)
            assert wait_until(lambda: counter(m.reconnects, camera="gone") >= 3)
            by_id = {c.spec.id: c for c in service.cameras}
            assert by_id["stall"].is_alive() and by_id["gone"].is_alive()
    assert by_id["good"].finished.is_set() and by_id["good"].error is None
    rows = pd.read_hdf(tmp_path / "rec_good.h5", "df_with_missing")
    assert list(rows.index) == list(range(60))
    # Seq accounting per camera: captured = published + every counted loss.
    for cam in ("stall", "gone", "good"):
        lost = sum(counter(m.frames_dropped, camera=cam, reason=r)
                   for r in ("policy", "inference", "publish_queue", "hwm"))
        assert counter(m.frames_captured, camera=cam) == \
            counter(m.frames_published, camera=cam) + lost, cam
    assert counter(m.reconnects, camera="good") == 0
