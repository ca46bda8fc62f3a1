"""Live, stable identities frame by frame, for the daemon."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from posed.engines.tracking.geometry import as_poses, assign, centroid, spread, visible_xy
from posed.engines.tracking.trackers import TRACKERS

# --------------------------------------------------------------------------------------------
# Live identities
# --------------------------------------------------------------------------------------------


class OnlineTracker:
    """Stable identities ``0..n_individuals-1`` for a live stream of assembled animals.

    A frame-to-frame tracker follows the animals; each track that has been matched in
    ``min_hits`` frames gets an identity. Identities go to new tracks by a linear assignment
    on the distance from the track to where each identity was last seen (an identity whose
    track ended, or whose track is lost this frame: that track is then ended, so that an
    identity is never shown twice). An identity never used yet costs ``new_identity_cost``
    animal sizes, so a returning animal takes back its identity before a fresh one is used.

    Args:
        n_individuals: Number of animals (identities).
        tracker: ``ellipse`` or ``box``.
        min_hits: Frames a track must be matched before it gets an identity.
        new_identity_cost: Cost of a never-used identity, in animal sizes.
        **options: Passed to the frame-to-frame tracker (e.g. ``max_age``).
    """

    def __init__(
        self,
        n_individuals: int,
        tracker: str = "ellipse",
        min_hits: int = 2,
        new_identity_cost: float = 3.0,
        **options,
    ) -> None:
        if n_individuals < 1:
            raise ValueError(f"n_individuals must be >= 1, got {n_individuals}")
        if tracker not in TRACKERS:
            raise ValueError(f"unknown tracker {tracker!r} (known: {', '.join(TRACKERS)})")
        self.n_individuals = int(n_individuals)
        self.tracker = TRACKERS[tracker](**options)
        self.min_hits = max(int(min_hits), 1)
        self.new_identity_cost = float(new_identity_cost)
        self._identity_of: dict[int, int] = {}  # track id -> identity
        self._last_seen: dict[int, np.ndarray] = {}  # identity -> centroid
        self._size = 0.0  # running animal size estimate, pixels

    def update(self, animals: np.ndarray | Sequence[np.ndarray]) -> list[tuple[int, np.ndarray]]:
        """Tracks one frame.

        Args:
            animals: The frame's A×K×3 assembled animals (or a list of K×3 poses).

        Returns:
            (identity, pose K×3) for each animal of this frame that has an identity, by
            identity.
        """
        poses = as_poses(animals)
        matched = self.tracker.update(poses)
        for tid in list(self._identity_of):
            if tid not in self.tracker.tracks:
                del self._identity_of[tid]  # ended by the tracker; its identity is free
        for tid, a in matched.items():
            pts = visible_xy(poses[a])
            if len(pts) >= 2:
                size = spread(pts)
                self._size = size if self._size == 0 else 0.95 * self._size + 0.05 * size
        self._give_identities(matched, poses)
        out = []
        for tid, a in matched.items():
            ident = self._identity_of.get(tid)
            if ident is not None:
                self._last_seen[ident] = centroid(poses[a])
                out.append((ident, np.asarray(poses[a], dtype=np.float32)))
        return sorted(out, key=lambda item: item[0])

    def _give_identities(self, matched: dict[int, int], poses: list[np.ndarray]) -> None:
        waiting = [
            tid
            for tid in matched
            if tid not in self._identity_of and self.tracker.tracks[tid].hits >= self.min_hits
        ]
        if not waiting:
            return
        used = {ident: tid for tid, ident in self._identity_of.items()}
        options = []  # (identity, track holding it or None, where it was last seen or None)
        for ident in range(self.n_individuals):
            holder = used.get(ident)
            if holder is None:
                options.append((ident, None, self._last_seen.get(ident)))
            elif self.tracker.tracks[holder].time_since_update > 0:
                options.append((ident, holder, self._last_seen.get(ident)))
        if not options:
            return
        size = max(self._size, 1.0)
        cost = np.empty((len(waiting), len(options)))
        for r, tid in enumerate(waiting):
            here = centroid(poses[matched[tid]])
            for c, (_, _, seen) in enumerate(options):
                if seen is None or not np.isfinite(seen).all() or not np.isfinite(here).all():
                    cost[r, c] = self.new_identity_cost
                else:
                    cost[r, c] = float(np.linalg.norm(here - seen)) / size
        for r, c in assign(cost, math.inf):
            ident, holder, _ = options[c]
            if holder is not None:
                # The lost track's animal is (most likely) this new track: end the old one.
                self.tracker.end_track(holder)
                del self._identity_of[holder]
            self._identity_of[waiting[r]] = ident
