"""Batching inference: frames from every camera in, poses out.

One thread collects frames round-robin across the cameras' queues into batches of up to
``max_batch``, waiting at most ``max_delay_ms`` after the first frame for more, so one
camera keeps batch-1 latency and many cameras fill batches. Frames are cropped/resized per
camera (with dynamic cropping, :mod:`posed.engines.dynamic`, on a window around the pose
of the camera's latest inferred frame), grouped by size, run through the engine's common
runner, and keypoints are mapped back to full-frame pixels. A failing batch is logged and counted and the thread goes on.

With a multi-animal runner (:class:`~posed.engines.base.MultiAnimalRunner`) the stage
assembles every frame's animals and runs one
:class:`~posed.engines.tracking.OnlineTracker` per camera, frames in capture order, so each
pose carries every individual's keypoints under a stable identity
(:class:`~posed.daemon.types.Animals`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from posed.daemon.queues import FrameQueue, FrameSignal
from posed.daemon.stage import StageThread
from posed.daemon.types import Animals, Frame, Pose
from posed.engines.base import PoseRunner
from posed.engines.dynamic import DynamicCropper, DynamicSettings

log = logging.getLogger(__name__)

MAX_RESIZE = 16384  # pixels per side; more is a typo, not a model input


@dataclass(frozen=True)
class Preprocess:
    """Per-camera region and size handed to the model.

    Attributes:
        crop: (x, y, width, height) of the region, or None for the whole frame.
        resize: (width, height) the region is resized to, or None.
    """

    crop: tuple[int, int, int, int] | None = None
    resize: tuple[int, int] | None = None
    dynamic: DynamicSettings | None = None

    def region(self, width: int, height: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) inferred when no dynamic window applies."""
        return self.crop if self.crop is not None else (0, 0, width, height)

    def apply(self, image: np.ndarray, window: tuple[int, int, int, int] | None = None
              ) -> tuple[np.ndarray, tuple[float, float, float, float], tuple[int, int, int, int]]:
        """The model's input, the (offset_x, offset_y, scale_x, scale_y) that maps its pixels
        back to the frame's, and the (x, y, width, height) of the frame it shows.

        ``window`` (a dynamic crop inside :meth:`region`) replaces the region; with ``resize``
        it is scaled by the factor that takes the whole region to ``resize``.
        """
        rx, ry, rw, rh = self.region(image.shape[1], image.shape[0])
        x, y, w, h = window if window is not None else (rx, ry, rw, rh)
        if (x, y, w, h) != (0, 0, image.shape[1], image.shape[0]):
            image = image[y:y + h, x:x + w]
        sx = sy = 1.0
        if self.resize is not None and (rw, rh) != tuple(self.resize):
            tw = max(1, round(w * self.resize[0] / rw))
            th = max(1, round(h * self.resize[1] / rh))
            sx, sy = w / tw, h / th
            image = cv2.resize(image, (tw, th), interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image), (float(x), float(y), sx, sy), (x, y, w, h)

    def check(self, width: int, height: int) -> str | None:
        """Why this crop/resize cannot apply to ``width``×``height`` frames, or None if it can.

        A crop must lie inside the frame (numpy would silently clip it, or wrap a negative
        offset around and publish keypoints at negative coordinates).
        """
        if self.crop is not None:
            x, y, w, h = self.crop
            if x < 0 or y < 0 or w < 1 or h < 1 or x + w > width or y + h > height:
                return (f"crop {list(self.crop)} (x, y, width, height) does not fit its "
                        f"{width}x{height} frames")
        if self.resize is not None and not all(1 <= v <= MAX_RESIZE for v in self.resize):
            return f"resize {list(self.resize)}: width and height must be in 1..{MAX_RESIZE}"
        return None


def _to_frame(kp: np.ndarray, ox: float, oy: float, sx: float, sy: float) -> np.ndarray:
    """Keypoints (…×3) from model-input pixels to full-frame pixels; a non-finite keypoint
    becomes NaN, NaN, 0 (a model that returns NaN still publishes the frame)."""
    kp = np.array(kp, dtype=np.float32)
    kp[..., 0] = kp[..., 0] * sx + ox
    kp[..., 1] = kp[..., 1] * sy + oy
    bad = ~np.isfinite(kp).all(axis=-1)
    kp[bad] = (np.nan, np.nan, 0.0)
    return kp


IDENTITY = Preprocess()  # cameras without crop, resize or dynamic cropping


