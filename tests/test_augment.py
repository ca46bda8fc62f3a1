"""Augmentation that fits the data: flips that swap paired parts, full-circle rotation,
occluding patches and motion blur, on images of coloured dots at the keypoints."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from posed.engines.project import load_project
from posed.engines.training import AugmentConfig, SampleMaker, TrainConfig, make_train_config
from posed.engines.training.loop import resolve_train_config
from posed.engines.training.settings import infer_flip_pairs, project_flip_pairs
from posed.errors import ConfigError

# One colour per part, told apart by which channels are lit.
COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255)]
# Parts 0/1 and 2/3 are left/right partners; 4 and 5 have none.
PAIRS = ((0, 1), (2, 3))
FLIP_ORDER = np.array([1, 0, 3, 2, 4, 5])
POINTS = np.array([[40, 30], [110, 35], [30, 90], [120, 95], [75, 60], [80, 105]], float)
SIZE = (128, 160)  # height, width
QUIET = dict(rotation=0.0, scale=(1.0, 1.0), shift=0.0, blur_prob=0.0, noise=0.0,
             brightness=0.0, contrast=0.0)


def _dots(points: np.ndarray, size=SIZE, radius: int = 4) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    for (x, y), colour in zip(points, COLOURS):
        if np.isfinite(x):
            cv2.circle(img, (int(x), int(y)), radius, colour, -1)
    return img


def _maker(aug: AugmentConfig, points: np.ndarray = POINTS, crop=None, image=None) -> SampleMaker:
    """A SampleMaker whose targets are the moved keypoints themselves."""
    image = _dots(points) if image is None else image
    return SampleMaker([image], [points], TrainConfig(crop=crop, augment=aug),
                       lambda h, w: (h, w), 1.0,
                       target_fn=lambda kpts, grid, stride, spec: {"keypoints": kpts})


def _blob(image: np.ndarray, colour, at, radius: int = 8):
    """Centroid and pixel count of the pixels of ``colour`` near ``at``, or None."""
    x, y = np.round(at).astype(int)
    h, w = image.shape[:2]
    if not (radius <= x < w - radius and radius <= y < h - radius):
        return None
    patch = image[y - radius:y + radius + 1, x - radius:x + radius + 1].astype(float)
    # Photometric changes move the background off 0: compare with the image's median.
    level = np.median(image, axis=(0, 1)) + 80.0
    lit = np.array(colour) > 0
    mask = np.all((patch > level) == lit, axis=2)
    ys, xs = np.nonzero(mask)
    if len(xs) < 5:
        return None
    return np.array([xs.mean() + x - radius, ys.mean() + y - radius]), len(xs)


def _source_of(image: np.ndarray, at) -> int | None:
    """The part whose dot sits at ``at`` (within 1 px), or None."""
    # The largest blob wins: noisy edges of a yellow dot may read as a few red pixels.
    blobs = {part: _blob(image, colour, at) for part, colour in enumerate(COLOURS)}
    blobs = {part: found for part, found in blobs.items() if found is not None}
    if not blobs:
        return None
    part = max(blobs, key=lambda p: blobs[p][1])
    return part if np.hypot(*(blobs[part][0] - at)) < 1.0 else None


def test_flip_swaps_paired_parts_and_mirrors_exactly():
    source = _dots(POINTS)
    sample = _maker(AugmentConfig(**QUIET, flip_prob=1.0, flip_pairs=PAIRS)).sample(
        0, np.random.default_rng(0))
    image, kpts = sample["image"], sample["keypoints"]
    width = SIZE[1]
    np.testing.assert_array_equal(image, source[:, ::-1])
    for part in range(len(POINTS)):
        src = POINTS[FLIP_ORDER[part]]
        np.testing.assert_allclose(kpts[part], [width - 1 - src[0], src[1]], atol=1e-9)
        x, y = kpts[part].astype(int)
        np.testing.assert_array_equal(image[y, x], source[int(src[1]), int(src[0])])
    # The left part's label now sits on the (mirrored) right part's dot.
    assert tuple(image[int(kpts[0, 1]), int(kpts[0, 0])]) == COLOURS[1]


def test_flip_without_pairs_keeps_every_label():
    sample = _maker(AugmentConfig(**QUIET, flip_prob=1.0)).sample(0, np.random.default_rng(0))
    expected = POINTS.copy()
    expected[:, 0] = SIZE[1] - 1 - expected[:, 0]
    np.testing.assert_allclose(sample["keypoints"], expected)
    for part, at in enumerate(sample["keypoints"]):
        assert _source_of(sample["image"], at) == part


def test_flip_prob_flips_about_that_often_and_samples_repeat_per_seed():
    aug = AugmentConfig(rotation=30.0, flip_prob=0.5, flip_pairs=PAIRS, occlude_prob=0.5,
                        motion_blur_prob=0.5)
    maker = _maker(aug)
    flips = 0
    for seed in range(40):
        a, b = (maker.sample(0, np.random.default_rng(seed)) for _ in range(2))
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
        # After a flip, part 0's label sits on part 1's dot (unless a patch hides it).
        flips += _source_of(a["image"], a["keypoints"][0]) == 1
    assert 10 <= flips <= 30


def test_known_pairs_without_flips_change_no_sample():
    old = AugmentConfig(rotation=40.0)
    new = AugmentConfig(rotation=40.0, flip_pairs=PAIRS)
    a = _maker(old).sample(0, np.random.default_rng(3))
    b = _maker(new).sample(0, np.random.default_rng(3))
    np.testing.assert_array_equal(a["image"], b["image"])


@pytest.mark.parametrize("names, pairs", [
    (["snout", "leftear", "rightear", "tailbase"], [("leftear", "rightear")]),
    (["ear_left", "Nose", "ear_right"], [("ear_left", "ear_right")]),
    (["LeftPaw", "RightPaw", "LeftEar", "RightEar"],
     [("LeftPaw", "RightPaw"), ("LeftEar", "RightEar")]),
    (["l_ear", "r_ear", "ear_L", "ear_R"], [("l_ear", "r_ear"), ("ear_L", "ear_R")]),
    (["LEar", "REar", "earl", "earr"], [("LEar", "REar")]),
    (["LF", "RF", "LH", "RH"], [("LF", "RF"), ("LH", "RH")]),
    (["Left_Ear", "right_ear"], [("Left_Ear", "right_ear")]),
    (["leftovers", "snout"], []),
    (["rear", "lear", "lip", "rip"], []),
    (["rear", "LEar"], []),
    (["left_ear", "right_paw", "tail_l"], []),
])
def test_pairs_are_inferred_from_names(names, pairs):
    assert infer_flip_pairs(names) == pairs


def _project(tmp_path, **extra):
    cfg = {"Task": "t", "scorer": "s", "date": "Jan1",
           "bodyparts": ["snout", "leftear", "rightear", "left_paw"], **extra}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    return load_project(tmp_path)


def test_project_pairs_are_declared_or_inferred_and_reach_training(tmp_path):
    assert project_flip_pairs(_project(tmp_path)) == [[1, 2]]
    assert project_flip_pairs(_project(tmp_path, flip_pairs=[])) == []
    declared = _project(tmp_path, flip_pairs=[["left_paw", "snout"]])
    assert project_flip_pairs(declared) == [[3, 0]]
    cfg = resolve_train_config(declared, 1, {"augment": {"flip_prob": 0.5}}, "pytorch")
    assert (cfg.augment.flip_pairs, cfg.augment.flip_prob) == (((3, 0),), 0.5)


def test_multianimal_parts_pair_only_within_their_group(tmp_path):
    cfg = {"Task": "t", "scorer": "s", "date": "Jan1", "multianimalproject": True,
           "bodyparts": "MULTI!", "individuals": ["a", "b"],
           "multianimalbodyparts": ["nose", "leftear", "rightear"],
           "uniquebodyparts": ["left_led", "right_led", "leftx"]}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    assert project_flip_pairs(load_project(tmp_path)) == [[1, 2], [3, 4]]
    cfg["flip_pairs"] = [["leftear", "right_led"]]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="'flip_pairs' pairs multi-animal and unique"):
        load_project(tmp_path)


def test_flip_swaps_partners_of_every_animal_in_packed_multianimal_labels():
    from posed.engines.training import pack_multianimal

    animals = np.array([[[40, 30], [60, 30], [50, 50]], [[100, 80], [120, 80], [110, 99]]], float)
    packed = pack_multianimal(animals, np.array([[20.0, 100.0], [140.0, 100.0]]))  # 3×5×2
    maker = SampleMaker([np.zeros((*SIZE, 3), np.uint8)], [packed],
                        TrainConfig(augment=AugmentConfig(**QUIET, flip_prob=1.0,
                                                          flip_pairs=((0, 1), (3, 4)))),
                        lambda h, w: (h, w), 1.0, target_fn=lambda k, g, s, sp: {"k": k})
    kpts = maker.sample(0, np.random.default_rng(0))["k"]
    expected = packed[:, [1, 0, 2, 4, 3]]
    expected[..., 0] = SIZE[1] - 1 - expected[..., 0]
    np.testing.assert_array_equal(kpts, expected)  # NaN cells stay NaN


def test_rotation_over_the_full_circle_keeps_keypoints_on_their_dots():
    maker = _maker(AugmentConfig(**{**QUIET, "rotation": 180.0}))
    angles_checked = 0
    for seed in range(30):
        sample = maker.sample(0, np.random.default_rng(seed))
        for part, at in enumerate(sample["keypoints"]):
            if np.isfinite(at).all() and _blob(sample["image"], COLOURS[part], at) is not None:
                assert _source_of(sample["image"], at) == part
                angles_checked += 1
    assert angles_checked > 100


def test_occlusion_changes_a_rectangle_of_the_image_not_the_keypoints():
    plain = _maker(AugmentConfig(**QUIET))
    occluded = _maker(AugmentConfig(**QUIET, occlude_prob=1.0))
    for seed in range(10):
        a = plain.sample(0, np.random.default_rng(seed))
        b = occluded.sample(0, np.random.default_rng(seed))
        np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
        ys, xs = np.nonzero((a["image"] != b["image"]).any(axis=2))
        assert len(xs) > 0
        box_h, box_w = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
        assert len(xs) > 0.9 * box_h * box_w  # one filled rectangle
        assert 0.1 * SIZE[0] - 1 <= box_h <= 0.4 * SIZE[0]
        assert 0.1 * SIZE[1] - 1 <= box_w <= 0.4 * SIZE[1]


def test_motion_blur_smears_along_a_line_without_moving_keypoints():
    points = np.array([[128.0, 128.0]])
    image = np.zeros((256, 256, 3), np.uint8)
    cv2.circle(image, (128, 128), 3, COLOURS[0], -1)
    plain = _maker(AugmentConfig(**QUIET), points, image=image)
    blurred = _maker(AugmentConfig(**QUIET, motion_blur_prob=1.0), points, image=image)
    elongations = []
    for seed in range(10):
        a = plain.sample(0, np.random.default_rng(seed))
        b = blurred.sample(0, np.random.default_rng(seed))
        np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
        assert not np.array_equal(a["image"], b["image"])
        red = b["image"][..., 0].astype(float)
        ys, xs = np.mgrid[:256, :256]
        total = red.sum()
        centre = np.array([(xs * red).sum(), (ys * red).sum()]) / total
        np.testing.assert_allclose(centre, points[0], atol=0.05)  # smeared, not moved
        d = np.stack([xs - centre[0], ys - centre[1]]).reshape(2, -1)
        cov = (d * red.ravel()) @ d.T / total
        low, high = np.linalg.eigvalsh(cov)
        elongations.append(high / low)
    assert max(elongations) > 2.0  # a line, unlike the round Gaussian blur


@settings(max_examples=40, deadline=None)
@given(rotation=st.floats(0, 180), low=st.floats(0.8, 1.0), high=st.floats(1.0, 1.25),
       shift=st.floats(0, 0.1), flip=st.sampled_from([0.0, 0.5, 1.0]),
       blur=st.floats(0, 1), motion=st.floats(0, 1), noise=st.floats(0, 0.03),
       brightness=st.floats(0, 0.15), contrast=st.floats(0, 0.2),
       crop=st.sampled_from([None, (96, 96)]), hidden=st.lists(st.booleans(), min_size=6,
                                                                max_size=6),
       seed=st.integers(0, 2**32 - 1))
def test_any_settings_keep_labels_on_their_content(rotation, low, high, shift, flip, blur, motion,
                                                   noise, brightness, contrast, crop, hidden,
                                                   seed):
    points = POINTS.copy()
    points[np.array(hidden)] = np.nan
    aug = dict(rotation=rotation, scale=(low, high), shift=shift, blur_prob=blur, noise=noise,
               brightness=brightness, contrast=contrast, flip_prob=flip, flip_pairs=PAIRS,
               motion_blur_prob=motion)
    sample = _maker(AugmentConfig(**aug), points, crop).sample(0, np.random.default_rng(seed))
    image, kpts = sample["image"], sample["keypoints"]
    h, w = image.shape[:2]
    flipped = set()
    for part, at in enumerate(kpts):
        if not np.isfinite(at).all():
            continue
        assert 0 <= at[0] <= w - 1 and 0 <= at[1] <= h - 1
        # A label comes from this part's own label, or its partner's after a flip.
        assert np.isfinite(points[part]).all() or np.isfinite(points[FLIP_ORDER[part]]).all()
        source = _source_of(image, at)
        if source is None:
            assert _blob(image, COLOURS[part], at) is None  # too near the edge to check
            continue
        assert source in (part, FLIP_ORDER[part])
        if FLIP_ORDER[part] != part:
            flipped.add(source != part)
    assert len(flipped) <= 1  # every pair swapped, or none
    assert flip or flipped <= {False}
    # Occluding patches never move a label: the same draws with one give the same keypoints.
    occluded = _maker(AugmentConfig(**aug, occlude_prob=1.0), points, crop).sample(
        0, np.random.default_rng(seed))
    np.testing.assert_array_equal(occluded["keypoints"], kpts)


def test_inversion_flips_every_level_and_keeps_keypoints():
    points = POINTS[:2]
    plain = _maker(AugmentConfig(**QUIET), points)
    inverted = _maker(AugmentConfig(**QUIET, invert_prob=1.0), points)
    a = plain.sample(0, np.random.default_rng(3))
    b = inverted.sample(0, np.random.default_rng(3))
    np.testing.assert_array_equal(a["keypoints"], b["keypoints"])
    np.testing.assert_array_equal(b["image"].astype(int), 255 - a["image"].astype(int))


@pytest.mark.parametrize("key, value", [
    ("invert_prob", 1.5), ("flip_prob", -0.1), ("occlude_prob", 1.5), ("motion_blur_prob", -1.0), ("blur_prob", 2.0),
    ("rotation", 190.0), ("rotation", -5.0), ("noise", -0.1), ("scale", [1.2, 0.9]),
    ("flip_pairs", [[0, 1], [1, 2]]),
])
def test_bad_values_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError) as err:
        make_train_config([("train_config.yaml", {"augment": {key: value}})])
    message = str(err.value)
    assert f"train_config.yaml: key 'augment.{key}'" in message and "\n" not in message


def test_full_circle_and_new_keys_layer_and_round_trip():
    cfg = make_train_config([("project", {"augment": {"flip_pairs": [[1, 2]]}}),
                             ("train_config.yaml", {"augment": {"rotation": 180, "flip_prob": 0.5,
                                                                "occlude_prob": 0.2}})])
    aug = cfg.augment
    assert (aug.rotation, aug.flip_prob, aug.flip_pairs, aug.occlude_prob) == (
        180.0, 0.5, ((1, 2),), 0.2)
    assert (aug.blur_prob, aug.motion_blur_prob) == (0.2, 0.0)  # untouched defaults
    dumped = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    assert make_train_config([("resolved", dumped)]) == cfg


def test_unknown_body_parts_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"'flip_pairs' names unknown body part 'tail'") as err:
        _project(tmp_path, flip_pairs=[["leftear", "tail"]])
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match=r"key 'augment.flip_pairs': pair \[1, 7\]"):
        _maker(AugmentConfig(flip_pairs=((1, 7),)))


def test_crop_sampling_cuts_crops_on_the_animal_anywhere_or_either():
    """``centred`` crops sit on the parts' mean; ``uniform`` ones anywhere inside the image
    (so the model sees the background far from the animal); ``hybrid`` either, about
    half each; evaluation samples are centred whatever the setting."""
    h, w, crop = 300, 400, (64, 48)
    ys, xs = np.mgrid[0:h, 0:w]
    image = np.stack([xs // 2, ys // 2, np.zeros_like(xs)], -1).astype(np.uint8)  # position
    points = np.array([[50.0, 40.0], [60.0, 50.0]])

    def maker(sampling):
        cfg = TrainConfig(crop=crop, crop_sampling=sampling, augment=AugmentConfig(**QUIET))
        return SampleMaker([image], [points], cfg, lambda h, w: (h, w), 1.0,
                           target_fn=lambda kpts, grid, stride, spec: {"keypoints": kpts})

    def origins(sampling, n=300):
        m, rng = maker(sampling), np.random.default_rng(0)
        out = []
        for _ in range(n):
            s = m.sample(0, rng)
            x0, y0 = s["image"][0, 0, :2].astype(float) * 2
            out.append((x0, y0, np.isfinite(s["keypoints"]).all()))
        return np.array(out)

    on_animal = (55 - (crop[0] - 1) / 2, 45 - (crop[1] - 1) / 2)  # parts' mean at the centre
    centred = origins("centred")
    assert np.abs(centred[:, :2] - on_animal).max() <= 2 and centred[:, 2].all()
    uniform = origins("uniform")
    assert uniform[:, 0].min() >= 0 and uniform[:, 0].max() <= w - crop[0] + 2
    assert uniform[:, 1].min() >= 0 and uniform[:, 1].max() <= h - crop[1] + 2
    assert uniform[:, 0].max() > 0.8 * (w - crop[0]) and uniform[:, 1].max() > 0.8 * (h - crop[1])
    assert 0 < uniform[:, 2].mean() < 0.2  # mostly crops without the animal
    hybrid = origins("hybrid")
    share = (np.abs(hybrid[:, :2] - on_animal).max(axis=1) <= 2).mean()
    assert 0.4 < share < 0.6
    s = maker("uniform").sample(0, np.random.default_rng(0), augment=False)
    assert np.abs(s["image"][0, 0, :2].astype(float) * 2 - on_animal).max() <= 2
    with pytest.raises(ConfigError, match="crop_sampling 'random' is not one of"):
        make_train_config([("cli", {"crop_sampling": "random"})])
