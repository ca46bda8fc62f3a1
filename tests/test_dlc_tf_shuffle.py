"""DeepLabCut TensorFlow shuffles served in place, against DeepLabCut 3.0.2's TensorFlow
engine itself (tests/data/deeplabcut/tf_shuffle_fixture, made by
benchmarks/dlc_reference/make_tf_shuffle_fixture.py; its README says how).

The fixture's ResNet-50 checkpoint is not committed (94 MB): its weights are a function of
each variable's name and shape (``seeded_weights.py``), and DeepLabCut's graph listed the
variables (``variables.json``), so the test writes the same checkpoint DeepLabCut analysed.
"""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from posed.engines import compat
from posed.engines.dlc import layout
from posed.engines.project import load_project
from posed.engines.registry import Engine
from posed.errors import CapabilityError, ModelLoadError

FIXTURE = Path(__file__).parent / "data" / "deeplabcut" / "tf_shuffle_fixture"
SHUFFLE = Path("dlc-models") / "iteration-0" / "synthJan1-trainset80shuffle1"
SCORER = "DLC_resnet50_synthJan1shuffle1_5"
EVAL = Path("evaluation-results") / "iteration-0" / "synthJan1-trainset80shuffle1"


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "synth"
    shutil.copytree(FIXTURE, root)
    return root


def _write_checkpoint(train: Path, iterations: int = 5) -> None:
    """The checkpoint DeepLabCut analysed, written again (TensorFlow's own SaveV2 op)."""
    from posed.engines.tensorflow import import_tensorflow

    tf = import_tensorflow()
    spec = importlib.util.spec_from_file_location("seeded_weights",
                                                  FIXTURE / "seeded_weights.py")
    rule = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rule)
    variables = json.loads((FIXTURE / "variables.json").read_text())
    tf.raw_ops.SaveV2(prefix=str(train / f"snapshot-{iterations}"),
                      tensor_names=[v["name"] for v in variables],
                      shape_and_slices=[""] * len(variables),
                      tensors=[rule.value(v["name"], v["shape"]) for v in variables])


@pytest.fixture
def tf_shuffle(tmp_path, monkeypatch) -> Path:
    """A writable copy of the fixture project with its snapshot-5 checkpoint."""
    pytest.importorskip("tensorflow")
    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    root = _copy(tmp_path)
    _write_checkpoint(root / SHUFFLE / "train")
    return root


def test_tensorflow_snapshots_scorer_and_index_rule(tmp_path):
    """DeepLabCut's TensorFlow naming: checkpoints by iterations, ``snapshotindex`` into
    that order, scorer ``DLC_resnet50_<Task><date>shuffle<K>_<iterations>``."""
    root = _copy(tmp_path)
    train = root / SHUFFLE / "train"
    for it in (100, 20, 3):
        (train / f"snapshot-{it}.index").write_bytes(b"")
        (train / f"snapshot-{it}.data-00000-of-00001").write_bytes(b"")
    (train / "snapshot-7.meta").write_bytes(b"")  # a graph alone is no snapshot
    found = layout.find_shuffle(load_project(root), 1)
    assert found.engine is Engine.TENSORFLOW
    assert [s.epoch for s in found.snapshots()] == [3, 20, 100]
    assert found.snapshot(-1).path == train / "snapshot-100"
    assert found.snapshot(0).files() == [train / "snapshot-3.index",
                                         train / "snapshot-3.data-00000-of-00001"]
    assert found.scorer(found.snapshot(1)) == "DLC_resnet50_synthJan1shuffle1_20"
    with pytest.raises(ModelLoadError, match="no best snapshot"):
        found.snapshot("best")
    with pytest.raises(CapabilityError, match="a TensorFlow shuffle.*DeepLabCut's own export"):
        compat.export_model(str(root / "config.yaml"), shuffle=1)


def test_deeplabcut_tensorflow_shuffle_analysed_as_deeplabcut_does(tf_shuffle, tmp_path):
    """DeepLabCut's call, unchanged, on its TensorFlow shuffle: its scorer, its keypoints
    (within 1e-3 px of its TensorFlow analyze_videos), a _meta.pickle in its TensorFlow
    structure."""
    import pandas as pd

    check = json.loads((FIXTURE / "check.json").read_text())
    scorer = compat.analyze_videos(str(tf_shuffle / "config.yaml"),
                                   [str(tf_shuffle / "videos" / "synth1.mp4")], shuffle=1,
                                   save_as_csv=True, destfolder=str(tmp_path / "out"))
    assert scorer == SCORER == check["analyze_videos"]["scorer"]
    h5 = tmp_path / "out" / f"synth1{scorer}.h5"
    got = pd.read_hdf(h5, "df_with_missing")
    ref = pd.read_hdf(FIXTURE / "videos" / f"synth1{scorer}.h5", "df_with_missing")
    assert got.columns.equals(ref.columns) and got.index.equals(ref.index)
    diff = np.abs(got.to_numpy() - ref.to_numpy()).reshape(len(ref), -1, 3)
    assert diff[..., :2].max() < 1e-3 and diff[..., 2].max() < 1e-4
    # the reference is not degenerate: parts move and likelihoods spread
    assert np.ptp(ref.to_numpy()[:, 0::3], axis=0).max() > 8
    meta = pickle.loads(h5.with_name(h5.stem + "_meta.pickle").read_bytes())["data"]
    assert list(meta) == check["meta_keys"]
    assert meta["frame_dimensions"] == tuple(check["meta_frame_dimensions"]) == (64, 80)
    assert meta["DLC-model-config file"]["net_type"] == "resnet_50"


