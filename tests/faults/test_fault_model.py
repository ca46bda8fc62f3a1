"""Model faults inside the running daemon: a model that raises, one that returns NaN, and one
slower than the camera. (Single batches failing or NaN rows are unit-tested in
tests/test_daemon_parts.py; here the whole service runs and a real subscriber listens.)
"""

from __future__ import annotations

import math
import threading

import numpy as np
import pandas as pd

from faultkit import (DEMO, FakeRunner, Running, counter, fake_bundle, make_service, make_video,
                      wait_until)
from posed.daemon.client import Subscriber


def test_a_model_that_raises_loses_only_its_frames_and_says_so(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n=60)
    runner = FakeRunner(fake_bundle(), fail_every=4)
    service = make_service(tmp_path, [{"id": "c", "source": str(clip), "pace": "fast"}],
                           runner=runner, batching={"max_batch": 1},
                           model={"warmup": False},
                           recorder={"path": str(tmp_path / "rec.h5"), "flush_every_s": 3600})
    with Running(service) as run:
        assert wait_until(lambda: not run.thread.is_alive(), timeout=30)
    m = service.metrics
    failed_calls = runner.calls // 4
    assert failed_calls >= 10
    assert counter(m.errors, stage="inference") == failed_calls
    assert counter(m.frames_dropped, camera="c", reason="inference") == failed_calls
    assert counter(m.frames_published, camera="c") == 60 - failed_calls
    rows = pd.read_hdf(tmp_path / "rec.h5", "df_with_missing")
    # Row i is frame i; the NaN rows are exactly the frames the counter says were lost (the
    # table ends at the last frame that produced a pose, so a lost last frame has no row).
    assert list(rows.index) == list(range(len(rows)))
    lost = [k - 1 for k in range(4, runner.calls + 1, 4)]
    nan = rows.xs("x", axis=1, level="coords").isna().all(axis=1)
    assert nan[nan].index.tolist() == [f for f in lost if f < len(rows)]
    assert len(rows) == 60 - (59 in lost)
    assert service.inference is not None and not service.inference.is_alive()


class _NanX(FakeRunner):
    """Returns NaN for one coordinate (likelihood untouched), or an infinite likelihood."""

    def _forward(self, frames):
        out = super()._forward(frames)
        if self.calls % 3 == 1:
            out[:, 1, 0] = np.nan
        elif self.calls % 3 == 2:
            out[:, 1, 2] = np.inf
        return out


def test_nan_keypoints_are_published_with_likelihood_zero(tmp_path):
    clip = make_video(tmp_path / "c.mp4", n=30)
    service = make_service(tmp_path, [{"id": "c", "source": str(clip), "pace": "fast"}],
                           runner=_NanX(fake_bundle()), batching={"max_batch": 1},
                           model={"warmup": False},
                           publisher={"wait_for_subscribers": 1, "wait_timeout_s": 20})
    run = Running(service)
    with Subscriber(service.cfg.publisher.endpoint) as sub:
        # start() waits for the subscriber before capturing, so it runs in its own thread.
        starter = threading.Thread(target=run.__enter__, daemon=True)
        starter.start()
        msgs = []
        while len(msgs) < 30:
            msg = sub.recv(timeout=20)
            assert msg is not None, "no pose within 20 s"
            msgs.append(msg)
        starter.join(10)
        run.stop()
    assert [m.seq for m in msgs] == list(range(30))
    bad = [m for m in msgs if m.seq % 3 != 2]  # calls 1, 2, 4, 5, ... had NaN or inf
    good = [m for m in msgs if m.seq % 3 == 2]
    for m in bad:
        x, y, p = m.keypoints[1]
        assert math.isnan(x) and math.isnan(y) and p == 0.0, m.seq
        assert m.keypoints[0, 2] == 1.0  # the other body part is untouched
    for m in good:
        assert np.isfinite(m.keypoints).all() and m.keypoints[1, 2] > 0.5
    assert counter(service.metrics.errors, stage="inference") == 0


def test_a_model_slower_than_the_camera_keeps_latency_bounded(tmp_path):
    """30 frames/s into a 10 frames/s model with the latest-frame policy: old frames are
    dropped (and counted) so every published pose is at most a few frames old."""
    runner = FakeRunner(fake_bundle(), delay_s=0.1)
    queue_size, max_batch = 2, 1
    service = make_service(tmp_path, [{"id": "c", "source": str(DEMO / "clip.mp4"),
                                       "pace": "native", "loop": True, "policy": "latest",
                                       "queue_size": queue_size}],
                           runner=runner, batching={"max_batch": max_batch},
                           model={"warmup": False})
    lags: list[int] = []
    latencies: list[float] = []
    with Running(service):
        camera = service.cameras[0]
        publish = service.publisher.publish

        def measuring(pose):
            # Frames captured since this one: how far behind the camera the stream is.
            lags.append(camera.seq - 1 - pose.seq)
            latencies.append(pose.infer_ns - pose.capture_ns)
            publish(pose)

        service.publisher.publish = measuring
        assert wait_until(lambda: len(lags) >= 25, timeout=30)
    m = service.metrics
    captured = counter(m.frames_captured, camera="c")
    published = counter(m.frames_published, camera="c")
    policy = counter(m.frames_dropped, camera="c", reason="policy")
    print(f"captured {captured:.0f}, published {published:.0f}, policy drops {policy:.0f}, "
          f"max lag {max(lags)} frames, median capture->inferred "
          f"{np.median(latencies) / 1e6:.0f} ms")
    # Capture is not held back by the model (a lossless queue would block it: no drops) ...
    assert policy > captured / 3
    assert captured == published + policy  # ... and every frame not published is counted.
    # The newest frame is always next: a pose is the queue plus the frames captured during
    # one inference behind (about 4 here), and that does not grow as the run goes on.
    assert max(lags) <= queue_size + max_batch + 10
    assert max(lags[-10:]) <= max(lags[:10]) + 2
