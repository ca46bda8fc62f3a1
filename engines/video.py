"""Video reading with PyAV.

Frames are numbered 0, 1, 2, ... in presentation order, one number per frame the file stores
(as DeepLabCut counts the frames OpenCV reads from an intact file). The number comes from the
frame's timestamp (:class:`FrameIndexer`), not from a count of decoded frames, so a frame that
fails to decode leaves a gap instead of shifting every later frame onto the wrong index.
Frames come out as ``uint8`` H×W×3 RGB arrays.

A file that cannot be opened raises :class:`~posed.errors.VideoError`; damage inside a video
that opened (a corrupt packet, a truncated file) does not: the bad data is skipped, counted
(:attr:`VideoReader.decode_errors`, :attr:`VideoReader.frames_failed`), and reading goes on (or
ends) with the frames that decode. :meth:`VideoReader.truncation` compares what was read with
the frame count the file's header promises.
"""

from __future__ import annotations

import heapq
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

__all__ = ["FrameIndexer", "VideoInfo", "VideoReader", "frames_at", "prefetch", "probe_video"]

T = TypeVar("T")

# FFmpeg's "tty"/"bintext" demuxers open any text file as an ANSI-art "video"; nobody means
# those as recordings, and treating a text file as a video hides the real mistake.
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})

