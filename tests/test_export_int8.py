"""Static INT8 for any source: calibration from a video or a folder of images, and OpenVINO
running the INT8 bundle in low precision."""

from __future__ import annotations

import re
import shutil

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from posed.engines import api
from posed.engines.bundle import ModelBundle, load_bundle
from posed.engines.calibration import read_calibration
from posed.engines.parity import peak_ties
from posed.engines.project import load_project
from posed.engines.video import VideoReader
from posed.exporters.common import CONFIDENT, TOLERANCE, verify

from posed.errors import DataError, ExportMismatchError


def _video_frames(video, indices):
    with VideoReader(video) as reader:
        return np.stack([f for i, f in reader if i in set(indices)])


def _damaged_copy(video, dst):
    """The video with every byte of its media data zeroed: it opens, no frame decodes."""
    data = bytearray(video.read_bytes())
    at = data.index(b"mdat")
    size = int.from_bytes(data[at - 4:at], "big")
    data[at + 4:at - 4 + size] = bytes(size - 8)
    dst.write_bytes(bytes(data))
    return dst


# ----------------------------------------------------------------------------- the parity gate

def _two_peaks(first: float, second: float) -> np.ndarray:
    """1×1×8×8 score map with peaks at cells (1, 1) and (6, 6), 40 px apart per axis."""
    scores = np.zeros((1, 1, 8, 8), np.float32)
    scores[0, 0, 1, 1], scores[0, 0, 6, 6] = first, second
    return scores


def test_int8_gate_lets_a_near_tie_flip_pass_counted_and_refuses_a_real_jump(tmp_path):
    """A keypoint may jump to a second peak the native model scores within the likelihood
    tolerance of its first (seen on DeepLabCut's ResNet-50: 0.5209 against 0.5195, 79 px);
    a jump to a place the native model does not rate is refused."""
    bundle = ModelBundle(engine="onnx", format="onnx", bodyparts=["a"], architecture={},
                         stride=8, locref_stdev=7.2)
    locref = np.zeros((1, 2, 8, 8), np.float32)
    ref = (_two_peaks(0.90, 0.85), locref)
    parity = verify("int8", ref, (_two_peaks(0.88, 0.92), locref), bundle, tmp_path)
    assert parity["tie_flips"] == 1 and parity["max_px_confident"] == pytest.approx(40 * 2 ** 0.5)
    assert parity["max_px_confident_held"] == 0.0
    far = (_two_peaks(0.90, 0.30), locref)
    with pytest.raises(ExportMismatchError, match=r"up to 56.6 px, median"):
        verify("int8", far, (_two_peaks(0.80, 0.85), locref), bundle, tmp_path)
    # A flip beside a real jump of another part: refused, the flip named.
    two = lambda a, b: np.concatenate([a, b], axis=1)  # noqa: E731
    with pytest.raises(ExportMismatchError, match=r"up to 56.6 px \(56.6 px beside 1 near-tie "
                                                  r"flip\)"):
        verify("int8", (two(ref[0], far[0]), np.zeros((1, 4, 8, 8), np.float32)),
               (two(_two_peaks(0.88, 0.92), _two_peaks(0.80, 0.85)),
                np.zeros((1, 4, 8, 8), np.float32)), bundle, tmp_path)
    # fp16's likelihood tolerance (0.02) is the margin there: 0.05 apart is no tie.
    with pytest.raises(ExportMismatchError):
        verify("fp16", ref, (_two_peaks(0.88, 0.92), locref), bundle, tmp_path)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(1, 4), error=st.floats(0.0, 0.2))
def test_scores_within_e_of_the_reference_only_flip_to_ties_within_2e(seed, k, error):
    """If no score moved by more than e, the other map's peak is a place the reference scores
    within 2e of its own peak: every such choice is a tie at margin 2e."""
    rng = np.random.default_rng(seed)
    ref = rng.random((2, k, 6, 7)).astype(np.float32)
    other = ref + rng.uniform(-error, error, ref.shape).astype(np.float32)
    assert peak_ties(ref, other, 8, None, 2 * error + 1e-6).all()
    assert peak_ties(ref, ref, 8, None, 0.0).all()


# ----------------------------------------------------------------------------- reading frames

