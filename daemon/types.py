"""Values that flow between the daemon's stages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(slots=True)
class Frame:
    """One decoded frame from one camera.

    Attributes:
        camera: Camera id from the config.
        seq: +1 for every frame captured on this camera (gaps are explained by drop counters).
        index: Frame index in the source (decode order; restarts when a file loops).
        pts: Presentation time in seconds from the source, if it has one.
        capture_ns: ``time.time_ns()`` when the frame was decoded.
        capture_mono: ``time.monotonic()`` at the same moment (for latency maths).
        image: uint8 H×W×3 RGB.
    """

    camera: str
    seq: int
    index: int
    pts: float | None
    capture_ns: int
    capture_mono: float
    image: np.ndarray


@dataclass(slots=True)
class Pose:
    """Keypoints for one frame, as they travel from inference to the publisher.

    Attributes:
        camera, seq, index, pts, capture_ns, capture_mono: Copied from the :class:`Frame`.
        infer_ns: ``time.time_ns()`` when inference of its batch finished.
        keypoints: float32 K×3 (x, y, likelihood) in the camera's full-frame pixels.
        batch_size: Size of the batch the frame was inferred in.
        extra: Values added by processors (e.g. a closed-loop hook's output), published as is.
    """

    camera: str
    seq: int
    index: int
    pts: float | None
    capture_ns: int
    capture_mono: float
    infer_ns: int
    keypoints: np.ndarray
    batch_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)
