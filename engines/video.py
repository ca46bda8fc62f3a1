"""Video reading with PyAV.

Frames are numbered 0, 1, 2, ... in the order the decoder returns them, as DeepLabCut does
(it counts the frames OpenCV reads), so row ``i`` of a pose table is the ``i``-th decoded frame.
Frames come out as ``uint8`` H×W×3 RGB arrays.

A file that cannot be opened raises :class:`~posed.errors.VideoError`; damage inside a video
that opened (a corrupt packet, a truncated file) does not: the bad data is skipped, counted in
:attr:`VideoReader.decode_errors`, and reading goes on (or ends) with the frames that decode.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import av
import numpy as np

from posed.errors import VideoError

__all__ = ["VideoInfo", "VideoReader", "prefetch", "probe_video"]

T = TypeVar("T")

# FFmpeg's "tty"/"bintext" demuxers open any text file as an ANSI-art "video"; nobody means
# those as recordings, and treating a text file as a video hides the real mistake.
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})

# A damaged file can make the demuxer fail repeatedly without advancing; give up after this
# many failures in a row rather than spin.
MAX_CONSECUTIVE_ERRORS = 32


def error_reason(exc: BaseException) -> str:
    """One-line reason from an FFmpeg/OS error, without PyAV's errno prefix and file name."""
    if isinstance(exc, av.FFmpegError) and getattr(exc, "strerror", None):
        return str(exc.strerror)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return " ".join(str(exc).split()) or type(exc).__name__


@dataclass(frozen=True)
class VideoInfo:
    """What is known about a video's first video stream.

    Attributes:
        path: The file.
        width: Frame width in pixels.
        height: Frame height in pixels.
        fps: Average frame rate (frames per second); 0.0 if the file does not say.
        nframes: Number of frames: the container's exact count where it records one (MP4,
            AVI), otherwise estimated as round(duration_s * fps) (Matroska, MPEG-TS, ...);
            see ``nframes_exact``. The count of frames actually decoded can still differ for
            damaged files.
        codec: Decoder name, e.g. ``"h264"``.
        pix_fmt: Pixel format, e.g. ``"yuv420p"`` (``""`` if unknown).
        duration_s: Duration in seconds, or None if unknown.
        nframes_exact: True if ``nframes`` comes from the container's frame count.
    """

    path: Path
    width: int
    height: int
    fps: float
    nframes: int
    codec: str
    pix_fmt: str
    duration_s: float | None
    nframes_exact: bool = True


def _open_container(path: Path) -> Any:
    """Open ``path`` with PyAV, turning every failure into a one-line VideoError."""
    if not path.exists():
        raise VideoError(f"{path}: no such file")
    if path.is_dir():
        raise VideoError(f"{path}: is a folder, not a video")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VideoError(f"{path}: cannot open video ({error_reason(exc)})") from exc


def _video_stream(container: Any, path: Path) -> Any:
    """Return the first video stream or raise VideoError (closing the container)."""
    if not container.streams.video:
        container.close()
        raise VideoError(f"{path}: no video stream")
    stream = container.streams.video[0]
    codec = stream.codec_context.name if stream.codec_context else ""
    if codec in TEXT_CODECS:
        container.close()
        raise VideoError(f"{path}: not a video (FFmpeg reads it as text)")
    return stream


def _stream_info(path: Path, container: Any, stream: Any) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    duration_s: float | None = None
    if stream.duration is not None and stream.time_base is not None:
        duration_s = float(stream.duration * Fraction(stream.time_base))
    elif container.duration is not None:
        duration_s = container.duration / av.time_base
    exact = bool(stream.frames and stream.frames > 0)
    if exact:
        nframes = int(stream.frames)
    elif duration_s is not None and fps > 0:
        nframes = int(round(duration_s * fps))
    else:
        nframes = 0
    ctx = stream.codec_context
    return VideoInfo(
        path=path,
        width=int(ctx.width or stream.width or 0),
        height=int(ctx.height or stream.height or 0),
        fps=fps,
        nframes=nframes,
        codec=str(ctx.name or ""),
        pix_fmt=str(ctx.pix_fmt or ""),
        duration_s=duration_s,
        nframes_exact=exact,
    )


def probe_video(path: str | Path) -> VideoInfo:
    """Read a video's size, frame rate, frame count and codec without decoding it.

    Args:
        path: The video file.

    Returns:
        The stream's :class:`VideoInfo`.

    Raises:
        VideoError: The file is missing, is not a video, or has no video stream.
    """
    path = Path(path)
    container = _open_container(path)
    try:
        stream = _video_stream(container, path)
        return _stream_info(path, container, stream)
    finally:
        container.close()


