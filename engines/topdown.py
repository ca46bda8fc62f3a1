"""Top-down multi-animal inference, framework-free: a detector finds the animals, a
single-animal pose model runs on a fixed-size crop around each.

:class:`TopDownRunner` owns what every engine must do alike: DeepLabCut 3's crop of each box
(:func:`crop_box`), batching the crops of many frames, and mapping keypoints back to frame
pixels. Engines implement the two networks (:meth:`TopDownRunner._detect`,
:meth:`TopDownRunner._pose_crops`).

The crop is DeepLabCut's ``top_down_crop`` with context (its inference default): the box,
grown by ``margin`` on each side, is widened or heightened about its centre to the crop's
aspect ratio, its corners rounded to whole pixels (half to even), the part outside the frame
filled with black, and the result resized bilinearly (OpenCV) to ``width`` x ``height``. A
keypoint at crop pixel ``p`` is at ``p * scale + offset`` in the frame.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import cv2
import numpy as np

from posed.engines.base import AnimalPoses, PoseRunner
from posed.engines.bundle import ModelBundle
from posed.errors import InferenceError, ModelLoadError

__all__ = ["CropBox", "TopDownRunner", "crop_box", "crop_settings", "detector_normalisation",
           "pose_bundle"]

CROP_DEFAULTS = {"width": 256, "height": 256, "margin": 0}


def crop_settings(arch: dict[str, Any], where: Any) -> dict[str, int]:
    """The bundle's ``architecture.crop`` checked (positive ints; margin >= 0)."""
    crop = {**CROP_DEFAULTS, **dict(arch.get("crop") or {})}
    for key in ("width", "height", "margin"):
        value = crop[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < (key != "margin"):
            raise ModelLoadError(f"{where}: architecture.crop.{key} must be a "
                                 f"{'non-negative' if key == 'margin' else 'positive'} integer, "
                                 f"got {value!r}")
    return {k: int(crop[k]) for k in CROP_DEFAULTS}


def pose_bundle(bundle: ModelBundle) -> ModelBundle:
    """The pose model of a top-down bundle as a single-animal bundle of its own (its first
    weights file, the architecture without detector, animal slots and crop)."""
    from dataclasses import replace

    arch = {k: v for k, v in bundle.architecture.items()
            if k not in ("topdown", "individuals", "crop")}
    return replace(bundle, architecture=arch, weights=bundle.weights[:1])


def detector_normalisation(bundle: ModelBundle) -> tuple[np.ndarray, np.ndarray]:
    """float32 ``(mean·255, 1 / (std·255))``: DeepLabCut normalises a frame for its detector
    as ``(x - mean) * inv_std`` with these (albumentations' reciprocal arithmetic)."""
    mean = np.asarray(bundle.mean, np.float32) * np.float32(255)
    inv_std = np.reciprocal(np.asarray(bundle.std, np.float32) * np.float32(255),
                            dtype=np.float32)
    return mean, inv_std


class CropBox:
    """Where one crop came from: frame pixel = crop pixel * ``scale`` + ``offset``."""

    __slots__ = ("offset", "scale")

    def __init__(self, offset: tuple[int, int], scale: tuple[float, float]) -> None:
        self.offset = offset
        self.scale = scale

    def to_frame(self, points: np.ndarray) -> np.ndarray:
        """K×3 crop-pixel (x, y, score) -> frame pixels (float64 arithmetic, as DeepLabCut)."""
        out = points.astype(np.float64, copy=True)
        out[:, 0] = out[:, 0] * self.scale[0] + self.offset[0]
        out[:, 1] = out[:, 1] * self.scale[1] + self.offset[1]
        return out.astype(np.float32)


def crop_box(frame: np.ndarray, box: np.ndarray, width: int, height: int,
             margin: int = 0) -> tuple[np.ndarray, CropBox]:
    """The ``height`` x ``width`` crop of ``frame`` (H×W×3 uint8) around ``box`` (x, y, w, h in
    frame pixels) and its :class:`CropBox`."""
    frame_h, frame_w = frame.shape[:2]
    x, y, w, h = (float(v) for v in box)
    cx, cy = x + w / 2, y + h / 2
    w, h = w + 2 * margin, h + 2 * margin
    # Keep the context: grow the short side until the box has the crop's aspect ratio.
    if h <= 0 or w / h > width / height:
        h = w * height / width
    elif w / h < width / height:
        w = h * width / height
    x1, y1 = int(round(cx - w / 2)), int(round(cy - h / 2))
    x2, y2 = int(round(cx + w / 2)), int(round(cy + h / 2))
    # a box that rounds to no pixel (DeepLabCut's crop would be empty) still crops one
    x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
    left, top = max(0, -x1), max(0, -y1)
    right, bottom = max(0, x2 - frame_w), max(0, y2 - frame_h)
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, frame_w), min(y2, frame_h)
    full_w, full_h = (x2 - x1) + left + right, (y2 - y1) + top + bottom
    if full_w <= 0 or full_h <= 0:
        return np.zeros((height, width, 3), np.uint8), CropBox((x1 - left, y1 - top), (1.0, 1.0))
    canvas = np.zeros((full_h, full_w, 3), np.uint8)
    if x2 > x1 and y2 > y1:
        canvas[top:top + y2 - y1, left:left + x2 - x1] = frame[y1:y2, x1:x2]
    crop = cv2.resize(canvas, (width, height), interpolation=cv2.INTER_LINEAR)
    return crop, CropBox((x1 - left, y1 - top), (full_w / width, full_h / height))