def test_video_calibration_spreads_frames_and_holds_others_out(synth_project):
    video = synth_project / "videos" / "synth1.mp4"  # 60 frames, 128×128
    calib = read_calibration(video, limit=12, holdout=4)
    used = calib.info["frame_indices"]
    assert calib.frames.shape == (12, 128, 128, 3) and calib.check.shape == (4, 128, 128, 3)
    assert used[0] == 0 and used[-1] >= 55  # the whole video, not its beginning
    assert calib.info == {"kind": "video", "path": str(video.resolve()), "frame_indices": used,
                          "frames": 12, "held_out_for_parity": 4}
    # The check frames are frames of the video that calibration did not use.
    others = [i for i in range(60) if i not in used]
    pool = _video_frames(video, others)
    for frame in calib.check:
        assert np.abs(pool.astype(int) - frame).reshape(len(pool), -1).max(axis=1).min() == 0
    assert np.array_equal(calib.frames, _video_frames(video, used))
    small = read_calibration(video, limit=5, holdout=0, size=(64, 96))
    assert small.frames.shape == (5, 64, 96, 3) and small.check is None


def test_image_folder_calibration_and_its_sizes(synth_project, tmp_path):
    images = sorted((synth_project / "labeled-data" / "synth1").glob("*.png"))[:10]
    folder = tmp_path / "imgs"
    folder.mkdir()
    for p in images:
        shutil.copy(p, folder / p.name)
    calib = read_calibration(folder, limit=32, holdout=8)
    # Fewer images than asked for: about one in five held out, the rest calibrate.
    assert calib.info["kind"] == "images" and calib.info["frames"] == 8
    assert calib.info["held_out_for_parity"] == 2 and len(calib.info["files"]) == 8
    odd = folder / "zz_odd.jpg"
    cv2.imwrite(str(odd), np.zeros((100, 90, 3), np.uint8))
    with pytest.raises(DataError, match=r"zz_odd\.jpg: 90×100, the other calibration images"):
        read_calibration(folder)
    assert read_calibration(folder, size=(128, 128)).frames.shape[1:] == (128, 128, 3)


@pytest.fixture
def random_model(tmp_path):
    pytest.importorskip("torch")
    from posed.engines.pytorch.backend import random_bundle

    random_bundle("mobilenet_v2_0.35", tmp_path / "model", keypoints=2)
    return tmp_path / "model"


def _bad_inputs(tmp, synth_project):
    (tmp / "empty").mkdir()
    (tmp / "notes.txt").write_text("not a video\n")
    video = synth_project / "videos" / "synth1.mp4"
    return [
        (tmp / "missing.mp4", "no such file or folder"),
        (tmp / "empty", r"0 images \(.png, .jpg, .jpeg\)"),
        (tmp / "notes.txt", "cannot open video"),
        (_damaged_copy(video, tmp / "damaged.mp4"), "no frames could be read"),
    ]