class VideoReader:
    """Iterate a video's decoded frames as ``uint8`` H×W×3 RGB arrays with their index.

    Use as a context manager (or call :meth:`close`) to release the file. Iterating again
    starts over from the first frame.

    With ``threads=True`` FFmpeg decodes several frames at once (frame threading); when a
    packet is damaged it may then also drop the frames being decoded alongside it (seen: a
    truncated H.264 file gave 17 frames threaded, 19 without). Intact videos give the same
    frames either way.

    Example:
        >>> with VideoReader("m3v1mp4.mp4") as reader:
        ...     for index, frame in reader:
        ...         ...

    Attributes:
        info: The video's :class:`VideoInfo`.
        decode_errors: Packets that failed to demux or decode and were skipped so far.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        threads: bool = True,
        start: int | None = None,
        stop: int | None = None,
    ) -> None:
        """Open the video.

        Args:
            path: The video file.
            threads: Decode in the codec's own threads (PyAV ``thread_type="AUTO"``); faster,
                costs one or more frames of latency.
            start: First frame index to yield (default 0). Earlier frames are still decoded,
                so indices stay exact, but not converted to RGB.
            stop: Frame index to stop before (default: end of video).

        Raises:
            VideoError: The file cannot be opened or has no video stream.
            ValueError: ``start``/``stop`` are negative.
        """
        if (start is not None and start < 0) or (stop is not None and stop < 0):
            raise ValueError(f"start/stop must be >= 0, got start={start} stop={stop}")
        self.path = Path(path)
        self.threads = threads
        self.start = start or 0
        self.stop = stop
        self.decode_errors = 0
        self._container: Any = None
        self._stream: Any = None
        self._used = False
        self._open()
        self.info = _stream_info(self.path, self._container, self._stream)

    def _open(self) -> None:
        container = _open_container(self.path)
        stream = _video_stream(container, self.path)
        if self.threads:
            stream.codec_context.thread_type = "AUTO"
        self._container, self._stream = container, stream

    def close(self) -> None:
        """Release the file. Safe to call more than once."""
        if self._container is not None:
            self._container.close()
            self._container = None
            self._stream = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        # Best effort for readers never closed; never raise from a finaliser.
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass

    def _packets(self) -> Iterator[Any]:
        """Demux packets, skipping (and counting) read failures instead of ending."""
        failures = 0
        while failures < MAX_CONSECUTIVE_ERRORS:
            demux = self._container.demux(self._stream)
            try:
                for packet in demux:
                    failures = 0
                    yield packet
                return
            except av.EOFError:
                return
            except av.FFmpegError:
                # A fresh demux() resumes after the damaged data.
                self.decode_errors += 1
                failures += 1

    def _frames(self) -> Iterator[Any]:
        """Decoded av.VideoFrames in decode order, skipping packets that fail to decode."""
        failures = 0
        for packet in self._packets():
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.decode_errors += 1
                failures += 1
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    return
                continue
            failures = 0
            yield from frames

    def _to_rgb(self, frame: Any) -> np.ndarray:
        info = self.info
        if info.width and info.height and (frame.width, frame.height) != (
            info.width,
            info.height,
        ):
            # Size changed mid-stream: scale to the declared size so batches stay stackable.
            return frame.to_ndarray(format="rgb24", width=info.width, height=info.height)
        return frame.to_ndarray(format="rgb24")

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(index, frame)`` for frames ``start`` <= index < ``stop``.

        Raises:
            VideoError: The reader was closed.
        """
        if self._container is None:
            raise VideoError(f"{self.path}: reader is closed")
        if self._used:
            # A demuxed container cannot rewind reliably for every format; reopen instead.
            self.close()
            self._open()
            self.decode_errors = 0
        self._used = True
        return self._iterate()

    def _iterate(self) -> Iterator[tuple[int, np.ndarray]]:
        index = -1
        for frame in self._frames():
            index += 1
            if self.stop is not None and index >= self.stop:
                return
            if index < self.start:
                continue
            yield index, self._to_rgb(frame)

    def batches(self, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield frames in batches.

        Args:
            batch_size: Frames per batch (the last batch may be shorter).

        Yields:
            ``(indices, frames)``: int64 array of shape (n,) and uint8 array n×H×W×3.

        Raises:
            ValueError: ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return self._batches(batch_size, iter(self))

    @staticmethod
    def _batches(
        batch_size: int, frames: Iterator[tuple[int, np.ndarray]]
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        indices: list[int] = []
        images: list[np.ndarray] = []
        for index, image in frames:
            indices.append(index)
            images.append(image)
            if len(images) == batch_size:
                yield np.asarray(indices, dtype=np.int64), np.stack(images)
                indices, images = [], []
        if images:
            yield np.asarray(indices, dtype=np.int64), np.stack(images)


class _Raised:
    """Carries an exception from the producer thread to the consumer."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


_DONE = object()


def prefetch(iterable: Iterable[T], depth: int = 4) -> Iterator[T]:
    """Run ``iterable`` in a background thread, ``depth`` items ahead of the consumer.

    Lets decoding overlap inference. An exception raised by ``iterable`` is re-raised in the
    consumer at the point it happened. If the consumer stops early (``break``, an exception,
    or closing the generator), the thread is told to stop, the source iterator is closed in
    that thread, and the call waits for it to finish, so the source (e.g. a
    :class:`VideoReader`) can be closed safely afterwards. Nothing starts until the first item
    is requested.

    Args:
        iterable: The source.
        depth: Most items buffered ahead.

    Yields:
        The items of ``iterable``, in order.

    Raises:
        ValueError: ``depth`` < 1.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return _prefetch(iterable, depth)


def _prefetch(iterable: Iterable[T], depth: int) -> Iterator[T]:
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        # Poll so a consumer that went away cannot leave this thread blocked forever.
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source: Iterator[T] | None = None
        try:
            source = iter(iterable)
            for item in source:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the consumer
            put(_Raised(exc))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001 - nobody left to report it to
                    pass

    thread = threading.Thread(target=produce, name="posed-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.exc
            yield item
    finally:
        stop.set()
        # Wait for the producer to leave the source alone before our caller closes it.
        thread.join()
