"""Padding frames to a size divisor (DeepLabCut's ``auto_padding``) and back to frame pixels.

The expected layouts are albumentations 1.4.3's ``PadIfNeeded`` (DeepLabCut 3.0.2's), checked
in its environment on 100×150, 64×64, 33×97 and 7×5 frames for every fixed position and both
border modes: top/left amounts as below, ``reflect_101`` equal to numpy's ``reflect``.
"""

from __future__ import annotations

import numpy as np
import pytest

from posed.engines.padding import check_pad, pad_frames
from posed.errors import ConfigError


@pytest.mark.parametrize("position, top, left", [
    ("center", 14, 5), ("top_left", 0, 0), ("top_right", 0, 10), ("bottom_left", 28, 0),
    ("bottom_right", 28, 10), ("random", 14, 5),  # posed places "random" at the centre
])
def test_positions(position, top, left):
    frames = np.zeros((2, 100, 150, 3), np.uint8)
    frames[:, 40, 70] = 255
    spec = check_pad({"pad_height_divisor": 32, "pad_width_divisor": 32, "position": position})
    padded, offset = pad_frames(frames, spec)
    assert padded.shape == (2, 128, 160, 3) and offset == (left, top)
    ys, xs = np.nonzero(padded[0, top:top + 100, left:left + 150, 0])
    assert (ys.tolist(), xs.tolist()) == ([40], [70])  # the frame sits at the offset


def test_reflect_101_mirrors_without_repeating_the_edge():
    frame = np.arange(5, dtype=np.uint8)[None, None, :, None].repeat(3, axis=-1).repeat(2, 1)
    padded, _ = pad_frames(frame, check_pad({"min_width": 9, "position": "center"}))
    assert padded[0, 0, :, 0].tolist() == [2, 1, 0, 1, 2, 3, 4, 3, 2]
    constant, _ = pad_frames(frame, check_pad({"min_width": 7, "border_mode": "constant",
                                               "border_value": 9}))
    assert constant[0, 0, :, 0].tolist() == [9, 0, 1, 2, 3, 4, 9]


def test_no_padding_needed_is_the_same_array():
    frames = np.zeros((1, 64, 96, 3), np.uint8)
    out, offset = pad_frames(frames, check_pad({"pad_height_divisor": 32,
                                                "pad_width_divisor": 32}))
    assert out is frames and offset == (0, 0)


@pytest.mark.parametrize("spec, message", [
    ({"position": "middle"}, "pad.position: 'middle' is not one of"),
    ({"border_mode": "wrap"}, "pad.border_mode: 'wrap'"),
    ({"pad_height_divisor": 0}, "pad.pad_height_divisor: must be a positive integer"),
    ({"min_height": 64, "pad_height_divisor": 32}, "not both"),
    ({"colour": 1}, "pad.colour: unknown padding setting"),
])
def test_bad_settings_are_one_line(spec, message):
    with pytest.raises(ConfigError, match=message):
        check_pad(spec)


def test_runner_keypoints_come_back_to_frame_pixels(tmp_path):
    """A padded model's keypoints equal those of the unpadded model on the padded frame,
    moved by the offset."""
    pytest.importorskip("torch")
    from posed.engines import api
    from posed.engines.bundle import load_bundle
    from posed.engines.pytorch.backend import random_bundle

    bundle = random_bundle("resnet_18", tmp_path / "plain", keypoints=3)
    padded = load_bundle(bundle.path)
    spec = {"pad_height_divisor": 32, "pad_width_divisor": 32, "position": "bottom_right"}
    padded.architecture["pad"] = spec
    frames = np.random.default_rng(0).integers(0, 256, (2, 70, 90, 3), dtype=np.uint8)
    plain = api.load_model(bundle.path, device="cpu")
    want = plain.predict(pad_frames(frames, check_pad(spec))[0])
    runner = plain.__class__.load(padded, device="cpu")
    got = runner.predict(frames)
    np.testing.assert_allclose(got[..., 0], want[..., 0] - 6, atol=1e-4)
    np.testing.assert_allclose(got[..., 1], want[..., 1] - 26, atol=1e-4)
    np.testing.assert_allclose(got[..., 2], want[..., 2], atol=1e-6)


def test_deeplabcut_hrnet_export_imports_with_its_padding(tmp_path):
    """A DeepLabCut 3 single-animal HRNet export (``HeatmapHead`` on the stride-4 branch,
    ``auto_padding`` to multiples of 32) imports; its keypoints are the network's on the
    centred, mirrored frame, moved back to frame pixels."""
    torch = pytest.importorskip("torch")
    from posed.engines import api
    from posed.engines.decoding import decode
    from posed.engines.pytorch.dlc_families import dlc_state_dict
    from posed.engines.pytorch.model import PoseNet
    from posed.exporters.dlc import import_dlc_pytorch

    torch.manual_seed(0)
    net = PoseNet("hrnet", 2, 4, timm_model="hrnet_w18_small", score="clip",
                  head="deconv3x3s2_nopad").eval()
    pose = dlc_state_dict(net)
    pad = {"pad_width_divisor": 32, "pad_height_divisor": 32}
    deconv = {"kernel_size": [3], "strides": [2]}
    config = {"method": "bu", "net_type": "hrnet_w18",
              "metadata": {"bodyparts": ["nose", "tail"], "individuals": ["animal"]},
              "data": {"colormode": "RGB",
                       "inference": {"normalize_images": True, "auto_padding": pad}},
              "model": {"backbone": {"type": "HRNet", "model_name": "hrnet_w18_small"},
                        "heads": {"bodypart": {
                            "type": "HeatmapHead",
                            "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False,
                                          "clip_scores": True},
                            "heatmap_config": {"channels": [16, 2], **deconv},
                            "locref_config": {"channels": [16, 4], **deconv}}}}}
    path = tmp_path / "DLC_x_hrnet_w18_iteration-0_shuffle-1_snapshot-5.pt"
    torch.save({"config": config, "pose": pose}, path)
    runner = api.load_model(import_dlc_pytorch(path, tmp_path / "b"), device="cpu")
    assert runner.bundle.stride == 2 and runner.bundle.architecture["pad"]["position"] == "center"
    frames = np.random.default_rng(1).integers(0, 256, (2, 70, 90, 3), dtype=np.uint8)
    got = runner.predict(frames)
    padded, (dx, dy) = pad_frames(frames, check_pad(pad))
    assert padded.shape[1:3] == (96, 96) and (dx, dy) == (3, 13)
    with torch.no_grad():
        heat, locref = net(torch.from_numpy(padded).permute(0, 3, 1, 2).float())
    want = decode(heat.numpy(), locref.numpy(), stride=2, locref_stdev=7.2801)
    np.testing.assert_allclose(got[..., 0], want[..., 0] - dx, atol=1e-3)
    np.testing.assert_allclose(got[..., 1], want[..., 1] - dy, atol=1e-3)
