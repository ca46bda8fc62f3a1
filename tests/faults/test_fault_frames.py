"""Frame numbers under damage: row i of a table (and the stream's ``frame``) is frame i of the
source after packets fail to decode, when a file is cut short, and when a file loops.

The clips are all-intra MJPEG, so a damaged packet loses exactly its own frame; frame i is
flat grey ``shade(i)`` and the fake model reports that grey, so a row shows which frame it
came from.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from faultkit import FakeRunner, Running, fake_bundle, free_port, make_service, shade, wait_until

from posed.cli import main

N = 60
DAMAGED = range(20, 26)
FPS = 30


def make_intra_clip(path: Path, n: int = N, damaged: range | tuple = ()) -> Path:
    """``n`` MJPEG frames in an MP4 with its index in front; the packets of frames in
    ``damaged`` are overwritten with zeros (same size and timestamps, so only their frames
    are lost)."""
    with av.open(str(path), "w", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("mjpeg", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuvj420p"
        packets = []
        for i in range(n):
            img = np.full((48, 64, 3), shade(i), np.uint8)
            packets += stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24"))
        packets += stream.encode()
        for i, packet in enumerate(packets):
            if i in damaged:
                bad = av.Packet(bytes(packet.size))
                bad.pts, bad.dts, bad.time_base = packet.pts, packet.dts, packet.time_base
                bad.stream = packet.stream
                packet = bad
            out.mux(packet)
    return path


@pytest.fixture
def fake_model(monkeypatch):
    """``posed analyze`` runs the fake model (keypoint ``grey`` at the frame's grey level)."""
    from posed.engines import api

    monkeypatch.setattr(api, "load_model", lambda *a, **k: FakeRunner(fake_bundle()))


def analyze(capsys, video: Path, *extra: str) -> tuple[int, pd.DataFrame, dict, str]:
    dest = video.parent / f"out_{video.stem}"
    code = main(["analyze", "bundle", str(video), "--dest", str(dest), "-q", *extra])
    err = capsys.readouterr().err
    h5 = next(dest.glob("*.h5"))
    meta = json.loads(h5.with_name(h5.stem + "_meta.json").read_text())
    return code, pd.read_hdf(h5, "df_with_missing"), meta, err


def grey(df: pd.DataFrame, coord: str = "x") -> np.ndarray:
    return df.xs(("grey", coord), axis=1, level=(1, 2)).iloc[:, 0].to_numpy()


def test_damaged_frames_are_nan_rows_and_later_rows_keep_their_frame(tmp_path, capsys,
                                                                     fake_model, caplog):
    good = make_intra_clip(tmp_path / "good.mp4")
    bad = make_intra_clip(tmp_path / "bad.mp4", damaged=DAMAGED)
    code, ref, _, _ = analyze(capsys, good)
    assert code == 0
    with caplog.at_level(logging.WARNING):
        code, df, meta, _ = analyze(capsys, bad)
    assert code == 0
    assert list(df.index) == list(range(N))
    lost = list(DAMAGED)
    assert np.isnan(grey(df)[lost]).all() and np.isnan(grey(df, "y")[lost]).all()
    assert (grey(df, "likelihood")[lost] == 0).all()
    kept = [i for i in range(N) if i not in DAMAGED]
    np.testing.assert_array_equal(df.iloc[kept].to_numpy(), ref.iloc[kept].to_numpy())
    np.testing.assert_allclose(grey(df)[kept], [shade(i) for i in kept], atol=3)
    assert meta["frames_failed"] == 6 and meta["nframes"] == N and meta["truncated"] is None
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(bad) in warnings[0] and "6 frame(s)" in warnings[0]


def test_truncated_file_warns_records_and_fails_unless_allowed(tmp_path, capsys, fake_model,
                                                               caplog):
    full = make_intra_clip(tmp_path / "full.mp4")
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        code, df, meta, err = analyze(capsys, cut)
    assert code == 1 and "--allow-truncated" in err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(cut) in warnings[0]
    found = meta["truncated"]["found"]
    assert meta["truncated"]["promised"] == N and 10 <= found < N
    assert f"promises {N} frames" in warnings[0] and f"holds {found}" in warnings[0]
    # Every frame the header counts has its row; those the file lost are NaN.
    assert list(df.index) == list(range(N))
    read = np.isfinite(grey(df))
    assert read[:found - 1].all() and not read[found:].any()
    np.testing.assert_allclose(grey(df)[read], [shade(i) for i in np.flatnonzero(read)], atol=3)

    code, _, meta, _ = analyze(capsys, cut, "--allow-truncated", "--overwrite")
    assert code == 0 and meta["truncated"]["found"] == found
    # A rerun that skips the finished video still says it is truncated.
    code, _, _, err = analyze(capsys, cut)
    assert code == 1 and "1 truncated" in err


def test_daemon_frame_field_is_the_true_index(tmp_path):
    """Frames after damaged packets keep their index (matching their pts); the damaged ones
    are counted as dropped for decode, and their indices are never reused."""
    from posed.daemon.client import Subscriber

    bad = make_intra_clip(tmp_path / "bad.mp4", damaged=DAMAGED)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    service = make_service(tmp_path, [{"id": "cam", "source": str(bad), "pace": "fast"}],
                           runner=FakeRunner(fake_bundle()),
                           publisher={"endpoint": endpoint, "wait_for_subscribers": 1})
    got = []
    with Subscriber(endpoint) as sub, Running(service) as run:
        def collect() -> bool:
            msg = sub.recv(0.05)
            if msg is not None:
                got.append(msg)
            return len(got) == N - len(DAMAGED) or not run.thread.is_alive() and msg is None
        assert wait_until(collect, timeout=30)
    frames = [m.frame for m in got]
    assert frames == [i for i in range(N) if i not in DAMAGED]
    for m in got:
        assert round(m.pts * FPS) == m.frame
        assert abs(float(m.keypoints[1, 0]) - shade(m.frame)) <= 3
    assert [m.seq for m in got] == list(range(len(got)))
    dropped = service.metrics.frames_dropped.labels(camera="cam", reason="decode")._value.get()
    assert dropped == len(DAMAGED)
    # The closing summary says what was lost, not only "0 dropped".
    assert service._summary().endswith(f"; {len(DAMAGED)} frame(s) failed to decode")


def test_listen_rows_of_a_looping_source_are_unambiguous(tmp_path):
    """150 poses of a 54-frame looping file: every row says which pass it belongs to."""
    from posed.daemon.listening import listen

    clip = make_intra_clip(tmp_path / "loop.mp4", n=54)
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    service = make_service(tmp_path, [{"id": "cam", "source": str(clip), "pace": "fast",
                                       "loop": True}], runner=FakeRunner(fake_bundle()),
                           publisher={"endpoint": endpoint, "wait_for_subscribers": 1})
    csv, h5 = tmp_path / "rec.csv", tmp_path / "rec.h5"
    result: dict[str, int] = {}
    listener = threading.Thread(target=lambda: result.setdefault(
        "n", listen(endpoint, csv=csv, h5=h5, count=150, timeout_s=30)), daemon=True)
    listener.start()
    with Running(service):
        listener.join(40)
    assert result["n"] == 150
    for df in (pd.read_hdf(h5, "df_with_missing"),
               pd.read_csv(csv, header=[0, 1, 2], index_col=[0, 1])):
        assert list(df.index.names) == ["loop", "frame"] and len(df) == 150
        assert df.index.is_unique
        loops = df.index.get_level_values("loop").to_numpy()
        frames = df.index.get_level_values("frame").to_numpy()
        assert loops[0] == 0 and loops[-1] >= 2 and (np.diff(loops) >= 0).all()
        assert frames.min() >= 0 and frames.max() <= 53
        # Each row's pose is the pose of its frame.
        np.testing.assert_allclose(grey(df), [shade(f) for f in frames], atol=3)
