"""`posed export-nwb`: ndx-pose series per body part, read back equal with NWBHDF5IO."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest

from posed.cli import main
from posed.engines.project.posetables import poses_to_frame, write_pose_table

pytest.importorskip("pynwb")
pytest.importorskip("ndx_pose")

BODYPARTS = ["snout", "leftear", "tailbase"]
SCORER = "DLC_resnet50_testJan1shuffle1_1000"


def _video(path, n=15, size=(64, 48), fps=25):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            img = np.full((size[1], size[0], 3), 10 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _table(path, n=15):
    rng = np.random.default_rng(1)
    poses = rng.uniform(0, 60, (n, len(BODYPARTS), 3)).astype(np.float32)
    poses[..., 2] = rng.uniform(0, 1, (n, len(BODYPARTS)))
    poses[4, 1, :2] = np.nan  # a missing keypoint survives the round trip as NaN
    write_pose_table(poses_to_frame(poses, BODYPARTS, SCORER), path)
    return pd.read_hdf(path, "df_with_missing")


def test_export_nwb_round_trip(tmp_path, capsys):
    from pynwb import NWBHDF5IO

    _video(tmp_path / "mouse.mp4")
    df = _table(tmp_path / f"mouse{SCORER}.h5")
    out = tmp_path / "mouse.nwb"
    code = main(["export-nwb", str(tmp_path / f"mouse{SCORER}.h5"), "--video",
                 str(tmp_path / "mouse.mp4"), "--out", str(out), "--subject-id", "m1",
                 "--session-start", "2024-05-06T07:08:09+00:00", "-q"])
    assert code == 0 and capsys.readouterr().out.strip() == str(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files
    with NWBHDF5IO(str(out), "r") as io:
        nwb = io.read()
        assert nwb.session_start_time == dt.datetime(2024, 5, 6, 7, 8, 9, tzinfo=dt.timezone.utc)
        assert nwb.subject.subject_id == "m1"
        pose = nwb.processing["behavior"]["PoseEstimation"]
        assert pose.scorer == SCORER and pose.source_software == "posed"
        assert list(pose.skeleton.nodes[:]) == BODYPARTS
        assert sorted(pose.pose_estimation_series) == sorted(BODYPARTS)
        for bp in BODYPARTS:
            series = pose.pose_estimation_series[bp]
            np.testing.assert_array_equal(series.data[:], df[SCORER][bp][["x", "y"]].to_numpy())
            np.testing.assert_array_equal(series.confidence[:], df[SCORER][bp]["likelihood"])
            np.testing.assert_allclose(series.timestamps[:], np.arange(15) / 25.0)
            assert series.unit == "pixels"


def test_export_nwb_takes_the_frame_rate_from_the_metadata(tmp_path, capsys):
    from pynwb import NWBHDF5IO

    table = tmp_path / f"mouse{SCORER}.h5"
    _table(table, n=6)
    out = tmp_path / "mouse.nwb"
    # Without a video or a _meta.json there is no frame rate: one line naming the file.
    assert main(["export-nwb", str(table), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(table) in err and "frame rate unknown" in err
    (tmp_path / f"mouse{SCORER}_meta.json").write_text(json.dumps({"fps": 50.0}))
    assert main(["export-nwb", str(table), "--out", str(out), "-q"]) == 0
    with NWBHDF5IO(str(out), "r") as io:
        series = io.read().processing["behavior"]["PoseEstimation"].pose_estimation_series["snout"]
        np.testing.assert_allclose(series.timestamps[:], np.arange(6) / 50.0)
    assert main(["export-nwb", str(table), "--out", str(out), "-q"]) == 2  # exists: refused
    assert "--overwrite" in capsys.readouterr().err
