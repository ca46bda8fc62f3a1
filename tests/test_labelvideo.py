"""Labelled videos: keypoints drawn where the table says, with the cutoff respected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from posed.engines.project.posetables import poses_to_frame, write_pose_table
from posed.engines.offline.labelvideo import draw_pose, label_video
from posed.engines.video import VideoReader, probe_video
from posed.errors import ConfigError, DataError

DEMO = Path(__file__).resolve().parents[1] / "configs" / "demo"


def test_draw_pose_respects_cutoff_and_skeleton():
    img = np.zeros((40, 60, 3), np.uint8)
    kp = np.array([[10, 10, 0.9], [50, 30, 0.9], [30, 20, 0.1]], np.float32)
    out = draw_pose(img, kp, pcutoff=0.5, skeleton=[(0, 1)], radius=2)
    assert out[10, 10].any() and out[30, 50].any()
    # (30, 20) is below the cutoff, so no coloured dot there, only the grey skeleton edge.
    r, g, b = out[20, 30].tolist()
    assert r == g == b and r > 0
    plain = draw_pose(img, kp, pcutoff=0.5, radius=2)
    assert not plain[20, 30].any()  # without the skeleton nothing at all
    assert not img.any()  # input untouched


def test_label_video_writes_a_playable_video_with_marks(tmp_path):
    n = 20
    info = probe_video(DEMO / "clip.mp4")
    poses = np.zeros((n, 2, 3), np.float32)
    poses[:, 0] = (30, 30, 0.95)
    poses[:, 1] = (90, 90, 0.05)  # below the cutoff: not drawn
    table = tmp_path / "clipposed_x.h5"
    write_pose_table(poses_to_frame(poses, ["nose", "tail"], "posed_x"), table)
    out = label_video(DEMO / "clip.mp4", table, pcutoff=0.5, radius=4)
    assert out.name == "clipposed_x_labeled.mp4"
    labeled = probe_video(out)
    assert (labeled.width, labeled.height) == (info.width, info.height)
    with VideoReader(out) as reader, VideoReader(DEMO / "clip.mp4") as original:
        frames = [f for _, f in reader]
        first = next(iter(original))[1]
    assert len(frames) == n
    # The mark is drawn at (30, 30): that spot changed a lot; the undrawn one did not.
    assert np.abs(frames[0][30, 30].astype(int) - first[30, 30].astype(int)).max() > 60
    assert np.abs(frames[0][90, 90].astype(int) - first[90, 90].astype(int)).max() < 40
    with pytest.raises(ConfigError, match="unknown body part 'ear'"):
        label_video(DEMO / "clip.mp4", table, skeleton=[("nose", "ear")])


def test_table_longer_than_the_video_is_an_error(tmp_path):
    poses = np.zeros((400, 1, 3), np.float32)
    table = tmp_path / "clipposed_x.h5"
    write_pose_table(poses_to_frame(poses, ["nose"], "posed_x"), table)
    with pytest.raises(DataError, match="400 rows"):
        label_video(DEMO / "clip.mp4", table)


def test_label_video_from_the_cli(tmp_path, capsys):
    import shutil

    from posed.cli import main

    video = tmp_path / "clip.mp4"
    shutil.copy(DEMO / "clip.mp4", video)
    poses = np.zeros((300, 2, 3), np.float32)
    poses[..., 2] = 1.0
    write_pose_table(poses_to_frame(poses, ["nose", "tail"], "posed_x"), tmp_path / "clipposed_x.h5")
    assert main(["label-video", str(video), "--skeleton", "nose-tail", "-q"]) == 0
    assert capsys.readouterr().out.strip().endswith("clipposed_x_labeled.mp4")
    assert main(["label-video", str(video), "--filtered", "-q"]) == 2
    assert "no filtered pose tables" in capsys.readouterr().err
