"""Reading a video for analysis: its frames in batches, at their true indices, and what was
lost (frames that failed to decode, a file shorter than its header promises)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from posed.errors import DataError

# The analysis logger: these warnings belong to `posed analyze`, as before this module split off.
log = logging.getLogger("posed.engines.offline.analyze")

# A progress bar factory: (total frames or None, description) -> object with update(n), close().
BarFactory = Callable[[int | None, str], Any]


def terminal_bar(total: int | None, desc: str) -> Any:
    """A per-video frame bar on the terminal (tqdm), removed when the video is done."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", leave=False)


def truncation_warning(video: Path, truncated: dict | None) -> str | None:
    """The one-line warning for a video shorter than its header promises, or None."""
    if not isinstance(truncated, dict):
        return None
    return (f"{video}: truncated: the header promises {truncated.get('promised')} frames, "
            f"the file holds {truncated.get('found')}")


@dataclass
class VideoRead:
    """What reading a video gave besides its frames.

    Attributes:
        info: The video's :class:`~posed.engines.video.VideoInfo`.
        indices: The true frame index of every frame handed on, in order.
        rows: Rows its table needs: every frame the file holds, read or failed, and the frames
            a truncated file lost when its header gives their exact count.
        failed: Frames the file holds that failed to decode.
        decode_errors: Packets that failed to demux or decode.
        truncated: ``{"promised", "found"}`` when the file is shorter than its header says.
    """

    info: Any
    indices: np.ndarray
    rows: int
    failed: int
    decode_errors: int
    truncated: dict | None

    def meta(self) -> dict:
        """The metadata fields that say what was lost."""
        return {"decode_errors": self.decode_errors, "frames_failed": self.failed,
                "truncated": self.truncated}

    def report(self, video: Path) -> str | None:
        """Log one warning naming the video if frames were lost; return the truncation
        warning (or None)."""
        message = truncation_warning(video, self.truncated)
        if message:
            failed = f" ({self.failed} of them failed to decode)" if self.failed else ""
            log.warning("%s%s; the rows of lost frames are NaN with likelihood 0", message,
                        failed)
        elif self.failed:
            log.warning("%s: %d frame(s) failed to decode; their rows are NaN with likelihood 0",
                        video, self.failed)
        return message

    def spread(self, values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        """Per-frame ``values`` (one per frame read) placed at their rows; other rows
        ``fill``, likelihoods (the last axis' last entry of K×3 values) 0."""
        out = np.full((self.rows, *values.shape[1:]), fill, dtype=values.dtype)
        if values.ndim >= 2 and values.shape[-1] == 3:
            out[..., 2] = 0.0
        out[self.indices] = values
        return out


def for_each_batch(video: Path, fn: Callable[[np.ndarray], None], *, batch_size: int = 8,
                   progress: bool = True, bar_factory: BarFactory | None = None) -> VideoRead:
    """Decode ``video`` in batches of uint8 frames and call ``fn`` on each, with a progress bar.

    Decoding runs in a background thread, so it overlaps the work ``fn`` does.

    Returns:
        The frames' true indices and what was lost (:class:`VideoRead`).

    Raises:
        VideoError: the video cannot be opened. DataError: no frame could be decoded.
    """
    from posed.engines.video import VideoReader, prefetch

    indices: list[np.ndarray] = []
    with VideoReader(video) as reader:
        info = reader.info
        bar = (bar_factory or terminal_bar)(info.nframes or None, video.name) if progress else None
        for idx, frames in prefetch(reader.batches(batch_size), depth=4):
            fn(frames)
            indices.append(idx)
            if bar is not None:
                bar.update(len(frames))
        if bar is not None:
            bar.close()
        cut = reader.truncation()
        rows = reader.frames_total
        if cut is not None and info.nframes_exact:
            rows = max(rows, cut[0])
        read = VideoRead(info=info, indices=np.concatenate(indices) if indices else
                         np.zeros(0, np.int64), rows=rows, failed=reader.frames_failed,
                         decode_errors=reader.decode_errors,
                         truncated=None if cut is None else {"promised": cut[0], "found": cut[1]})
    if not indices:
        raise DataError(f"{video}: no frames could be decoded")
    return read
