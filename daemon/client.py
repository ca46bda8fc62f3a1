"""Receiving the pose stream: a validating subscriber.

Only pyzmq, msgpack and numpy are needed (no pandas, no deep-learning framework), so control
programs and lab scripts import this module cheaply::

    from posed.daemon.client import Subscriber

    with Subscriber("tcp://127.0.0.1:5555") as sub:
        for msg in sub:
            print(msg.camera, msg.seq, msg.keypoints[0])

Messages are decoded by :mod:`posed.daemon.protocol` (the wire format, described in
``docs/protocol.md``); ``posed listen``'s printing and table recording live in
:mod:`posed.daemon.listening`.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterator, Sequence

import zmq

from posed.daemon.keys import CurveClient
from posed.daemon.protocol import (MAX_MESSAGE_BYTES, META_TOPIC, POSE_PREFIX, SCHEMA,
                                   PoseMessage, decode_message, decode_meta)
from posed.errors import ProtocolError, PublishError

__all__ = ["SCHEMA", "PoseMessage", "Subscriber", "decode_message", "decode_meta"]

log = logging.getLogger(__name__)

# Poll slice: how often blocking loops look at their deadline and stop flags.
SLICE_S = 0.1
# Largest frame the socket accepts (ZMQ_MAXMSGSIZE); a publisher that sends a bigger one is
# disconnected (ZeroMQ reconnects) before the frame is buffered. Twice the protocol's limit, so
# a message a little over that limit still arrives and is reported as malformed.
MAX_FRAME_BYTES = 2 * MAX_MESSAGE_BYTES


class Subscriber:
    """A SUB socket connected to a posed stream.

    Args:
        endpoint: The daemon's endpoint (``tcp://host:port`` or ``ipc://path``).
        cameras: Cameras to receive; all by default.
        curve: CURVE client keys, needed when the daemon uses CURVE.
        rcvhwm: Receive high-water mark, in messages.
        skip_malformed: Count (``self.malformed``) and skip malformed messages instead of
            raising :class:`ProtocolError`.

    Attributes:
        meta: The latest ``meta`` message (empty until one arrived).
        received: Pose messages returned so far.
        malformed: Malformed messages skipped.
        missed: Per camera, poses this subscriber did not get (``seq`` gaps it saw). The daemon's
            loss counters explain the gaps it caused; the rest were dropped for this subscriber
            alone because it fell ``hwm`` messages behind (see docs/protocol.md).

    Raises:
        PublishError: The endpoint is malformed or a CURVE key file is unusable.
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5555",
        cameras: Sequence[str] | None = None,
        *,
        curve: CurveClient | None = None,
        rcvhwm: int = 1000,
        skip_malformed: bool = False,
    ) -> None:
        self.endpoint = endpoint
        self.cameras: frozenset[str] | None = None if cameras is None else frozenset(cameras)
        self.skip_malformed = skip_malformed
        self.meta: dict = {}
        self.received = 0
        self.malformed = 0
        self.missed: dict[str, int] = {}
        self._last_seq: dict[str, int] = {}
        self._pending: collections.deque[PoseMessage] = collections.deque(maxlen=max(1, rcvhwm))
        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.SUB)
        try:
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.setsockopt(zmq.RCVHWM, rcvhwm)
            self._sock.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
            if curve is not None:
                curve.apply(self._sock)
            topics = [POSE_PREFIX] if self.cameras is None else \
                [POSE_PREFIX + c.encode() for c in sorted(self.cameras)]
            for topic in (*topics, META_TOPIC):
                self._sock.setsockopt(zmq.SUBSCRIBE, topic)
            self._sock.connect(endpoint)
        except zmq.ZMQError as exc:
            self.close()
            raise PublishError(f"{endpoint}: cannot connect ({exc})") from None
        except BaseException:
            self.close()
            raise
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)

    def _malformed(self, exc: ProtocolError) -> None:
        if not self.skip_malformed:
            raise exc
        self.malformed += 1
        if self.malformed <= 5:
            log.warning("%s: skipping malformed message: %s", self.endpoint, exc)

    def _recv_one(self, timeout: float | None) -> PoseMessage | None:
        """Receive and decode one message of any kind; None if nothing within ``timeout``."""
        ms = None if timeout is None else max(0, int(timeout * 1000))
        if not self._poller.poll(ms):
            return None
        frames = self._sock.recv_multipart(zmq.NOBLOCK)
        now = time.time_ns()
        if frames and frames[0] == META_TOPIC:
            try:
                self.meta = decode_meta(frames)
            except ProtocolError as exc:
                self._malformed(exc)
            return None
        try:
            msg = decode_message(frames, now)
        except ProtocolError as exc:
            self._malformed(exc)
            return None
        # A SUB prefix "pose.cam1" also matches "pose.cam10": filter exactly here.
        if self.cameras is not None and msg.camera not in self.cameras:
            return None
        return msg

    def recv(self, timeout: float | None = None) -> PoseMessage | None:
        """Return the next pose message.

        ``meta`` messages are consumed on the way and stored in :attr:`meta`.

        Args:
            timeout: Seconds to wait; ``None`` waits until a pose arrives.

        Returns:
            The message, or ``None`` when ``timeout`` passed first.

        Raises:
            ProtocolError: A malformed message arrived (unless ``skip_malformed``).
        """
        if self._pending:
            return self._count(self._pending.popleft())
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = SLICE_S if deadline is None else deadline - time.monotonic()
            if left < 0:
                return None
            # Wait in short slices so Ctrl-C is handled promptly on every platform.
            msg = self._recv_one(min(left, SLICE_S))
            if msg is not None:
                return self._count(msg)

    def _count(self, msg: PoseMessage) -> PoseMessage:
        self.received += 1
        last = self._last_seq.get(msg.camera)
        if last is not None and msg.seq > last + 1:
            self.missed[msg.camera] = self.missed.get(msg.camera, 0) + msg.seq - last - 1
        # A restarted daemon starts seq again at 0: that is not a gap.
        self._last_seq[msg.camera] = msg.seq
        return msg

    def wait_for_meta(self, timeout: float) -> bool:
        """Wait until a ``meta`` message has arrived, i.e. the subscription is live.

        Pose messages arriving meanwhile are kept for :meth:`recv` (up to ``rcvhwm``).

        Args:
            timeout: Seconds to wait at most.

        Returns:
            Whether :attr:`meta` is set.
        """
        deadline = time.monotonic() + timeout
        while not self.meta:
            left = deadline - time.monotonic()
            if left < 0:
                return False
            msg = self._recv_one(min(left, SLICE_S))
            if msg is not None:
                self._pending.append(msg)
        return True

    def __iter__(self) -> Iterator[PoseMessage]:
        """Yield pose messages until the subscriber is closed."""
        while not self._sock.closed:
            msg = self.recv(SLICE_S)
            if msg is not None:
                yield msg

    def close(self) -> None:
        """Close the socket and its context (idempotent)."""
        if not self._sock.closed:
            self._sock.close(linger=0)
        if not self._ctx.closed:
            self._ctx.term()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
