"""Exports of DeepLabCut 3's top-down models (detector + pose model on crops) to TorchScript
and ONNX, against DeepLabCut 3.0.2's own analysis of the fixture (see test_dlc_topdown.py):
each part checked on its own at export, the exported bundle finding DeepLabCut's boxes and
keypoints, on the PyTorch and the ONNX Runtime engine and in the daemon."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest

from test_dlc_topdown import (N_FRAMES, FIXTURE, _assert_deeplabcuts, _frames,
                              bundles)

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.torch]
__all__ = ["bundles"]  # the fixture, shared with test_dlc_topdown


@pytest.fixture(scope="module")
def onnx_exports(bundles, tmp_path_factory) -> dict:
    """ONNX exports of the SSDLite shuffle and of RTMPose with the Faster R-CNN (between
    them: both detectors' graphs, both pose heads)."""
    from posed.engines import api

    tmp = tmp_path_factory.mktemp("onnx")
    return {tag: api.export_model(bundles[tag], "onnx", tmp / tag) for tag in ("ssd", "rtm")}


@pytest.mark.slow
def test_torchscript_export_finds_deeplabcuts_animals(bundles, tmp_path, capsys):
    """RTMPose with the Faster R-CNN, exported from the command line: a scripted detector and
    a traced pose model in one bundle, equal to DeepLabCut's boxes and keypoints, each part's
    parity recorded and reported."""
    from posed.cli import main
    from posed.engines import api

    assert main(["export", str(bundles["rtm"]), "--format", "torchscript", "--out",
                 str(tmp_path / "ts")]) == 0
    assert "detector within" in capsys.readouterr().err
    runner = api.load_model(tmp_path / "ts", device="cpu")
    assert runner.bundle.format == "torchscript"
    parity = runner.bundle.export["parity"]
    assert parity["max_keypoint_px"] <= 1e-3 and parity["max_box_px"] <= 1e-3
    assert parity["boxes"] >= 2 and parity["crops"] >= 4
    _assert_deeplabcuts(runner, "rtm")


@pytest.mark.slow
@pytest.mark.parametrize("tag", ["ssd", "rtm"])
def test_onnx_export_finds_deeplabcuts_animals(bundles, onnx_exports, tag):
    """On ONNX Runtime: DeepLabCut's boxes and keypoints on its frames; on frames of another
    size the detector's boxes equal the PyTorch model's (the graph's size is dynamic); the
    detector's and pose model's sessions do not spin."""
    from posed.engines import api

    runner = api.load_model(onnx_exports[tag], provider="cpu")
    assert runner.engine == "onnx" and runner.provider == "CPUExecutionProvider"
    # the two sessions run in turn: neither's threads may spin and take the other's cores
    for session in (runner.detector.session, runner.pose.session):
        options = session.get_session_options()
        assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert [w["name"] for w in runner.bundle.weights] == ["pose.onnx", "detector.onnx"]
    parity = runner.bundle.export["parity"]
    assert parity["max_keypoint_px"] <= 1e-3 and parity["max_box_px"] <= 1e-3
    _assert_deeplabcuts(runner, tag)
    frames = np.ascontiguousarray(np.pad(_frames()[:2], ((0, 0), (30, 0), (0, 50), (0, 0))))
    native = api.load_model(bundles[tag], device="cpu")
    for (want, want_scores), (got, got_scores) in zip(native.detect(frames),
                                                      runner.detect(frames), strict=True):
        assert len(got) == len(want) == 2
        np.testing.assert_allclose(got, want, atol=1e-2)
        np.testing.assert_allclose(got_scores, want_scores, atol=1e-5)


@pytest.mark.slow
def test_daemon_serves_the_onnx_top_down_bundle(onnx_exports, tmp_path):
    """``posed serve`` on the ONNX export, the detector on every 2nd frame: every frame
    reaches a real subscriber with the animals offline analysis of that bundle writes (with
    the daemon's online identities)."""
    import pandas as pd

    from posed.engines import api
    from test_daemon_e2e import stream_file

    video = FIXTURE / "synth1.mp4"
    messages = stream_file(onnx_exports["rtm"], video, N_FRAMES, tmp_path, threads=1,
                           detect_every=2, crop_batch=3)
    assert [m.seq for m in messages] == list(range(N_FRAMES))
    report = api.analyze_videos(onnx_exports["rtm"], [video], dest=tmp_path / "offline",
                                progress=False, tracking={"identities": "online"},
                                runner_options={"detect_every": 2})
    streamed = np.stack([m.animals for m in messages])
    offline = pd.read_hdf(report.outputs[0]).to_numpy().reshape(streamed.shape)
    np.testing.assert_allclose(streamed, offline, atol=1e-3, equal_nan=True)
    assert np.isfinite(streamed[..., 0]).any(axis=2).sum() >= N_FRAMES


def _remembered(part):
    """``part`` (a runner's detector or pose model) computed once per distinct input."""
    seen = {}

    def call(x):
        key = (x.shape, hashlib.sha1(np.ascontiguousarray(x).tobytes()).hexdigest())
        if key not in seen:
            seen[key] = part(x)
        return copy.deepcopy(seen[key])
    return call


def test_part_parity_refuses_a_detector_or_pose_model_that_differs(bundles, tmp_path):
    """The export's check compares each part: boxes 0.5 px off, or keypoints 0.2 px off on
    the same crops, are a mismatch naming the format; tied boxes in another order, or a box at
    the detector's score threshold found by one runtime only, are not."""
    from posed.engines import api
    from posed.errors import ExportMismatchError
    from posed.exporters.torch_topdown import _parity

    native = api.load_model(bundles["ssd"], device="cpu")
    frames = _frames()[:2]
    assert _parity(native, api.load_model(bundles["ssd"], device="cpu"), frames, tmp_path,
                   "onnx")["max_keypoint_px"] == 0.0
    # From here on every variant is the native runner with one part changed: its detector and
    # pose model each run once on these frames and crops, and are remembered.
    native._detect, native._pose_crops = _remembered(native._detect), _remembered(
        native._pose_crops)

    def variant(**parts):
        runner = copy.copy(native)
        for name, part in parts.items():
            setattr(runner, name, part)
        return runner

    shifted = variant(_detect=lambda f: [(b + 0.5, s) for b, s in native._detect(f)])
    with pytest.raises(ExportMismatchError,
                       match="the onnx export disagrees.*same boxes found: True"):
        _parity(native, shifted, frames, tmp_path, "onnx")
    moved = variant(_pose_crops=lambda c: native._pose_crops(c) + np.float32([0.2, 0, 0]))
    with pytest.raises(ExportMismatchError, match="same keypoints missing: True"):
        _parity(native, moved, frames, tmp_path, "torchscript")
    # boxes with tied scores (an untrained detector's) may come in either order
    tied = variant(_detect=lambda f: [(b, np.full_like(s, 0.5)) for b, s in native._detect(f)])
    swapped = variant(
        _detect=lambda f: [(b[::-1], np.full_like(s, 0.5)) for b, s in native._detect(f)])
    assert _parity(tied, swapped, frames, tmp_path, "onnx")["max_box_px"] == 0.0
    # a box at the score threshold (0.001 for SSDLite) that one runtime keeps is no error; a
    # box above it that only one runtime finds is
    def _plus(score):
        def detect(f):
            return [(np.vstack([b, [[5, 5, 20, 20]]]), np.append(s, np.float32(score)))
                    for b, s in native._detect(f)]
        return detect
    edge = variant(_detect=_plus(0.001 + 5e-5))
    assert _parity(native, edge, frames, tmp_path, "onnx")["boxes_at_cut"] >= len(frames)
    extra = variant(_detect=_plus(0.3))
    with pytest.raises(ExportMismatchError, match="same boxes found: False"):
        _parity(native, extra, frames, tmp_path, "onnx")


def test_top_down_exports_refuse_what_they_cannot_honour(bundles, tmp_path):
    from posed.engines import api
    from posed.errors import ExportError

    for fmt, options, message in (
            ("savedmodel", {}, "export to torchscript or onnx, not savedmodel"),
            ("torchscript", {"precision": "fp16"}, "option 'precision' does not apply"),
            ("onnx", {"fixed_size": (240, 320)}, "option 'fixed_size' does not apply")):
        with pytest.raises(ExportError, match=message):
            api.export_model(bundles["frcnn"], fmt, tmp_path / "x", **options)
    assert not (tmp_path / "x").exists()