class TopDownRunner(PoseRunner):
    """Runs a top-down bundle: ``architecture.topdown`` holds the detector, ``crop`` the crop
    size, ``individuals`` the animal slots.

    :meth:`predict_animals` gives per frame one animal per detected box (at most one per
    slot, the detector's best boxes first; ``scores`` are the box scores); ``predict`` the
    best animal, so single-animal callers work. ``crop_batch`` crops, from any frames, go
    through the pose model at once. With ``detect_every`` N > 1 the detector runs on every
    Nth frame of each stream (the ``streams`` of :meth:`predict_animals`: the daemon's
    cameras, offline one per video) and the frames between reuse its boxes; without streams
    every frame is detected.
    """

    multianimal: ClassVar[bool] = True
    top_down: ClassVar[bool] = True

    def __init__(self, bundle: ModelBundle, crop_batch: int = 8, detect_every: int = 1) -> None:
        super().__init__(bundle)
        arch = bundle.architecture
        self.individuals: list[str] = [str(i) for i in arch["individuals"]]
        self.animal_bodyparts: list[str] = list(self.bodyparts)
        self.unique_bodyparts: list[str] = []
        self.skeleton: list[tuple[int, int]] = []
        self.crop = crop_settings(arch, bundle.path)
        for name, value in (("crop_batch", crop_batch), ("detect_every", detect_every)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InferenceError(f"{name} must be a positive integer, got {value!r}")
        self.crop_batch = crop_batch
        self.detect_every = detect_every
        # stream -> (boxes, scores, frames since they were detected)
        self._boxes: dict[Hashable, tuple[np.ndarray, np.ndarray, int]] = {}

    @abstractmethod
    def _detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame the detector's boxes, best first: (n×4 float32 x, y, w, h; n scores)."""

    @abstractmethod
    def _pose_crops(self, crops: np.ndarray) -> np.ndarray:
        """uint8 M×h×w×3 crops -> float32 M×K×3 (x, y, score) in crop pixels."""

    def detect(self, frames: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The detector's boxes per frame, best first (at most one per animal slot):
        (n×4 float32 x, y, w, h in frame pixels; n float32 scores)."""
        frames = self._check_frames(frames)
        slots = len(self.individuals)
        return [(b[:slots], s[:slots]) for b, s in self._detect(frames)] if len(frames) else []

    def pose_crops(self, crops: np.ndarray) -> np.ndarray:
        """The pose model on uint8 M×h×w×3 crops of the bundle's crop size: float32 M×K×3
        (x, y, score) in crop pixels."""
        crops = np.asarray(crops)
        want = (self.crop["height"], self.crop["width"], 3)
        if crops.dtype != np.uint8 or crops.ndim != 4 or crops.shape[1:] != want:
            raise InferenceError(f"crops must be uint8 M×{want[0]}×{want[1]}×3, got "
                                 f"{crops.dtype} {crops.shape}")
        return self._pose_crops(crops)

    def _boxes_for(self, frames: np.ndarray, streams: Sequence[Hashable] | None
                   ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per frame its boxes: detected, or reused within ``detect_every`` of its stream."""
        if streams is None or self.detect_every == 1:
            return self._detect(frames)
        if len(streams) != len(frames):
            raise InferenceError(f"{len(streams)} streams for {len(frames)} frames")
        found: list[Any] = [None] * len(frames)
        for i, key in enumerate(streams):  # in order: a stream's frames come in capture order
            last = self._boxes.get(key)
            if last is None or last[2] + 1 >= self.detect_every:
                boxes, scores = self._detect(frames[i:i + 1])[0]
                last = (boxes, scores, -1)
            self._boxes[key] = (last[0], last[1], last[2] + 1)
            found[i] = (last[0], last[1])
        return found

    def predict_animals(self, frames: np.ndarray,
                        streams: Sequence[Hashable] | None = None) -> AnimalPoses:
        """Every detected animal in each frame (see :class:`~posed.engines.base.AnimalPoses`);
        ``streams`` names each frame's stream for ``detect_every``."""
        frames = self._check_frames(frames)
        n, slots, k = frames.shape[0], len(self.individuals), len(self.bodyparts)
        animals = np.full((n, slots, k, 3), np.nan, dtype=np.float32)
        animals[..., 2] = 0.0
        scores = np.zeros((n, slots), dtype=np.float32)
        placed_boxes = np.full((n, slots, 4), np.nan, dtype=np.float32)
        if n == 0:
            return AnimalPoses(animals, scores, np.zeros((0, 0, 3), np.float32), placed_boxes)
        crops, where = [], []
        for i, (boxes, box_scores) in enumerate(self._boxes_for(frames, streams)):
            for slot, box in enumerate(boxes[:slots]):
                crop, placed = crop_box(frames[i], box, self.crop["width"], self.crop["height"],
                                        self.crop["margin"])
                crops.append(crop)
                where.append((i, slot, placed))
                scores[i, slot] = box_scores[slot]
                placed_boxes[i, slot] = box
        for start in range(0, len(crops), self.crop_batch):
            poses = self._pose_crops(np.stack(crops[start:start + self.crop_batch]))
            for (i, slot, placed), pose in zip(where[start:start + self.crop_batch], poses):
                animals[i, slot] = placed.to_frame(pose)
        return AnimalPoses(animals, scores, np.zeros((n, 0, 3), np.float32), placed_boxes)

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        """The single-animal view: the best-scoring animal's parts (NaN where none)."""
        return self.predict_animals(frames).animals[:, 0]

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """See :meth:`PoseRunner.predict` (no whole-frame padding: crops are fixed-size)."""
        frames = self._check_frames(frames)
        if frames.shape[0] == 0:
            return np.zeros((0, len(self.bodyparts), 3), dtype=np.float32)
        return self._forward(frames)
