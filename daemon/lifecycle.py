"""The service's life after start: fatal conditions, camera health, and the stop sequence.

A :class:`Lifecycle` is mixed into :class:`~posed.daemon.service.Service`, whose attributes
it uses. Fatal (``run`` returns 1, after one log line, ``posed_ready`` and ``posed_healthy``
0, and sd_notify ``STATUS``/``ERRNO``): a stage thread that died, or every camera failed for
good. Stopping waits for queued frames and the batch in progress for at most
``shutdown_timeout_s``; every frame captured is then either posed or counted as dropped.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from typing import Any

log = logging.getLogger("posed.daemon.service")

# Reasons a captured frame never became a pose (the publisher's hwm/publish_queue drops
# happen after a pose is recorded, so they are not among them).
LOST_REASONS = ("policy", "inference", "preprocess", "shutdown")
# Of shutdown_timeout_s, what is kept for the post stage, the publisher and the recorder.
_RESERVE_S = 0.3
# Capture threads get this long to notice the stop (a read inside FFmpeg can take longer;
# they are daemon threads and hold no frame that was counted as captured).
_CAPTURE_JOIN_S = 0.9
_MAX_LINE = 200


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_LINE else text[:_MAX_LINE - 3] + "..."


class Lifecycle:
    """Mixin of :class:`~posed.daemon.service.Service` (uses its stages, metrics, notifier)."""

    cfg: Any
    cameras: list[Any]
    inference: Any
    metrics: Any
    notifier: Any
    publisher: Any
    recorder: Any
    runner: Any
    published: int
    _post_thread: Any
    _queues: list[Any]
    _inference_stop: threading.Event
    _post_done: threading.Event

    # ------------------------------------------------------------------ while running

    def _fatal_condition(self) -> tuple[str, int] | None:
        """(one line, errno) when serving cannot go on, else None."""
        stages = [s for s in (self.inference, self._post_thread) if s is not None]
        for stage in [*stages, *self.cameras]:
            if stage.crashed:
                return f"{stage.name} thread died ({stage.crashed})", errno.ENOTRECOVERABLE
        for stage in stages:
            if not stage.is_alive():
                return f"{stage.name} thread ended unexpectedly", errno.ENOTRECOVERABLE
        for camera in self.cameras:
            # A file camera that fails is finished (and failed); any other end is a death.
            if not (camera.is_alive() or camera.finished.is_set() or camera.stop.is_set()):
                return _clip(f"{camera.name} thread ended unexpectedly ({camera.error})"), \
                    errno.ENOTRECOVERABLE
        failed = [c.failed for c in self.cameras]
        if failed and all(failed):
            return _clip("every camera has failed: " + "; ".join(failed)), errno.ENODEV
        return None

    def _fail(self, message: str, code: int) -> int:
        """Log the fatal condition once, mark the service unhealthy, tell systemd; exit 1."""
        log.error("%s", message)
        self.fatal = message
        self.metrics.ready.set(0)
        self.metrics.healthy.set(0)
        self.notifier.failed(message, code)
        return 1

    def _down_cameras(self) -> list[str]:
        """Update ``posed_camera_up``; the ids of cameras that are not delivering frames
        (failed, starting or reconnecting; a file that ended normally is not down)."""
        down = []
        for camera in self.cameras:
            up = camera.is_up()
            self.metrics.camera_up.labels(camera=camera.spec.id).set(1 if up else 0)
            if not up and (camera.failed or not camera.finished.is_set()):
                down.append(camera.spec.id)
        return down

    def _reject_camera(self, camera_id: str, why: str) -> None:
        """The inference stage refused a camera's frames: stop that camera for good."""
        for camera in self.cameras:
            if camera.spec.id == camera_id:
                camera.fail(f"{camera_id}: {why}")
                camera.stop.set()

    # ------------------------------------------------------------------ stopping

    def _stop_stages(self) -> list[str]:
        """Stop capture, let inference finish within ``shutdown_timeout_s``, then the post
        stage; count every frame left behind. Returns the stages still running (stuck)."""
        timeout = self.cfg.shutdown_timeout_s
        t0 = time.monotonic()
        deadline = t0 + timeout
        for camera in self.cameras:
            camera.stop.set()
        for camera in self.cameras:
            camera.join(max(t0 + min(_CAPTURE_JOIN_S, timeout / 3) - time.monotonic(), 0.0))
        stuck: list[str] = []
        inference = self.inference
        in_flight: list[Any] = []
        if inference is not None:
            inference.finish_by = deadline - _RESERVE_S
            self._inference_stop.set()
            if inference.is_alive():
                inference.join(max(deadline - _RESERVE_S - time.monotonic(), 0.0))
            if inference.is_alive():
                inference.drain = False
                inference.join(max(deadline - time.monotonic(), 0.0))
            if inference.is_alive():
                stuck.append(inference.name)
                in_flight = list(inference.in_flight)
        self._count_left_behind(in_flight, timeout)
        self._post_done.set()
        post = self._post_thread
        if post is not None and post.is_alive():
            post.join(max(deadline - time.monotonic(), 0.5))
            if post.is_alive():
                stuck.append(post.name)
                log.error("shutdown: the post stage (processors, recorder) did not end")
        return stuck

    def _release_stages(self) -> None:
        """Tell every stage to end without waiting (idempotent)."""
        for camera in self.cameras:
            camera.stop.set()
        if self.inference is not None:
            self.inference.drain = False
        self._inference_stop.set()
        self._post_done.set()

    def _count_left_behind(self, in_flight: list[Any], timeout: float) -> None:
        """Count the frames of an abandoned batch and those still queued as dropped
        (reason ``shutdown``), in one log line."""
        queued = []
        for q in self._queues:
            while (frame := q.get_nowait()) is not None:
                queued.append(frame)
        for frame in [*in_flight, *queued]:
            self.metrics.frames_dropped.labels(camera=frame.camera, reason="shutdown").inc()
        if in_flight:
            log.error("shutdown: a batch was still running after shutdown_timeout_s (%g s); "
                      "%d frame(s) lost (%d in that batch, %d queued)", timeout,
                      len(in_flight) + len(queued), len(in_flight), len(queued))
        elif queued:
            log.warning("shutdown: %d queued frame(s) not inferred within shutdown_timeout_s "
                        "(%g s), counted as dropped", len(queued), timeout)

    def _lost(self) -> dict[str, int]:
        """Frames lost per reason, all cameras: the captured ones dropped (LOST_REASONS), then
        ``decode``: frames that failed to decode were never captured (no seq), but are lost
        data too."""
        return {reason: int(sum(
            self.metrics.registry.get_sample_value(
                "posed_frames_dropped_total", {"camera": c.spec.id, "reason": reason}) or 0
            for c in self.cameras)) for reason in (*LOST_REASONS, "decode")}

    def _summary(self, lost: dict[str, int] | None = None) -> str:
        """``stopped: N frame(s) captured, P posed, D dropped (reason n, ...)``, then what was
        not accounted for and what failed to decode, when any."""
        lost = self._lost() if lost is None else lost
        undecoded = lost.pop("decode", 0)
        captured = sum(c.seq for c in self.cameras)
        dropped = sum(lost.values())
        detail = ", ".join(f"{r} {n}" for r, n in lost.items() if n)
        line = (f"stopped: {captured} frame(s) captured, {self.published} posed, "
                f"{dropped} dropped{f' ({detail})' if detail else ''}")
        if captured != self.published + dropped:
            line += f"; {captured - self.published - dropped} not accounted for"
        if undecoded:
            line += f"; {undecoded} frame(s) failed to decode"
        return line
