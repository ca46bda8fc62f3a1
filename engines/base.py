"""The inference contract every engine implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from posed.engines.bundle import ModelBundle
from posed.errors import InferenceError


class PoseRunner(ABC):
    """Runs one model bundle on batches of RGB frames.

    Subclasses load the bundle in :meth:`load` and implement :meth:`_forward`; this base class
    validates input and owns the shared contract, so every engine behaves the same for the
    same frames.
    """

    engine: ClassVar[str]

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.bodyparts: list[str] = list(bundle.bodyparts)

    @classmethod
    @abstractmethod
    def load(cls, bundle: ModelBundle, **options: Any) -> "PoseRunner":
        """Load ``bundle``; options are engine specific (device, threads, precision...)."""

    @abstractmethod
    def _forward(self, frames: np.ndarray) -> np.ndarray:
        """Run validated uint8 N×H×W×3 frames; return N×K×3 float32 in frame pixels."""

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Estimate poses.

        Args:
            frames: uint8 N×H×W×3 RGB (a single H×W×3 frame is accepted too).

        Returns:
            float32 N×K×3 array of (x, y, likelihood) in the frames' pixel coordinates.
        """
        frames = np.asarray(frames)
        if frames.ndim == 3:
            frames = frames[None]
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise InferenceError(f"frames must be N×H×W×3 RGB, got shape {frames.shape}")
        if frames.dtype != np.uint8:
            raise InferenceError(f"frames must be uint8, got {frames.dtype}")
        size = self.bundle.input_size
        if size and tuple(frames.shape[1:3]) != tuple(size):
            raise InferenceError(f"this model takes {size[0]}×{size[1]} frames (height×width), "
                                 f"got {frames.shape[1]}×{frames.shape[2]}")
        if frames.shape[0] == 0:
            return np.zeros((0, len(self.bodyparts), 3), dtype=np.float32)
        return self._forward(np.ascontiguousarray(frames))

    def warmup(self, batch_size: int = 1, height: int = 480, width: int = 640) -> None:
        """Run one dummy batch so that lazy initialisation happens before real frames."""
        self.predict(np.zeros((batch_size, height, width, 3), dtype=np.uint8))

    def close(self) -> None:
        """Release resources held by the runner."""

    def __enter__(self) -> "PoseRunner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
