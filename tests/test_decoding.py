"""Shared numpy targets and decoding."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from posed.engines.decoding import TargetSpec, body_window_px, decode, make_targets


@pytest.mark.parametrize("kind", ["gaussian", "plateau"])
@pytest.mark.parametrize("stride", [4, 8])
def test_targets_decode_back_to_the_keypoints(kind, stride):
    rng = np.random.default_rng(0)
    spec = TargetSpec(kind=kind, sigma=4.0, radius=2.5 * stride)
    grid = (128 // stride, 96 // stride)
    kpts = np.stack([rng.uniform(2, 94, 5), rng.uniform(2, 126, 5)], axis=1)
    t = make_targets(kpts, grid, stride, spec)
    pred = decode(t["heatmap"][None], t["locref"][None], stride, spec.locref_stdev)[0]
    np.testing.assert_allclose(pred[:, :2], kpts, atol=1e-3)
    assert (pred[:, 2] > 0.5).all()


def test_missing_keypoints_have_zero_weight_and_target():
    spec = TargetSpec()
    kpts = np.array([[10.0, 12.0], [np.nan, np.nan]])
    t = make_targets(kpts, (8, 8), 8, spec)
    assert t["heatmap_weight"][:, 0, 0].tolist() == [1.0, 0.0]
    assert t["heatmap"][1].max() == 0.0
    assert t["locref_weight"][2:].max() == 0.0
    assert t["locref_weight"][:2].max() == 1.0


def test_decode_without_locref_uses_cell_centres():
    scores = np.zeros((1, 1, 4, 4), np.float32)
    scores[0, 0, 2, 1] = 0.9
    out = decode(scores, None, 8, 7.2801)
    assert out.tolist() == [[[12.0, 20.0, pytest.approx(0.9)]]]


def test_decode_nan_scores_give_nan_with_zero_likelihood():
    scores = np.full((2, 2, 3, 3), 0.1, np.float32)
    scores[1, 0] = np.nan
    out = decode(scores, np.zeros((2, 4, 3, 3), np.float32), 8, 7.2801)
    assert np.isnan(out[1, 0, :2]).all() and out[1, 0, 2] == 0.0
    assert np.isfinite(out[0]).all() and np.isfinite(out[1, 1]).all()


def test_unknown_target_kind_is_rejected():
    with pytest.raises(ValueError, match="not one of"):
        TargetSpec(kind="box")


def _pose_maps(points, grid, stride, sigma=6.0):
    spec = TargetSpec(sigma=sigma)
    t = make_targets(np.asarray(points, float), grid, stride, spec)
    return t["heatmap"][None] * 0.9, t["locref"][None], spec.locref_stdev


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), k=st.integers(2, 6), stride=st.sampled_from([4, 8]),
       window=st.floats(40.0, 160.0))
def test_body_window_changes_nothing_when_the_parts_are_together(seed, k, stride, window):
    """Invariant: parts found within a square of the window's size decode as with no window."""
    rng = np.random.default_rng(seed)
    grid = (480 // stride, 640 // stride)  # a 640x480 frame
    edge = window / 4 + 10
    centre = rng.uniform([edge, edge], [640 - edge, 480 - edge])
    points = centre + rng.uniform(-window / 4, window / 4, (k, 2))
    scores, locref, ls = _pose_maps(points, grid, stride)
    scores += rng.uniform(0, 0.05, scores.shape).astype(np.float32)  # background clutter
    plain = decode(scores, locref, stride, ls)
    np.testing.assert_array_equal(decode(scores, locref, stride, ls, window), plain)


def test_body_window_reads_a_part_near_the_body_not_its_far_confident_peak():
    stride, grid = 4.0, (120, 160)  # a 640x480 frame
    body = [[100, 100], [90, 92], [90, 108], [160, 100]]  # snout, ears, tail base
    scores, locref, ls = _pose_maps(body, grid, stride)
    decoy, _, _ = _pose_maps([[560, 420]], grid, stride)
    scores[0, 0] = np.maximum(scores[0, 0] * 0.6, decoy[0, 0])  # snout: a brighter far peak
    plain = decode(scores, locref, stride, ls)[0]
    assert np.linalg.norm(plain[0, :2] - [560, 420]) < stride  # argmax alone takes the decoy
    window = body_window_px([np.array(body, float)])
    assert window == pytest.approx(1.25 * np.linalg.norm(np.array(body) - np.mean(body, 0),
                                                         axis=1).max(), abs=0.01)
    fixed = decode(scores, locref, stride, ls, window)[0]
    np.testing.assert_allclose(fixed[:, :2], body, atol=1e-3)
    assert 0.45 < fixed[0, 2] < plain[0, 2]  # the likelihood of the peak it read
    np.testing.assert_array_equal(fixed[1:], plain[1:])


def test_body_window_needs_two_labelled_parts():
    assert body_window_px([np.array([[1.0, 2.0], [np.nan, np.nan]])]) is None
    assert body_window_px([]) is None
    one = np.zeros((1, 1, 10, 10), np.float32)
    one[0, 0, 9, 9] = 1.0
    # One body part: no window whatever the bundle says.
    assert decode(one, None, 4.0, 1.0, 8.0)[0, 0].tolist() == [38.0, 38.0, 1.0]
