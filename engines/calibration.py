"""Frames for static INT8 calibration from a video or a folder of images.

``posed export --int8 --calibration PATH`` calibrates on frames the user points at, so any
model (a project's shuffle or a bundle, e.g. an imported DeepLabCut model) can be exported to
static INT8. Frames are spread evenly over the whole video (or the sorted images), and some of
them are held out: the export's parity check runs on those, never on frames the quantiser saw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from posed.errors import DataError

__all__ = ["CALIBRATION_FRAMES", "CHECK_FRAMES", "IMAGE_SUFFIXES", "Calibration",
           "read_calibration", "resize_frames"]

CALIBRATION_FRAMES = 32  # frames the quantiser sees by default
CHECK_FRAMES = 8  # held-out frames for the parity check when no project provides test images
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Calibration:
    """Calibration frames, the held-out check frames and what to record about them."""

    frames: np.ndarray
    check: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


def resize_frames(images: list[np.ndarray], size: tuple[int, int] | None) -> list[np.ndarray]:
    """Resize to ``size`` (height, width) as the project's calibration images are, or keep."""
    if size is None:
        return images
    import cv2

    return [im if im.shape[:2] == tuple(size) else
            cv2.resize(im, (size[1], size[0]), interpolation=cv2.INTER_AREA) for im in images]


def _pick(n: int, limit: int, holdout: int) -> tuple[list[int], list[int]]:
    """Evenly spaced positions out of ``n``: (calibration, held out), disjoint.

    The held-out positions are spread among the picked ones, so both sets cover the whole
    video rather than its beginning and its end.
    """
    picked = np.unique(np.linspace(0, n - 1, min(n, limit + holdout)).round().astype(int))
    if holdout == 0:
        return picked[:limit].tolist(), []
    # With fewer frames than wanted, hold out about one in five, and at least one.
    held = min(holdout, max(1, len(picked) // 5)) if len(picked) < limit + holdout else holdout
    at = set(np.linspace(1, len(picked) - 1, held).round().astype(int).tolist())
    check = [int(p) for i, p in enumerate(picked) if i in at]
    calib = [int(p) for i, p in enumerate(picked) if i not in at]
    return calib[:limit], check


def _video(path: Path, limit: int, holdout: int) -> tuple[dict[int, np.ndarray], list, list]:
    """Frames at evenly spaced indices of a video, one decoding pass up to the last one."""
    from posed.engines.video import VideoReader, frames_at, probe_video

    count = probe_video(path).nframes
    if count <= 0:  # the header says nothing: count the frames that decode
        with VideoReader(path) as reader:
            count = sum(1 for _ in reader)
    if count < (2 if holdout else 1):
        raise DataError(f"{path}: {count} frames; calibration needs at least "
                        f"{2 if holdout else 1}")
    calib, check = _pick(count, limit, holdout)
    frames = frames_at(path, calib + check)
    if not frames:
        raise DataError(f"{path}: no frames could be read")
    return frames, [i for i in calib if i in frames], [i for i in check if i in frames]


def _images(folder: Path, limit: int, holdout: int,
            size: tuple[int, int] | None) -> tuple[dict[int, np.ndarray], list, list, list[Path]]:
    """Evenly spaced images of a folder (sorted by name); all of one size unless resized."""
    from posed.engines.project import load_image

    files = sorted(p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if len(files) < (2 if holdout else 1):
        raise DataError(f"{folder}: {len(files)} images ({', '.join(IMAGE_SUFFIXES)}); "
                        f"calibration needs at least {2 if holdout else 1}")
    calib, check = _pick(len(files), limit, holdout)
    frames = {i: load_image(folder, files[i].name) for i in calib + check}
    if size is None:
        first = frames[calib[0]].shape
        for i, im in frames.items():
            if im.shape != first:
                raise DataError(f"{files[i]}: {im.shape[1]}×{im.shape[0]}, the other calibration "
                                f"images are {first[1]}×{first[0]} (pass --fixed-size to resize "
                                "them all)")
    return frames, calib, check, files


def read_calibration(path: str | Path, *, limit: int = CALIBRATION_FRAMES,
                     holdout: int = CHECK_FRAMES,
                     size: tuple[int, int] | None = None) -> Calibration:
    """Up to ``limit`` calibration frames and ``holdout`` other check frames from ``path``.

    Args:
        path: A video file, or a folder of .png/.jpg images.
        limit: Most calibration frames.
        holdout: Frames kept out of calibration for the parity check (0: none, when a
            project's test images are checked instead).
        size: ``(height, width)`` to resize every frame to (an export's fixed size).

    Raises:
        DataError: one line naming the file: missing, unreadable, no frames or images, or
            images of different sizes without ``size``.
    """
    path = Path(path)
    if limit < 1:
        raise DataError(f"{path}: calibration needs at least 1 frame, {limit} asked")
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    if path.is_dir():
        frames, calib, check, files = _images(path, limit, holdout, size)
        info = {"kind": "images", "path": str(path.resolve()),
                "files": [files[i].name for i in calib]}
    else:
        frames, calib, check = _video(path, limit, holdout)
        info = {"kind": "video", "path": str(path.resolve()), "frame_indices": calib}
    if not calib or (holdout and not check):
        raise DataError(f"{path}: too few frames could be read for calibration and a "
                        "held-out check")
    calibration = np.stack(resize_frames([frames[i] for i in calib], size))
    held = np.stack(resize_frames([frames[i] for i in check], size)) if check else None
    info.update(frames=len(calib), held_out_for_parity=len(check))
    return Calibration(calibration, held, info)