def test_bad_calibration_input_is_one_line_naming_the_file(random_model, synth_project, tmp_path,
                                                          capsys):
    from posed.cli import main

    for path, why in _bad_inputs(tmp_path, synth_project):
        rc = main(["export", str(random_model), "--format", "onnx", "--int8", "--calibration",
                   str(path), "--out", str(tmp_path / "out"), "-q"])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and len(err.splitlines()) == 1, err
        assert err.startswith(f"error: {path}: ") and re.search(why, err), err
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("precision", [[], ["--int8", "dynamic"], ["--fp16"]])
def test_calibration_without_static_int8_is_refused(random_model, synth_project, tmp_path, capsys,
                                                    precision):
    from posed.cli import main

    video = synth_project / "videos" / "synth1.mp4"
    rc = main(["export", str(random_model), "--format", "onnx", *precision, "--calibration",
               str(video), "--out", str(tmp_path / "out"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --calibration/--calibration-frames apply to static INT8 " \
        "(--format onnx --int8), --freeze-norm and --precision auto, not to " \
        f"{({'--fp16': 'fp16', '--int8': 'int8-dynamic'}.get(precision[0]) if precision else 'fp32')} exports"


# ----------------------------------------------------------------------------- INT8 exports

@pytest.fixture(scope="module")
def int8_from_bundle(trained_project, tmp_path_factory):
    """The trained shuffle's bundle (not the project) exported to static INT8, calibrated on
    the project's video from the command line."""
    from posed.cli import main

    bundle = api.get_train_folder(load_project(trained_project), 1, "pytorch")
    out = tmp_path_factory.mktemp("int8") / "int8"
    video = trained_project / "videos" / "synth1.mp4"
    assert main(["export", str(bundle), "--format", "onnx", "--int8", "--calibration",
                 str(video), "--out", str(out), "-q"]) == 0
    return bundle, out, video


def _held_out(video, out):
    """The frames of ``video`` that the INT8 bundle in ``out`` was not calibrated on."""
    used = set(load_bundle(out).export["calibration"]["frame_indices"])
    with VideoReader(video) as reader:
        return np.stack([f for i, f in reader if i not in used])


def _seen_distance(reference, other):
    seen = reference[..., 2] >= CONFIDENT
    dist = np.linalg.norm(reference[..., :2] - other[..., :2], axis=-1)
    return seen, dist[seen], np.abs(reference[..., 2] - other[..., 2])[seen]


@pytest.mark.slow
def test_int8_export_from_a_bundle_calibrated_on_a_video(int8_from_bundle):
    bundle, out, video = int8_from_bundle
    meta = yaml.safe_load((out / "posed.yaml").read_text())
    export = meta["export"]
    assert export["precision"] == "int8"
    cal = export["calibration"]
    assert cal["kind"] == "video" and cal["path"] == str(video.resolve())
    assert cal["frames"] == 32 and cal["held_out_for_parity"] == 8
    # Checked on held-out frames of the video, where the model sees the animal (on the
    # noise a bundle export used to be checked on, it sees nothing).
    parity = export["parity"]
    assert parity["confident_keypoints"] >= 8 * 3
    assert parity["max_px_confident"] <= TOLERANCE["int8"][0]
    frames = _held_out(video, out)
    native = api.load_model(bundle, device="cpu").predict(frames)
    got = api.load_model(out, "onnx", provider="cpu").predict(frames)
    seen, dist, dp = _seen_distance(native, got)
    assert seen.mean() > 0.8 and dist.max() <= TOLERANCE["int8"][0] and dp.max() <= 0.15


@pytest.mark.slow
def test_openvino_runs_the_int8_bundle_in_int8(int8_from_bundle):
    """OpenVINO executes the QDQ bundle's convolutions in u8/i8 (read from its runtime graph),
    and its keypoints stay within the INT8 tolerance of the native fp32 model."""
    pytest.importorskip("openvino")
    from posed.engines.openvino.backend import convolution_precisions

    bundle, out, video = int8_from_bundle
    frames = _held_out(video, out)
    with api.load_model(out, "openvino") as runner:
        precisions = convolution_precisions(runner.compiled)
        got = runner.predict(frames)
    low = precisions.get("u8", 0) + precisions.get("i8", 0)
    # All but the first convolution are quantised (the exporter keeps that one in float).
    assert precisions.get("f32", 0) <= 1 and low >= 10, precisions
    with api.load_model(api.export_model(bundle, "onnx", out.parent / "fp32"), "openvino") as fp32:
        assert set(convolution_precisions(fp32.compiled)) == {"f32"}
    native = api.load_model(bundle, device="cpu").predict(frames)
    seen, dist, dp = _seen_distance(native, got)
    max_px, max_p = TOLERANCE["int8"]
    assert seen.mean() > 0.8 and dist.max() <= max_px and dp.max() <= max_p, (dist.max(), dp.max())


@pytest.mark.slow
def test_int8_from_a_project_with_an_image_folder(trained_project, tmp_path):
    """From a project, --calibration replaces the training images but the parity check stays
    on the shuffle's test images; the folder and count are recorded."""
    folder = trained_project / "labeled-data" / "synth1"
    out = api.export_model(trained_project, "onnx", tmp_path / "int8", precision="int8",
                           calibration_from=folder, calibration_frames=12)
    cal = load_bundle(out).export["calibration"]
    assert cal["kind"] == "images" and cal["path"] == str(folder.resolve())
    assert cal["frames"] == 12 and cal["held_out_for_parity"] == 0 and len(cal["files"]) == 12
    assert load_bundle(out).export["parity"]["max_px_confident"] <= TOLERANCE["int8"][0]
    plain = api.export_model(trained_project, "onnx", tmp_path / "plain", precision="int8")
    assert load_bundle(plain).export["calibration"]["kind"] == "project training images"
