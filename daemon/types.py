"""Values that flow between the daemon's stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Stamp:
    """Where and when a frame was captured; :class:`Frame` and :class:`Pose` both carry it.

    Attributes:
        camera: Camera id from the config.
        seq: +1 for every frame captured on this camera (gaps are explained by drop counters).
        index: Frame index in the source (decode order; restarts when a file loops).
        pts: Presentation time in seconds from the source, if it has one.
        capture_ns: ``time.time_ns()`` when the frame was decoded.
        capture_mono: ``time.monotonic()`` at the same moment (for latency maths).
    """

    camera: str
    seq: int
    index: int
    pts: float | None
    capture_ns: int
    capture_mono: float


@dataclass(slots=True)
class Frame(Stamp):
    """One decoded frame from one camera (the :class:`Stamp` fields, then the image).

    Attributes:
        image: uint8 H×W×3 RGB.
    """

    image: np.ndarray


@dataclass(slots=True)
class Animals:
    """The identified animals of one frame of a multi-animal model.

    Attributes:
        individuals: The I identity names (the bundle's ``individuals``); identity i is
            ``individuals[i]``.
        bodyparts: The K multi-animal body part names.
        keypoints: float32 I×K×3 (x, y, likelihood) by identity in the camera's full-frame
            pixels; all NaN (likelihood 0) for an identity not seen in this frame.
    """

    individuals: tuple[str, ...]
    bodyparts: tuple[str, ...]
    keypoints: np.ndarray


@dataclass(slots=True)
class Pose(Stamp):
    """Keypoints for one frame, as they travel from inference to the publisher.

    Attributes:
        camera, seq, index, pts, capture_ns, capture_mono: Copied from the :class:`Frame`.
        infer_ns: ``time.time_ns()`` when inference of its batch finished.
        keypoints: float32 K×3 (x, y, likelihood) in the camera's full-frame pixels.
        batch_size: Size of the batch the frame was inferred in.
        extra: Values added by processors (e.g. a closed-loop hook's output), published as is.
        animals: Multi-animal models only: every individual's keypoints with its identity
            (``keypoints`` then holds identity 0's parts and the unique parts).
        crop: (x, y, width, height) of the frame the model saw (a fixed or dynamic crop);
            None when it saw the whole frame.
    """

    infer_ns: int
    keypoints: np.ndarray
    batch_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
    animals: Animals | None = None
    crop: tuple[int, int, int, int] | None = None