class InferenceStage(StageThread):
    """The thread that batches frames and runs the model.

    Args:
        runner: Any engine's runner (uint8 N×H×W×3 in, N×K×3 out).
        queues: One queue per camera.
        signal: Notified whenever a frame is queued.
        emit: Called with each :class:`Pose` (in batch order).
        max_batch: Largest batch.
        max_delay_ms: Longest wait for a fuller batch after the first frame.
        preprocess: Per-camera crop/resize.
        metrics: Optional :class:`~posed.daemon.metrics.Metrics`.
        stop: Set to end the thread; queued frames are still inferred when ``drain``, as long
            as the next batch is expected to end before :attr:`finish_by`.
        on_reject: Called once with (camera, reason) when a camera's crop/resize does not fit
            its frames; the camera's frames are then dropped (reason ``preprocess``).

    Attributes:
        finish_by: ``time.monotonic()`` by which a stopping stage should be done; no batch
            expected to take longer than the time left is started (the last batch's duration
            is the estimate).
        in_flight: The frames of the batch being inferred (empty between batches).
        rejected: Camera → why its crop/resize was refused.
    """

    def __init__(self, runner: PoseRunner, queues: Sequence[FrameQueue], signal: FrameSignal,
                 emit: Callable[[Pose], None], *, max_batch: int = 4, max_delay_ms: float = 2.0,
                 preprocess: dict[str, Preprocess] | None = None, metrics: Any = None,
                 stop: threading.Event | None = None,
                 on_reject: Callable[[str, str], None] | None = None) -> None:
        # Not a daemon thread: it runs the model, and the interpreter must never tear down
        # a thread inside native code (C++ frames abort the process: exit 134).
        super().__init__("inference", stop or threading.Event(), metrics, daemon=False)
        self.runner = runner
        self.queues = list(queues)
        self.signal = signal
        self.emit = emit
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.preprocess = preprocess or {}
        self.drain = True
        self.finish_by: float | None = None
        self.last_batch_s = 0.0
        self.in_flight: list[Frame] = []
        self.on_reject = on_reject
        self.rejected: dict[str, str] = {}
        self._sizes: dict[str, tuple[int, int]] = {}  # camera -> last frame size checked
        self.heartbeat = time.monotonic()
        self.batches = 0
        self.inferred = 0
        self.failed = 0
        self._next = 0
        self.multianimal = bool(getattr(runner, "multianimal", False))
        self._trackers: dict[str, Any] = {}  # camera -> OnlineTracker (multi-animal models)
        self._croppers: dict[str, DynamicCropper] = {}  # camera -> dynamic cropping state

    def pending(self) -> int:
        """Frames queued across all cameras."""
        return sum(len(q) for q in self.queues)

    def _take(self, limit: int) -> list[Frame]:
        """Up to ``limit`` frames, one camera at a time in rotating order (fairness)."""
        taken: list[Frame] = []
        n = len(self.queues)
        progress = True
        while len(taken) < limit and progress:
            progress = False
            for i in range(n):
                q = self.queues[(self._next + i) % n]
                frame = q.get_nowait()
                if frame is not None:
                    taken.append(frame)
                    progress = True
                    if len(taken) == limit:
                        break
            self._next = (self._next + 1) % max(n, 1)
        return taken

    def _collect(self) -> list[Frame]:
        batch = self._take(self.max_batch)
        if not batch:
            self.signal.wait(0.05)
            batch = self._take(self.max_batch)
            if not batch:
                return []
        deadline = time.monotonic() + self.max_delay
        while len(batch) < self.max_batch and not self.stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            more = self._take(self.max_batch - len(batch))
            if more:
                batch.extend(more)
            else:
                self.signal.wait(left)
        return batch

    def _done(self) -> bool:
        """Whether a stopping stage ends now rather than start another batch."""
        if not self.stop.is_set():
            return False
        if not self.drain or self.pending() == 0:
            return True
        return self.finish_by is not None and time.monotonic() + self.last_batch_s > self.finish_by

    def _run(self) -> None:
        while True:
            self.heartbeat = time.monotonic()
            if self._done():
                break
            batch = self._collect()
            if batch:
                t0 = time.monotonic()
                self.in_flight = batch
                self.infer(batch)
                self.in_flight = []
                self.last_batch_s = time.monotonic() - t0

    def _accept(self, frame: Frame) -> bool:
        """False (frame dropped and counted) for frames of a camera whose crop/resize does not
        fit; the first such frame refuses the camera, in one log line."""
        if frame.camera not in self.rejected:
            height, width = frame.image.shape[:2]
            if self._sizes.get(frame.camera) == (width, height):
                return True
            pre = self.preprocess.get(frame.camera, IDENTITY)
            why = pre.check(width, height)
            if why is None:
                self._sizes[frame.camera] = (width, height)
                if pre.dynamic is not None and not self.multianimal:  # a new size: start over
                    self._croppers[frame.camera] = DynamicCropper(pre.dynamic,
                                                                  pre.region(width, height))
                return True
            self.rejected[frame.camera] = why
            log.error("camera %s: %s; camera stopped", frame.camera, why)
            if self.on_reject is not None:
                self.on_reject(frame.camera, why)
        if self.metrics is not None:
            self.metrics.frames_dropped.labels(camera=frame.camera, reason="preprocess").inc()
        return False

    def infer(self, frames: list[Frame]) -> None:
        """Run one batch; every frame yields a pose or is counted as dropped."""
        groups: dict[tuple[int, ...], list[tuple[Frame, np.ndarray, tuple, tuple]]] = {}
        for frame in frames:
            try:
                if not self._accept(frame):
                    continue
                cropper = self._croppers.get(frame.camera)
                window = cropper.window() if cropper is not None else None
                image, mapping, region = self.preprocess.get(frame.camera, IDENTITY).apply(
                    frame.image, window)
            except Exception as exc:  # a malformed frame must not take the batch down
                self._fail([frame], exc)
                continue
            full = region == (0, 0, frame.image.shape[1], frame.image.shape[0])
            groups.setdefault(image.shape, []).append((frame, image, mapping,
                                                       None if full else region))
        for items in groups.values():
            t0 = time.perf_counter()
            try:
                batch = np.stack([img for _, img, _, _ in items])
                if self.multianimal:
                    # top-down: each camera is a stream (the detector's boxes are reused per
                    # camera with detect_every)
                    found = (self.runner.predict_animals(
                        batch, streams=[f.camera for f, _, _, _ in items])
                        if getattr(self.runner, "top_down", False)
                        else self.runner.predict_animals(batch))
                    poses = np.concatenate([found.animals[:, 0], found.unique], axis=1)
                else:
                    poses = self.runner.predict(batch)
                if len(poses) != len(items):  # zip() below would lose frames silently
                    raise ValueError(f"the model returned {len(poses)} poses for "
                                     f"{len(items)} frames")
            except Exception as exc:  # any engine error: count it, keep serving
                self._fail([f for f, _, _, _ in items], exc)
                continue
            elapsed = time.perf_counter() - t0
            infer_ns = time.time_ns()
            self.batches += 1
            if self.metrics is not None:
                self.metrics.inference_seconds.observe(elapsed)
                self.metrics.batch_size.observe(len(items))
            for n, ((frame, _, (ox, oy, sx, sy), region), kp) in enumerate(zip(items, poses)):
                kp = _to_frame(kp, ox, oy, sx, sy)
                if frame.camera in self._croppers:
                    self._croppers[frame.camera].update(kp)
                animals = None
                if self.multianimal:
                    animals = self._identify(frame.camera,
                                             _to_frame(found.found(n), ox, oy, sx, sy))
                    unique = _to_frame(found.unique[n], ox, oy, sx, sy)
                    kp = np.concatenate([animals.keypoints[0], unique], axis=0)
                self.inferred += 1
                if self.metrics is not None:
                    self.metrics.frames_inferred.labels(camera=frame.camera).inc()
                self.emit(Pose(camera=frame.camera, seq=frame.seq, index=frame.index, pts=frame.pts,
                               capture_ns=frame.capture_ns, capture_mono=frame.capture_mono,
                               infer_ns=infer_ns, keypoints=kp, batch_size=len(items),
                               animals=animals, crop=region))

    def _identify(self, camera: str, found: np.ndarray) -> Animals:
        """Identities for one frame's assembled animals (A×K×3, full-frame pixels).

        Groups of one batch are inferred one after another and the frames of one camera
        are taken from its queue in capture order, so each camera's tracker sees its frames
        in order.
        """
        from posed.engines.tracking import OnlineTracker

        runner = self.runner
        tracker = self._trackers.get(camera)
        if tracker is None:
            tracker = self._trackers[camera] = OnlineTracker(len(runner.individuals))
        keypoints = np.full((len(runner.individuals), len(runner.animal_bodyparts), 3), np.nan,
                            dtype=np.float32)
        keypoints[..., 2] = 0.0
        for ident, pose in tracker.update(found):
            keypoints[ident] = pose
        return Animals(tuple(runner.individuals), tuple(runner.animal_bodyparts), keypoints)

    def _fail(self, frames: list[Frame], exc: BaseException) -> None:
        self.failed += len(frames)
        for f in frames:  # the next frame of a failed camera is inferred whole
            if f.camera in self._croppers:
                self._croppers[f.camera].reset()
        log.error("inference failed for %d frame(s) (%s): %s", len(frames),
                  ", ".join(sorted({f.camera for f in frames})), exc)
        if self.metrics is not None:
            self.metrics.errors.labels(stage="inference").inc()
            for f in frames:
                self.metrics.frames_dropped.labels(camera=f.camera, reason="inference").inc()
