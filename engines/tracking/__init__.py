"""Framework-free tracking of assembled animals: tracklets, stitching and live identities.

Three layers, all numpy (plus ``scipy.optimize.linear_sum_assignment``):

- Frame-to-frame trackers turn the animals of each frame (from
  :func:`posed.engines.assembly.assemble`) into tracklets. :class:`BoxTracker` (SORT-like,
  Bewley et al. 2016) follows each animal's keypoint bounding box with a constant-velocity
  Kalman filter and matches on overlap (1 - IoU), falling back to centroid distance for
  boxes that do not overlap; :class:`EllipseTracker` fits an ellipse to the keypoints (mean
  and covariance) and matches on centre distance, axis lengths and orientation. By default
  both add a per-keypoint distance to that cost (boxes and ellipses cannot tell two close
  animals apart as well as their keypoints can). Both match with a linear assignment,
  start a track for every unmatched animal and end a track that has not been matched for
  more than ``max_age`` frames.
- :func:`stitch_tracklets` joins tracklets into exactly ``n_individuals`` tracks across
  gaps: a minimum-cost assignment of each tracklet's end to another's start, with link
  costs from the extrapolated position, the gap length and, optionally, per-tracklet
  appearance features (e.g. from a re-identification model); short tracklets that fit no
  track are dropped.
- :class:`OnlineTracker` gives live, stable identities ``0..n_individuals-1`` frame by
  frame, for the daemon.

:func:`identity_switches` counts identity switches against ground truth (the CLEAR-MOT
IDSW count) to measure all of this.

Poses are K×3 arrays (x, y, score) in pixels with NaN x, y for missing parts.
"""

from posed.engines.tracking.trackers import (
    Tracklet,
    BoxTracker,
    fit_ellipse,
    EllipseTracker,
    make_tracklets,
)
from posed.engines.tracking.stitch import StitchResult, stitch_tracklets, identity_switches
from posed.engines.tracking.online import OnlineTracker
from posed.engines.tracking.dataset import (
    crop_window,
    animal_crops,
    write_tracking_dataset,
    read_tracking_dataset,
    tracklets_table,
)

__all__ = [
    "Tracklet",
    "BoxTracker",
    "fit_ellipse",
    "EllipseTracker",
    "make_tracklets",
    "StitchResult",
    "stitch_tracklets",
    "identity_switches",
    "OnlineTracker",
    "crop_window",
    "animal_crops",
    "write_tracking_dataset",
    "read_tracking_dataset",
    "tracklets_table",
]
