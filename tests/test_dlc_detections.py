"""DeepLabCut's detection pickles (``_full.pickle``, ``_assemblies.pickle``) that posed writes
beside a multi-animal table of a DeepLabCut shuffle (their match with DeepLabCut's own files
is in test_dlc_multianimal.py and test_dlc_topdown.py)."""

from __future__ import annotations

import pickle

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from posed.engines.base import AnimalPoses
from posed.engines.dlc.detections import detection_pickles, write_detection_pickles


def _animals(rng: np.random.Generator, n: int, slots: int, k: int, unique: int = 0,
             boxes: bool = False) -> AnimalPoses:
    animals = rng.uniform(0, 100, (n, slots, k, 3)).astype(np.float32)
    found = rng.integers(0, slots + 1, n)
    for f in range(n):
        animals[f, found[f]:] = np.nan  # empty slots after the found animals
        animals[f, found[f]:, :, 2] = 0.0
    missing = rng.random((n, slots, k)) < 0.2
    animals[missing] = [np.nan, np.nan, 0.0]
    scores = np.where(np.isnan(animals[..., 0]).all(-1), 0.0, rng.random((n, slots)))
    uniq = rng.uniform(0, 100, (n, unique, 3)).astype(np.float32)
    box = None
    if boxes:
        box = rng.uniform(0, 50, (n, slots, 4)).astype(np.float32)
        box[np.arange(slots)[None, :] >= found[:, None]] = np.nan
    return AnimalPoses(animals, scores.astype(np.float32), uniq, box)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 30), slots=st.integers(1, 4),
       k=st.integers(1, 5), unique=st.integers(0, 2), boxes=st.booleans())
def test_every_frame_keeps_its_row_and_its_animals(seed, n, slots, k, unique, boxes):
    """Frame i is key ``frame<i>`` and assemblies[i]; the found animals are kept in slot
    order (a missing part NaN with likelihood 0), empty slots are -1 in the full pickle and
    absent from the assemblies; boxes and scores go with their slots."""
    rng = np.random.default_rng(seed)
    poses = _animals(rng, n, slots, k, unique, boxes)
    parts = [f"p{i}" for i in range(k)]
    full, assemblies = detection_pickles(poses, parts, [f"u{i}" for i in range(unique)])
    width = int(np.ceil(np.log10(n)))
    meta = full["metadata"]
    assert meta["nframes"] == n and meta["key_str_width"] == width
    assert len(meta["all_joints_names"]) == k + unique
    assert sorted(assemblies, key=str) == sorted(["single", *range(n)], key=str)
    for f in range(n):
        frame = full["frame" + str(f).zfill(width)]
        xy = np.stack(frame["coordinates"][0][:k], axis=1)  # slots × parts × 2
        conf = np.stack(frame["confidence"][:k], axis=1)[..., 0]
        present = (~np.isnan(poses.boxes[f, :, 0]) if boxes
                   else ~np.isnan(poses.animals[f, ..., 0]).all(-1))
        np.testing.assert_array_equal(xy[present], poses.animals[f][present][..., :2])
        np.testing.assert_array_equal(conf[present], poses.animals[f][present][..., 2])
        assert (xy[~present] == -1).all() and (conf[~present] == -1).all()
        got = assemblies[f]
        assert got.shape == (present.sum(), k, 4)
        np.testing.assert_array_equal(got[..., :3], poses.animals[f][present])
        assert (got[..., 3] == -1).all()
        if unique:
            np.testing.assert_array_equal(assemblies["single"][f], poses.unique[f])
            # DeepLabCut's full pickle: one row per unique part, after the animals' parts
            np.testing.assert_array_equal(np.concatenate(frame["coordinates"][0][k:]),
                                          poses.unique[f][:, :2])
        if boxes:
            assert (frame["bboxes"][~present] == -1).all()
            np.testing.assert_array_equal(frame["bboxes"][present], poses.boxes[f][present])
            np.testing.assert_array_equal(frame["bbox_scores"][present], poses.scores[f][present])
        else:
            assert "bboxes" not in frame


def test_a_frame_that_failed_has_no_animal_and_the_files_are_written_beside_the_table(tmp_path):
    rng = np.random.default_rng(0)
    poses = _animals(rng, 3, 2, 3)
    poses.animals[1] = np.nan  # frame 1 could not be decoded: a NaN row
    poses.animals[1, ..., 2] = 0.0
    paths = write_detection_pickles(tmp_path / "v1DLC_x.h5", poses, ["a", "b", "c"])
    assert [p.name for p in paths] == ["v1DLC_x_full.pickle", "v1DLC_x_assemblies.pickle"]
    with open(paths[1], "rb") as fh:
        assemblies = pickle.load(fh)
    with open(paths[0], "rb") as fh:
        full = pickle.load(fh)
    assert assemblies[1].shape == (0, 3, 4)
    assert (np.stack(full["frame1"]["coordinates"][0]) == -1).all()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
