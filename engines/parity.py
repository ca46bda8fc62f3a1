"""How far one set of keypoints is from another: the measure of every export and precision.

Exports (:mod:`posed.exporters.common`), ``precision: auto``
(:mod:`posed.engines.autoprecision`) and the benchmarks judge an approximation of a model by
the same numbers, computed here once.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CONFIDENT", "compare_poses"]

CONFIDENT = 0.5  # reference likelihood from which a keypoint counts as seen


def compare_poses(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """Keypoint distance (px) and likelihood difference between two N×K×3 arrays.

    ``max_px_confident`` and ``median_px_confident`` only count keypoints the reference sees
    (likelihood ≥ :data:`CONFIDENT`): where a body part is not visible the score map is flat
    and its argmax may jump anywhere.
    """
    dist = np.linalg.norm(reference[..., :2] - other[..., :2], axis=-1)
    seen = reference[..., 2] >= CONFIDENT
    return {"max_px": float(np.nanmax(dist)), "mean_px": float(np.nanmean(dist)),
            "max_px_confident": float(np.nanmax(dist[seen])) if seen.any() else 0.0,
            "median_px_confident": float(np.nanmedian(dist[seen])) if seen.any() else 0.0,
            "confident_keypoints": int(seen.sum()),
            "max_likelihood": float(np.nanmax(np.abs(reference[..., 2] - other[..., 2])))}
