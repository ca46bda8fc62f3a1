"""Importing DeepLabCut 3 exported models (skipped when the shared DLC 3 model is absent).

Parity reference: DeepLabCut 3.0.2's own ``analyze_videos`` rows for ``m3v1mp4.mp4``. Measured
on the first 16 frames: 6.9e-5 px (x, y) and 3.9e-6 (likelihood); the bounds below leave room
for other CPUs' float order while still catching any convention error (colour order,
normalisation, grid offset), each of which moves points by pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from posed.errors import ExportError, ModelLoadError  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODEL_DIR = SHARED / "models" / "dlc3-openfield-resnet50"
PT_FILE = MODEL_DIR / "DLC_openfield_NetType.RESNET_50_iteration-0_shuffle-1_snapshot-1.pt"
H5_FILE = MODEL_DIR / "m3v1mp4DLC_Resnet50_openfieldOct30shuffle1_snapshot_1.h5"
VIDEO = SHARED / "data" / "dlc-examples" / "openfield-Pranav-2018-10-30" / "videos" / "m3v1mp4.mp4"

XY_TOL_PX = 1e-2
LIKELIHOOD_TOL = 1e-3
N_FRAMES = 8

pytestmark = [pytest.mark.realdata, pytest.mark.torch,
              pytest.mark.skipif(not PT_FILE.is_file(), reason="shared DLC 3 model absent")]


@pytest.fixture(scope="module")
def dlc_config() -> dict:
    from posed.exporters.dlc import read_dlc_export

    config, _ = read_dlc_export(PT_FILE)
    return config


@pytest.fixture(scope="module")
def imported(tmp_path_factory) -> Path:
    from posed.engines import api

    out = tmp_path_factory.mktemp("dlcimport") / "openfield-bundle"
    assert api.import_dlc(PT_FILE, out) == out  # a file: DeepLabCut 3, the PyTorch exporter
    return out


def _save_export(path: Path, config: dict, pose: dict | None = None) -> Path:
    """A DeepLabCut-style export with ``config`` and a small stand-in state dict."""
    pose = pose if pose is not None else {"w": torch.zeros(1)}
    torch.save({"config": config, "pose": pose}, path)
    return path


# ----------------------------------------------------------------------------- the real model


def test_read_real_export(dlc_config):
    from posed.exporters.dlc import read_dlc_export

    config, pose = read_dlc_export(PT_FILE)
    assert config["metadata"]["bodyparts"] == ["snout", "leftear", "rightear", "tailbase"]
    assert sum(t.numel() for t in pose.values()) == 23_729_228


def test_imported_bundle_loads_with_hash_check(imported):
    from posed.engines.bundle import load_bundle

    bundle = load_bundle(imported, verify=True)
    assert bundle.engine == "pytorch" and bundle.format == "safetensors"
    assert bundle.bodyparts == ["snout", "leftear", "rightear", "tailbase"]
    assert bundle.architecture == {"net": "resnet_50", "timm_model": "resnet50_gn",
                                   "output_stride": 16, "score": "clip",
                                   "head": "deconv3x3s2_nopad"}
    assert bundle.stride == 8.0
    assert bundle.locref_stdev == pytest.approx(7.2801)
    assert bundle.mean == pytest.approx((0.485, 0.456, 0.406))
    src = bundle.source
    assert src["imported_from"] == "deeplabcut"
    assert src["file"] == PT_FILE.name
    assert src["sha256"] == "d8866070628871746575a47db825bbd1fc71a1fed64c6c0e77d8b7f0cba52f53"
    assert (src["task"], src["date"]) == ("openfield", "Oct30")
    assert (src["shuffle"], src["snapshot"]) == (1, 1)
    assert bundle.scorer == "posed_Resnet50_openfieldOct30shuffle1_snapshot_1"
    # The scorer DeepLabCut itself wrote into its h5 for this model.
    assert src["dlc_scorer"] == "DLC_Resnet50_openfieldOct30shuffle1_snapshot_1"


def test_tampered_weights_are_refused(imported, tmp_path):
    import shutil

    from posed.engines.bundle import load_bundle

    copy = tmp_path / "b"
    shutil.copytree(imported, copy)
    with open(copy / "model.safetensors", "r+b") as fh:
        fh.seek(-4, os.SEEK_END)
        fh.write(b"\0\0\0\0")
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        load_bundle(copy)


def test_existing_output_needs_overwrite(tmp_path):
    from posed.exporters.dlc import import_dlc_pytorch

    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(ExportError, match="overwrite"):
        import_dlc_pytorch(PT_FILE, out)


@pytest.mark.slow
def test_matches_deeplabcut_analyze_videos(imported):
    import pandas as pd

    from posed.engines.api import load_model
    from posed.engines.video import VideoReader

    if not (VIDEO.is_file() and H5_FILE.is_file()):
        pytest.skip("openfield video or DeepLabCut's h5 absent")
    with VideoReader(VIDEO, stop=N_FRAMES) as reader:
        frames = np.stack([frame for _, frame in reader])
    runner = load_model(imported, device="cpu")
    pred = np.concatenate([runner.predict(frames[i:i + 4]) for i in range(0, len(frames), 4)])

    table = pd.read_hdf(H5_FILE)
    assert list(table.columns.get_level_values("bodyparts").unique()) == runner.bodyparts
    ref = table.to_numpy(dtype=np.float32).reshape(len(table), -1, 3)[:N_FRAMES]
    assert pred.shape == ref.shape
    dxy = np.abs(pred[..., :2] - ref[..., :2]).max()
    dlik = np.abs(pred[..., 2] - ref[..., 2]).max()
    assert dxy <= XY_TOL_PX, f"max x/y difference to DeepLabCut {dxy:.3g} px"
    assert dlik <= LIKELIHOOD_TOL, f"max likelihood difference to DeepLabCut {dlik:.3g}"


# ----------------------------------------------------------------------------- refused files


class _RunsCode:
    """Unpickling this would run a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


