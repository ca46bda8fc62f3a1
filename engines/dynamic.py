"""Dynamic cropping: infer on a window around the last confident pose.

DeepLabCut-Live's ``dynamic = (enabled, pcutoff, margin)``: when the previous frame found
body parts with likelihood >= ``pcutoff``, the next frame is inferred on the box around them,
grown by ``margin`` pixels and clipped to the frame; when none reached ``pcutoff`` (the
animal is lost), the next frame is inferred whole, which is how the animal is found again.
Keypoints are mapped back to full-frame pixels.

posed moves the window's edges outwards onto a grid of :data:`ALIGN` pixels from the origin
of the inferred region. A pose network's score-map cells then fall on the same pixels as in
full-frame inference (stride 8 and every backbone stride up to 32 divide it), so a crop
changes keypoints only where the receptive field meets the crop's border; and the runtimes
see a handful of input shapes instead of a new one almost every frame.

Single-animal models only: the window follows one animal (DeepLabCut-Live refuses a frame
with more than one individual).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from posed.errors import ConfigError

ALIGN = 32  # pixels; the largest backbone stride of the supported families
MAX_MARGIN = 16384  # pixels; the daemon's largest frame side: more is a typo


@dataclass(frozen=True)
class DynamicSettings:
    """DeepLabCut-Live's dynamic cropping triple, without the switch.

    Attributes:
        pcutoff: Likelihood a body part needs to count as found.
        margin: Pixels added on each side of the found parts' bounding box.
    """

    pcutoff: float = 0.5
    margin: int = 10

    @classmethod
    def parse(cls, value: Any, what: str = "dynamic") -> "DynamicSettings | None":
        """Settings from DeepLabCut's ``(enabled, pcutoff, margin)``, a mapping with those keys,
        or ``None``/``False``; None when dynamic cropping is off.

        Raises:
            ConfigError: a malformed value, in one line naming ``what``.
        """
        if value is None or value is False or isinstance(value, cls):
            return value or None
        if isinstance(value, dict):
            value = (value.get("enabled", True), value.get("pcutoff", cls.pcutoff),
                     value.get("margin", cls.margin))
        try:
            if isinstance(value, (str, bytes)):
                raise TypeError
            enabled, pcutoff, margin = value
        except (TypeError, ValueError):
            raise ConfigError(f"{what}: expected (enabled, pcutoff, margin), "
                              f"got {value!r}") from None
        if not isinstance(enabled, (bool, np.bool_)):
            raise ConfigError(f"{what}: enabled must be true or false, got {enabled!r}")
        if isinstance(pcutoff, bool) or not isinstance(pcutoff, (int, float)) \
                or not 0.0 <= float(pcutoff) <= 1.0:
            raise ConfigError(f"{what}: pcutoff must be a number in 0..1, got {pcutoff!r}")
        if isinstance(margin, bool) or not isinstance(margin, (int, float)) \
                or not math.isfinite(margin) or not 0 <= margin <= MAX_MARGIN:
            raise ConfigError(f"{what}: margin must be pixels in 0..{MAX_MARGIN}, got {margin!r}")
        return cls(float(pcutoff), int(round(margin))) if enabled else None


class DynamicCropper:
    """The cropping state of one video stream.

    Args:
        settings: pcutoff and margin.
        region: (x, y, width, height) of the part of the frame that is inferred when the
            animal is lost (the whole frame, or a fixed crop); windows stay inside it.
        align: Grid, in pixels from the region's origin, that window edges snap outwards to.

    Attributes:
        cropped: Frames inferred on a window so far.
        frames: Frames seen so far.
    """

    def __init__(self, settings: DynamicSettings, region: Sequence[int],
                 align: int = ALIGN) -> None:
        self.settings = settings
        self.region = tuple(int(v) for v in region)
        self.align = max(1, int(align))
        self._window: tuple[int, int, int, int] | None = None
        self.cropped = 0
        self.frames = 0

    def window(self) -> tuple[int, int, int, int]:
        """(x, y, width, height) in full-frame pixels to infer the next frame on: the window
        around the last confident pose, or the whole region when there is none."""
        self.frames += 1
        if self._window is None:
            return self.region  # type: ignore[return-value]
        self.cropped += 1
        return self._window

    def update(self, keypoints: np.ndarray) -> None:
        """Take a frame's keypoints (K×3, full-frame pixels) to place the next window."""
        kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
        found = kp[np.isfinite(kp).all(axis=1) & (kp[:, 2] >= self.settings.pcutoff)]
        if len(found) == 0:
            self._window = None
            return
        rx, ry, rw, rh = self.region
        m = self.settings.margin
        x0, x1 = self._snap(found[:, 0].min() - m, found[:, 0].max() + m, rx, rw)
        y0, y1 = self._snap(found[:, 1].min() - m, found[:, 1].max() + m, ry, rh)
        window = (x0, y0, x1 - x0, y1 - y0)
        # A window as large as the region is the full frame: report it as not cropped.
        self._window = None if window == self.region or x1 <= x0 or y1 <= y0 else window

    def reset(self) -> None:
        """Infer the next frame whole (after a failed frame, or a jump in the stream)."""
        self._window = None

    def _snap(self, low: float, high: float, origin: int, size: int) -> tuple[int, int]:
        """[low, high) in pixels, widened onto the grid from ``origin`` and clipped to it."""
        a = self.align
        lo = origin + int(math.floor((low - origin) / a)) * a
        hi = origin + int(math.ceil((high + 1 - origin) / a)) * a
        return max(origin, lo), min(origin + size, hi)


def predict_dynamic(runner: Any, frames: np.ndarray, cropper: DynamicCropper) -> np.ndarray:
    """Poses (N×K×3, full-frame pixels) of consecutive frames, each inferred on the window
    that the one before it placed (one frame at a time, as the window depends on it)."""
    out = []
    for frame in frames:
        x, y, w, h = cropper.window()
        kp = np.array(runner.predict(np.ascontiguousarray(frame[None, y:y + h, x:x + w]))[0],
                      dtype=np.float32)
        kp[:, 0] += x
        kp[:, 1] += y
        cropper.update(kp)
        out.append(kp)
    return np.stack(out) if out else np.zeros((0, len(runner.bundle.bodyparts), 3), np.float32)
