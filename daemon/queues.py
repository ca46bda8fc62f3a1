"""Bounded per-camera frame queues with a drop policy, and the signal the batcher waits on.

Each camera owns one :class:`FrameQueue`. ``lossless`` (files) blocks the camera thread
while the queue is full, so every frame is inferred; ``latest`` (live sources) drops the
*oldest* queued frame to make room, so a slow model never builds a backlog and the freshest
frame is always the next one inferred. Every drop is counted.
"""

from __future__ import annotations

import collections
import threading
from typing import Callable

from posed.daemon.types import Frame

POLICIES = ("lossless", "latest")


class FrameSignal:
    """A condition shared by all cameras' queues: "some frame is waiting"."""

    def __init__(self) -> None:
        self.cond = threading.Condition()

    def notify(self) -> None:
        with self.cond:
            self.cond.notify_all()

    def wait(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait(timeout)


class FrameQueue:
    """A bounded FIFO of one camera's frames.

    Args:
        camera: Camera id (for counters).
        maxsize: Capacity.
        policy: ``lossless`` or ``latest``.
        signal: Shared signal notified on every put.
        on_drop: Called with the number of frames dropped by the ``latest`` policy.
    """

    def __init__(self, camera: str, maxsize: int, policy: str, signal: FrameSignal,
                 on_drop: Callable[[int], None] | None = None) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy {policy!r} is not one of {', '.join(POLICIES)}")
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.camera = camera
        self.maxsize = maxsize
        self.policy = policy
        self.signal = signal
        self.on_drop = on_drop
        self.dropped = 0
        self._items: collections.deque[Frame] = collections.deque()
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)

    def put(self, frame: Frame, stop: threading.Event | None = None) -> bool:
        """Queue a frame; returns False if ``stop`` was set while waiting for space (lossless)."""
        dropped = 0
        with self._space:
            if self.policy == "latest":
                while len(self._items) >= self.maxsize:
                    self._items.popleft()
                    dropped += 1
            else:
                while len(self._items) >= self.maxsize:
                    if stop is not None and stop.is_set():
                        return False
                    self._space.wait(0.05)
            self._items.append(frame)
        if dropped:
            self.dropped += dropped
            if self.on_drop is not None:
                self.on_drop(dropped)
        self.signal.notify()
        return True

    def get_nowait(self) -> Frame | None:
        """The oldest frame, or None when empty."""
        with self._space:
            if not self._items:
                return None
            frame = self._items.popleft()
            self._space.notify()
            return frame

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
