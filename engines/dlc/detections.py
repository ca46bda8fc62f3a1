"""DeepLabCut's detection pickles beside a multi-animal pose table, for DeepLabCut's tools.

DeepLabCut 3's ``analyze_videos`` writes, for every multi-animal video (tracked or not),
``<video><scorer>_full.pickle`` (per frame each animal slot's body parts; a top-down model's
boxes) and ``<video><scorer>_assemblies.pickle`` (per frame the found animals, A×K×4: x, y,
likelihood, identity -1). Its ``convert_detections2tracklets`` and ``stitch_tracklets``
(tracking with DeepLabCut's trackers, then the ``_el.h5`` table) and
``create_video_with_all_detections`` read them. posed writes them, in DeepLabCut 3.0.2's
layout, when it analyses a DeepLabCut shuffle in place, from the animals as assembled (or
detected) before any tracking. They hold numpy arrays (DeepLabCut's readers index them as
arrays), so reading them needs numpy; posed itself never reads a pickle back.

As DeepLabCut writes them: an empty animal slot (and every slot of a frame that could not be
decoded) is -1 in x, y and likelihood; a found animal's missing part is NaN with likelihood
0. Row i is frame i, as in every posed output.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from posed.engines.io import atomic_path

__all__ = ["detection_pickles", "write_detection_pickles"]


def _dlc_slots(values: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """posed's animal slots (I × K × 3) in DeepLabCut's convention (float32): an ``empty``
    slot is -1 throughout; a found animal's missing part stays NaN with likelihood 0."""
    out = np.array(values, dtype=np.float32, copy=True)
    out[empty] = -1.0
    return out


def detection_pickles(animals: Any, bodyparts: Sequence[str],
                      unique_bodyparts: Sequence[str] = ()) -> tuple[dict, dict]:
    """(``_full.pickle``, ``_assemblies.pickle``) contents of one video.

    Args:
        animals: :class:`~posed.engines.base.AnimalPoses` of every frame (its optional
            ``boxes``, a top-down model's, go into the full pickle).
        bodyparts: The multi-animal body parts; ``unique_bodyparts`` the unique ones.
    """
    n = len(animals)
    parts = [*bodyparts, *unique_bodyparts]
    width = int(np.ceil(np.log10(n))) if n > 0 else 0  # DeepLabCut's key width
    full: dict[str, Any] = {"metadata": {
        "nms radius": None, "minimal confidence": None, "sigma": 1, "PAFgraph": None,
        "PAFinds": np.arange(0, dtype=np.int64),
        "all_joints": [[i] for i in range(len(parts))], "all_joints_names": list(parts),
        "nframes": n, "key_str_width": width}}
    assemblies: dict[Any, Any] = {"single": {}}
    boxes = getattr(animals, "boxes", None)
    for f in range(n):
        # a slot is empty without an animal (top-down: without a box, even if every part
        # of a boxed animal was missed)
        empty = (np.isnan(boxes[f, :, 0]) if boxes is not None
                 else np.isnan(animals.animals[f, ..., 0]).all(axis=-1))
        slots = _dlc_slots(animals.animals[f], empty)  # I × K × 3
        per_part = slots.transpose(1, 0, 2)  # K × I × 3, DeepLabCut's full-pickle order
        coordinates = [p[:, :2] for p in per_part]
        confidence = [p[:, 2:3] for p in per_part]
        unique = None
        if len(unique_bodyparts):
            unique = animals.unique[f].astype(np.float32)  # U × 3 (NaN, 0 when not found)
            coordinates += [u[None, :2] for u in unique]
            confidence += [u[None, 2:3] for u in unique]
        frame: dict[str, Any] = {"coordinates": (coordinates,), "confidence": confidence,
                                 "costs": None}
        if boxes is not None:
            frame["bboxes"] = np.where(np.isnan(boxes[f]), -1.0, boxes[f]).astype(np.float32)
            scores = animals.scores[f].astype(np.float32)
            frame["bbox_scores"] = np.where(empty, -1.0, scores).astype(np.float32)
        full["frame" + str(f).zfill(width)] = frame
        ids = -np.ones((*slots.shape[:2], 1))
        preds = np.concatenate([slots, ids], axis=-1)  # I × K × 4 (float64, as DeepLabCut)
        assemblies[f] = preds[~empty]
        if unique is not None:
            assemblies["single"][f] = unique
    return full, assemblies


def write_detection_pickles(table: Path, animals: Any, bodyparts: Sequence[str],
                            unique_bodyparts: Sequence[str] = ()) -> list[Path]:
    """Write ``<table stem>_full.pickle`` and ``_assemblies.pickle`` beside ``table`` (the
    ``.h5``), atomically; returns their paths."""
    full, assemblies = detection_pickles(animals, bodyparts, unique_bodyparts)
    paths = []
    for suffix, data in (("_full", full), ("_assemblies", assemblies)):
        path = table.with_name(table.stem + suffix + ".pickle")
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            pickle.dump(data, fh, protocol=4)
        paths.append(path)
    return paths
