"""Real DeepLabCut data: the openfield example project end to end (skipped when absent)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import DLC3_MODEL, DLC_EXAMPLES

OPENFIELD = DLC_EXAMPLES / "openfield-Pranav-2018-10-30"

pytestmark = [pytest.mark.realdata, pytest.mark.slow,
              pytest.mark.skipif(not OPENFIELD.is_dir(), reason="shared DLC example data absent")]


@pytest.fixture(scope="module")
def openfield_trained(tmp_path_factory):
    """The openfield project trained for one quick epoch from the CLI (a format test, not accuracy)."""
    pytest.importorskip("torch")
    from posed.cli import main

    proj = tmp_path_factory.mktemp("openfield") / OPENFIELD.name
    shutil.copytree(OPENFIELD, proj)
    for p in proj.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    code = main(["train", str(proj), "--net", "mobilenet_v2_0.35", "--epochs", "1",
                 "--crop", "160x160", "--batch-size", "16", "-q"])
    assert code == 0
    return proj


def test_analyze_openfield_video_is_deeplabcut_shaped(openfield_trained, tmp_path):
    from posed.cli import main

    video = openfield_trained / "videos" / "m3v1mp4.mp4"
    code = main(["analyze", str(openfield_trained), str(video), "--dest", str(tmp_path), "--csv",
                 "--batch-size", "16", "-q"])
    assert code == 0
    (h5,) = tmp_path.glob("m3v1mp4posed_*.h5")
    ours = pd.read_hdf(h5, "df_with_missing")
    assert ours.shape == (2330, 12)  # every frame of the video, K=4 keypoints × (x, y, likelihood)
    assert list(ours.index) == list(range(2330))
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


def test_evaluate_openfield_writes_a_table(openfield_trained):
    from posed.engines import compat
    from posed.engines.project import load_project

    result = compat.evaluate_network(load_project(openfield_trained), 1)
    assert result.table.loc[("train", "all"), "n"] == 88 * 4
    assert result.table.loc[("test", "all"), "n"] == 5 * 4
    assert (result.folder / "errors.csv").is_file()


REACHING = DLC_EXAMPLES / "Reaching-Mackenzie-2018-08-30"


@pytest.mark.skipif(not REACHING.is_dir(), reason="shared DLC example data absent")
def test_reaching_trains_with_mixed_image_sizes_and_missing_labels(tmp_path):
    """Reaching has 832x747 and 640x470 frames and a mostly unlabelled Tongue."""
    pytest.importorskip("torch")
    from posed.engines import compat
    from posed.engines.project import load_project

    proj = tmp_path / REACHING.name
    shutil.copytree(REACHING, proj)
    for p in proj.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    project = load_project(proj)
    folder = compat.train_network(project, 1, "torch", {"net": "mobilenet_v2_0.35", "epochs": 1,
                                                        "crop": [128, 128], "batch_size": 16},
                                  progress=False)
    result = compat.evaluate_network(project, 1)
    assert result.table.loc[("train", "Tongue"), "n"] < result.table.loc[("train", "Hand"), "n"]
    assert (folder / "snapshot-001.safetensors").is_file()
