"""End to end: `posed serve` as a process, a real ZeroMQ subscriber, offline analysis as truth."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from posed.daemon.client import Subscriber
from test_daemon_service import free_port

pytest.importorskip("torch")

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def stream_file(bundle: Path, video: Path, frames: int, tmp_path: Path, camera: dict | None = None,
                max_batch: int = 4, **model: object) -> list:
    """Serve ``video`` with ``bundle`` from a `posed serve` process (fast pace, batches of up
    to ``max_batch``) and return the ``frames`` pose messages a real subscriber receives. The
    daemon must exit 0 by itself at the end of the file, and nothing may follow the last
    frame. ``camera`` adds settings to the camera."""
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    cfg = {"model": {"bundle": str(bundle), "device": "cpu", **model},
           "cameras": [{"id": "arena", "source": str(video), "pace": "fast", **(camera or {})}],
           "batching": {"max_batch": max_batch, "max_delay_ms": 5},
           "publisher": {"endpoint": endpoint, "wait_for_subscribers": 1, "wait_timeout_s": 60},
           "metrics": {"enabled": False}}
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    with Subscriber(endpoint) as sub:
        daemon = subprocess.Popen([sys.executable, "-m", "posed.cli", "serve", "--config",
                                   str(tmp_path / "serve.yaml"), "-q"], stderr=subprocess.PIPE,
                                  text=True)
        try:
            messages = []
            while len(messages) < frames:
                msg = sub.recv(timeout=60)
                assert msg is not None, "no pose within 60 s"
                messages.append(msg)
            code = daemon.wait(timeout=60)  # a file-only config ends by itself
        finally:
            if daemon.poll() is None:
                daemon.kill()
        assert code == 0, daemon.stderr.read()
        assert sub.recv(timeout=0.5) is None  # nothing beyond the last frame
    return messages


@pytest.mark.slow
def test_every_frame_arrives_in_order_and_equals_offline_analysis(synth_project, tmp_path):
    from posed.engines import api

    video = synth_project / "videos" / "synth1.mp4"  # 60 frames, never seen in training
    messages = stream_file(DEMO / "model", video, 60, tmp_path)

    assert [m.seq for m in messages] == list(range(60))
    assert [m.frame for m in messages] == list(range(60))
    assert all(m.camera == "arena" for m in messages)
    for m in messages:
        assert m.capture_ns <= m.infer_ns <= m.publish_ns <= m.receive_ns

    report = api.analyze_videos(DEMO / "model", [video], dest=tmp_path, progress=False)
    offline = pd.read_hdf(report.outputs[0], "df_with_missing").to_numpy().reshape(60, -1, 3)
    streamed = np.stack([m.keypoints for m in messages])
    assert list(messages[0].bodyparts) == ["snout", "leftear", "rightear", "tailbase"]
    np.testing.assert_allclose(streamed[..., :2], offline[..., :2], atol=1e-3)
    np.testing.assert_allclose(streamed[..., 2], offline[..., 2], atol=1e-4)


@pytest.mark.slow
def test_dynamic_cropping_streams_what_offline_dynamic_analysis_computes(synth_project, tmp_path):
    """One frame per batch, so each frame's window comes from the frame before, as offline:
    every streamed pose equals `analyze --dynamic`, and says whether it was cropped."""
    import json

    from posed.engines import api

    video = synth_project / "videos" / "synth1.mp4"
    messages = stream_file(DEMO / "model", video, 60, tmp_path, max_batch=1,
                           camera={"dynamic": [True, 0.5, 16]})
    assert [m.frame for m in messages] == list(range(60))
    report = api.analyze_videos(DEMO / "model", [video], dest=tmp_path, progress=False,
                                dynamic=(True, 0.5, 16))
    offline = pd.read_hdf(report.outputs[0], "df_with_missing").to_numpy().reshape(60, -1, 3)
    streamed = np.stack([m.keypoints for m in messages])
    np.testing.assert_allclose(streamed[..., :2], offline[..., :2], atol=1e-3)
    meta = json.loads(next(tmp_path.glob("*_meta.json")).read_text())
    crops = [m.crop for m in messages]
    assert crops[0] is None
    assert sum(c is not None for c in crops) == meta["dynamic"]["cropped_frames"]
    assert meta["dynamic"]["cropped_frames"] >= 30  # the demo model keeps the animal in view
    for m in messages:
        if m.crop is not None:  # a window on the 32-px grid, inside the 128x128 frame
            x, y, w, h = m.crop
            assert x % 32 == 0 and y % 32 == 0 and x + w <= 128 and y + h <= 128
            assert (w, h) != (128, 128)
