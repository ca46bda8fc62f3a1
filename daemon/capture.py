"""Camera capture: one thread per camera decodes frames with PyAV into its :class:`FrameQueue`.

Sources are files (paced in real time from their timestamps, or as fast as the pipeline takes
them; optionally looped), V4L2 devices, and network streams (RTSP, HTTP, UDP, any URL FFmpeg
opens). A capture thread never raises: failures are logged, counted, and either end the camera
(a file) or lead to a reconnect with exponential backoff (a live source).

Loss accounting (so every ``seq`` gap is explained):

* ``seq`` counts frames *captured* (put in the queue), so a frame that fails to decode never
  gets a ``seq``; it is still counted in ``decode_errors`` and in
  ``frames_dropped{reason="decode"}``.
* A frame's ``index`` is its true index in the source, from its timestamp
  (:class:`~posed.engines.video.FrameIndexer`): a frame that fails to decode leaves a gap in
  ``index`` and its number is never given to another frame.
* Frames the ``latest`` policy throws away are counted by the queue. The camera does not see
  them: whoever creates the :class:`FrameQueue` wires its ``on_drop`` to
  ``frames_dropped{reason="policy"}`` (see :func:`make_queue` and :func:`policy_drop_counter`).

Stopping: setting the shared ``stop`` event ends every wait at once. A read blocked inside
FFmpeg on a stalled live source ends within ``CameraSpec.read_timeout_s`` (FFmpeg offers no way
to interrupt it sooner from another thread); capture threads are daemon threads, so they never
hold up process exit.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import av

from posed.daemon.queues import FrameQueue, FrameSignal
from posed.daemon.sources import open_source
from posed.daemon.stage import StageThread
from posed.daemon.types import Frame
from posed.engines.video import MAX_CONSECUTIVE_ERRORS as _MAX_CONSECUTIVE_ERRORS
from posed.engines.video import FrameIndexer
from posed.engines.video import error_reason as _reason
from posed.errors import CaptureError, ConfigError

__all__ = ["KINDS", "PACES", "POLICIES", "Camera", "CameraSpec", "CameraSpecError", "make_queue",
           "open_source", "policy_drop_counter"]

log = logging.getLogger("posed.daemon.capture")

KINDS = ("auto", "file", "v4l2", "stream")
PACES = ("native", "fast")
POLICIES = ("auto", "lossless", "latest")

_V4L2_PREFIX = "v4l2://"
_FILE_PREFIX = "file://"

# Longest single pacing sleep: a timestamp jump in a damaged file must not stall a camera for
# minutes; larger gaps are shortened and the clock re-anchored.
_MAX_PACE_GAP_S = 2.0

# Weight of the newest one-second rate in the smoothed capture_fps gauge.
_FPS_ALPHA = 0.5


class CameraSpecError(ConfigError, ValueError):
    """A camera spec has an invalid value (a ConfigError that is also a ValueError)."""


@dataclass(frozen=True)
class CameraSpec:
    """How to open and read one camera.

    Attributes:
        id: Camera id, used in frames, topics and metric labels.
        source: File path, ``/dev/videoN`` or ``v4l2:///dev/videoN``, or a URL FFmpeg opens
            (``rtsp://``, ``rtsps://``, ``http(s)://``, ``udp://``, ...).
        kind: ``auto`` | ``file`` | ``v4l2`` | ``stream``; ``auto`` picks v4l2 for ``/dev/*``
            and ``v4l2://``, stream for other ``scheme://`` URLs (except ``file://``), else file.
        pace: Files only: ``native`` releases frames in real time from their timestamps,
            ``fast`` as fast as the pipeline takes them.
        loop: Files only: start again at the end.
        policy: ``auto`` (files lossless, live sources latest) | ``lossless`` | ``latest``.
        width, height, fps, pixel_format: V4L2 capture settings (FFmpeg ``video_size``,
            ``framerate``, ``input_format``); None leaves the device default.
        options: Extra FFmpeg demuxer/protocol options, e.g. ``{"rtsp_transport": "tcp"}``;
            they override the defaults chosen here.
        reconnect_initial_s: First wait before reopening a failed live source; doubles after
            each failure up to ``reconnect_max_s`` and resets after a frame arrives.
        reconnect_max_s: Longest wait between reconnects.
        queue_size: Capacity of the camera's frame queue.
        open_timeout_s: Live sources: give up opening after this long.
        read_timeout_s: Live sources: a read that waits this long counts as a disconnect
            (also bounds how long stop can take on a stalled source).
    """

    id: str
    source: str
    kind: str = "auto"
    pace: str = "native"
    loop: bool = False
    policy: str = "auto"
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    pixel_format: str | None = None
    options: dict[str, str] = field(default_factory=dict)
    reconnect_initial_s: float = 0.5
    reconnect_max_s: float = 10.0
    queue_size: int = 4
    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, why: str) -> CameraSpecError:
            return CameraSpecError(f"camera {self.id!r}: {name} {value!r}: {why}")

        if not isinstance(self.id, str) or not self.id.strip():
            raise CameraSpecError(f"camera id {self.id!r}: must be a non-empty string")
        if not isinstance(self.source, str) or not self.source.strip():
            raise bad("source", self.source, "must be a non-empty path or URL")
        for name, value, allowed in (("kind", self.kind, KINDS), ("pace", self.pace, PACES),
                                     ("policy", self.policy, POLICIES)):
            if value not in allowed:
                raise bad(name, value, f"must be one of {', '.join(allowed)}")
        for name in ("width", "height"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise bad(name, value, "must be a positive integer")
        if (self.width is None) != (self.height is None):
            raise bad("width/height", (self.width, self.height), "give both or neither")
        if self.fps is not None and not self.fps > 0:
            raise bad("fps", self.fps, "must be > 0")
        if isinstance(self.queue_size, bool) or not isinstance(self.queue_size, int) \
                or self.queue_size < 1:
            raise bad("queue_size", self.queue_size, "must be an integer >= 1")
        for name in ("reconnect_initial_s", "open_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise bad(name, value, "must be a number > 0")
        if not isinstance(self.reconnect_max_s, (int, float)) \
                or self.reconnect_max_s < self.reconnect_initial_s:
            raise bad("reconnect_max_s", self.reconnect_max_s,
                      f"must be >= reconnect_initial_s ({self.reconnect_initial_s})")
        if not isinstance(self.options, dict):
            raise bad("options", self.options, "must be a mapping of FFmpeg option to value")
        if self.resolved_kind() != "v4l2" and (self.width or self.fps or self.pixel_format):
            raise CameraSpecError(
                f"camera {self.id!r}: width/height/fps/pixel_format apply only to v4l2 devices "
                f"(source {self.source!r} is a {self.resolved_kind()})")

    def resolved_kind(self) -> str:
        """``file``, ``v4l2`` or ``stream`` (``auto`` resolved from the source)."""
        if self.kind != "auto":
            return self.kind
        src = self.source
        if src.startswith("/dev/") or src.startswith(_V4L2_PREFIX):
            return "v4l2"
        if "://" in src and not src.startswith(_FILE_PREFIX):
            return "stream"
        return "file"

    def resolved_policy(self) -> str:
        """``lossless`` or ``latest`` (``auto``: files lossless, live sources latest)."""
        if self.policy != "auto":
            return self.policy
        return "latest" if self.is_live() else "lossless"

    def is_live(self) -> bool:
        """True for v4l2 devices and network streams (they reconnect instead of ending)."""
        return self.resolved_kind() in ("v4l2", "stream")

    def target(self) -> str:
        """The path or URL handed to FFmpeg (``v4l2://`` and ``file://`` prefixes removed)."""
        src = self.source
        if src.startswith(_V4L2_PREFIX):
            return src[len(_V4L2_PREFIX):]
        if src.startswith(_FILE_PREFIX):
            return src[len(_FILE_PREFIX):]
        return src


def policy_drop_counter(metrics: Any, camera: str) -> Callable[[int], None] | None:
    """An ``on_drop`` callback counting ``frames_dropped{camera, reason="policy"}``.

    Args:
        metrics: The daemon's metrics object, or None.
        camera: Camera id.

    Returns:
        The callback, or None when there are no metrics.
    """
    if metrics is None:
        return None
    counter = metrics.frames_dropped.labels(camera=camera, reason="policy")
    return lambda n: counter.inc(n)


def make_queue(spec: CameraSpec, signal: FrameSignal, metrics: Any = None,
               on_drop: Callable[[int], None] | None = None) -> FrameQueue:
    """The camera's :class:`FrameQueue` with its resolved policy and size.

    Args:
        spec: The camera.
        signal: The signal shared by all cameras' queues.
        metrics: If given (and ``on_drop`` is not), policy drops are counted there.
        on_drop: Explicit drop callback (overrides ``metrics``).
    """
    if on_drop is None:
        on_drop = policy_drop_counter(metrics, spec.id)
    return FrameQueue(spec.id, spec.queue_size, spec.resolved_policy(), signal, on_drop=on_drop)


class _Stopped(Exception):
    """Internal: the stop event was set while the camera was busy."""


class Camera(StageThread):
    """Reads one source in its own thread and puts decoded frames into a queue.

    The queue should come from :func:`make_queue` (or be created with ``on_drop`` wired to
    ``frames_dropped{reason="policy"}``): the camera itself only counts decode drops.

    Args:
        spec: What to read.
        queue: Where frames go; ``lossless`` queues block this thread while full.
        stop: Shared event; once set the thread ends promptly.
        metrics: Optional daemon metrics (``frames_captured``, ``frames_dropped``,
            ``reconnects``, ``errors``, ``capture_fps``).

    Attributes:
        finished: Set when a file source is done (end reached without ``loop``, or it could
            not be opened or read) or the camera was refused (:meth:`fail`); not set when
            ``stop`` alone ended it, and for live sources only after :meth:`fail`.
        seq: Frames captured so far (the next frame's ``seq``).
        decode_errors: Frames of the source that failed to demux/decode (the gaps in
            ``index``; the same count as ``frames_dropped{reason="decode"}``).
        corrupt_packets: Packets the demuxer flagged as damaged (data before them was lost,
            e.g. an MPEG-TS continuity break); they are still decoded, and counted as
            ``errors{stage="capture"}`` because frames around them may be missing or damaged.
        reconnects: Times a live source was (re)opened after a failure or end of stream.
        last_frame_mono: ``time.monotonic()`` of the last captured frame, or None.
        error: The last failure, one line (None if there was none).
        failure: Why the pipeline refused this camera (:meth:`fail`), or None.
        fps: Smoothed capture rate, updated about once per second.
        opened: Times the source was opened successfully.
    """

    def __init__(self, spec: CameraSpec, queue: FrameQueue, stop: threading.Event, *,
                 metrics: Any = None) -> None:
        super().__init__(f"capture-{spec.id}", stop, metrics)
        self.spec = spec
        self.queue = queue
        self.finished = threading.Event()
        # Counters (see the class docstring), all zero until the thread runs.
        self.seq = self.decode_errors = self.corrupt_packets = self.reconnects = self.opened = 0
        self.last_frame_mono: float | None = None
        self.error: str | None = None
        self.failure: str | None = None
        self._error_mono: float | None = None  # when error was last set
        self.fps = 0.0
        self._live = spec.is_live()
        self._fps_start = time.monotonic()
        self._fps_count = 0
        self._fps_seen = False

    # -- state -----------------------------------------------------------------------------

    def open_error(self) -> str | None:
        """Why the source could not be opened or read last, or None (same as :attr:`error`)."""
        return self.error

    def fail(self, reason: str) -> None:
        """Refuse the camera for good; the caller then sets this camera's own ``stop``."""
        self.failure = reason
        self._count_error(reason)

    @property
    def failed(self) -> str | None:
        """Why the camera failed for good (a file that cannot be read, or :meth:`fail`)."""
        if self.failure is None and not self._live and self.finished.is_set():
            return self.error
        return self.failure

    def is_up(self) -> bool:
        """True while frames arrive: the thread runs and a frame came after the last error."""
        last = self.last_frame_mono
        return (self.is_alive() and self.failure is None and last is not None
                and (self._error_mono is None or last > self._error_mono))

    def stats(self) -> dict[str, Any]:
        """A snapshot of the camera's counters, for health reports."""
        return {
            "camera": self.spec.id,
            "kind": self.spec.resolved_kind(),
            "alive": self.is_alive(),
            "finished": self.finished.is_set(),
            "captured": self.seq,
            "decode_errors": self.decode_errors,
            "corrupt_packets": self.corrupt_packets,
            "reconnects": self.reconnects,
            "policy_dropped": self.queue.dropped,
            "fps": round(self.fps, 3),
            "last_frame_mono": self.last_frame_mono,
            "error": self.error,
        }

    # -- metrics helpers -------------------------------------------------------------------

    def _count_error(self, message: str) -> None:
        self.error = message
        self._error_mono = time.monotonic()
        if self.metrics is not None:
            self.metrics.errors.labels(stage="capture").inc()

    def _count_corrupt_packet(self) -> None:
        self.corrupt_packets += 1
        if self.metrics is not None:
            self.metrics.errors.labels(stage="capture").inc()
        # A flaky link can damage every other packet: say it once, then every 100th time.
        level = logging.WARNING if self.corrupt_packets % 100 == 1 else logging.DEBUG
        log.log(level, "%s: damaged packet from %s (%d so far); frames may be missing or "
                "damaged", self.spec.id, self.spec.source, self.corrupt_packets)

    def _tick_fps(self, now: float, frames: int = 0) -> None:
        """Count frames; once a second fold the window's rate into the smoothed gauge."""
        self._fps_count += frames
        elapsed = now - self._fps_start
        if elapsed < 1.0:
            return
        rate = self._fps_count / elapsed
        self.fps = rate if not self._fps_seen else _FPS_ALPHA * rate + (1 - _FPS_ALPHA) * self.fps
        self._fps_seen = True
        self._fps_start, self._fps_count = now, 0
        if self.metrics is not None:
            self.metrics.capture_fps.labels(camera=self.spec.id).set(self.fps)

    def _wait(self, seconds: float) -> None:
        """Sleep unless stopped (raises _Stopped), keeping the fps gauge current meanwhile."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            if self.stop.wait(min(left, 0.5)):
                raise _Stopped
            self._tick_fps(time.monotonic())

    # -- the thread ------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            if self._live:
                self._run_live()
            else:
                self._run_file()
        except _Stopped:
            pass
        except Exception as exc:  # noqa: BLE001 - a capture thread must never die loudly
            self._count_error(f"{self.spec.id}: capture failed ({_reason(exc)})")
            log.exception("%s: capture failed", self.spec.id)
            if not self._live:
                self.finished.set()
        finally:
            if self.failure is not None:
                self.finished.set()
            if self.metrics is not None:
                self.metrics.capture_fps.labels(camera=self.spec.id).set(0.0)
            self.fps = 0.0

    def _run_file(self) -> None:
        """Read the file once, or over and over with ``loop``; ``finished`` unless stopped."""
        if self._read_file():
            self.finished.set()

    def _read_file(self) -> bool:
        """The file loop; returns True when the file is done, False when stopped."""
        # Bounded by the stop event and by files that yield frames (a frameless pass ends it).
        while not self.stop.is_set():
            try:
                container = open_source(self.spec)
            except CaptureError as exc:
                self._count_error(str(exc))
                log.error("%s", exc)
                return True
            self.opened += 1
            try:
                ended, frames = self._read(container)
            except CaptureError as exc:
                self._count_error(str(exc))
                log.error("%s", exc)
                return True
            finally:
                container.close()
            if not ended:
                return False  # stop was set
            if frames == 0:
                self._count_error(f"{self.spec.id}: {self.spec.source}: no frame could be decoded")
                log.error("%s", self.error)
                return True
            if not self.spec.loop:
                log.info("%s: end of file after %d frames", self.spec.id, frames)
                return True
        return False

    def _run_live(self) -> None:
        """Open, read until the source fails or ends, back off, reopen; until stopped."""
        delay = self.spec.reconnect_initial_s
        attempt = 0
        while not self.stop.is_set():
            if attempt:
                self.reconnects += 1
                if self.metrics is not None:
                    self.metrics.reconnects.labels(camera=self.spec.id).inc()
            attempt += 1
            seq_before = self.seq
            try:
                container = open_source(self.spec)
            except CaptureError as exc:
                reason = str(exc)
            except Exception as exc:  # noqa: BLE001 - an open that blows up is retried too
                reason = f"{self.spec.id}: {self.spec.source}: cannot open ({_reason(exc)})"
            else:
                self.opened += 1
                log.info("%s: opened %s", self.spec.id, self.spec.source)
                try:
                    self._read(container)
                    reason = f"{self.spec.id}: {self.spec.source}: end of stream"
                except _Stopped:
                    raise
                except av.ExitError:  # FFmpeg's interrupt callback: the read timeout ran out
                    reason = (f"{self.spec.id}: {self.spec.source}: stalled (no data for "
                              f"{self.spec.read_timeout_s:g} s)")
                except Exception as exc:  # noqa: BLE001 - any read failure means reconnect
                    reason = f"{self.spec.id}: {self.spec.source}: read failed ({_reason(exc)})"
                finally:
                    try:
                        container.close()
                    except Exception:  # noqa: BLE001 - a broken stream may not close cleanly
                        pass
            if self.stop.is_set():
                return
            # Counted via seq, not _read's result: a read error can follow good frames.
            frames = self.seq - seq_before
            if frames:
                delay = self.spec.reconnect_initial_s
            self._count_error(reason)
            # Loud on the first failure after frames flowed; quiet while it keeps failing.
            level = logging.WARNING if frames or attempt == 1 else logging.DEBUG
            log.log(level, "%s; reconnecting in %.2g s", reason, delay)
            self._wait(delay)
            delay = min(delay * 2, self.spec.reconnect_max_s)

    def _count_decode_drops(self, n: int) -> None:
        """``n`` frames of the source failed to decode: their indices are skipped."""
        if n <= 0:
            return
        self.decode_errors += n
        if self.metrics is not None:
            self.metrics.frames_dropped.labels(camera=self.spec.id, reason="decode").inc(n)

    def _packets(self, container: Any, stream: Any, indexer: FrameIndexer) -> Any:
        """Demux packets (each told to ``indexer``); damaged data is skipped (the frames it
        held become index gaps), I/O failures of live sources are raised (they mean
        reconnect)."""
        failures = 0
        while failures < _MAX_CONSECUTIVE_ERRORS:
            try:
                for packet in container.demux(stream):
                    failures = 0
                    if packet.is_corrupt:
                        self._count_corrupt_packet()
                        indexer.demux_failed()  # data before it was lost
                    indexer.packet(packet)
                    yield packet
                return
            except av.EOFError:
                return
            except av.FFmpegError as exc:
                if self._live and not isinstance(exc, av.InvalidDataError):
                    raise
                # A fresh demux() resumes after the damaged data.
                indexer.demux_failed()
                failures += 1

    def _decoded(self, container: Any, stream: Any, indexer: FrameIndexer) -> Any:
        """``(true index, RGB image, pts)`` of each frame that decodes; every frame that does
        not is counted as a decode drop (its index is never given to another frame)."""
        failures = 0
        for packet in self._packets(container, stream, indexer):
            try:
                vframes = packet.decode()
            except av.FFmpegError:
                indexer.failed(packet)
                failures += 1
                if failures >= _MAX_CONSECUTIVE_ERRORS:
                    raise CaptureError(f"{self.spec.id}: {failures} packets in a row failed "
                                       "to decode") from None
                continue
            failures = 0
            for vframe in vframes:
                expected = indexer.next
                index = indexer.frame(vframe)
                self._count_decode_drops(index - expected)
                try:
                    image = vframe.to_ndarray(format="rgb24")
                except (av.FFmpegError, ValueError):
                    self._count_decode_drops(1)
                    continue
                yield index, image, vframe.time
        # Frames at the end whose packets came but never decoded.
        self._count_decode_drops(indexer.total - indexer.next)

    def _pace(self, anchor: tuple[float, float] | None,
              media_t: float | None) -> tuple[float, float] | None:
        """Wait until a file frame at media time ``media_t`` is due; returns the new anchor
        ((monotonic, media time) of the first frame)."""
        if media_t is None:
            return anchor
        if anchor is None:
            return (time.monotonic(), media_t)
        dt = anchor[0] + (media_t - anchor[1]) - time.monotonic()
        if dt > _MAX_PACE_GAP_S:
            # Timestamp jump: wait the cap and shift the clock past it.
            anchor = (anchor[0] - (dt - _MAX_PACE_GAP_S), anchor[1])
            dt = _MAX_PACE_GAP_S
        if dt > 0 and self.stop.wait(dt):
            raise _Stopped
        return anchor

    def _read(self, container: Any) -> tuple[bool, int]:
        """Decode and queue one pass over an open source.

        Each frame's ``index`` is its true index in the source (from its timestamp,
        :class:`~posed.engines.video.FrameIndexer`); frames that fail to decode are counted
        as ``frames_dropped{reason="decode"}`` and leave a gap in ``index`` (not in ``seq``).

        Returns:
            ``(ended, frames)``: whether the source ended (vs. stop/consumer gone), and how
            many frames were captured in this pass.

        Raises:
            _Stopped: Stop was set during a pacing wait (files).
        """
        stream = container.streams.video[0]
        pace = not self._live and self.spec.pace == "native"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 0.0
        anchor: tuple[float, float] | None = None
        captured = 0
        for index, image, pts in self._decoded(container, stream, FrameIndexer(container, stream)):
            if self.stop.is_set():
                return False, captured
            if pace:
                anchor = self._pace(anchor, pts if pts is not None else
                                    (index / fps if fps else None))
            frame = Frame(camera=self.spec.id, seq=self.seq, index=index,
                          pts=float(pts) if pts is not None else None,
                          capture_ns=time.time_ns(), capture_mono=time.monotonic(), image=image)
            if not self.queue.put(frame, self.stop):
                return False, captured
            self.seq += 1
            captured += 1
            self.last_frame_mono = frame.capture_mono
            if self.metrics is not None:
                self.metrics.frames_captured.labels(camera=self.spec.id).inc()
            self._tick_fps(frame.capture_mono, 1)
        return True, captured
