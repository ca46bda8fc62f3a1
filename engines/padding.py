"""Padding frames to a model's size divisor, as DeepLabCut's ``auto_padding`` does.

DeepLabCut 3 pads images for HRNet backbones (their branches fuse by 2× steps, so height and
width must divide by 32) with albumentations' ``PadIfNeeded``: to ``min_height``/``min_width``
or to the next multiple of ``pad_height_divisor``/``pad_width_divisor``, mirrored without
repeating the edge (``reflect_101``) or with a constant, the image placed at ``position``.
A bundle's ``architecture.pad`` holds those settings; every runner pads before the network
and moves keypoints back by the offset, so frame pixels stay frame pixels.

DeepLabCut's default position is ``random``: it places each frame at a random offset, so
its own results vary from run to run. posed places such frames at the centre, the mean of
those offsets, and stays deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from posed.errors import ConfigError

__all__ = ["POSITIONS", "check_pad", "pad_frames"]

POSITIONS = ("center", "top_left", "top_right", "bottom_left", "bottom_right", "random")
_MODES = ("reflect_101", "constant")


def check_pad(spec: Mapping[str, Any], where: str = "pad") -> dict[str, Any]:
    """A validated padding spec (``ConfigError`` naming ``where.<key>`` otherwise)."""
    out = {"min_height": None, "min_width": None, "pad_height_divisor": None,
           "pad_width_divisor": None, "position": "center", "border_mode": "reflect_101",
           "border_value": 0}
    unknown = sorted(set(spec) - set(out) - {"border_mask_value"})
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown padding setting")
    out.update({k: v for k, v in spec.items() if k in out and v is not None})
    for key in ("min_height", "min_width", "pad_height_divisor", "pad_width_divisor"):
        value = out[key]
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ConfigError(f"{where}.{key}: must be a positive integer, not {value!r}")
    if (out["min_height"] and out["pad_height_divisor"]
            or out["min_width"] and out["pad_width_divisor"]):
        raise ConfigError(f"{where}: set a minimum size or a divisor per axis, not both")
    if out["position"] not in POSITIONS:
        raise ConfigError(f"{where}.position: '{out['position']}' is not one of "
                          f"{', '.join(POSITIONS)}")
    if out["border_mode"] not in _MODES:
        raise ConfigError(f"{where}.border_mode: '{out['border_mode']}' is not one of "
                          f"{', '.join(_MODES)}")
    return out


def _amount(size: int, minimum: int | None, divisor: int | None) -> int:
    if divisor:
        return (divisor - size % divisor) % divisor
    return max(0, (minimum or 0) - size)


def pad_frames(frames: np.ndarray, spec: Mapping[str, Any]) -> tuple[np.ndarray, tuple[int, int]]:
    """Pad uint8 N×H×W×3 frames; returns the frames and the (x, y) offset of the original
    frame's top-left pixel in them (subtract it from keypoints)."""
    _, h, w, _ = frames.shape
    dh = _amount(h, spec.get("min_height"), spec.get("pad_height_divisor"))
    dw = _amount(w, spec.get("min_width"), spec.get("pad_width_divisor"))
    if not (dh or dw):
        return frames, (0, 0)
    position = spec.get("position", "center")
    top = {"top_left": 0, "top_right": 0, "bottom_left": dh, "bottom_right": dh}.get(position,
                                                                                    dh // 2)
    left = {"top_left": 0, "bottom_left": 0, "top_right": dw, "bottom_right": dw}.get(position,
                                                                                     dw // 2)
    widths = ((0, 0), (top, dh - top), (left, dw - left), (0, 0))
    if spec.get("border_mode", "reflect_101") == "constant":
        padded = np.pad(frames, widths, mode="constant",
                        constant_values=int(spec.get("border_value") or 0))
    else:
        padded = np.pad(frames, widths, mode="reflect")  # mirrors without repeating the edge
    return np.ascontiguousarray(padded), (left, top)
