"""Frozen GroupNorm statistics: exact on the frames they were measured on, local (a crop sees
the full frame's features), exported to graphs without per-frame normalisation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from posed.engines.pytorch.normfreeze import freeze_group_norm, group_norms  # noqa: E402
from posed.errors import ConfigError  # noqa: E402

H, W = 128, 160


@pytest.fixture(scope="module")
def gn_bundle(tmp_path_factory):
    from posed.engines.pytorch.backend import random_bundle

    torch.manual_seed(0)
    return random_bundle("efficientnet_b0", tmp_path_factory.mktemp("gn") / "b", keypoints=3,
                         timm_model="efficientnet_b0_gn")


def frames(n: int, seed: int = 0) -> np.ndarray:
    """Smooth random scenes (a textured arena), so statistics resemble a camera's."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, H // 8, W // 8, 3), dtype=np.uint8)
    return np.ascontiguousarray(small.repeat(8, axis=1).repeat(8, axis=2))


def wrapper(bundle):
    from posed.exporters.torch import _native

    return _native(bundle)


def maps(net, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return net(torch.from_numpy(np.ascontiguousarray(batch)))[0].numpy()


def test_statistics_of_one_frame_reproduce_groupnorm_on_that_frame(gn_bundle):
    net = wrapper(gn_bundle)
    frame = frames(1)
    before = maps(net, frame)
    done = freeze_group_norm(net.model, frame, net)
    assert done["layers"] == 48 and done["frames"] == 1 and not group_norms(net.model)
    np.testing.assert_allclose(maps(net, frame), before, atol=2e-5)


def test_frozen_network_is_local_and_groupnorm_is_not():
    """A crop of a convolutional GroupNorm network: with frozen statistics the crop's maps
    equal the full frame's away from the crop's border; with per-frame GroupNorm they differ
    everywhere. (A network with global pooling, such as squeeze-excitation, is not local
    either way; DeepLabCut's ResNet-50 has none.)"""
    from torch import nn

    torch.manual_seed(0)
    layers = []
    for cin, cout, stride in ((3, 16, 1), (16, 32, 2), (32, 32, 1), (32, 32, 2)):
        layers += [nn.Conv2d(cin, cout, 3, stride, 1), nn.GroupNorm(8, cout), nn.ReLU()]
    net = nn.Sequential(*layers).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2)
                       .float()).numpy()

    full_frame = frames(1, seed=1)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))  # cells 16 px from edges

    def interior_diff() -> float:
        a = run(full_frame)[:, :, 8:, 8:]  # the crop starts 32 px (8 cells) in
        b = run(full_frame[:, 32:, 32:])
        return float(np.abs(a[inner] - b[inner]).max() / np.abs(a).mean())

    grouped = interior_diff()
    freeze_group_norm(net, frames(4, seed=2), lambda t: net(t.permute(0, 3, 1, 2).float()))
    assert not group_norms(net)
    assert interior_diff() < 1e-5 and grouped > 1e-2


def test_refusals_are_one_line(gn_bundle, tmp_path):
    from posed.engines import api
    from posed.engines.pytorch.backend import random_bundle

    with pytest.raises(ConfigError, match="--freeze-norm needs frames") as err:
        api.export_model(gn_bundle, "onnx", tmp_path / "x", freeze_norm=True)
    assert "\n" not in str(err.value)
    bn = random_bundle("resnet_18", tmp_path / "bn", keypoints=2)
    with pytest.raises(ConfigError, match="no GroupNorm"):
        api.export_model(bn, "onnx", tmp_path / "y", freeze_norm=True, calibration=frames(1))
    with pytest.raises(ConfigError, match="apply to static INT8 .*--freeze-norm and --precision auto"):
        api.export_model(gn_bundle, "onnx", tmp_path / "z", calibration_from=tmp_path)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_export_has_no_per_frame_normalisation_and_records_it(gn_bundle, tmp_path, fmt):
    from posed.engines import api
    from posed.engines.bundle import load_bundle

    frame = frames(1, seed=3)  # measured and checked on the same frame: exact
    out = api.export_model(gn_bundle, fmt, tmp_path / fmt, freeze_norm=True, calibration=frame,
                           check_frames=frame)
    export = load_bundle(out).export
    assert export["freeze_norm"]["layers"] == 48 and export["freeze_norm"]["frames"] == 1
    parity = export["parity"] if fmt == "onnx" else export["parity"]["same_size"]
    assert parity["criterion"] == "median_px_confident"
    assert parity["max_score_diff"] < 1e-3
    if fmt == "onnx":
        import onnx

        def ops(folder):
            return {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}

        plain = api.export_model(gn_bundle, "onnx", tmp_path / "plain", check_frames=frame)
        assert "InstanceNormalization" in ops(plain)  # how torch exports GroupNorm
        assert not ops(out) & {"InstanceNormalization", "GroupNormalization"}
    runner = api.load_model(out)
    native = api.load_model(gn_bundle)
    np.testing.assert_allclose(runner.predict(frame)[..., :2], native.predict(frame)[..., :2],
                               atol=0.05)