def test_evaluation_writes_deeplabcuts_tensorflow_files(tf_shuffle):
    """evaluate_network on DeepLabCut's split: DeepLabCut's TensorFlow result files, the
    same errors to the printed 2 decimals and predictions within 1e-3 px."""
    import pandas as pd

    results = tf_shuffle / EVAL / f"{SCORER}-results.csv"
    combined = tf_shuffle / EVAL.parent / "CombinedEvaluation-results.csv"
    theirs = results.read_text(), combined.read_text()
    h5 = tf_shuffle / EVAL / f"{SCORER}-snapshot-5.h5"
    ref = pd.read_hdf(h5)
    results.unlink(), combined.unlink(), h5.unlink()
    compat.evaluate_network(str(tf_shuffle / "config.yaml"), Shuffles=[1])
    assert (results.read_text(), combined.read_text()) == theirs
    got = pd.read_hdf(h5)
    assert got.columns.equals(ref.columns) and got.index.equals(ref.index)
    assert np.nanmax(np.abs(got.to_numpy() - ref.to_numpy())) < 1e-3


def test_tensorflow_shuffle_folder_is_a_daemon_model(tf_shuffle, tmp_path):
    """`posed serve` names the shuffle folder: config check loads it (the TensorFlow engine)
    and `posed analyze` on the project writes DeepLabCut's scorer."""
    from posed.cli import main

    config = tmp_path / "serve.yaml"
    config.write_text(f"model:\n  bundle: {tf_shuffle / SHUFFLE / 'train'}\n  device: cpu\n"
                      f"cameras:\n  - id: c\n    source: {tf_shuffle / 'videos' / 'synth1.mp4'}\n"
                      "publisher:\n  endpoint: tcp://127.0.0.1:5598\nmetrics:\n  port: 0\n")
    assert main(["config", "check", str(config)]) == 0
    assert main(["analyze", str(tf_shuffle), str(tf_shuffle / "videos" / "synth1.mp4"),
                 "--dest", str(tmp_path / "cli"), "-q"]) == 0
    assert (tmp_path / "cli" / f"synth1{SCORER}.h5").is_file()


@pytest.mark.parametrize("edit, message", [
    ({"net_type": "mobilenet_v2_0.35"}, "net_type 'mobilenet_v2_0.35'.*posed import-dlc"),
    ({"multi_stage": True}, "only single-animal"),
])
def test_unsupported_tensorflow_nets_are_refused_in_one_line(tmp_path, monkeypatch, edit,
                                                             message):
    pytest.importorskip("tensorflow")
    import yaml

    from posed.engines.loading import load_served_model

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    root = _copy(tmp_path)
    for name in ("train", "test"):
        cfg = root / SHUFFLE / name / "pose_cfg.yaml"
        cfg.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), **edit}))
    (root / SHUFFLE / "train" / "snapshot-5.index").write_bytes(b"")
    (root / SHUFFLE / "train" / "snapshot-5.data-00000-of-00001").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=message) as err:
        load_served_model(root / SHUFFLE)
    assert "pose_cfg.yaml" in str(err.value) and "\n" not in str(err.value)


def test_a_checkpoint_without_a_tensor_is_named(tmp_path, monkeypatch):
    pytest.importorskip("tensorflow")
    from posed.engines.loading import load_served_model
    from posed.engines.tensorflow import import_tensorflow

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    root = _copy(tmp_path)
    tf = import_tensorflow()
    tf.raw_ops.SaveV2(prefix=str(root / SHUFFLE / "train" / "snapshot-5"),
                      tensor_names=["resnet_v1_50/conv1/weights"], shape_and_slices=[""],
                      tensors=[np.zeros((7, 7, 3, 64), np.float32)])
    with pytest.raises(ModelLoadError, match="tensor 'resnet_v1_50/conv1/BatchNorm/gamma' "
                                             "not in the checkpoint"):
        load_served_model(root / SHUFFLE / "train")
