"""DeepLabCut 3's top-down models (detector + pose model on crops) against DeepLabCut 3.0.2's
own analysis (``tests/data/deeplabcut/td_fixture``, made by
``benchmarks/dlc_reference/make_td_fixture.py``; check.json records how).

Shuffles of one synthetic two-animal project: ``top_down_resnet_50`` with the Faster R-CNN
MobileNetV3-FPN detector (``frcnn``), with SSDLite (``ssd``) and with the ResNet-50 FPN Faster
R-CNN (``frcnn_r50``); ``rtmpose_s`` (``rtm``), ``rtmpose_m``/``rtmpose_x`` (``rtm_m``,
``rtm_x``) and ``top_down_hrnet_w18`` (``hrnet``). The weights are a function of
each tensor's name and shape (``seeded_weights.py``), rebuilt here as DeepLabCut's export
(``{"config", "pose", "detector"}``) or as its training snapshots in the project's layout.
DeepLabCut writes an empty animal slot as -1; posed as NaN (score 0).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

FIXTURE = Path(__file__).parent / "data" / "deeplabcut" / "td_fixture"
PLACEHOLDER = "__PROJECT_PATH__"
XY_TOL_PX = 1e-3
SCORE_TOL = 1e-4
N_FRAMES, SLOTS, PARTS = 6, 2, 4

pytestmark = [pytest.mark.torch]


def _seeded(tag: str) -> tuple[dict, dict, dict]:
    """(pytorch_config, pose state dict, detector state dict) of one fixture shuffle."""
    import yaml

    spec = importlib.util.spec_from_file_location("td_seeded", FIXTURE / "seeded_weights.py")
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    keys = json.loads((FIXTURE / tag / "state_keys.json").read_text())
    states = [{k["name"]: torch.from_numpy(np.asarray(rule.value(k["name"], k["shape"])))
               for k in keys[part]} for part in ("pose", "detector")]
    config = yaml.safe_load((FIXTURE / tag / "pytorch_config.yaml").read_text())
    return config, states[0], states[1]


def _dlc(tag: str) -> tuple[np.ndarray, list[dict]]:
    """DeepLabCut's keypoints (frames × slots × parts × 3, NaN for empty slots) and its
    detections per frame (``_full.pickle``'s boxes, as JSON)."""
    import pandas as pd

    (h5,) = (FIXTURE / tag / "analyze").glob("*.h5")
    table = pd.read_hdf(h5).to_numpy(dtype=np.float64, copy=True)
    table = table.reshape(N_FRAMES, SLOTS, PARTS, 3)
    table[table[..., 2] < 0] = np.nan
    boxes = json.loads((FIXTURE / tag / "analyze" / "boxes.json").read_text())["frames"]
    return table, boxes


def _frames() -> np.ndarray:
    import av

    with av.open(str(FIXTURE / "synth1.mp4")) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """posed's import of DeepLabCut's export of each shuffle."""
    from posed.engines import api

    tmp = tmp_path_factory.mktemp("td")
    out = {}
    for tag in ("frcnn", "ssd", "rtm"):
        config, pose, detector = _seeded(tag)
        torch.save({"config": config, "pose": pose, "detector": detector}, tmp / f"{tag}.pt")
        out[tag] = api.import_dlc(tmp / f"{tag}.pt", tmp / f"{tag}-bundle")
    return out


def _assert_deeplabcuts(runner, tag: str, box_tol_px: float = XY_TOL_PX,
                        count: int | None = None) -> None:
    """``runner`` finds DeepLabCut's boxes and keypoints on the fixture's frames (the first
    ``count`` of them, when given)."""
    want, dlc_boxes = _dlc(tag)
    frames = _frames()
    if count is not None:
        want, dlc_boxes, frames = want[:count], dlc_boxes[:count], frames[:count]
    # The detector runs once: the boxes predict_animals placed are those detect() returns
    # (test_onnx_export_finds_deeplabcuts_animals compares detect() itself across runtimes).
    got = runner.predict_animals(frames)
    for boxes, dlc in zip(got.boxes, dlc_boxes, strict=True):
        np.testing.assert_allclose(boxes[~np.isnan(boxes[:, 0])], dlc["bboxes"], atol=box_tol_px)
    assert got.animals.shape == want.shape
    np.testing.assert_array_equal(np.isnan(got.animals[..., 0]), np.isnan(want[..., 0]))
    assert np.nanmax(np.abs(got.animals[..., :2] - want[..., :2])) < XY_TOL_PX
    assert np.nanmax(np.abs(got.animals[..., 2] - want[..., 2])) < SCORE_TOL
    np.testing.assert_allclose(got.scores, [d["bbox_scores"] for d in dlc_boxes], atol=1e-5)


@pytest.mark.parametrize("tag", ["frcnn", "ssd", "rtm"])
def test_boxes_and_keypoints_equal_deeplabcuts(bundles, tag):
    from posed.engines import api

    runner = api.load_model(bundles[tag], device="cpu")
    _assert_deeplabcuts(runner, tag)
    # the single-animal view is the best box's animal
    frames = _frames()[:2]
    np.testing.assert_array_equal(runner.predict(frames),
                                  runner.predict_animals(frames).animals[:, 0])


# The random ResNet-50 FPN detector's boxes depend on float summation order: equal to
# DeepLabCut's on one thread of the CPU that made the reference, 0.0085 px off with kernels
# held to AVX2, 0.013 px on two threads. Its keypoints stay within 2.3e-5 px.
WIDE_BOX_TOL_PX = {"frcnn_r50": 0.05}
# torchvision's Faster R-CNN scales each frame to 800 px first: the ResNet-50 FPN one takes
# seconds a frame on 2 cores, so it is checked on the first frames only
WIDE_FRAMES = {"frcnn_r50": 2}


@pytest.mark.slow
@pytest.mark.heavy  # the code paths of test_boxes_and_keypoints_equal_deeplabcuts, larger nets
@pytest.mark.parametrize("tag, onnx", [("frcnn_r50", False), ("hrnet", True),
                                       ("rtm_m", True), ("rtm_x", False)])
def test_wider_variants_equal_deeplabcuts(tmp_path, tag, onnx):
    """DeepLabCut's other variants: the ResNet-50 FPN Faster R-CNN, an HRNet pose model on
    crops (with SSDLite), RTMPose m and x (x on 384x384 crops); natively, and as ONNX."""
    from posed.engines import api

    config, pose, detector = _seeded(tag)
    torch.save({"config": config, "pose": pose, "detector": detector}, tmp_path / "export.pt")
    bundle = api.import_dlc(tmp_path / "export.pt", tmp_path / "bundle")
    box_tol = WIDE_BOX_TOL_PX.get(tag, XY_TOL_PX)
    _assert_deeplabcuts(api.load_model(bundle, device="cpu"), tag, box_tol, WIDE_FRAMES.get(tag))
    if onnx:
        runner = api.load_model(api.export_model(bundle, "onnx", tmp_path / "onnx"),
                                provider="cpu")
        assert runner.engine == "onnx"
        assert runner.bundle.export["parity"]["max_keypoint_px"] <= 1e-3
        _assert_deeplabcuts(runner, tag, box_tol)


def test_detector_keys_are_deeplabcuts():
    from posed.engines.pytorch.topdown import build_detector

    for tag, variant in (("frcnn", "fasterrcnn_mobilenet_v3_large_fpn"), ("ssd", "ssdlite"),
                         ("frcnn_r50", "fasterrcnn_resnet50_fpn_v2")):
        keys = json.loads((FIXTURE / tag / "state_keys.json").read_text())["detector"]
        model = build_detector({"variant": variant, "box_score_thresh": 0.01})
        assert ["model." + k for k in model.state_dict()] == [k["name"] for k in keys]


def _dlc_project(root: Path, tag: str) -> Path:
    """The fixture project in DeepLabCut's layout, with ``tag``'s shuffle trained (seeded
    snapshots named as DeepLabCut names them)."""
    shutil = pytest.importorskip("shutil")
    config_text = (FIXTURE / "config.yaml").read_text().replace(PLACEHOLDER, str(root))
    root.mkdir(parents=True)
    (root / "config.yaml").write_text(config_text)
    (root / "videos").mkdir()
    shutil.copy(FIXTURE / "synth1.mp4", root / "videos" / "synth1.mp4")
    config, pose, detector = _seeded(tag)
    shuffle = config["metadata"]["pose_config_path"].split("shuffle")[-1].split("/")[0]
    train = root / "dlc-models-pytorch" / "iteration-0" / f"synthJan1-trainset80shuffle{shuffle}"
    train = train / "train"
    train.mkdir(parents=True)
    (train / "pytorch_config.yaml").write_text(
        (FIXTURE / tag / "pytorch_config.yaml").read_text().replace(PLACEHOLDER, str(root)))
    torch.save({"model": pose, "metadata": {"epoch": 5}}, train / "snapshot-005.pt")
    torch.save({"model": detector, "metadata": {"epoch": 5}}, train / "snapshot-detector-005.pt")
    return root / "config.yaml"


@pytest.mark.slow
@pytest.mark.parametrize("tag, shuffle, scorer", [
    ("frcnn", 1, "DLC_Resnet50_synthJan1shuffle1_detector_5_snapshot_5"),
    ("rtm", 3, "DLC_RtmposeS_synthJan1shuffle3_detector_5_snapshot_5")])
def test_deeplabcut_shuffle_analysed_in_place_writes_deeplabcuts_file(tmp_path, monkeypatch,
                                                                      tag, shuffle, scorer):
    """DeepLabCut's own call on its top-down shuffle: same file name, scorer and keypoints,
    and DeepLabCut's detection pickles with its boxes."""
    import pickle

    import pandas as pd

    from posed.engines import compat

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    config = _dlc_project(tmp_path / "project", tag)
    video = config.parent / "videos" / "synth1.mp4"
    got_scorer = compat.analyze_videos(str(config), [str(video)], shuffle=shuffle, device="cpu",
                                       destfolder=str(tmp_path / "out"), auto_track=False,
                                       save_as_csv=True)
    (want_h5,) = (FIXTURE / tag / "analyze").glob("*.h5")
    assert got_scorer == scorer
    got = pd.read_hdf(tmp_path / "out" / want_h5.name)
    want, _ = _dlc(tag)
    got_arr = got.to_numpy(dtype=np.float64).reshape(want.shape)
    assert got.columns.get_level_values(0)[0] == scorer
    np.testing.assert_array_equal(np.isnan(got_arr[..., 0]), np.isnan(want[..., 0]))
    assert np.nanmax(np.abs(got_arr[..., :2] - want[..., :2])) < XY_TOL_PX
    # DeepLabCut's _full.pickle (posed wrote it): each frame's boxes and box scores
    _, dlc_boxes = _dlc(tag)
    with open(tmp_path / "out" / want_h5.name.replace(".h5", "_full.pickle"), "rb") as fh:
        full = pickle.load(fh)
    assert full["metadata"]["nframes"] == N_FRAMES
    for i, dlc in enumerate(dlc_boxes):
        np.testing.assert_allclose(full[f"frame{i}"]["bboxes"], dlc["bboxes"], atol=1e-3)
        np.testing.assert_allclose(full[f"frame{i}"]["bbox_scores"], dlc["bbox_scores"],
                                   atol=1e-5)
    assert (tmp_path / "out" / want_h5.name.replace(".h5", "_assemblies.pickle")).is_file()
    # DeepLabCut's detector snapshot index is honoured: there is only snapshot 0 here
    with pytest.raises(Exception, match="detector_snapshotindex|snapshotindex 3"):
        compat.analyze_videos(str(config), [str(video)], shuffle=shuffle, device="cpu",
                              destfolder=str(tmp_path / "out2"), auto_track=False,
                              detector_snapshot_index=3)


def _export(tmp: Path, tag: str = "frcnn", edit=None, detector: bool = True) -> Path:
    config, pose, det = _seeded(tag)
    if edit:
        edit(config)
    data = {"config": config, "pose": pose, **({"detector": det} if detector else {})}
    torch.save(data, tmp / "export.pt")
    return tmp / "export.pt"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"]["heads"]["bodypart"].update(type="RTMCCHead"),
     "not supported yet: RTMCCHead on backbone type 'ResNet'"),
    (lambda c: c["data"]["inference"]["top_down_crop"].update(crop_with_context=False),
     "crop_with_context: false"),
    (lambda c: c["detector"]["model"].update(type="RetinaNet"), "detector type 'RetinaNet'"),
    (lambda c: c["detector"]["data"]["inference"].update(normalize_images=False),
     "input transforms differ"),
    (lambda c: c["metadata"].update(unique_bodyparts=["tail"]), "unique body parts"),
])
def test_what_posed_cannot_run_is_one_line(tmp_path, edit, message):
    from posed.engines import api
    from posed.errors import ModelLoadError

    path = _export(tmp_path, edit=edit)
    _refused_in_one_line(api, ModelLoadError, path, tmp_path, message)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["model"]["heads"]["bodypart"]["gau_cfg"].update(use_rel_bias=True),
     "gau_cfg use_rel_bias True"),
    (lambda c: c["model"]["heads"]["bodypart"]["predictor"].update(normalize_outputs=True),
     "normalize_outputs"),
    (lambda c: c["model"]["backbone"].update(arch="P6"), "CSPNeXt arch 'P6'"),
    (lambda c: c["data"]["inference"]["top_down_crop"].update(width=192),
     "differs from the RTMCCHead input_size"),
])
def test_rtmpose_variants_posed_cannot_run_are_one_line(tmp_path, edit, message):
    from posed.engines import api
    from posed.errors import ModelLoadError

    path = _export(tmp_path, "rtm", edit=edit)
    _refused_in_one_line(api, ModelLoadError, path, tmp_path, message)


