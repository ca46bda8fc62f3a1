"""Re-identification training data: animal crops around assembled poses, the tracking dataset
file, and tracklet tables in DeepLabCut's layout."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from posed.engines.tracking.geometry import centroid, visible_xy
from posed.engines.tracking.trackers import Tracklet

# --------------------------------------------------------------------------------------------
# Appearance samples for re-identification
# --------------------------------------------------------------------------------------------

TRACKING_DATASET_FORMAT = "posed-tracking-dataset-1"
"""Value of the ``format`` entry of tracking datasets (see :func:`write_tracking_dataset`)."""


def crop_window(animals: Sequence[np.ndarray], scale: float = 2.0, minimum: int = 16) -> int:
    """Side in pixels of the square crops that show one animal with some surroundings:
    ``scale`` times the median extent (largest keypoint distance) of the animals, at least
    ``minimum``, rounded up to an even number."""
    spans = []
    for pose in animals:
        pts = visible_xy(pose)
        if len(pts) >= 2:
            spans.append(float(np.linalg.norm(pts[:, None] - pts[None], axis=-1).max()))
    side = max(scale * float(np.median(spans)) if spans else minimum, minimum)
    return int(math.ceil(side / 2.0) * 2)


def animal_crops(image: np.ndarray, animals: np.ndarray, window: int, size: int) -> np.ndarray:
    """Square crops centred on each animal's visible keypoints.

    Args:
        image: uint8 H×W×3 frame.
        animals: A×K×3 poses (an animal without visible keypoints gets a black crop).
        window: Crop side in frame pixels (beyond the frame, edge pixels are repeated).
        size: Side of the returned crops (resized from ``window``).

    Returns:
        uint8 A×size×size×3.
    """
    import cv2

    out = np.zeros((len(animals), size, size, 3), dtype=np.uint8)
    for a, pose in enumerate(animals):
        centre = centroid(pose)
        if not np.isfinite(centre).all():
            continue
        patch = cv2.getRectSubPix(image, (int(window), int(window)),
                                  (float(centre[0]), float(centre[1])))
        out[a] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA) \
            if window != size else patch
    return out


def write_tracking_dataset(path: str | Path, samples: dict[str, np.ndarray],
                           videos: Sequence[str], window: int) -> Path:
    """Writes a re-identification dataset as an ``.npz`` (no pickled object in it).

    Entries (M samples, one per animal detection in a tracklet):

    - ``crops``: uint8 M×S×S×3 RGB crops centred on the animal (S from the crops);
    - ``tracklet``: int64 M, the tracklet the detection belongs to (unique per video);
    - ``track``: int64 M, the identity the stitcher gave that tracklet (-1: dropped);
    - ``frame``: int64 M, frame index; ``video``: int64 M, index into ``videos``;
    - ``centre``: float32 M×2, crop centre in frame pixels;
    - ``videos``: the video paths (unicode array); ``window``: crop side in frame pixels;
      ``format``: :data:`TRACKING_DATASET_FORMAT`.

    Read it with ``numpy.load(path)`` (``allow_pickle`` may stay False) or
    :func:`read_tracking_dataset`. Written atomically.
    """
    from posed.engines.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {
        "crops": np.asarray(samples["crops"], dtype=np.uint8),
        "tracklet": np.asarray(samples["tracklet"], dtype=np.int64),
        "track": np.asarray(samples["track"], dtype=np.int64),
        "frame": np.asarray(samples["frame"], dtype=np.int64),
        "video": np.asarray(samples["video"], dtype=np.int64),
        "centre": np.asarray(samples["centre"], dtype=np.float32).reshape(-1, 2),
        "videos": np.array([str(v) for v in videos], dtype=np.str_),
        "window": np.array(int(window)),
        "format": np.array(TRACKING_DATASET_FORMAT),
    }
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def read_tracking_dataset(path: str | Path) -> dict[str, np.ndarray]:
    """Reads a dataset written by :func:`write_tracking_dataset`.

    Raises:
        DataError: The file is missing, not an npz or not a tracking dataset.
    """
    from posed.errors import DataError

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise DataError(f"{path}: no such tracking dataset") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a tracking dataset ({exc})") from None
    if str(arrays.get("format", "")) != TRACKING_DATASET_FORMAT:
        raise DataError(f"{path}: not a tracking dataset (format is not "
                        f"{TRACKING_DATASET_FORMAT})")
    missing = [k for k in ("crops", "tracklet", "track", "frame", "video") if k not in arrays]
    if missing:
        raise DataError(f"{path}: tracking dataset lacks '{missing[0]}'")
    return arrays


def tracklets_table(tracklets: Sequence[Tracklet], identity: dict[int, int],
                    bodyparts: Sequence[str]):
    """Tracklets as a long pandas table (what analysis writes to ``_tracklets.h5``).

    Args:
        tracklets: The tracklets.
        identity: Index into ``tracklets`` -> identity it was given (absent: none).
        bodyparts: The K body part names.

    Returns:
        One row per tracklet detection: ``tracklet`` (id), ``frame``, ``identity`` (-1 for
        none, e.g. a dropped tracklet), then ``<part>_x``, ``<part>_y``,
        ``<part>_likelihood`` per body part (NaN where not found); numeric columns only.
    """
    import pandas as pd

    rows_meta, rows_val = [], []
    for m, t in enumerate(tracklets):
        for frame, pose in zip(t.frames, t.poses, strict=True):
            rows_meta.append((t.id, frame, identity.get(m, -1)))
            rows_val.append(np.asarray(pose, dtype=np.float32)[:, :3].reshape(-1))
    k = len(bodyparts)
    meta = np.array(rows_meta, dtype=np.int64).reshape(-1, 3)
    values = np.array(rows_val, dtype=np.float32).reshape(-1, 3 * k)
    df = pd.DataFrame({"tracklet": meta[:, 0], "frame": meta[:, 1], "identity": meta[:, 2]})
    cols = [f"{b}_{c}" for b in bodyparts for c in ("x", "y", "likelihood")]
    df = pd.concat([df, pd.DataFrame(values, columns=cols)], axis=1)
    return df.sort_values(["tracklet", "frame"], kind="stable").reset_index(drop=True)
