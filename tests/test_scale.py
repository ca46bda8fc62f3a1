"""Analysis at scale: a process pool and a local Ray instance give the single-process output."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posed.cli import main

CLIPS = {"clip0": (0, 20), "clip1": (15, 39), "clip2": (30, 58)}  # frame ranges of synth1.mp4


def _write_clip(path: Path, frames: list[np.ndarray]) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "12", "threads": "1"}
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def clips(trained_project, tmp_path_factory) -> Path:
    """Three short videos of different lengths cut from the project's synthetic video."""
    import av

    with av.open(str(trained_project / "videos" / "synth1.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    folder = tmp_path_factory.mktemp("clips")
    for name, (a, b) in CLIPS.items():
        _write_clip(folder / f"{name}.mp4", frames[a:b])
    return folder


@pytest.fixture(scope="module")
def reference(trained_project, clips, tmp_path_factory) -> Path:
    """The single-process outputs of the three clips."""
    from posed.engines import api

    out = tmp_path_factory.mktemp("reference")
    report = api.analyze_videos(trained_project, [clips], dest=out, progress=False,
                                   runner_options={"device": "cpu"})
    assert report.failed == [] and report.frames == sum(b - a for a, b in CLIPS.values())
    return out


def _assert_same_outputs(out: Path, reference: Path) -> None:
    expected = sorted(p.name for p in reference.glob("*.h5"))
    assert sorted(p.name for p in out.glob("*.h5")) == expected and len(expected) == 3
    for name in expected:
        ours = pd.read_hdf(out / name, "df_with_missing")
        ref = pd.read_hdf(reference / name, "df_with_missing")
        pd.testing.assert_frame_equal(ours, ref, check_exact=False, atol=1e-4, rtol=0)
        assert (out / name.replace(".h5", "_meta.json")).is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files


@pytest.mark.slow
def test_worker_pool_matches_single_process_and_reports_a_broken_video(
        trained_project, clips, reference, tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    for clip in clips.glob("*.mp4"):
        (videos / clip.name).symlink_to(clip)
    (videos / "broken.mp4").write_bytes(b"\x00 not a video" * 100)
    out = tmp_path / "out"
    code = main(["analyze", str(trained_project), str(videos), "--workers", "2", "--dest", str(out),
                 "--device", "cpu"])
    _, err = capsys.readouterr()
    assert code == 1  # the broken video failed; the others were done
    assert f"error: {videos / 'broken.mp4'}" in err
    assert "3 videos analysed, 72 frames" in err and "1 failed (2 worker processes)" in err
    # Progress bars drawn by the driver from the workers' events: per video and overall.
    assert "clip1.mp4" in err and "videos (72 frames)" in err
    _assert_same_outputs(out, reference)


@pytest.mark.slow
@pytest.mark.heavy  # Ray's start-up; the sharding itself is the worker pool's, tested above
def test_ray_cluster_matches_single_process(trained_project, clips, reference, tmp_path, capsys):
    ray = pytest.importorskip("ray")
    from posed.engines import api

    ray.init(num_cpus=2, include_dashboard=False)
    try:
        out = tmp_path / "out"
        report = api.analyze_videos(trained_project, [clips / "*.mp4"], cluster="auto",
                                       dest=out, runner_options={"device": "cpu"})
        assert ray.is_initialized()  # the caller's connection is left open
    finally:
        ray.shutdown()
    assert report.failed == [] and report.skipped == []
    assert report.frames == 72 and "Ray cluster (2 CPUs" in report.where
    assert "clip2.mp4" in capsys.readouterr().err  # per-video bars came back from the workers
    _assert_same_outputs(out, reference)


def test_missing_ray_is_one_line_naming_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    code = main(["analyze", str(demo / "model"), str(demo / "clip.mp4"), "--cluster", "auto", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --cluster needs Ray") and "posed[cluster]" in err


def test_scale_options_are_checked(tmp_path, capsys):
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo"
    args = ["analyze", str(demo / "model"), str(demo / "clip.mp4"), "-q"]
    assert main([*args, "--workers", "2", "--cluster", "auto"]) == 2
    assert "exclude each other" in capsys.readouterr().err
    assert main([*args, "--task-cpus", "2"]) == 2
    assert "apply to --cluster" in capsys.readouterr().err