def _refused_in_one_line(api, error, path, tmp_path, message):
    with pytest.raises(error, match=message) as info:
        api.import_dlc(path, tmp_path / "b")
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())


def test_export_without_detector_and_other_engines_are_refused(bundles, tmp_path):
    from posed.engines import api
    from posed.errors import CapabilityError, ModelLoadError

    with pytest.raises(ModelLoadError, match="without its detector"):
        api.import_dlc(_export(tmp_path, detector=False), tmp_path / "b")
    with pytest.raises(CapabilityError, match="run on engines pytorch, onnx, not 'openvino'"):
        api.load_model(bundles["frcnn"], engine="openvino")
    with pytest.raises(ModelLoadError, match="onnx engine cannot run format 'safetensors'"):
        api.load_model(bundles["frcnn"], engine="onnx")


# ----------------------------------------------------------------------------- the crop

@settings(max_examples=60, deadline=None)
@given(x=st.floats(-30, 150), y=st.floats(-30, 110), w=st.floats(1, 120), h=st.floats(1, 120),
       size=st.sampled_from([(64, 64), (96, 64), (48, 80)]), margin=st.sampled_from([0, 5]))
@example(x=0.0, y=-0.5, w=1.0, h=1.0, size=(64, 64), margin=0)  # rounded to no pixel once
def test_crop_keeps_the_box_centre_and_aspect(x, y, w, h, size, margin):
    """The crop has the model's size; it covers the whole box (plus margin) with the crop's
    aspect ratio, centred on the box; a pixel of the crop shows the frame pixel that
    ``to_frame`` maps it to (frame = a coordinate-coded image, black outside)."""
    from posed.engines.topdown import crop_box

    frame_h, frame_w = 120, 160
    yy, xx = np.mgrid[0:frame_h, 0:frame_w]
    frame = np.stack([xx, yy, np.full_like(xx, 255)], -1).astype(np.uint8)
    crop, placed = crop_box(frame, np.array([x, y, w, h], np.float32), *size, margin=margin)
    width, height = size
    assert crop.shape == (height, width, 3) and crop.dtype == np.uint8
    sx, sy = placed.scale
    assert sx == pytest.approx(sy, rel=0.1, abs=2.5 / min(width, height))
    assert width * sx >= w + 2 * margin - 1.01 and height * sy >= h + 2 * margin - 1.01
    centre = placed.to_frame(np.array([[width / 2, height / 2, 1.0]], np.float32))[0]
    assert abs(centre[0] - (x + w / 2)) <= 1.0 and abs(centre[1] - (y + h / 2)) <= 1.0
    # a crop pixel well inside the frame shows that frame pixel (bilinear: within ~1 px)
    for cy, cx in ((height // 2, width // 2), (height // 4, width // 4)):
        fx, fy = placed.to_frame(np.array([[cx + 0.5, cy + 0.5, 1.0]], np.float32))[0, :2] - 0.5
        if 2 <= fx < frame_w - 3 and 2 <= fy < frame_h - 3 and crop[cy, cx, 2] == 255:
            assert abs(int(crop[cy, cx, 0]) - fx) <= 1.0 + sx
            assert abs(int(crop[cy, cx, 1]) - fy) <= 1.0 + sy


@pytest.mark.slow
@pytest.mark.heavy  # test_daemon_serves_the_onnx_top_down_bundle serves top-down models too
def test_daemon_serves_the_top_down_bundle(bundles, tmp_path):
    """``posed serve`` with the imported top-down model, the detector on every 2nd frame of
    the camera: every frame reaches a real subscriber with the animals (and identities)
    offline analysis with the same setting gives."""
    import pandas as pd

    from posed.engines import api
    from test_daemon_e2e import stream_file

    video = FIXTURE / "synth1.mp4"
    messages = stream_file(bundles["frcnn"], video, N_FRAMES, tmp_path, threads=1,
                           detect_every=2)
    assert [m.seq for m in messages] == list(range(N_FRAMES))
    assert messages[0].individuals == ("individual1", "individual2")
    streamed = np.stack([m.animals for m in messages])
    report = api.analyze_videos(bundles["frcnn"], [video], dest=tmp_path / "offline",
                                progress=False, tracking={"identities": "online"},
                                runner_options={"detect_every": 2})
    offline = pd.read_hdf(report.outputs[0]).to_numpy().reshape(streamed.shape)
    np.testing.assert_allclose(streamed, offline, atol=1e-3, equal_nan=True)
    # the tracker confirms a track over frames, so the first frames may hold fewer animals
    assert np.isfinite(streamed[..., 0]).any(axis=2).sum() >= N_FRAMES


@pytest.mark.parametrize("family", ["top_down_resnet_50", "top_down_resnet_50_ssdlite",
                                    "rtmpose_s"])
def test_random_top_down_export_for_benchmarks_runs(tmp_path, family):
    """``random_dlc_export`` of a top-down family (what ``posed bench --case families``
    times) imports and finds animals: slots best box first, no more than the individuals."""
    from posed.engines import api
    from posed.engines.pytorch.dlc_families import TOP_DOWN_FAMILIES, random_dlc_export

    assert family in TOP_DOWN_FAMILIES
    export = random_dlc_export(family, tmp_path / "td.pt", bodyparts=3, individuals=2)
    runner = api.load_model(api.import_dlc(export, tmp_path / "b"), device="cpu", crop_batch=3)
    assert runner.crop_batch == 3 and runner.individuals == ["animal1", "animal2"]
    frame = _frames()[:1]
    found = runner.predict_animals(frame)
    assert found.animals.shape == (1, 2, 3, 3)
    (boxes, scores), = runner.detect(frame)
    assert len(boxes) == len(scores) <= 2 and np.all(np.diff(scores) <= 0)
    np.testing.assert_array_equal(found.scores[0, :len(scores)], scores)
    filled = np.isfinite(found.animals[0, :, :, 0]).all(axis=1)
    assert filled.tolist() == [i < len(scores) for i in range(2)]


def test_simcc_decoding_takes_each_axis_most_likely_bin_and_drops_uniform_ones():
    """Bin i is pixel i / split; the score is the smaller axis maximum after the softmax;
    a keypoint no more likely than uniform is missing (NaN, score 0)."""
    from posed.engines.decoding import decode_simcc

    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.01, (2, 3, 512)).astype(np.float32)
    y = rng.normal(0, 0.01, (2, 3, 512)).astype(np.float32)
    x[0, 0, 101] = y[0, 0, 40] = 1.0
    x[0, 1, 7] = 1.0  # sharp in x; y has two equal peaks: the first wins, y sets the score
    y[0, 1] = 0.0
    y[0, 1, [3, 9]] = 0.005
    x[1] = y[1] = 0.0  # uniform: missing
    out = decode_simcc(x, y, split=2.0, scale=(849.0, 849.0))
    assert out.shape == (2, 3, 3) and out.dtype == np.float32
    assert tuple(out[0, 0, :2]) == (50.5, 20.0) and out[0, 0, 2] > 0.99
    peak = np.exp(0.005 * 849.0)
    assert tuple(out[0, 1, :2]) == (3.5, 1.5)
    assert out[0, 1, 2] == pytest.approx(peak / (2 * peak + 510), rel=1e-4)
    assert np.isnan(out[1, :, :2]).all() and (out[1, :, 2] == 0).all()


def test_deeplabcut_export_of_a_top_down_shuffle_holds_its_detector(tmp_path, monkeypatch):
    """``export_model`` on DeepLabCut's top-down shuffle writes DeepLabCut's file name with
    the detector's id and the detector inside; importing that file gives the same animals as
    the shuffle in place. ``without_detector=True`` leaves it out, as DeepLabCut."""
    from posed.engines import api, compat

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    config = _dlc_project(tmp_path / "project", "frcnn")
    compat.export_model(str(config), shuffle=1)
    folder = config.parent / "exported-models-pytorch" / "DLC_synth_resnet_50_iteration-0_shuffle-1"
    path = folder / "DLC_synth_resnet_50_iteration-0_shuffle-1_snapshot-detector5_snapshot-5.pt"
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert sorted(data) == ["config", "detector", "pose"]
    frames = _frames()[:2]
    exported = api.load_model(api.import_dlc(path, tmp_path / "b"), device="cpu")
    in_place = api.load_model(str(config), shuffle=1, device="cpu")
    np.testing.assert_array_equal(exported.predict_animals(frames).animals,
                                  in_place.predict_animals(frames).animals)
    compat.export_model(str(config), shuffle=1, without_detector=True)
    data = torch.load(folder / "DLC_synth_resnet_50_iteration-0_shuffle-1_snapshot-5.pt",
                      map_location="cpu", weights_only=True)
    assert sorted(data) == ["config", "pose"]


def test_detect_every_reuses_each_streams_boxes(bundles, monkeypatch):
    """``detect_every`` 3: the detector runs on the 1st and 4th frame of stream a (batch
    frames 0 and 4) and the 1st of stream b; a frame in between gets its stream's last boxes
    (so the same box scores); without streams every frame is detected."""
    from posed.engines import api

    runner = api.load_model(bundles["frcnn"], device="cpu", detect_every=3)
    calls = []
    detect = runner._detect
    monkeypatch.setattr(runner, "_detect", lambda f: calls.append(len(f)) or detect(f))
    frames = _frames()
    streams = ["a", "a", "b", "a", "a", "b"]
    found = runner.predict_animals(frames, streams=streams)
    assert calls == [1, 1, 1]  # frames 0 (a), 2 (b), 4 (a)
    want, dlc_boxes = _dlc("frcnn")
    for frame, detected_on in ((1, 0), (3, 0), (5, 2), (4, 4)):
        np.testing.assert_allclose(found.scores[frame], dlc_boxes[detected_on]["bbox_scores"],
                                   atol=1e-5)
    assert np.nanmax(np.abs(found.animals[4] - want[4])) < XY_TOL_PX  # detected: DLC's
    calls.clear()
    runner.predict_animals(frames[:2])
    assert calls == [2]


def test_daemon_model_section_takes_detect_every_for_top_down_models_only(bundles):
    from posed.daemon.config import parse_config
    from posed.daemon.service import runner_options
    from posed.engines.bundle import load_bundle
    from posed.errors import ConfigError

    def section(bundle, **model):
        return parse_config({"model": {"bundle": str(bundle), **model},
                             "cameras": [{"id": "c", "source": "x.mp4"}]}, "d.yaml").model

    td = bundles["frcnn"]
    _, options = runner_options(section(td, detect_every=5, crop_batch=4), load_bundle(td))
    assert options["detect_every"] == 5 and options["crop_batch"] == 4
    demo = Path(__file__).resolve().parents[1] / "configs" / "demo" / "model"
    with pytest.raises(ConfigError, match="key 'model.detect_every': only top-down models"):
        runner_options(section(demo, detect_every=5), load_bundle(demo))
