"""Test-time flips (engines/fliptest.py): mirroring back, pair swaps, fusion, and a model's
horizontal bias cancelled; the CLI's --flip-test on a trained model is in test_cli.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.fliptest import FlipTestRunner, flip_order, fuse, mirror_back
from posed.errors import ConfigError

H, W = 48, 64
PARTS = ["snout", "leftear", "rightear", "tailbase"]


class EarsRunner(PoseRunner):
    """A model of a mouse seen from above, facing up: of the two bright blobs, the one
    further left is ``leftear`` (as a pose model tells the ears apart by where they sit on
    the body, not by what they look like); ``snout`` is their midpoint, ``tailbase`` is not
    found. ``bias`` shifts every x, as a model with a systematic offset would."""

    engine = "fake"

    def __init__(self, bundle: ModelBundle, bias: float = 0.0) -> None:
        super().__init__(bundle)
        self.bias = bias
        self.batches: list[int] = []

    @classmethod
    def load(cls, bundle, **options):
        return cls(bundle, **options)

    def _forward(self, frames):
        self.batches.append(len(frames))
        out = np.zeros((len(frames), 4, 3), np.float32)
        for i, frame in enumerate(frames):
            ys, xs = np.nonzero(frame[..., 0] > 127)
            split = xs.mean()
            left, right = xs < split, xs >= split
            out[i, 1] = xs[left].mean(), ys[left].mean(), 0.9
            out[i, 2] = xs[right].mean(), ys[right].mean(), 0.9
            out[i, 0, :2] = out[i, 1:3, :2].mean(axis=0)
            out[i, 0, 2] = 0.7
            out[i, 3] = np.nan, np.nan, 0.0
        out[..., 0] += self.bias
        return out


def ears_runner(bias: float = 0.0) -> EarsRunner:
    return EarsRunner.load(ModelBundle(engine="fake", format="none", bodyparts=PARTS,
                                       architecture={}, stride=8.0, locref_stdev=7.2801),
                           bias=bias)


def frames(n: int = 3, seed: int = 0) -> np.ndarray:
    """Frames with two 3x3 white blobs (the ears) at random places, left one first."""
    rng = np.random.default_rng(seed)
    out = np.zeros((n, H, W, 3), np.uint8)
    for img in out:
        y1, y2 = rng.integers(2, H - 4, size=2)
        x1 = rng.integers(2, W // 2 - 4)
        x2 = rng.integers(W // 2 + 2, W - 4)
        img[y1:y1 + 3, x1:x1 + 3] = 255
        img[y2:y2 + 3, x2:x2 + 3] = 255
    return out


def test_an_equivariant_model_gives_the_same_pose_with_flips():
    inner = ears_runner()
    plain = inner.predict(frames())
    flipped = FlipTestRunner(ears_runner()).predict(frames())
    # leftear stays the left blob: the mirrored view's leftear is swapped back to rightear.
    np.testing.assert_allclose(flipped[:, :3, :2], plain[:, :3, :2], atol=1e-4)
    np.testing.assert_allclose(flipped[:, :3, 2], plain[:, :3, 2], atol=1e-6)
    assert np.isnan(flipped[:, 3, :2]).all() and (flipped[:, 3, 2] == 0).all()


def test_flips_cancel_a_horizontal_bias_in_one_batch():
    truth = ears_runner().predict(frames(5, seed=1))
    runner = FlipTestRunner(ears_runner(bias=1.5))
    fused = runner.predict(frames(5, seed=1))
    assert np.abs(ears_runner(bias=1.5).predict(frames(5, seed=1))[:, :3, 0]
                  - truth[:, :3, 0]).max() == pytest.approx(1.5)
    np.testing.assert_allclose(fused[:, :3, :2], truth[:, :3, :2], atol=1e-4)
    assert runner.inner.batches == [10]  # frames and mirrors go through in one batch


def test_without_the_pair_swap_the_ears_would_be_averaged_together():
    """The swap is what keeps each ear on its own side: with no pairs, the mirrored view's
    leftear is the right blob mapped back, and where the blobs are close enough to count as
    agreeing, fusion averages the two ears together."""
    plain = ears_runner().predict(frames())
    unpaired = FlipTestRunner(ears_runner(), pairs=[]).predict(frames())
    assert not np.allclose(unpaired[:, 1:3, :2], plain[:, 1:3, :2], atol=0.5)


def test_a_mirror_view_that_misreads_the_animal_never_overrides_the_plain_one():
    """A model that, on mirrored frames, confidently puts every part somewhere else (as one
    trained without flips put openfield's snout at the tail) leaves the plain poses as they
    are, likelihoods included."""

    class Misreads(EarsRunner):
        def _forward(self, frames):
            out = super()._forward(frames)
            mirrored = frames[:, 0, 0, 1] == 1  # marked below
            out[mirrored, :3, 0] += 20
            out[mirrored, :3, 2] = 1.0
            return out

    imgs = frames()
    imgs[:, 0, -1, 1] = 1  # top-right pixel: the mirrored copy has it top-left
    plain = ears_runner().predict(imgs)
    inner = Misreads.load(ears_runner().bundle)
    fused = FlipTestRunner(inner, agree_px=8).predict(imgs)  # 20 px apart: they disagree
    np.testing.assert_allclose(fused[:, :3], plain[:, :3], atol=1e-5)
    assert inner.batches == [6]


def test_flip_pairs_are_checked():
    assert list(flip_order(PARTS)) == [0, 2, 1, 3]
    assert list(flip_order(PARTS, [["snout", "tailbase"]])) == [3, 1, 2, 0]
    for bad in ([["leftear"]], [["leftear", "nose"]], [["leftear", "rightear"],
                                                       ["rightear", "snout"]],
                [["snout", "snout"]]):
        with pytest.raises(ConfigError, match="flip pairs"):
            flip_order(PARTS, bad)
    with pytest.raises(ConfigError, match="agree_px"):
        FlipTestRunner(ears_runner(), agree_px=0)


def test_empty_batches_and_bad_frames():
    runner = FlipTestRunner(ears_runner())
    assert runner.predict(np.zeros((0, H, W, 3), np.uint8)).shape == (0, 4, 3)
    from posed.errors import InferenceError

    with pytest.raises(InferenceError, match="uint8"):
        runner.predict(np.zeros((1, H, W, 3), np.float32))
    assert runner.bundle.source["flip_test"] is True and runner.engine == "fake"


poses = hnp.arrays(np.float32, (2, 3, 3), elements=st.floats(0, 60, width=32))


@settings(max_examples=200, deadline=None)
@given(a=poses, b=poses, agree=st.floats(0.5, 40))
def test_fusion_invariants(a, b, agree):
    a[..., 2] /= 60
    b[..., 2] /= 60
    out = fuse(a, b, agree)
    ab = np.linalg.norm(a[..., :2] - b[..., :2], axis=-1)
    near = ab <= agree
    np.testing.assert_allclose(out[..., 2][near], ((a[..., 2] + b[..., 2]) / 2)[near], rtol=1e-6)
    np.testing.assert_allclose(fuse(a, a, agree)[..., :2], a[..., :2], atol=1e-4)
    # Where they agree, symmetric; a fused point lies on the segment between the two.
    np.testing.assert_allclose(fuse(b, a, agree)[near], out[near], atol=1e-4)
    da = np.linalg.norm(out[..., :2] - a[..., :2], axis=-1)
    db = np.linalg.norm(out[..., :2] - b[..., :2], axis=-1)
    np.testing.assert_allclose((da + db)[near], ab[near], atol=1e-3)
    # Where they do not, the plain estimate as it is.
    np.testing.assert_array_equal(out[~near], a[~near])


@settings(max_examples=100, deadline=None)
@given(p=poses, width=st.integers(61, 2000))
def test_mirroring_back_twice_is_the_identity(p, width):
    order = flip_order(PARTS[:3])
    np.testing.assert_allclose(mirror_back(mirror_back(p, width, order), width, order), p,
                               atol=1e-3)


def test_a_part_only_one_view_finds_takes_its_position():
    a = np.array([[[10.0, 5.0, 0.9], [np.nan, np.nan, 0.0]]], np.float32)
    b = np.array([[[np.nan, np.nan, 0.0], [3.0, 4.0, 0.6]]], np.float32)
    out = fuse(a, b, 8.0)
    np.testing.assert_allclose(out, [[[10.0, 5.0, 0.9], [3.0, 4.0, 0.3]]])


def test_multi_animal_models_are_refused_in_one_line():
    from posed.engines.base import MultiAnimalRunner
    from posed.errors import CapabilityError

    class Herd(MultiAnimalRunner):
        engine = "fake"

        @classmethod
        def load(cls, bundle, **options):
            return cls(bundle)

        def _maps(self, frames):
            raise AssertionError("never run")

    bundle = ModelBundle(engine="fake", format="none", bodyparts=["snout", "tail"],
                         architecture={"individuals": ["a", "b"],
                                       "multianimalbodyparts": ["snout", "tail"]},
                         stride=8.0, locref_stdev=7.2801)
    with pytest.raises(CapabilityError, match="multi-animal") as err:
        FlipTestRunner(Herd.load(bundle))
    assert "\n" not in str(err.value)


def test_the_pairs_are_those_of_the_project_the_model_was_trained_in(tmp_path):
    """``load_model(..., flip_test=True)`` swaps the pairs the model's project declares (none
    here, though the names pair up), else those found in the names."""
    import yaml

    from posed.engines.fliptest import project_pairs

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"Task": "t", "scorer": "s", "date": "Jan1", "bodyparts": PARTS, "flip_pairs": []}))
    bundle = ears_runner().bundle
    trained = dataclasses.replace(bundle, source={"project": str(tmp_path)})
    assert project_pairs(trained) == []
    assert list(FlipTestRunner(EarsRunner.load(trained), project_pairs(trained)).order) \
        == [0, 1, 2, 3]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(
        {"Task": "t", "scorer": "s", "date": "Jan1", "bodyparts": PARTS}))
    assert project_pairs(trained) == [("leftear", "rightear")]
    moved = dataclasses.replace(bundle, source={"project": str(tmp_path / "gone")})
    assert project_pairs(moved) is None and project_pairs(bundle) is None
