"""How far one set of keypoints is from another: the measure of every export and precision.

Exports (:mod:`posed.exporters.common`), ``precision: auto``
(:mod:`posed.engines.autoprecision`) and the benchmarks judge an approximation of a model by
the same numbers, computed here once.
"""

from __future__ import annotations

import numpy as np

from posed.engines.decoding import candidate_scores

__all__ = ["CONFIDENT", "compare_poses", "peak_ties"]

CONFIDENT = 0.5  # reference likelihood from which a keypoint counts as seen


def compare_poses(reference: np.ndarray, other: np.ndarray, ties: np.ndarray | None = None,
                  bound_px: float = 0.0) -> dict[str, float]:
    """Keypoint distance (px) and likelihood difference between two N×K×3 arrays.

    ``max_px_confident`` and ``median_px_confident`` only count keypoints the reference sees
    (likelihood ≥ :data:`CONFIDENT`): where a body part is not visible the score map is flat
    and its argmax may jump anywhere. Given ``ties`` (N×K, :func:`peak_ties`), seen keypoints
    beyond ``bound_px`` at a tie are near-tie flips: counted (``tie_flips``) and left out of
    ``max_px_confident_held``, the largest distance of the other seen keypoints.
    """
    dist = np.linalg.norm(reference[..., :2] - other[..., :2], axis=-1)
    seen = reference[..., 2] >= CONFIDENT
    out = {"max_px": float(np.nanmax(dist)), "mean_px": float(np.nanmean(dist)),
           "max_px_confident": float(np.nanmax(dist[seen])) if seen.any() else 0.0,
           "median_px_confident": float(np.nanmedian(dist[seen])) if seen.any() else 0.0,
           "confident_keypoints": int(seen.sum()),
           "max_likelihood": float(np.nanmax(np.abs(reference[..., 2] - other[..., 2])))}
    if ties is not None:
        flips = seen & (dist > bound_px) & ties
        held = seen & ~flips
        out["tie_flips"] = int(flips.sum())
        out["max_px_confident_held"] = float(np.nanmax(dist[held])) if held.any() else 0.0
    return out


def peak_ties(reference: np.ndarray, other: np.ndarray, stride: float,
              window: float | None, margin: float) -> np.ndarray:
    """N×K booleans: where the cell ``other``'s scores peak at is one the reference scores
    within ``margin`` of its own peak.

    The reference does not settle such a choice itself: two places it scores almost alike
    (a weakly trained model's flat maps) trade places under any score change up to
    ``margin``, and the keypoint jumps between them. Both maps are N×K×h×w.
    """
    ref = candidate_scores(reference, stride, window)
    got = candidate_scores(other, stride, window)
    at_other = np.take_along_axis(ref, got.argmax(axis=2)[..., None], axis=2)[..., 0]
    with np.errstate(invalid="ignore"):  # -inf - -inf where a map is all non-finite
        return ref.max(axis=2) - at_other <= margin
