"""Real DeepLabCut data: every frame of a clip of the openfield example video analysed into a
table DeepLabCut's tools read (skipped when the data is absent). A module of its own: it is
one of the longest tests of the suite, and under xdist it runs beside the rest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import DLC3_MODEL

pytestmark = [pytest.mark.realdata, pytest.mark.slow]

CLIP_PACKETS = 150  # 5 s of the video: the same stream and codec, a sixteenth of the CPU time


def _clip(src: Path, dst: Path, packets: int) -> int:
    """The video's first ``packets`` packets, stream-copied (the real encoding, not a
    re-encode); returns how many frames a decoder gets from the clip."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        for n, packet in enumerate(p for p in inp.demux(stream) if p.dts is not None):
            if n == packets:
                break
            packet.stream = ostream
            out.mux(packet)
    with av.open(str(dst)) as clip:
        return sum(1 for _ in clip.decode(video=0))


def test_analyze_openfield_video_is_deeplabcut_shaped(openfield_trained, tmp_path):
    from posed.cli import main

    video = tmp_path / "m3v1mp4.mp4"
    frames = _clip(openfield_trained / "videos" / "m3v1mp4.mp4", video, CLIP_PACKETS)
    assert frames >= CLIP_PACKETS - 4
    code = main(["analyze", str(openfield_trained), str(video), "--dest", str(tmp_path), "--csv",
                 "--batch-size", "16", "-q"])
    assert code == 0
    (h5,) = tmp_path.glob("m3v1mp4posed_*.h5")
    ours = pd.read_hdf(h5, "df_with_missing")
    assert ours.shape == (frames, 12)  # every frame, K=4 keypoints × (x, y, likelihood)
    assert list(ours.index) == list(range(frames))
    assert ours.notna().all().all()
    assert ((ours.xs("likelihood", axis=1, level="coords") >= 0).all().all())

    reference = DLC3_MODEL / "m3v1mp4DLC_Resnet50_openfieldOct30shuffle1_snapshot_1.h5"
    if reference.is_file():
        dlc = pd.read_hdf(reference, "df_with_missing")
        assert ours.columns.names == dlc.columns.names
        assert list(ours.columns.droplevel(0)) == list(dlc.columns.droplevel(0))
        assert (ours.dtypes == dlc.dtypes.iloc[0]).all()
        assert ours.index.dtype == dlc.index.dtype
    csv = pd.read_csv(h5.with_suffix(".csv"), header=[0, 1, 2], index_col=0)
    np.testing.assert_allclose(csv.to_numpy(), ours.to_numpy(), rtol=1e-5, atol=1e-3)
