"""DeepLabCut 3's HRNet models against DeepLabCut 3.0.2's own analysis
(``tests/data/deeplabcut/hrnet_fixture``, made by ``benchmarks/dlc_reference/
make_hrnet_fixture.py``; its README explains each file).

The weights are a function of each tensor's name and shape (``seeded_weights.py``), rebuilt
here; the export posed imports is DeepLabCut's ``{"config": pytorch_config, "pose": state}``.
DeepLabCut places padded frames at a random position by default, so its own outputs vary from
run to run (recorded in check.json); the reference runs use ``position: center``, which is
what posed does for DeepLabCut's default.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

FIXTURE = Path(__file__).parent / "data" / "deeplabcut" / "hrnet_fixture"
XY_TOL_PX = 1e-3

pytestmark = [pytest.mark.torch]


def _weights() -> object:
    spec = importlib.util.spec_from_file_location("seeded_weights",
                                                  FIXTURE / "seeded_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bundle(kind: str, tmp: Path, position: str | None = "center") -> Path:
    """posed's import of the DeepLabCut export of ``kind`` (single or multi)."""
    import yaml

    from posed.exporters.dlc import import_dlc_pytorch

    rule = _weights()
    keys = json.loads((FIXTURE / kind / "state_keys.json").read_text())
    pose = {k["name"]: torch.from_numpy(np.asarray(rule.value(k["name"], k["shape"])))
            for k in keys}
    config = yaml.safe_load((FIXTURE / kind / "pytorch_config.yaml").read_text())
    padding = config["data"]["inference"]["auto_padding"]
    if position is None:
        padding.pop("position")  # as DeepLabCut wrote it: its default, random
    path = tmp / f"{kind}.pt"
    torch.save({"config": config, "pose": pose}, path)
    return import_dlc_pytorch(path, tmp / f"{kind}-bundle")


def _dlc_table(kind: str, run: str = "analyze_center_padding"):
    import pandas as pd

    (h5,) = (FIXTURE / kind / run).glob("*.h5")
    return pd.read_hdf(h5)


def _analyze(bundle: Path, tmp: Path, kind: str, **options):
    import pandas as pd

    from posed.engines import api

    report = api.analyze_videos(bundle, [FIXTURE / kind / "synth1.mp4"], dest=tmp / "out",
                                progress=False, **options)
    (h5,) = (tmp / "out").glob("*.h5")
    assert report is not None
    return pd.read_hdf(h5)


@pytest.mark.slow
def test_single_animal_hrnet_w18_keypoints_equal_deeplabcuts(tmp_path):
    bundle = _bundle("single", tmp_path)
    got = _analyze(bundle, tmp_path, "single")
    want = _dlc_table("single")
    assert got.shape == want.shape and len(got) == 8
    assert [c[1:] for c in got.columns] == [c[1:] for c in want.columns]
    np.testing.assert_allclose(got.to_numpy(), want.to_numpy(), atol=XY_TOL_PX)
    # DeepLabCut's default (random placement) is not reproducible, by DeepLabCut either.
    runs = [_dlc_table("single", f"analyze_random_padding_run{i}").to_numpy() for i in (1, 2)]
    assert np.abs(runs[0] - runs[1]).max() > 1.0


@pytest.mark.slow
def test_hrnet_onnx_export_keeps_deeplabcuts_keypoints(tmp_path):
    """The export pads as the native runner does (the graph takes padded frames). TorchScript
    goes through the same runner padding (and is checked for DeepLabCut's multi-animal
    model in test_dlc_multianimal.py); one HRNet export is enough to time here."""
    from posed.engines import api

    exported = api.export_model(_bundle("single", tmp_path), "onnx", tmp_path / "onnx")
    got = _analyze(exported, tmp_path, "single")
    np.testing.assert_allclose(got.to_numpy(), _dlc_table("single").to_numpy(), atol=XY_TOL_PX)


@pytest.mark.slow
def test_multi_animal_hrnet_w32_assemblies_equal_deeplabcuts(tmp_path):
    """Untracked (DeepLabCut's ``auto_track=False, save_as_df=True``): the same animals, in
    DeepLabCut's order, every frame."""
    bundle = _bundle("multi", tmp_path)
    got = _analyze(bundle, tmp_path, "multi", tracking={"identities": "none"})
    want = _dlc_table("multi")
    assert got.shape == want.shape and len(got) == 8
    g, w = got.to_numpy().reshape(8, 3, 4, 3), want.to_numpy().reshape(8, 3, 4, 3)
    np.testing.assert_array_equal(np.isnan(g[..., 0]), np.isnan(w[..., 0]))
    np.testing.assert_allclose(g[..., :2], w[..., :2], atol=XY_TOL_PX)
    np.testing.assert_allclose(g[..., 2], w[..., 2], atol=1e-5)


def test_hrnet_maps_equal_deeplabcuts_on_its_padded_input(tmp_path):
    """The network alone, on DeepLabCut's own padded and normalised input: DeepLabCut's maps."""
    from posed.engines import api
    from posed.engines.padding import check_pad, pad_frames

    ref = np.load(FIXTURE / "single" / "reference_maps.npz")
    runner = api.load_model(_bundle("single", tmp_path), device="cpu")
    assert runner.bundle.stride == 2.0
    frames = ref["frames_rgb_uint8"]
    padded, offset = pad_frames(frames, check_pad(runner.bundle.architecture["pad"]))
    assert padded.shape[1:3] == tuple(ref["input"].shape[2:]) == (96, 128)
    np.testing.assert_allclose(-np.asarray(offset, float), ref["offsets_xy"][0], atol=0)
    scores, locref = runner.maps(padded)
    np.testing.assert_allclose(scores, ref["heatmap"], atol=1e-4)
    np.testing.assert_allclose(locref, ref["locref"], atol=1e-4)
