"""Tests of DeepLabCut project reading and the train/test split (posed.engines.project)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from posed.engines.project import (
    Split,
    create_split,
    load_image,
    load_labels,
    load_project,
    load_split,
    read_label_file,
    split_path,
)
from posed.engines.synth import generate_project
from posed.errors import ConfigError, DataError

DLC_EXAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "dlc-examples"
OPENFIELD = DLC_EXAMPLES / "openfield-Pranav-2018-10-30"
REACHING = DLC_EXAMPLES / "Reaching-Mackenzie-2018-08-30"
OPENFIELD_LABELS = OPENFIELD / "labeled-data" / "m4s1" / "CollectedData_Pranav"
REACHING_LABELS = REACHING / "labeled-data" / "reachingvideo1" / "CollectedData_Mackenzie"


def need_real_data() -> None:
    if not DLC_EXAMPLES.is_dir():
        pytest.skip(f"{DLC_EXAMPLES} is absent")


def synth_project(tmp_path: Path, frames: int = 12) -> Path:
    return generate_project(
        tmp_path / "proj", frames=frames, size=(64, 64), video_frames=0, missing_rate=0.0
    )


def write_config(tmp_path: Path, **changes) -> Path:
    cfg = {
        "Task": "t",
        "scorer": "me",
        "date": "Jan1",
        "bodyparts": ["a", "b"],
    }
    cfg.update(changes)
    cfg = {k: v for k, v in cfg.items() if v is not ...}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------
# config.yaml
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_load_real_configs():
    need_real_data()
    p = load_project(OPENFIELD)
    assert p.root == OPENFIELD.resolve()
    assert p.config_path == OPENFIELD.resolve() / "config.yaml"
    assert (p.task, p.scorer, p.date, p.name) == ("openfield", "Pranav", "Oct30", "openfieldOct30")
    assert p.bodyparts == ("snout", "leftear", "rightear", "tailbase")
    assert p.training_fraction == (0.95,)
    assert (p.iteration, p.pcutoff, p.engine, p.batch_size) == (0, 0.4, "pytorch", 4)
    assert p.default_net_type == "resnet_50"
    assert p.skeleton == ()
    assert "SuperAnimalConversionTables" in p.raw

    r = load_project(REACHING / "config.yaml")
    assert r.name == "ReachingAug30"
    assert r.bodyparts == ("Hand", "Finger1", "Tongue", "Joystick1", "Joystick2")
    assert r.engine is None
    assert r.skeleton == (("Hand", "Finger1"), ("Joystick1", "Joystick2"))


def test_config_defaults(tmp_path):
    p = load_project(write_config(tmp_path))
    assert p.bodyparts == ("a", "b")
    assert (p.iteration, p.pcutoff, p.batch_size, p.engine, p.default_net_type) == (
        0,
        0.6,
        8,
        None,
        None,
    )
    assert p.training_fraction == (0.95,)
    assert p.skeleton == ()


@pytest.mark.parametrize("key", ["Task", "scorer", "date", "bodyparts"])
def test_config_missing_key(tmp_path, key):
    path = write_config(tmp_path, **{key: ...})
    with pytest.raises(ConfigError) as exc:
        load_project(tmp_path)
    message = str(exc.value)
    assert f"'{key}'" in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"bodyparts": "snout"}, "'bodyparts'"),
        ({"bodyparts": []}, "'bodyparts'"),
        ({"bodyparts": ["a", "a"]}, "twice"),
        ({"bodyparts": ["a", 3]}, "'bodyparts'"),
        ({"bodyparts": "MULTI!"}, "multi-animal"),
        ({"multianimalproject": True}, "multi-animal"),
        ({"Task": 5}, "'Task'"),
        ({"batch_size": "8"}, "'batch_size'"),
        ({"batch_size": True}, "'batch_size'"),
        ({"iteration": -1}, "'iteration'"),
        ({"pcutoff": "high"}, "'pcutoff'"),
        ({"TrainingFraction": [1.5]}, "'TrainingFraction'"),
        ({"skeleton": [["a"]]}, "'skeleton'"),
        ({"skeleton": [["a", "zzz"]]}, "zzz"),
        ({"engine": 3}, "'engine'"),
    ],
)
def test_config_bad_values(tmp_path, changes, needle):
    path = write_config(tmp_path, **changes)
    with pytest.raises(ConfigError, match="^" + str(path).replace("\\", "\\\\")) as exc:
        load_project(path)
    assert needle in str(exc.value)


def test_config_missing_file_and_yaml_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_project(tmp_path)
    path = tmp_path / "config.yaml"
    path.write_text("Task: t\nscorer: me\nbodyparts: [a, b\ndate: x\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: YAML error at line \d+"):
        load_project(path)
    path.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_project(path)


# --------------------------------------------------------------------------------------------
# Label files
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_real_labels_h5_equals_csv():
    need_real_data()
    for stem, rows, parts in ((OPENFIELD_LABELS, 93, 4), (REACHING_LABELS, 55, 5)):
        h5 = read_label_file(stem.with_suffix(".h5"))
        csv = read_label_file(stem.with_suffix(".csv"))
        assert h5.images == csv.images
        assert h5.bodyparts == csv.bodyparts
        assert h5.keypoints.shape == (rows, parts, 2) and h5.keypoints.dtype == np.float64
        np.testing.assert_array_equal(h5.keypoints, csv.keypoints)

    of = read_label_file(OPENFIELD_LABELS.with_suffix(".h5"))
    assert of.images[0] == "labeled-data/m4s1/img0000.png"
    assert not np.isnan(of.keypoints).any()
    np.testing.assert_allclose(of.keypoints[0, 0], [21.521, 265.428])

    re = read_label_file(REACHING_LABELS.with_suffix(".csv"))
    missing = np.isnan(re.keypoints).any(axis=2).sum(axis=0)
    assert dict(zip(re.bodyparts, missing.tolist(), strict=True)) == {
        "Hand": 1,
        "Finger1": 1,
        "Tongue": 40,
        "Joystick1": 0,
        "Joystick2": 0,
    }
    # x and y are missing together
    assert (np.isnan(re.keypoints[..., 0]) == np.isnan(re.keypoints[..., 1])).all()


@pytest.mark.realdata
def test_three_level_row_index(tmp_path):
    need_real_data()
    flat = read_label_file(OPENFIELD_LABELS.with_suffix(".h5"))
    df = pd.read_hdf(OPENFIELD_LABELS.with_suffix(".h5"))
    df.index = pd.MultiIndex.from_tuples([tuple(p.split("/")) for p in df.index])
    df.to_hdf(tmp_path / "CollectedData_Pranav.h5", key="df_with_missing", mode="w")
    df.to_csv(tmp_path / "CollectedData_Pranav.csv")
    for suffix in (".h5", ".csv"):
        data = read_label_file(tmp_path / f"CollectedData_Pranav{suffix}")
        assert data.images == flat.images
        np.testing.assert_array_equal(data.keypoints, flat.keypoints)


@pytest.mark.realdata
def test_label_options_and_errors(tmp_path):
    need_real_data()
    h5 = OPENFIELD_LABELS.with_suffix(".h5")
    base = read_label_file(h5)

    # Requested order is honoured; a requested part absent from the file is all NaN.
    data = read_label_file(h5, ["tailbase", "nose", "snout", "leftear", "rightear"])
    assert data.bodyparts == ("tailbase", "nose", "snout", "leftear", "rightear")
    np.testing.assert_array_equal(data.keypoints[:, 0], base.keypoints[:, 3])
    assert np.isnan(data.keypoints[:, 1]).all()
    np.testing.assert_array_equal(data.keypoints[:, 2], base.keypoints[:, 0])

    with pytest.raises(DataError) as exc:
        read_label_file(h5, ["leftear", "rightear", "tailbase"])
    message = str(exc.value)
    assert str(h5) in message and "'snout'" in message and "unknown body part" in message

    # Backslash paths (labels made on Windows) and a likelihood column.
    df = pd.read_hdf(h5)
    df.index = [p.replace("/", "\\") for p in df.index]
    df[("Pranav", "snout", "likelihood")] = 1.0
    df.to_csv(tmp_path / "win.csv")
    data = read_label_file(tmp_path / "win.csv")
    assert data.images == base.images
    np.testing.assert_array_equal(data.keypoints, base.keypoints)

    # Non-numeric value.
    text = (tmp_path / "win.csv").read_text().replace("265.428", "oops", 1)
    (tmp_path / "bad.csv").write_text(text)
    with pytest.raises(DataError, match=r"bad\.csv.*snout y.*'oops'"):
        read_label_file(tmp_path / "bad.csv")

    with pytest.raises(DataError, match="label file not found"):
        read_label_file(tmp_path / "nothing.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataError, match=r"junk\.h5: cannot read HDF5"):
        read_label_file(tmp_path / "junk.h5")


def test_csv_keeps_unlabelled_first_row(tmp_path):
    # pandas.read_csv would take an all-empty first row for index names and drop it.
    columns = pd.MultiIndex.from_product(
        [["me"], ["a", "b"], ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    index = pd.MultiIndex.from_tuples([("labeled-data", "v", f"img{i}.png") for i in range(3)])
    values = np.arange(12, dtype=float).reshape(3, 4)
    values[0] = np.nan
    values[2, 2:] = np.nan
    pd.DataFrame(values, index=index, columns=columns).to_csv(tmp_path / "c.csv")
    data = read_label_file(tmp_path / "c.csv", ["a", "b"])
    assert data.images == [f"labeled-data/v/img{i}.png" for i in range(3)]
    np.testing.assert_array_equal(data.keypoints.reshape(3, 4), values)


def test_multi_animal_label_file_rejected(tmp_path):
    columns = pd.MultiIndex.from_product(
        [["me"], ["m1"], ["a"], ["x", "y"]], names=["scorer", "individuals", "bodyparts", "coords"]
    )
    pd.DataFrame([[1.0, 2.0]], index=["labeled-data/v/i.png"], columns=columns).to_csv(
        tmp_path / "c.csv"
    )
    with pytest.raises(DataError, match="multi-animal"):
        read_label_file(tmp_path / "c.csv")


# --------------------------------------------------------------------------------------------
# Whole projects
# --------------------------------------------------------------------------------------------


@pytest.mark.realdata
def test_load_real_project_labels():
    need_real_data()
    of = load_labels(load_project(OPENFIELD))
    assert len(of.images) == 93 and of.keypoints.shape == (93, 4, 2)
    assert load_image(OPENFIELD, of.images[0]).shape == (480, 640, 3)

    reaching = load_project(REACHING)
    re = load_labels(reaching)
    assert len(re.images) == 55 and re.bodyparts == reaching.bodyparts
    image = load_image(reaching.root, "labeled-data/reachingvideo1/img033.png")
    assert image.shape == (470, 640, 3) and image.dtype == np.uint8


def test_load_labels_synth_project(tmp_path):
    project = load_project(synth_project(tmp_path, frames=5))
    data = load_labels(project)
    assert data.images == [f"labeled-data/synth1/img{i:04d}.png" for i in range(5)]
    assert data.keypoints.shape == (5, 4, 2)

    # Falls back to the csv when there is no h5.
    (project.root / "labeled-data/synth1/CollectedData_synth.h5").unlink()
    again = load_labels(project)
    assert again.images == data.images
    np.testing.assert_array_equal(again.keypoints, data.keypoints)


def test_load_labels_errors(tmp_path):
    project = load_project(synth_project(tmp_path, frames=3))
    missing = project.root / "labeled-data/synth1/img0001.png"
    missing.unlink()
    with pytest.raises(DataError) as exc:
        load_labels(project)
    message = str(exc.value)
    assert str(missing) in message and "image missing" in message
    assert "CollectedData_synth.h5" in message
    assert len(load_labels(project, check_images=False).images) == 3
    with pytest.raises(DataError, match=r"img0001\.png: image missing"):
        load_image(project.root, "labeled-data/synth1/img0001.png")
    (project.root / "labeled-data/synth1/img0002.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot decode"):
        load_image(project.root, "labeled-data/synth1/img0002.png")

    shutil.rmtree(project.root / "labeled-data")
    with pytest.raises(DataError, match=r"labeled-data: no CollectedData_synth\.h5 or \.csv"):
        load_labels(project)


def test_load_labels_unknown_bodypart(tmp_path):
    config = synth_project(tmp_path, frames=2)
    cfg = yaml.safe_load(config.read_text())
    cfg["bodyparts"] = ["snout", "leftear", "rightear"]
    cfg["skeleton"] = []
    config.write_text(yaml.safe_dump(cfg))
    with pytest.raises(
        DataError,
        match=r"CollectedData_synth\.h5: labels for unknown body part "
        r"'tailbase' \(config\.yaml bodyparts: snout, leftear",
    ):
        load_labels(load_project(config))


def test_grayscale_image_becomes_rgb(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "g.png"), np.full((5, 7), 100, np.uint8))
    image = load_image(tmp_path, "g.png")
    assert image.shape == (5, 7, 3) and (image == 100).all()


# --------------------------------------------------------------------------------------------
# Train/test split
# --------------------------------------------------------------------------------------------


def test_split_reproducible_and_saved(tmp_path):
    project = load_project(synth_project(tmp_path, frames=20))
    images = sorted(load_labels(project).images)

    first = create_split(project, shuffle=1)
    assert isinstance(first, Split)
    assert (first.shuffle, first.seed, first.train_fraction) == (1, 1, 0.8)
    assert len(first.train) == 16 and len(first.test) == 4
    assert sorted(first.train + first.test) == images
    assert not set(first.train) & set(first.test)

    path = split_path(project, 1)
    assert path == project.root / "training-datasets/iteration-0/posed/split-shuffle1.yaml"
    assert load_split(project, 1) == first
    assert not list(path.parent.glob("*.tmp"))  # atomic write left nothing behind

    # Same seed -> same split, also when recomputed from scratch.
    assert create_split(project, shuffle=1) == first
    path.unlink()
    assert create_split(project, shuffle=1) == first
    # Another shuffle -> another seed -> another split.
    second = create_split(project, shuffle=2)
    assert second.seed == 2 and second.train != first.train
    # An explicit seed reproduces another shuffle's split.
    assert create_split(project, shuffle=3, seed=2).train == second.train


def test_split_conflicts_and_options(tmp_path):
    project = load_project(synth_project(tmp_path, frames=10))
    create_split(project, shuffle=1)
    with pytest.raises(ConfigError) as exc:
        create_split(project, shuffle=1, train_fraction=0.5)
    message = str(exc.value)
    assert str(split_path(project, 1)) in message and "overwrite" in message
    with pytest.raises(ConfigError, match="seed=7"):
        create_split(project, shuffle=1, seed=7)

    half = create_split(project, shuffle=1, train_fraction=0.5, overwrite=True)
    assert len(half.train) == 5 and load_split(project, 1) == half

    tiny = create_split(project, shuffle=4, train_fraction=0.01)
    assert len(tiny.train) == 1 and len(tiny.test) == 9
    with pytest.raises(ConfigError, match="train_fraction"):
        create_split(project, shuffle=5, train_fraction=1.0)


def test_load_split_errors(tmp_path):
    project = load_project(synth_project(tmp_path, frames=4))
    with pytest.raises(DataError, match=r"no train/test split for shuffle 9; run `posed train`"):
        load_split(project, 9)
    path = split_path(project, 1)
    path.parent.mkdir(parents=True)
    path.write_text("shuffle: 1\nseed: 1\ntrain: []\n")
    with pytest.raises(DataError, match="missing key 'train_fraction'"):
        load_split(project, 1)
