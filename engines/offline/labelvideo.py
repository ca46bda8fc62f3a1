"""Labelled videos: the analysed keypoints drawn onto the video, encoded with PyAV.

Keypoints below the likelihood cutoff are not drawn; a skeleton (pairs of body parts, e.g.
from the project's ``skeleton`` key) is drawn where both ends are confident. The output is
``<video stem><scorer>_labeled.mp4`` (H.264) beside the pose table, written atomically.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Sequence

import av
import cv2
import numpy as np

from posed.engines.project.posetables import read_pose_table
from posed.engines.io import atomic_path
from posed.engines.video import VideoReader
from posed.errors import ConfigError, DataError


def part_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` distinct RGB colours spread around the hue circle."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.9, 1.0))  # type: ignore[misc]
            for i in range(n)]


def draw_pose(image: np.ndarray, keypoints: np.ndarray, *, pcutoff: float,
              skeleton: Sequence[tuple[int, int]] = (), radius: int = 3,
              colours: Sequence[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Draw one frame's K×3 keypoints (and skeleton) on a copy of an RGB image."""
    out = image.copy()
    colours = colours or part_colours(len(keypoints))
    ok = np.isfinite(keypoints[:, :2]).all(axis=1) & (keypoints[:, 2] >= pcutoff)
    for a, b in skeleton:
        if ok[a] and ok[b]:
            pa = tuple(int(round(v)) for v in keypoints[a, :2])
            pb = tuple(int(round(v)) for v in keypoints[b, :2])
            cv2.line(out, pa, pb, (220, 220, 220), 1, cv2.LINE_AA)
    for k in np.flatnonzero(ok):
        centre = tuple(int(round(v)) for v in keypoints[k, :2])
        cv2.circle(out, centre, radius, colours[k], -1, cv2.LINE_AA)
    return out


def label_video(video: str | Path, table: str | Path, out: str | Path | None = None, *,
                pcutoff: float = 0.6, skeleton: Sequence[tuple[str, str]] = (),
                radius: int | None = None) -> Path:
    """Write a labelled copy of ``video`` from its pose table.

    Raises:
        DataError: the table does not match the video (frame count) or names unknown parts.
    """
    video, table = Path(video), Path(table)
    df = read_pose_table(table)
    scorer = df.columns.get_level_values(0)[0]
    parts = list(df.columns.get_level_values("bodyparts").unique())
    index = {p: i for i, p in enumerate(parts)}
    bad = [p for pair in skeleton for p in pair if p not in index]
    if bad:
        raise ConfigError(f"skeleton: unknown body part '{bad[0]}' (table has {', '.join(parts)})")
    edges = [(index[a], index[b]) for a, b in skeleton]
    poses = df[scorer].to_numpy(dtype=np.float32).reshape(len(df), len(parts), 3)
    out = Path(out) if out is not None else table.with_name(f"{table.stem}_labeled.mp4")
    colours = part_colours(len(parts))
    with VideoReader(video) as reader:
        info = reader.info
        r = radius or max(2, int(round(min(info.width, info.height) / 100)))
        rate = round(info.fps) if info.fps and info.fps > 0 else 30
        with atomic_path(out) as tmp:
            written, shorter = 0, False
            with av.open(str(tmp), "w", format="mp4") as container:
                stream = container.add_stream("h264", rate=rate)
                stream.width, stream.height = info.width - info.width % 2, info.height - info.height % 2
                stream.pix_fmt = "yuv420p"
                for i, frame in reader:
                    if i >= len(poses):
                        shorter = True
                        break
                    drawn = draw_pose(frame, poses[i], pcutoff=pcutoff, skeleton=edges, radius=r,
                                      colours=colours)
                    drawn = np.ascontiguousarray(drawn[:stream.height, :stream.width])
                    for packet in stream.encode(av.VideoFrame.from_ndarray(drawn, format="rgb24")):
                        container.mux(packet)
                    written += 1
                for packet in stream.encode():
                    container.mux(packet)
            # Frames that failed to decode are NaN rows of the table and missing here.
            frames = reader.frames_total
            if not shorter and len(poses) not in (frames, reader.info.nframes_promised):
                raise DataError(f"{table}: {len(poses)} rows but {video} has {frames} frames")
    return out
