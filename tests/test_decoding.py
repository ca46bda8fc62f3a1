"""Shared numpy targets and decoding."""

from __future__ import annotations

import numpy as np
import pytest

from posed.engines.decoding import TargetSpec, decode, make_targets


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
