"""Dynamic cropping: the window, its mapping back to full-frame pixels, losing and finding the
animal again, offline (analyze) and in the daemon's inference stage."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posed.daemon.inference import InferenceStage, Preprocess
from posed.daemon.queues import FrameQueue, FrameSignal
from posed.daemon.types import Frame, Pose
from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.dynamic import ALIGN, DynamicCropper, DynamicSettings, predict_dynamic
from posed.errors import ConfigError

H, W = 240, 320


class BlobRunner(PoseRunner):
    """Part k is the brightest pixel of channel k (likelihood = value / 255): translation
    equivariant, so a crop that holds the animal gives exactly the full frame's keypoints.
    A grey frame (as a video decodes a white square) lights every channel alike."""

    engine = "fake"

    @classmethod
    def load(cls, bundle, **options):
        return cls(bundle)

    def _forward(self, frames):
        self.shapes.append(frames.shape[1:3])
        n, h, w, _ = frames.shape
        out = np.zeros((n, 2, 3), np.float32)
        for k in range(2):
            flat = frames[..., k].reshape(n, -1)
            idx = flat.argmax(axis=1)
            out[:, k, 0], out[:, k, 1] = idx % w, idx // w
            out[:, k, 2] = flat.max(axis=1) / 255.0
        return out


def blob_runner() -> BlobRunner:
    r = BlobRunner.load(ModelBundle(engine="fake", format="none", bodyparts=["nose", "tail"],
                                    architecture={}, stride=8.0, locref_stdev=7.2801))
    r.shapes = []
    return r


def scene(parts) -> np.ndarray:
    """A frame with part k as a bright pixel in channel k at (x, y); None: part absent."""
    img = np.zeros((H, W, 3), np.uint8)
    for k, xy in enumerate(parts):
        if xy is not None:
            img[xy[1], xy[0], k] = 255
    return img


# ----------------------------------------------------------------------------- settings

@pytest.mark.parametrize("value, expected", [
    ((True, 0.6, 25), DynamicSettings(0.6, 25)),
    ([True, 0.5, 10.0], DynamicSettings(0.5, 10)),
    ({"pcutoff": 0.3}, DynamicSettings(0.3, 10)),
    ((False, 0.5, 10), None), (None, None), (False, None)])
def test_settings_accept_deeplabcuts_triple(value, expected):
    assert DynamicSettings.parse(value) == expected


@pytest.mark.parametrize("value, word", [
    ((True, 1.5, 10), "pcutoff"), ((True, 0.5, -1), "margin"), ((1, 0.5, 10), "enabled"),
    ((True, 0.5), "expected"), ("yes", "expected"), ((True, 0.5, float("nan")), "margin")])
def test_bad_settings_are_one_line(value, word):
    with pytest.raises(ConfigError, match=word) as err:
        DynamicSettings.parse(value, "--dynamic")
    assert "\n" not in str(err.value) and str(err.value).startswith("--dynamic")


# ----------------------------------------------------------------------------- the window

def test_window_is_the_confident_parts_box_grown_by_the_margin_on_the_grid():
    c = DynamicCropper(DynamicSettings(0.5, 10), (0, 0, W, H))
    assert c.window() == (0, 0, W, H)                      # nothing seen yet: whole frame
    c.update(np.array([[100, 50, 0.9], [140, 90, 0.8], [300, 200, 0.1]]))  # last: below pcutoff
    x, y, w, h = c.window()
    assert (x, y) == (64, 32) and x + w == 160 and y + h == 128  # [90, 150] x [40, 100] snapped
    assert c.cropped == 1 and c.frames == 2
    c.update(np.array([[np.nan, np.nan, 0.0], [5, 5, 0.4]]))     # lost: whole frame next
    assert c.window() == (0, 0, W, H)


def test_window_stays_inside_a_fixed_crop_and_snaps_from_its_origin():
    region = (50, 30, 200, 150)
    c = DynamicCropper(DynamicSettings(0.5, 10), region)
    c.update(np.array([[60, 35, 1.0], [245, 175, 1.0]]))   # near the region's corners
    assert c.window() == region                            # clipped to it: not a crop
    c.update(np.array([[120, 100, 1.0], [125, 105, 1.0]]))
    x, y, w, h = c.window()
    assert (x - 50) % ALIGN == 0 and (y - 30) % ALIGN == 0
    assert 50 <= x <= 110 and y <= 90 and x + w >= 135 and y + h >= 115
    assert x + w <= 250 and y + h <= 180


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.none(), st.tuples(st.integers(0, W - 1), st.integers(0, H - 1))),
                min_size=1, max_size=12),
       st.integers(0, 40))
def test_keypoints_match_full_frame_inference_whenever_the_animal_is_in_the_window(path, margin):
    """Invariants of every frame: keypoints are in full-frame pixels; a frame whose parts lie in
    the window it was inferred on gets the full frame's keypoints; a frame that missed them
    reports likelihood 0 (never a confident wrong place) and the next frame is inferred whole."""
    frames = np.stack([scene([p, None if p is None else (min(p[0] + 3, W - 1), p[1])])
                       for p in path])
    full = blob_runner().predict(frames)
    cropper = DynamicCropper(DynamicSettings(0.5, margin), (0, 0, W, H))
    runner = blob_runner()
    windows = []
    original = cropper.window
    cropper.window = lambda: windows.append(original()) or windows[-1]
    got = predict_dynamic(runner, frames, cropper)
    assert got.shape == full.shape
    for i, (p, (x, y, w, h)) in enumerate(zip(path, windows)):
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H
        if i and (x, y, w, h) != (0, 0, W, H):
            assert x % ALIGN == 0 and y % ALIGN == 0
        if p is None:
            assert (got[i, :, 2] == 0).all()
            continue
        seen = [x <= px < x + w and y <= py < y + h for px, py in (p, (min(p[0] + 3, W - 1), p[1]))]
        for k in range(2):
            if seen[k]:
                np.testing.assert_array_equal(got[i, k], full[i, k])
            else:
                assert got[i, k, 2] == 0
        if not any(seen) and i + 1 < len(windows):
            assert windows[i + 1] == (0, 0, W, H)


def test_losing_and_finding_the_animal_again():
    path = [(100, 100), (104, 102), None, None, (250, 30), (252, 31)]
    frames = np.stack([scene([p, p]) for p in path])
    runner = blob_runner()
    cropper = DynamicCropper(DynamicSettings(0.5, 10), (0, 0, W, H))
    got = predict_dynamic(runner, frames, cropper)
    # whole, crop, crop (lost), whole (still lost), whole (found far away), crop there
    full = (H, W)
    assert [s == full for s in runner.shapes] == [True, False, False, True, True, False]
    np.testing.assert_array_equal(got[[0, 1, 4, 5], 0, :2], [path[i] for i in (0, 1, 4, 5)])
    assert (got[[2, 3], :, 2] == 0).all()
    assert cropper.cropped == 3


# ----------------------------------------------------------------------------- daemon

def test_inference_stage_crops_each_camera_and_says_so_in_every_pose():
    signal = FrameSignal()
    queues = [FrameQueue(c, 16, "lossless", signal) for c in ("a", "b")]
    out: list[Pose] = []
    runner = blob_runner()
    pre = {"a": Preprocess(dynamic=DynamicSettings(0.5, 10)),
           "b": Preprocess(crop=(40, 20, 240, 200), dynamic=DynamicSettings(0.5, 10))}
    stage = InferenceStage(runner, queues, signal, out.append, max_batch=1, max_delay_ms=0,
                           preprocess=pre)
    path = [(100, 100), (104, 102), (108, 104), None, (200, 60)]
    stage.start()
    for i, p in enumerate(path):   # one frame at a time, as a live camera delivers them
        for q in queues:
            q.put(Frame(q.camera, i, i, None, time.time_ns(), time.monotonic(), scene([p, p])))
        deadline = time.monotonic() + 5
        while len(out) < 2 * (i + 1) and time.monotonic() < deadline:
            time.sleep(0.005)
    stage.stop.set()
    stage.join(2)
    for cam, first in (("a", None), ("b", (40, 20, 240, 200))):
        poses = sorted((p for p in out if p.camera == cam), key=lambda p: p.seq)
        assert [p.seq for p in poses] == list(range(len(path)))
        assert poses[0].crop == first
        assert poses[1].crop is not None and poses[1].crop[2] < 240
        for p, xy in zip(poses, path):
            if xy is None:
                assert p.keypoints[0, 2] == 0
            elif p.seq != 4:
                np.testing.assert_array_equal(p.keypoints[0, :2], xy)
        assert poses[4].crop == first          # lost on frame 3: frame 4 inferred whole
        np.testing.assert_array_equal(poses[4].keypoints[0, :2], path[4])


def test_dynamic_crop_scales_with_resize():
    pre = Preprocess(resize=(160, 120), dynamic=DynamicSettings(0.5, 10))
    image = scene([(100, 100), None])
    img, (ox, oy, sx, sy), region = pre.apply(image, (64, 64, 96, 64))
    assert img.shape[:2] == (32, 48) and region == (64, 64, 96, 64)
    assert (ox, oy, sx, sy) == (64.0, 64.0, 2.0, 2.0)


# ----------------------------------------------------------------------------- offline

def test_analyze_dynamic_writes_full_frame_keypoints_and_counts_cropped_frames(tmp_path):
    """A video of a square that moves, vanishes and comes back elsewhere: with dynamic cropping
    every row equals full-frame analysis (a translation-equivariant model), row i is frame i,
    and the metadata says how many frames were cropped."""
    import pandas as pd

    from posed.engines.offline.analyze import analyze_videos
    from posed.engines.synth.writer import write_video

    images = []
    for i in range(40):
        img = np.zeros((H, W, 3), np.uint8)
        if not 20 <= i < 24:
            x, y = (60 + 2 * i, 80 + i) if i < 20 else (250 - 2 * i, 40)
            img[y:y + 8, x:x + 8] = 255
        images.append(img)
    video = tmp_path / "square.mp4"
    write_video(video, images)
    runner = blob_runner()
    tables, metas = {}, {}
    for name, dyn in (("full", None), ("dynamic", (True, 0.5, 16))):
        report = analyze_videos(runner, [video], dest=tmp_path / name, progress=False,
                                dynamic=dyn)
        assert report.ok and report.frames == 40
        table = pd.read_hdf(next((tmp_path / name).glob("*.h5")))
        tables[name] = table.to_numpy().reshape(40, 2, 3)
        metas[name] = json.loads(next((tmp_path / name).glob("*_meta.json")).read_text())
    full, dyn = tables["full"], tables["dynamic"]
    seen = full[:, 0, 2] >= 0.5
    assert seen.sum() == 36
    np.testing.assert_array_equal(dyn[seen], full[seen])
    assert (dyn[~seen, :, 2] < 0.5).all()
    # Whole frames: the first, the first after the square vanished (frame 21), and until it is
    # back (frame 24 finds it); all others are cropped.
    assert metas["dynamic"]["dynamic"] == {"pcutoff": 0.5, "margin": 16, "align": ALIGN,
                                           "cropped_frames": 40 - 5}
    assert metas["full"]["dynamic"] is None


# ----------------------------------------------------------------------------- config, stream

def _config(tmp_path, dynamic, individuals=None):
    from posed.daemon.config import load_config

    bundle = ModelBundle(engine="onnx", format="onnx", bodyparts=["nose", "tail"],
                         architecture={} if individuals is None else {"individuals": individuals},
                         stride=8.0, locref_stdev=7.2801)
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "m" / "model.onnx").write_bytes(b"not checked before the runner loads")
    bundle.save(tmp_path / "m", ["model.onnx"])
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"model: {{bundle: m}}\ncameras:\n  - {{id: a, source: a.mp4, "
                   f"dynamic: {dynamic}}}\n")
    return cfg, load_config


def test_config_takes_deeplabcut_lives_triple_or_a_mapping(tmp_path):
    cfg, load = _config(tmp_path, "[true, 0.6, 30]")
    assert load(cfg).cameras[0].dynamic.model_dump() == {"enabled": True, "pcutoff": 0.6,
                                                         "margin": 30}
    cfg, load = _config(tmp_path, "{pcutoff: 0.2}")
    assert load(cfg).cameras[0].dynamic.margin == 10
    cfg, load = _config(tmp_path, "{pcutoff: 2}")
    with pytest.raises(ConfigError, match=r"c\.yaml: key 'cameras\[0\]\.dynamic\.pcutoff'"):
        load(cfg)


def test_config_check_refuses_dynamic_cropping_for_a_multianimal_model(tmp_path):
    from posed.daemon.validate import check_config

    cfg, _ = _config(tmp_path, "[true, 0.5, 10]", individuals=["m1", "m2"])
    with pytest.raises(ConfigError, match=r"key 'cameras\[0\]\.dynamic'.*multi-animal") as err:
        check_config(cfg)
    assert "\n" not in str(err.value)
    cfg, _ = _config(tmp_path, "[false, 0.5, 10]", individuals=["m1", "m2"])
    assert "ok" in check_config(cfg)


def test_crop_travels_in_every_pose_message():
    from posed.daemon.protocol import ProtocolError, decode_message, encode_pose, pose_topic

    kp = np.zeros((2, 3), np.float32)
    for crop in (None, (64, 32, 96, 64)):
        pose = Pose("a", 1, 1, None, 1, 0.0, infer_ns=2, keypoints=kp, crop=crop)
        msg = decode_message([pose_topic("a"), encode_pose(pose, ["nose", "tail"])])
        assert msg.crop == crop
    import msgpack

    payload = msgpack.unpackb(encode_pose(Pose("a", 1, 1, None, 1, 0.0, infer_ns=2, keypoints=kp),
                                          ["nose", "tail"]))
    assert "crop" in payload and payload["crop"] is None   # said even when not cropped
    payload["crop"] = [1, 2, 3]
    with pytest.raises(ProtocolError, match="field 'crop'"):
        decode_message([pose_topic("a"), msgpack.packb(payload)])


def test_cli_refuses_a_malformed_dynamic_in_one_line(tmp_path, capsys):
    from posed.cli import main

    assert main(["analyze", str(tmp_path), str(tmp_path / "v.mp4"), "--dynamic", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "--dynamic: expected PCUTOFF,MARGIN" in err and err.count("\n") == 1