# Containers without presentation timestamps: FFmpeg derives them from the frame count
# (AVI's are off by the reorder delay when there are B-frames), so they cannot place frames.
UNTIMED_FORMATS = frozenset({"avi"})

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
        nframes_promised: Frames the file's header promises for this stream: the container's
            exact count, else round(the stream's own recorded duration × fps); None when the
            header says neither (MPEG-TS, whose duration is guessed from the file size, or a
            duration known only for the whole container, which may be an audio track's).
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
    nframes_promised: int | None = None


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
    promised = nframes if exact else _tagged_frames(stream, fps)
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
        nframes_promised=promised,
    )


def _tagged_frames(stream: Any, fps: float) -> int | None:
    """Frames promised by a Matroska/WebM track's ``DURATION`` tag (its own duration, unlike
    the container's), or None."""
    text = str((stream.metadata or {}).get("DURATION", ""))
    try:
        hours, minutes, seconds = text.split(":")
        duration = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None
    return int(round(duration * fps)) if fps > 0 and duration > 0 else None


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


class FrameIndexer:
    """The true index of each decoded frame of one pass over a stream, from timestamps.

    Every demuxed packet holds one frame, and the decoder returns frames in presentation
    order. A frame's index is the number of frames before it: those returned, plus those whose
    packets failed, placed by their timestamps. So the frames after a failed packet keep their
    indices and the failed frame becomes a gap.

    Where packets carry real presentation timestamps (MP4, MOV, Matroska, MPEG-TS, ...),
    every packet is tracked, and a packet the decoder swallowed without an error is found too
    (a frame with a later timestamp came out first). AVI stores no presentation timestamps
    (FFmpeg guesses them, wrongly for B-frames), so there only packets that failed are placed.
    Where the demuxer itself lost data (:meth:`demux_failed`), the frames in the timestamp
    jump that follows are counted from the stream's frame rate and time base. Indices only
    ever grow: a frame whose timestamp is missing or out of order takes the next free index.

    Feed it every packet (:meth:`packet`) before decoding it and every packet that failed to
    decode (:meth:`failed`); ask :meth:`frame` for the index of each frame the decoder returns.

    Attributes:
        next: The index after the last frame returned (frames so far, gaps included).
    """

    def __init__(self, container: Any, stream: Any) -> None:
        rate = stream.average_rate or stream.guessed_rate
        tb = stream.time_base
        # Timestamp units per frame; None when the stream does not say.
        self._step: Fraction | None = (1 / (Fraction(rate) * Fraction(tb))) if rate and tb \
            else None
        self._timed = container.format.name.split(",")[0] not in UNTIMED_FORMATS
        # Timestamps of frames not out yet: every packet's when timed, else failed ones only.
        self._pending: list[float] = []
        self._passed = 0  # frames up to the last one returned, gaps included
        self._last: int | None = None  # the latest packet timestamp
        self._resync = False
        self.next = 0

    def packet(self, packet: Any) -> None:
        """Count a demuxed packet (empty flush packets are ignored)."""
        if not packet.size:
            return
        pts = packet.pts if packet.pts is not None else packet.dts
        if pts is None:
            return  # an unstamped stream: frames are counted in order
        if self._resync and self._step and self._last is not None:
            # Frames lost with the data the demuxer skipped: one per frame step of the jump.
            missing = min(int(round((pts - self._last) / self._step)) - 1, 1 << 16)
            for k in range(1, missing + 1):
                heapq.heappush(self._pending, int(self._last + k * self._step))
        self._resync = False
        if self._timed:
            heapq.heappush(self._pending, pts)
        self._last = pts if self._last is None else max(self._last, pts)

    def demux_failed(self) -> None:
        """The demuxer skipped damaged data: frames may be missing before the next packet."""
        self._resync = True

    def failed(self, packet: Any) -> None:
        """A packet failed to decode (timed streams track every packet already)."""
        if not self._timed:
            pts = packet.pts if packet.pts is not None else packet.dts
            heapq.heappush(self._pending, float("-inf") if pts is None else pts)

    def frame(self, frame: Any) -> int:
        """The index of a decoded frame (never one given before)."""
        pending = self._pending
        if frame.pts is None:
            if self._timed and pending:
                heapq.heappop(pending)  # the frame's own packet
        else:
            while pending and pending[0] < frame.pts:
                heapq.heappop(pending)  # a frame before this one that never came out
                self._passed += 1
            if self._timed and pending and pending[0] == frame.pts:
                heapq.heappop(pending)
        self._passed += 1
        index = max(self._passed - 1, self.next)
        self.next = index + 1
        return index

    @property
    def total(self) -> int:
        """Frames in the stream as far as demuxed: those returned, failed, and still pending."""
        return max(self.next, self._passed + len(self._pending))


class VideoReader:
    """Iterate a video's decoded frames as ``uint8`` H×W×3 RGB arrays with their index.

    Use as a context manager (or call :meth:`close`) to release the file. Iterating again
    starts over from the first frame.

    With ``threads=True`` FFmpeg decodes several frames at once (frame threading); when a
    packet is damaged it may then also drop the frames being decoded alongside it (seen: a
    truncated H.264 file gave 17 frames threaded, 19 without). Intact videos give the same
    frames either way. Either way the frames that do come out keep their true indices.

    Example:
        >>> with VideoReader("m3v1mp4.mp4") as reader:
        ...     for index, frame in reader:
        ...         ...

    Attributes:
        info: The video's :class:`VideoInfo`.
        decode_errors: Packets that failed to demux or decode and were skipped so far.
        frames_read: Frames yielded so far.
        frames_total: After a complete pass, the frames the stream holds (read or failed);
            while reading, those seen so far.
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
        self.frames_read = 0
        self._indexer: FrameIndexer | None = None
        self._complete = False
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

    @property
    def frames_total(self) -> int:
        return self._indexer.total if self._indexer is not None else 0

    @property
    def frames_failed(self) -> int:
        """Frames of the range read that the stream holds but that failed to decode (their
        indices were skipped); complete after a full pass."""
        end = self.frames_total if self.stop is None else min(self.stop, self.frames_total)
        return max(0, end - self.start - self.frames_read)

    def truncation(self) -> tuple[int, int] | None:
        """``(promised, found)`` when a complete pass found fewer frames than the header
        promises (:attr:`VideoInfo.nframes_promised`), else None. A promise computed from a
        duration is allowed one frame of rounding."""
        promised = self.info.nframes_promised
        if not self._complete or self.stop is not None or not promised:
            return None
        found = self.frames_total
        slack = 0 if self.info.nframes_exact else 1
        return (promised, found) if found < promised - slack else None

    def _packets(self, indexer: FrameIndexer) -> Iterator[Any]:
        """Demux packets, skipping (and counting) read failures instead of ending."""
        failures = 0
        while failures < MAX_CONSECUTIVE_ERRORS:
            demux = self._container.demux(self._stream)
            try:
                for packet in demux:
                    failures = 0
                    indexer.packet(packet)
                    yield packet
                return
            except av.EOFError:
                return
            except av.FFmpegError:
                # A fresh demux() resumes after the damaged data.
                self.decode_errors += 1
                failures += 1
                indexer.demux_failed()

    def _frames(self, indexer: FrameIndexer) -> Iterator[tuple[int, Any]]:
        """``(true index, av.VideoFrame)`` in presentation order, skipping packets that fail
        to decode."""
        failures = 0
        for packet in self._packets(indexer):
            try:
                frames = packet.decode()
            except av.FFmpegError:
                self.decode_errors += 1
                indexer.failed(packet)
                failures += 1
                if failures >= MAX_CONSECUTIVE_ERRORS:
                    return
                continue
            failures = 0
            for frame in frames:
                yield indexer.frame(frame), frame

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
            self.decode_errors = self.frames_read = 0
        self._used = True
        self._complete = False
        self._indexer = FrameIndexer(self._container, self._stream)
        return self._iterate(self._indexer)

    def _iterate(self, indexer: FrameIndexer) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in self._frames(indexer):
            if self.stop is not None and index >= self.stop:
                return
            if index < self.start:
                continue
            try:
                image = self._to_rgb(frame)
            except (av.FFmpegError, ValueError):
                self.decode_errors += 1  # a frame that cannot be converted failed too
                continue
            self.frames_read += 1
            yield index, image
        self._complete = True

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


def frames_at(path: str | Path, indices: Iterable[int]) -> dict[int, np.ndarray]:
    """The frames at ``indices`` (index -> RGB), decoded in one pass from the first wanted to
    the last; a frame that does not decode is missing from the result."""
    wanted = set(indices)
    if not wanted:
        return {}
    with VideoReader(path, start=min(wanted), stop=max(wanted) + 1) as reader:
        return {i: frame for i, frame in reader if i in wanted}


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
