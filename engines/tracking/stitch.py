"""Stitching tracklets into a fixed number of identities across gaps, and counting identity
switches against ground truth (CLEAR-MOT IDSW)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from posed.engines.tracking.geometry import BIG_COST, assign, mean_distances, spread, visible_xy
from posed.engines.tracking.trackers import Tracklet

# --------------------------------------------------------------------------------------------
# Stitching
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StitchResult:
    """Tracklets joined into identities.

    Attributes:
        tracks: For each of the ``n_individuals`` identities, the indices (into the stitched
            tracklet list) of its tracklets in time order; identities ordered by first
            frame (then tracklet index), empty ones last.
        dropped: Indices of tracklets that fit no identity.
        tracklets: The stitched tracklets.
    """

    tracks: list[list[int]]
    dropped: list[int]
    tracklets: list[Tracklet]

    def poses(self, n_frames: int, n_keypoints: int | None = None) -> np.ndarray:
        """The tracks as an array.

        Args:
            n_frames: Frames in the video.
            n_keypoints: K; by default read from the tracklets.

        Returns:
            float32 N×I×K×3: identity i's pose in each frame; NaN x, y (score 0) where the
            identity has no detection.
        """
        if n_keypoints is None:
            n_keypoints = next((len(t.poses[0]) for t in self.tracklets if t.poses), 0)
        out = np.full((n_frames, len(self.tracks), n_keypoints, 3), np.nan, dtype=np.float32)
        out[..., 2] = 0.0
        for ident, members in enumerate(self.tracks):
            for m in members:
                t = self.tracklets[m]
                for frame, pose in zip(t.frames, t.poses, strict=True):
                    if 0 <= frame < n_frames:
                        out[frame, ident, :, : pose.shape[1]] = pose[:, :3]
        return out


def _typical_size(tracklets: Sequence[Tracklet]) -> float:
    """Median animal size in pixels: twice the RMS distance of keypoints to their centroid."""
    sizes = []
    for t in tracklets:
        for pose in t.poses[:: max(1, len(t) // 5)]:
            pts = visible_xy(pose)
            if len(pts) >= 2:
                sizes.append(spread(pts))
    return float(np.median(sizes)) if sizes else 1.0


def _end_state(t: Tracklet, window: int, at_end: bool) -> tuple[np.ndarray, np.ndarray]:
    """Position and velocity (pixels per frame) at one end of a tracklet, from the centroids
    of up to ``window`` frames there."""
    cents = t.centroids()
    frames = np.asarray(t.frames, dtype=np.float64)
    ok = np.isfinite(cents).all(axis=1)
    cents, frames = cents[ok], frames[ok]
    if not len(cents):
        return np.full(2, np.nan), np.zeros(2)
    part = slice(-window, None) if at_end else slice(0, window)
    c, f = cents[part], frames[part]
    pos = c[-1] if at_end else c[0]
    if len(c) < 2 or f[-1] == f[0]:
        return pos, np.zeros(2)
    return pos, (c[-1] - c[0]) / (f[-1] - f[0])


def stitch_tracklets(tracklets: Sequence[Tracklet], n_individuals: int, *,
                     features: Sequence[np.ndarray] | None = None, max_gap: int = 60,
                     gap_weight: float = 0.05, feature_weight: float = 1.0,
                     drop_cost: float = 0.5, new_track_cost: float = 2.0,
                     velocity_window: int = 5, max_extrapolation: int = 10) -> StitchResult:
    """Joins tracklets into exactly ``n_individuals`` tracks.

    The joining is one minimum-cost assignment over a (T + n) × (T + n) matrix (T
    tracklets, n identities): row t is tracklet t's end, column u tracklet u's start. Entry
    (t, u) is the cost of linking t to u, allowed when u starts after t ends, at most
    ``max_gap`` frames later::

        d / size  +  gap_weight * (gap - 1)  +  feature_weight * (1 - cos(f_t, f_u))

    d is the mean of the distance from t's last centroid, moved on at t's final velocity
    (for at most ``max_extrapolation`` frames), to u's first centroid and the same
    backwards from u; size is the median animal size; the feature term needs ``features``.
    The n extra rows and columns start identities (at ``new_track_cost`` each, so that a
    plausible link beats opening a spare identity) and end them (free), so at most n chains
    form; entry (t, t) drops tracklet t at ``drop_cost`` per frame of it, so tracklets that
    overlap in time with every identity (spurious detections) can go.

    Args:
        tracklets: The tracklets (e.g. from :func:`make_tracklets`).
        n_individuals: Number of identities (animals in the video).
        features: Optional appearance vector per tracklet (same length); compared by cosine
            similarity.
        max_gap: Longest gap in frames between linked tracklets.
        gap_weight: Cost per frame of gap.
        feature_weight: Weight of the appearance term.
        drop_cost: Cost per frame of a dropped tracklet.
        new_track_cost: Cost of starting an identity's first tracklet.
        velocity_window: Frames used to estimate a tracklet's end velocities.
        max_extrapolation: Most frames a position is extrapolated over a gap.

    Returns:
        The identities' tracklets.
    """
    from scipy.optimize import linear_sum_assignment

    tracklets = [t for t in tracklets if len(t)]
    n = int(n_individuals)
    if n < 1:
        raise ValueError(f"n_individuals must be >= 1, got {n_individuals}")
    count = len(tracklets)
    if features is not None and len(features) != count:
        raise ValueError(f"{len(features)} feature vectors for {count} tracklets")
    gap = _gaps(tracklets)  # T×T, row = earlier tracklet
    link = _link_costs(tracklets, gap, velocity_window, max_extrapolation)
    link = link + gap_weight * np.maximum(gap - 1, 0)
    if features is not None:
        feats = np.array([np.asarray(f, dtype=np.float64).ravel() for f in features])
        feats = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
        link = link + feature_weight * (1.0 - feats @ feats.T)
    link = np.where((gap >= 1) & (gap <= max_gap) & np.isfinite(link), link, BIG_COST)

    total = count + n
    cost = np.zeros((total, total))
    cost[:count, :count] = link
    lengths = np.array([len(t) for t in tracklets], dtype=np.float64)
    cost[np.arange(count), np.arange(count)] = drop_cost * lengths
    cost[count:, :count] = new_track_cost
    rows, cols = linear_sum_assignment(cost)
    tracks, dropped = _chains(dict(zip(rows.tolist(), cols.tolist(), strict=True)), count, total)
    tracks.sort(key=lambda c: (False, tracklets[c[0]].start, c[0]) if c else (True, 0, 0))
    return StitchResult(tracks=tracks, dropped=dropped, tracklets=list(tracklets))


def _gaps(tracklets: Sequence[Tracklet]) -> np.ndarray:
    """T×T frames from the end of tracklet t (row) to the start of tracklet u (column)."""
    starts = np.array([t.start for t in tracklets], dtype=np.float64)
    ends = np.array([t.end for t in tracklets], dtype=np.float64)
    return starts[None, :] - ends[:, None]


def _link_costs(tracklets: Sequence[Tracklet], gap: np.ndarray, velocity_window: int,
                max_extrapolation: int) -> np.ndarray:
    """T×T distance term of linking tracklet t's end to tracklet u's start, in animal sizes
    (see :func:`stitch_tracklets`)."""
    count = len(tracklets)
    end_pos, end_vel = np.zeros((count, 2)), np.zeros((count, 2))
    start_pos, start_vel = np.zeros((count, 2)), np.zeros((count, 2))
    for i, t in enumerate(tracklets):
        end_pos[i], end_vel[i] = _end_state(t, velocity_window, at_end=True)
        start_pos[i], start_vel[i] = _end_state(t, velocity_window, at_end=False)
    horizon = np.clip(gap, 0, max_extrapolation)[..., None]
    forward = end_pos[:, None, :] + end_vel[:, None, :] * horizon
    backward = start_pos[None, :, :] - start_vel[None, :, :] * horizon
    dist = 0.5 * (
        np.linalg.norm(forward - start_pos[None, :, :], axis=-1)
        + np.linalg.norm(backward - end_pos[:, None, :], axis=-1)
    )
    return dist / _typical_size(tracklets)


def _chains(successor: dict[int, int], count: int, total: int) -> tuple[list[list[int]], list[int]]:
    """The identities' tracklet chains (from the assignment's ``successor`` of each row) and
    the dropped tracklets (their own successor)."""
    tracks: list[list[int]] = []
    for source in range(count, total):
        chain = []
        node = successor[source]
        while node < count:
            chain.append(node)
            node = successor[node]
        tracks.append(chain)
    return tracks, [t for t in range(count) if successor[t] == t]


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def identity_switches(
    predicted: np.ndarray, truth: np.ndarray, max_distance: float
) -> dict[str, int]:
    """Counts identity switches of predicted tracks against ground truth (CLEAR-MOT IDSW).

    In each frame, ground-truth animals and predicted identities are matched one-to-one
    (linear assignment) on the mean distance over the keypoints both have; pairs farther
    apart than ``max_distance`` stay unmatched. A switch is counted when a ground-truth
    animal is matched to a different predicted identity than the last time it was matched
    (frames where it is unmatched do not reset that memory).

    Args:
        predicted: N×P×K×2+ predicted poses by identity (NaN where absent).
        truth: N×G×K×2+ true poses (NaN where unknown).
        max_distance: Farthest match, in pixels.

    Returns:
        ``switches``; ``matches`` (matched animal-frames); ``misses`` (true animal-frames
        with a visible keypoint but no match); ``false_positives`` (predicted
        identity-frames with a keypoint but no match).
    """
    pred = np.asarray(predicted, dtype=np.float64)[..., :2]
    true = np.asarray(truth, dtype=np.float64)[..., :2]
    if pred.shape[0] != true.shape[0] or pred.shape[2] != true.shape[2]:
        raise ValueError(
            f"predicted {pred.shape} and truth {true.shape} differ in frames or keypoints"
        )
    last: dict[int, int] = {}
    stats = {"switches": 0, "matches": 0, "misses": 0, "false_positives": 0}
    for f in range(true.shape[0]):
        mean, shared = mean_distances(true[f], pred[f])  # G×P
        pairs = assign(np.where(shared, mean, BIG_COST), max_distance)
        present_true = np.isfinite(true[f]).all(-1).any(-1)
        present_pred = np.isfinite(pred[f]).all(-1).any(-1)
        stats["matches"] += len(pairs)
        stats["misses"] += int(present_true.sum()) - len(pairs)
        stats["false_positives"] += int(present_pred.sum()) - len(pairs)
        for g, p in pairs:
            if g in last and last[g] != p:
                stats["switches"] += 1
            last[g] = p
    return stats