class _PlainObject:
    """An instance of a class defined here: unpickling needs this module imported."""


def test_code_running_pickle_is_refused(tmp_path):
    from posed.exporters.dlc import read_dlc_export

    marker = tmp_path / "MARKER"
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "pose": {}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(ModelLoadError, match="refused: not a plain weights file") as err:
        read_dlc_export(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()


def test_pickled_class_instance_is_refused(tmp_path):
    from posed.exporters.dlc import import_dlc_pytorch

    path = tmp_path / "object.pt"
    torch.save({"config": {}, "pose": {"w": torch.zeros(1)}, "extra": _PlainObject()}, path)
    with pytest.raises(ModelLoadError, match="refused.*_PlainObject"):
        import_dlc_pytorch(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_refused(tmp_path):
    from posed.exporters.dlc import read_dlc_export

    path = tmp_path / PT_FILE.name
    with open(PT_FILE, "rb") as src:
        path.write_bytes(src.read(4 << 20))
    with pytest.raises(ModelLoadError, match="truncated or corrupt") as err:
        read_dlc_export(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content", [b"", b"not a torch file at all"])
def test_garbage_file_is_refused(tmp_path, content):
    from posed.exporters.dlc import read_dlc_export

    path = tmp_path / "x.pt"
    path.write_bytes(content)
    with pytest.raises(ModelLoadError, match="x.pt"):
        read_dlc_export(path)


def test_missing_pose_key(tmp_path, dlc_config):
    from posed.exporters.dlc import read_dlc_export

    path = tmp_path / "nopose.pt"
    torch.save({"config": dlc_config}, path)
    with pytest.raises(ModelLoadError, match="missing key 'pose'"):
        read_dlc_export(path)


def test_missing_config_key(tmp_path, dlc_config):
    import copy

    from posed.exporters.dlc import import_dlc_pytorch

    config = copy.deepcopy(dlc_config)
    del config["model"]["backbone"]
    path = _save_export(tmp_path / "m.pt", config)
    with pytest.raises(ModelLoadError, match="config lacks key 'model.backbone'"):
        import_dlc_pytorch(path, tmp_path / "out")


def _multi_animal(cfg: dict) -> None:
    cfg["metadata"]["individuals"] = ["mouse1", "mouse2", "mouse3"]


def _top_down(cfg: dict) -> None:
    cfg["method"] = "td"


def _two_deconvs(cfg: dict) -> None:
    hm = cfg["model"]["heads"]["bodypart"]["heatmap_config"]
    hm.update(channels=[2048, 256, 4], kernel_size=[3, 3], strides=[2, 2])


def _hrnet_dekr(cfg: dict) -> None:
    cfg["model"]["backbone"] = {"type": "HRNet", "model_name": "hrnet_w32",
                                "interpolate_branches": True}


def _cspnext(cfg: dict) -> None:
    cfg["model"]["backbone"] = {"type": "CSPNeXt", "model_name": "cspnext_m"}


def _identity_head(cfg: dict) -> None:
    cfg["model"]["heads"]["identity"] = {"type": "HeatmapHead"}


def _resize(cfg: dict) -> None:
    cfg["data"]["inference"]["resize"] = {"height": 256, "width": 256}


def _unique(cfg: dict) -> None:
    cfg["metadata"]["unique_bodyparts"] = ["corner"]


@pytest.mark.parametrize("change, what", [
    (_multi_animal, "multi-animal"),
    (_top_down, "top-down"),
    (_two_deconvs, "2 deconvolution layers"),
    (_hrnet_dekr, "HRNet with all branches interpolated (DEKR)"),
    (_cspnext, "backbone type 'CSPNeXt'"),
    (_identity_head, "head 'identity'"),
    (_resize, "inference transform 'resize'"),
    (_unique, "unique body parts"),
])
def test_unsupported_models(tmp_path, dlc_config, change, what):
    import copy

    from posed.exporters.dlc import import_dlc_pytorch

    config = copy.deepcopy(dlc_config)
    change(config)
    path = _save_export(tmp_path / "m.pt", config)
    with pytest.raises(ModelLoadError, match="not supported yet") as err:
        import_dlc_pytorch(path, tmp_path / "out")
    assert what in str(err.value) and str(path) in str(err.value)
    assert "README, 'DeepLabCut 3 models'" in str(err.value)  # the table of supported families
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- mapping details


@pytest.mark.parametrize("normalize, unit, mean, std", [
    (True, False, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    (False, False, (0.0, 0.0, 0.0), (1 / 255,) * 3),
    (False, True, (0.0, 0.0, 0.0), (1.0,) * 3),
    (True, True, (0.485, 0.456, 0.406), (0.229 * 255, 0.224 * 255, 0.225 * 255)),
])
def test_pixel_normalisation_mapping(dlc_config, normalize, unit, mean, std):
    """posed's (x/255 - mean)/std equals DeepLabCut's Normalize then ScaleToUnitRange."""
    import copy

    from posed.exporters.dlc import _normalisation

    config = copy.deepcopy(dlc_config)
    config["data"]["inference"].update(normalize_images=normalize, scale_to_unit_range=unit)
    got_mean, got_std = _normalisation(config, PT_FILE)
    assert got_mean == pytest.approx(mean) and got_std == pytest.approx(std)
    x = np.repeat(np.array([0.0, 17.0, 255.0])[:, None], 3, axis=1)  # pixels × RGB
    dlc = x
    if normalize:
        dlc = (dlc / 255.0 - np.array(mean)) / np.array((0.229, 0.224, 0.225))
    if unit:
        dlc = dlc / 255.0
    np.testing.assert_allclose((x / 255.0 - np.array(got_mean)) / np.array(got_std), dlc, rtol=1e-6)


def test_scorer_without_project_path_or_pattern(tmp_path, dlc_config):
    import copy

    from posed.exporters.dlc import _model_spec, _source

    config = copy.deepcopy(dlc_config)
    config["metadata"]["project_path"] = None  # newer DeepLabCut wipes paths on export
    spec = _model_spec(config, PT_FILE)
    named = tmp_path / "DLC_my_task_resnet_50_iteration-2_shuffle-3_snapshot-best-200.pt"
    named.write_bytes(b"x")
    src = _source(config, named, spec)
    assert (src["task"], src["iteration"]) == ("my_task", 2)
    assert (src["shuffle"], src["snapshot"]) == (3, "best-200")
    assert src["scorer"] == "posed_Resnet50_my_taskshuffle3_snapshot_best-200"
    assert "date" not in src
    renamed = tmp_path / "my model.pt"
    renamed.write_bytes(b"x")
    assert _source(config, renamed, spec)["scorer"] == "posed_Resnet50_mymodel"
