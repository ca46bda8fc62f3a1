"""Multi-animal DeepLabCut data: project configs, 4-level label files, pose tables, and the
``posed synth --animals N`` generator."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import yaml

from posed.cli import main
from posed.engines import synth
from posed.engines.project.posetables import (
    MA_COLUMN_NAMES,
    multianimal_frame_to_poses,
    multianimal_poses_to_frame,
    read_multianimal_pose_table,
    read_pose_table,
    write_pose_table,
)
from posed.engines.project import (
    create_split,
    load_labels,
    load_multianimal_labels,
    load_project,
    read_label_file,
    read_multianimal_label_file,
)
from posed.errors import ConfigError, DataError

INDIVIDUALS = ["mus1", "mus2"]
MULTI = ["snout", "tail"]
UNIQUE = ["corner"]


def write_config(folder: Path, **changes) -> Path:
    cfg = {
        "Task": "social",
        "scorer": "me",
        "date": "Mar3",
        "multianimalproject": True,
        "identity": False,
        "individuals": list(INDIVIDUALS),
        "uniquebodyparts": list(UNIQUE),
        "multianimalbodyparts": list(MULTI),
        "bodyparts": "MULTI!",
        "skeleton": [["snout", "tail"]],
    }
    cfg.update(changes)
    cfg = {k: v for k, v in cfg.items() if v is not ...}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def label_frame(images, values, individuals=INDIVIDUALS, multi=MULTI, unique=UNIQUE,
                three_level_index=True, names=True) -> pd.DataFrame:
    """A DeepLabCut multi-animal label table; ``values`` is N×(I·K + U)×2."""
    tuples = [("me", i, b, c) for i in individuals for b in multi for c in ("x", "y")]
    tuples += [("me", "single", b, c) for b in unique for c in ("x", "y")]
    columns = pd.MultiIndex.from_tuples(tuples, names=list(MA_COLUMN_NAMES) if names else None)
    if three_level_index:
        index = pd.MultiIndex.from_tuples([tuple(p.split("/")) for p in images])
    else:
        index = pd.Index(images)
    return pd.DataFrame(np.asarray(values, float).reshape(len(images), -1), index=index,
                        columns=columns)


def sample_values(n=3, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.uniform(0, 100, size=(n, len(INDIVIDUALS) * len(MULTI) + len(UNIQUE), 2))
    values[0, 1] = np.nan  # mus1 tail missing in the first image
    values[1, 2:4] = np.nan  # mus2 entirely missing in the second
    values[2, -1] = np.nan  # corner missing in the third
    return values


def expected_arrays(values):
    n = len(values)
    multi = values[:, : len(INDIVIDUALS) * len(MULTI)].reshape(n, len(INDIVIDUALS), len(MULTI), 2)
    return multi, values[:, len(INDIVIDUALS) * len(MULTI):]


def make_project(tmp_path: Path, n_images=3, **config) -> Path:
    root = tmp_path / "proj"
    write_config(root, **config)
    folder = root / "labeled-data" / "vid"
    folder.mkdir(parents=True)
    images = [f"labeled-data/vid/img{i}.png" for i in range(n_images)]
    for image in images:
        (root / image).write_bytes(b"")
    label_frame(images, sample_values(n_images)).to_hdf(
        folder / "CollectedData_me.h5", key="df_with_missing", mode="w")
    return root


# --------------------------------------------------------------------------------------------
# config.yaml
# --------------------------------------------------------------------------------------------


def test_multianimal_config(tmp_path):
    p = load_project(write_config(tmp_path))
    assert p.multianimal
    assert p.individuals == ("mus1", "mus2")
    assert p.multianimalbodyparts == ("snout", "tail")
    assert p.uniquebodyparts == ("corner",)
    # DeepLabCut's stacking order: multi-animal parts first, then the unique ones.
    assert p.bodyparts == ("snout", "tail", "corner")
    assert p.label_individuals == ("mus1", "mus2", "single")
    assert p.skeleton == (("snout", "tail"),)

    p = load_project(write_config(tmp_path, uniquebodyparts=None, bodyparts=...))
    assert p.uniquebodyparts == () and p.label_individuals == ("mus1", "mus2")


def test_single_animal_config_is_unchanged(tmp_path):
    p = load_project(write_config(tmp_path, multianimalproject=False, bodyparts=["a", "b"],
                                  skeleton=[["a", "b"]]))
    assert not p.multianimal and p.bodyparts == ("a", "b")
    assert p.individuals == () and p.label_individuals == ()


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"individuals": ...}, "lacks key 'individuals'"),
        ({"multianimalbodyparts": ...}, "lacks key 'multianimalbodyparts'"),
        ({"individuals": []}, "'individuals' must be a non-empty list"),
        ({"individuals": ["a", "a"]}, "'individuals' lists a twice"),
        ({"individuals": ["a", "single"]}, "must not list 'single'"),
        ({"multianimalbodyparts": "snout"}, "'multianimalbodyparts' must be"),
        ({"uniquebodyparts": ["snout"]}, "both list 'snout'"),
        ({"uniquebodyparts": [3]}, "'uniquebodyparts' entries must be non-empty strings"),
        ({"multianimalproject": "yes"}, "'multianimalproject' must be true or false"),
        ({"skeleton": [["snout", "paw"]]}, "multianimalbodyparts + uniquebodyparts"),
        ({"multianimalproject": False}, "'bodyparts: MULTI!' marks a multi-animal project"),
    ],
)
def test_multianimal_config_errors(tmp_path, changes, needle):
    path = write_config(tmp_path, **changes)
    with pytest.raises(ConfigError) as exc:
        load_project(path)
    message = str(exc.value)
    assert message.startswith(str(path)) and needle in message and "\n" not in message


# --------------------------------------------------------------------------------------------
# Label files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["h5-fixed-3level", "h5-table-flat", "csv-3level", "csv-flat",
                                    "csv-no-level-names"])
def test_read_multianimal_label_file_layouts(tmp_path, layout):
    images = [f"labeled-data/vid/img{i}.png" for i in range(3)]
    values = sample_values()
    df = label_frame(images, values, three_level_index="3level" in layout or "names" in layout,
                     names="no-level-names" not in layout)
    if layout == "h5-fixed-3level":
        path = tmp_path / "c.h5"
        df.to_hdf(path, key="df_with_missing", mode="w")
    elif layout == "h5-table-flat":
        path = tmp_path / "c.h5"
        df.to_hdf(path, key="keypoints", mode="w", format="table")
    else:
        path = tmp_path / "c.csv"
        df.to_csv(path)
    data = read_multianimal_label_file(path, INDIVIDUALS, MULTI, UNIQUE)
    multi, unique = expected_arrays(values)
    assert data.images == images
    assert data.keypoints.shape == (3, 2, 2, 2) and data.keypoints.dtype == np.float64
    np.testing.assert_array_equal(data.keypoints, multi)
    np.testing.assert_array_equal(data.unique, unique)
    assert data.individuals == ("mus1", "mus2") and data.bodyparts == ("snout", "tail")
    assert data.uniquebodyparts == ("corner",)

    # Without config lists the file's own names come back, in file order.
    plain = read_multianimal_label_file(path)
    assert plain.individuals == ("mus1", "mus2") and plain.uniquebodyparts == ("corner",)
    np.testing.assert_array_equal(plain.keypoints, multi)


def test_config_order_and_absent_individuals(tmp_path):
    images = ["labeled-data/vid/img0.png"]
    df = label_frame(images, [[[1, 2], [3, 4]]], individuals=["mus2"], unique=[])
    df.to_csv(tmp_path / "c.csv")
    data = read_multianimal_label_file(tmp_path / "c.csv", ["mus1", "mus2", "mus3"],
                                       ["tail", "snout"], ["corner"])
    assert data.keypoints.shape == (1, 3, 2, 2)
    assert np.isnan(data.keypoints[0, [0, 2]]).all()
    np.testing.assert_array_equal(data.keypoints[0, 1], [[3, 4], [1, 2]])  # config order
    assert np.isnan(data.unique).all()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"individuals": ["mus1", "intruder"]}, "unknown individual 'intruder'"),
        ({"multi": ["snout", "paw"]}, "unknown body part 'paw' of individual 'mus1'"),
        ({"multi": ["snout", "corner"], "unique": []},
         "unique body part 'corner' is labelled under individual 'mus1'"),
        ({"unique": ["snout"]}, "body part 'snout' of individual 'single' is not in config.yaml "
                                "uniquebodyparts"),
        ({"unique": ["lamp"]}, "body part 'lamp' of individual 'single'"),
    ],
)
def test_label_file_disagrees_with_config(tmp_path, kwargs, needle):
    images = ["labeled-data/vid/img0.png"]
    individuals = kwargs.get("individuals", INDIVIDUALS)
    multi = kwargs.get("multi", MULTI)
    unique = kwargs.get("unique", UNIQUE)
    n = len(individuals) * len(multi) + len(unique)
    df = label_frame(images, np.ones((1, n, 2)), individuals, multi, unique)
    df.to_csv(tmp_path / "c.csv")
    with pytest.raises(DataError) as exc:
        read_multianimal_label_file(tmp_path / "c.csv", INDIVIDUALS, MULTI, UNIQUE)
    message = str(exc.value)
    assert message.startswith(str(tmp_path / "c.csv")) and needle in message
    assert "\n" not in message


def test_label_file_kind_mismatch(tmp_path):
    images = ["labeled-data/vid/img0.png"]
    label_frame(images, np.ones((1, 5, 2))).to_csv(tmp_path / "multi.csv")
    with pytest.raises(DataError, match=r"multi\.csv: multi-animal label file"):
        read_label_file(tmp_path / "multi.csv")
    single = pd.DataFrame(
        [[1.0, 2.0]], index=images,
        columns=pd.MultiIndex.from_product([["me"], ["a"], ["x", "y"]],
                                           names=["scorer", "bodyparts", "coords"]))
    single.to_hdf(tmp_path / "single.h5", key="df_with_missing", mode="w")
    with pytest.raises(DataError, match=r"single\.h5: single-animal label file"):
        read_multianimal_label_file(tmp_path / "single.h5")


@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")  # object column in h5
def test_label_file_value_errors(tmp_path):
    images = ["labeled-data/vid/img0.png"]
    df = label_frame(images, np.ones((1, 5, 2))).astype(object)
    df.iloc[0, 5] = "oops"  # mus2 snout y
    df.to_csv(tmp_path / "c.csv")
    with pytest.raises(DataError, match=r"c\.csv: line 5: non-numeric mus2 snout y value 'oops'"):
        read_multianimal_label_file(tmp_path / "c.csv")
    df.to_hdf(tmp_path / "c.h5", key="df_with_missing", mode="w")
    with pytest.raises(DataError, match=r"c\.h5: non-numeric mus2 snout y value 'oops'"):
        read_multianimal_label_file(tmp_path / "c.h5")

    label_frame(images, np.ones((1, 5, 2))).to_csv(tmp_path / "clean.csv")
    lines = (tmp_path / "clean.csv").read_text().splitlines()
    lines[3] = lines[3].replace("coords,,,x,y,", "coords,,,x,x,", 1)
    assert "x,x" in lines[3]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="'mus1' body part 'snout' has more than one 'x'"):
        read_multianimal_label_file(tmp_path / "d.csv")


def test_load_multianimal_labels_and_split(tmp_path):
    root = make_project(tmp_path, n_images=4)
    project = load_project(root)
    data = load_multianimal_labels(project)
    multi, unique = expected_arrays(sample_values(4))
    assert data.images == [f"labeled-data/vid/img{i}.png" for i in range(4)]
    np.testing.assert_array_equal(data.keypoints, multi)
    np.testing.assert_array_equal(data.unique, unique)

    # Training and evaluation read labels through load_labels, which stays single-animal.
    with pytest.raises(DataError, match="multi-animal project .*not supported yet"):
        load_labels(project)
    split = create_split(project, 1, train_fraction=0.5)
    assert sorted(split.train + split.test) == data.images

    (root / "labeled-data" / "vid" / "img2.png").unlink()
    with pytest.raises(DataError, match=r"img2\.png: image missing"):
        load_multianimal_labels(project)


def test_project_labels_checked_against_config(tmp_path):
    root = make_project(tmp_path, individuals=["mus1"])
    with pytest.raises(DataError) as exc:
        load_multianimal_labels(load_project(root))
    assert "CollectedData_me.h5: labels for unknown individual 'mus2'" in str(exc.value)
    assert "(config.yaml individuals: mus1)" in str(exc.value)

    single = tmp_path / "single"
    write_config(single, multianimalproject=False, bodyparts=["a"], skeleton=[])
    with pytest.raises(DataError, match="not a multi-animal project"):
        load_multianimal_labels(load_project(single))


# --------------------------------------------------------------------------------------------
# Pose tables
# --------------------------------------------------------------------------------------------


def test_multianimal_pose_table_roundtrip(tmp_path):
    rng = np.random.default_rng(1)
    poses = rng.uniform(0, 1, size=(6, 3, 2, 3)).astype(np.float32)
    poses[2, 1] = np.nan
    unique = rng.uniform(0, 1, size=(6, 1, 3)).astype(np.float32)
    df = multianimal_poses_to_frame(poses, ["a", "b", "c"], ["snout", "tail"], "posedX",
                                    unique=unique, uniquebodyparts=["corner"])
    assert list(df.columns.names) == list(MA_COLUMN_NAMES)
    assert df.columns[0] == ("posedX", "a", "snout", "x")
    assert df.columns[-1] == ("posedX", "single", "corner", "likelihood")
    written = write_pose_table(df, tmp_path / "out" / "v.h5", csv=True)
    assert [p.name for p in written] == ["v.h5", "v.csv"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    back = pd.read_hdf(tmp_path / "out" / "v.h5", key="df_with_missing")
    pd.testing.assert_frame_equal(back, df)
    header = (tmp_path / "out" / "v.csv").read_text().splitlines()[:4]
    assert [line.split(",")[0] for line in header] == list(MA_COLUMN_NAMES)

    for path in written:
        parsed = multianimal_frame_to_poses(read_multianimal_pose_table(path))
        np.testing.assert_array_equal(parsed.poses, poses)
        np.testing.assert_array_equal(parsed.unique, unique)
        assert parsed.individuals == ("a", "b", "c") and parsed.uniquebodyparts == ("corner",)
    # The single-animal reader refuses the extra level with a clear message.
    with pytest.raises(DataError, match="expected 3 column levels"):
        read_pose_table(tmp_path / "out" / "v.h5")


def test_multianimal_pose_table_bad_input():
    with pytest.raises(ValueError, match="does not match"):
        multianimal_poses_to_frame(np.zeros((2, 3, 2, 3)), ["a", "b"], ["x", "y"], "s")
    with pytest.raises(ValueError, match="reserved"):
        multianimal_poses_to_frame(np.zeros((2, 1, 1, 3)), ["single"], ["x"], "s")
    with pytest.raises(ValueError, match="no unique poses"):
        multianimal_poses_to_frame(np.zeros((2, 1, 1, 3)), ["a"], ["x"], "s",
                                   uniquebodyparts=["c"])


# --------------------------------------------------------------------------------------------
# posed synth --animals
# --------------------------------------------------------------------------------------------

SIZE = (160, 128)
VIDEO_FRAMES = 45


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("masynth") / "proj"
    code = main(["synth", str(out), "--animals", "3", "--frames", "6", "--size", "160x128",
                 "--video-frames", str(VIDEO_FRAMES), "--seed", "4", "-q"])
    assert code == 0
    return out


def test_synth_writes_a_multianimal_project(synth_dir):
    project = load_project(synth_dir)
    assert project.multianimal
    assert project.individuals == ("individual1", "individual2", "individual3")
    assert project.multianimalbodyparts == ("snout", "leftear", "rightear", "tailbase")
    assert project.uniquebodyparts == ()
    assert project.raw["bodyparts"] == "MULTI!"
    # The skeleton is a tree over all body parts (what part-affinity fields need).
    edges = project.skeleton
    assert len(edges) == len(project.multianimalbodyparts) - 1
    reached = {edges[0][0]}
    for _ in edges:
        reached |= {b for a, b in edges if a in reached} | {a for a, b in edges if b in reached}
    assert reached == set(project.multianimalbodyparts)

    labels = load_multianimal_labels(project)
    assert labels.keypoints.shape == (6, 3, 4, 2)
    finite = labels.keypoints[np.isfinite(labels.keypoints[..., 0])]
    assert len(finite) > 0.8 * 6 * 3 * 4
    assert (finite >= 0).all() and (finite[:, 0] <= SIZE[0] - 1).all()
    assert (finite[:, 1] <= SIZE[1] - 1).all()
    df = pd.read_hdf(synth_dir / "labeled-data" / "synth1" / "CollectedData_synth.h5")
    assert list(df.columns.names) == list(MA_COLUMN_NAMES)
    csv_labels = read_multianimal_label_file(
        synth_dir / "labeled-data" / "synth1" / "CollectedData_synth.csv")
    np.testing.assert_array_equal(csv_labels.keypoints, labels.keypoints)


def test_synth_video_truth_has_identities_crossings_and_occlusions(synth_dir):
    with av.open(str(synth_dir / "videos" / "synth1.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == VIDEO_FRAMES and frames[0].shape == (SIZE[1], SIZE[0], 3)

    path = synth_dir / "videos" / "synth1_truth.csv"
    header = path.read_text().splitlines()[0]
    assert header.startswith("frame,individual,identity,snout_x,snout_y,snout_visible,")
    truth = synth.read_multianimal_truth(path)
    assert truth.individuals == ("individual1", "individual2", "individual3")
    assert truth.keypoints.shape == (VIDEO_FRAMES, 3, 4, 2)
    assert np.isfinite(truth.keypoints).all()
    # The file holds exactly what the generator function computes (to the written 1e-4 px).
    again = synth.multianimal_video_truth(SIZE, VIDEO_FRAMES, 3, seed=4)
    np.testing.assert_allclose(truth.keypoints, again.keypoints, atol=1e-4)
    np.testing.assert_array_equal(truth.visible, again.visible)

    # Some parts are covered by another animal, and animals pass close to each other.
    assert 0 < (~truth.visible).sum() < truth.visible.size // 2
    centres = truth.keypoints.mean(axis=2)
    gaps = np.linalg.norm(centres[:, :, None] - centres[:, None], axis=-1)
    gaps[:, np.arange(3), np.arange(3)] = np.inf
    length = np.median(np.linalg.norm(truth.keypoints[:, :, 0] - truth.keypoints[:, :, 3], axis=-1))
    assert gaps.min() < length
    # Smooth motion per identity: identities never jump between animals.
    assert np.abs(np.diff(truth.keypoints, axis=0)).max() < 6

    # The video shows each visible snout (the nose dot) where the truth says.
    for f in range(0, VIDEO_FRAMES, 5):
        frame = frames[f].astype(float)
        ring = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
        floor = np.median(ring, axis=0)
        for a in range(3):
            if truth.visible[f, a, 0]:
                x, y = np.round(truth.keypoints[f, a, 0]).astype(int)
                assert np.abs(frame[y, x] - floor).max() > 30, (f, a)


def test_synth_is_deterministic(synth_dir, tmp_path):
    out = tmp_path / "again"
    synth.generate_multianimal_project(out, animals=3, frames=6, size=SIZE,
                                       video_frames=VIDEO_FRAMES, seed=4)
    for rel in ("labeled-data/synth1/CollectedData_synth.csv", "videos/synth1_truth.csv",
                "labeled-data/synth1/img0003.png"):
        assert (out / rel).read_bytes() == (synth_dir / rel).read_bytes(), rel
    other = synth.multianimal_video_truth(SIZE, 10, 3, seed=5)
    assert not np.allclose(other.keypoints, synth.multianimal_video_truth(SIZE, 10, 3, 4).keypoints)


def test_synth_animals_errors(tmp_path, capsys):
    with pytest.raises(ConfigError, match="animals must be an integer >= 1"):
        synth.generate_multianimal_project(tmp_path / "x", animals=0)
    with pytest.raises(SystemExit):
        main(["synth", str(tmp_path / "y"), "--animals", "zero"])
    assert "expected a positive integer" in capsys.readouterr().err


def test_skeleton_for_any_subset():
    assert synth.skeleton_for(["snout", "leftear", "rightear", "tailbase"]) == [
        ("tailbase", "snout"), ("snout", "leftear"), ("snout", "rightear")]
    # Names label catalogue slots by position; every subset gives a spanning tree.
    names = [f"p{i}" for i in range(len(synth.CATALOGUE))]
    for k in range(1, len(names) + 1):
        edges = synth.skeleton_for(names[:k])
        assert len(edges) == k - 1
        assert {n for e in edges for n in e} == (set(names[:k]) if k > 1 else set())
