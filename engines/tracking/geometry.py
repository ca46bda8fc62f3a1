"""Pose geometry and one-to-one matching shared by the trackers, stitching, live identities
and evaluation. Poses are K×2+ arrays (x, y[, score]) with NaN x, y for missing parts."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

BIG_COST = 1e9
"""Cost of an impossible pair (finite, so that an assignment always exists)."""


def assign(cost: np.ndarray, max_cost: float) -> list[tuple[int, int]]:
    """Minimum-cost one-to-one pairs of a rows×cols cost matrix, without pairs over
    ``max_cost``."""
    if cost.size == 0:
        return []
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(np.minimum(cost, BIG_COST))
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] <= max_cost]


def as_poses(animals: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """One frame's animals (A×K×3 array, or a list of K×3) as a list of poses."""
    if isinstance(animals, np.ndarray):
        if animals.size == 0:
            return []
        if animals.ndim != 3 or animals.shape[-1] < 2:
            raise ValueError(f"animals must be A×K×3, got shape {animals.shape}")
        return [animals[a] for a in range(animals.shape[0])]
    return [np.asarray(a, dtype=np.float32) for a in animals]


def visible_xy(pose: np.ndarray) -> np.ndarray:
    """The visible (finite) keypoints of a pose, V×2."""
    xy = np.asarray(pose, dtype=np.float64)[:, :2]
    return xy[np.isfinite(xy).all(axis=1)]


def centroid(pose: np.ndarray) -> np.ndarray:
    """Mean of a pose's visible keypoints (NaN when it has none)."""
    pts = visible_xy(pose)
    return pts.mean(axis=0) if len(pts) else np.full(2, np.nan)


def mean_distances(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean keypoint distance of every pose of ``a`` (A×K×2) to every pose of ``b`` (B×K×2)
    over the keypoints both have (A×B; 0 where they share none), and whether they share any
    (A×B bool)."""
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)  # A×B×K
    shared = np.isfinite(d)
    mean = np.where(shared, d, 0.0).sum(-1) / np.maximum(shared.sum(-1), 1)
    return mean, shared.any(-1)


def spread(points: np.ndarray) -> float:
    """An animal's size from its V×2 visible keypoints: twice their RMS distance to their
    mean."""
    return 2.0 * math.sqrt(((points - points.mean(axis=0)) ** 2).sum(axis=1).mean())
