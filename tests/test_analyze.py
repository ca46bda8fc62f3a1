"""Offline analysis with a framework-free runner: outputs, globbing, failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posed.engines.offline.analyze import analyze_images, analyze_videos, expand_inputs
from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle


class BrightestPixelRunner(PoseRunner):
    """Puts every keypoint on the frame's brightest pixel: simple, exact, checkable."""

    engine = "fake"

    @classmethod
    def load(cls, bundle, **options):
        return cls(bundle)

    def _forward(self, frames):
        gray = frames.sum(axis=3)
        flat = gray.reshape(len(frames), -1).argmax(axis=1)
        y, x = np.divmod(flat, frames.shape[2])
        out = np.zeros((len(frames), len(self.bodyparts), 3), np.float32)
        out[:, :, 0] = x[:, None]
        out[:, :, 1] = y[:, None]
        out[:, :, 2] = 1.0
        return out


def _runner():
    bundle = ModelBundle(engine="fake", format="none", bodyparts=["nose", "tail"], architecture={},
                         stride=8.0, locref_stdev=7.2801, source={"scorer": "fakeScorer"})
    return BrightestPixelRunner.load(bundle)


def _video(path, n=12, size=(48, 32)):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=30)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.zeros((size[1], size[0], 3), np.uint8)
            img[10:14, 2 * i + 4: 2 * i + 8] = 255  # a bright square moving right
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_analyze_writes_deeplabcut_tables(tmp_path):
    _video(tmp_path / "a.mp4")
    report = analyze_videos(_runner(), [tmp_path / "a.mp4"], csv=True, progress=False, batch_size=5)
    assert report.failed == [] and report.frames == 12
    h5 = tmp_path / "afakeScorer.h5"
    assert report.outputs == [h5]
    df = pd.read_hdf(h5, "df_with_missing")
    assert df.shape == (12, 6) and list(df.index) == list(range(12))
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    xs = df[("fakeScorer", "nose", "x")].to_numpy()
    assert (np.diff(xs) > 0).mean() > 0.8  # the square moves right frame after frame
    meta = json.loads((tmp_path / "afakeScorer_meta.json").read_text())
    assert meta["nframes"] == 12 and meta["bodyparts"] == ["nose", "tail"]
    assert meta["frame_dimensions"] == [32, 48] and meta["engine"] == "fake"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "a.mp4", "afakeScorer.csv", "afakeScorer.h5", "afakeScorer_meta.json"]


def test_broken_and_missing_videos_are_reported_and_skipped(tmp_path):
    _video(tmp_path / "good.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"garbage" * 50)
    out = tmp_path / "out"
    report = analyze_videos(_runner(), [tmp_path / "*.mp4", tmp_path / "missing.avi"], dest=out,
                            progress=False)
    assert [p.name for p in report.outputs] == ["goodfakeScorer.h5"]
    failed = {p.name: why for p, why in report.failed}
    assert set(failed) == {"bad.mp4", "missing.avi"}
    assert str(tmp_path / "bad.mp4") in failed["bad.mp4"]
    assert "no such file" in failed["missing.avi"]
    assert not list(out.glob(".*"))  # no temporary files left behind


def test_expand_inputs_handles_folders_globs_and_duplicates(tmp_path):
    for name in ("b.mp4", "a.avi", "c.txt", ".hidden.mp4"):
        (tmp_path / name).write_bytes(b"x")
    suffixes = (".mp4", ".avi")
    assert [p.name for p in expand_inputs([tmp_path], suffixes)] == ["a.avi", "b.mp4"]
    assert [p.name for p in expand_inputs([tmp_path / "*.mp4", tmp_path / "b.mp4"], suffixes)] == [
        "b.mp4"]
    assert expand_inputs([tmp_path / "nothing*.mp4"], suffixes) == [tmp_path / "nothing*.mp4"]


def test_analyze_images_skips_unreadable_images(tmp_path):
    import cv2

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        img = np.zeros((20, 30, 3), np.uint8)
        img[5, 7 + i] = 255
        cv2.imwrite(str(folder / f"img{i}.png"), img)
    (folder / "img9.png").write_bytes(b"not a png")
    report = analyze_images(_runner(), [folder], progress=False)
    assert [p.name for p, _ in report.failed] == ["img9.png"]
    df = pd.read_hdf(report.outputs[0], "df_with_missing")
    assert list(df.index) == [str(folder / f"img{i}.png") for i in range(3)]
    assert df[("fakeScorer", "tail", "x")].tolist() == [7.0, 8.0, 9.0]


def test_rerun_skips_done_videos_and_redoes_changed_ones(tmp_path):
    import os

    _video(tmp_path / "a.mp4")
    _video(tmp_path / "b.mp4")
    runner = _runner()
    first = analyze_videos(runner, [tmp_path], progress=False)
    assert first.frames == 24 and first.skipped == []
    again = analyze_videos(runner, [tmp_path], progress=False)
    assert [p.name for p in again.skipped] == ["a.mp4", "b.mp4"] and again.frames == 0
    st = (tmp_path / "b.mp4").stat()
    os.utime(tmp_path / "b.mp4", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # video replaced
    changed = analyze_videos(runner, [tmp_path], progress=False)
    assert [p.name for p in changed.skipped] == ["a.mp4"] and changed.frames == 12
    with_csv = analyze_videos(runner, [tmp_path / "a.mp4"], csv=True, progress=False)
    assert with_csv.skipped == [] and (tmp_path / "afakeScorer.csv").is_file()  # csv was missing
    forced = analyze_videos(runner, [tmp_path / "a.mp4"], csv=True, progress=False, overwrite=True)
    assert forced.skipped == [] and forced.frames == 12


def test_killed_analysis_resumes_without_truncated_or_duplicated_outputs(tmp_path):
    """SIGKILL a real `posed analyze` run mid-way, run it again, compare with an unbroken run."""
    import shutil
    import signal
    import subprocess
    import sys
    import time

    pytest.importorskip("torch")
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    videos = tmp_path / "videos"
    videos.mkdir()
    for name in ("v1", "v2", "v3"):
        shutil.copy(demo / "clip.mp4", videos / f"{name}.mp4")
    cmd = [sys.executable, "-m", "posed.cli", "analyze", str(demo / "model"), str(videos),
           "--csv", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(videos.glob("*_meta.json")) and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)  # somewhere inside the second video
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # The kill landed mid-run: some but not all videos were complete and are skipped now.
    assert re.search(r"\b[12] already done", done.stderr), done.stderr
    reference = tmp_path / "reference"
    subprocess.run([*cmd[:5], str(videos), "--dest", str(reference), "--csv", "-q"], check=True,
                   timeout=300)
    for name in ("v1", "v2", "v3"):
        (h5,) = videos.glob(f"{name}posed_*.h5")
        ours = pd.read_hdf(h5, "df_with_missing")
        ref = pd.read_hdf(reference / h5.name, "df_with_missing")
        assert ours.shape == (300, 12)
        pd.testing.assert_frame_equal(ours, ref)
        assert len(pd.read_csv(h5.with_suffix(".csv"), header=[0, 1, 2], index_col=0)) == 300
    assert not [p for p in videos.iterdir() if p.name.startswith(".")]  # no temp files left
