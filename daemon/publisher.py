"""Publishing poses on a ZeroMQ PUB socket.

The pipeline hands each :class:`~posed.daemon.types.Pose` to :meth:`Publisher.publish`, which
only appends it to a bounded in-memory queue and returns: a slow network or a subscriber that
stopped reading must never hold up capture or inference. A dedicated thread owns the socket
(ZeroMQ sockets must not be shared between threads), encodes each pose as msgpack and sends it
without blocking. Every pose that is not sent is counted with a reason:

- ``publish_queue``: the in-memory queue was full (the oldest pose is dropped), or ``stop()``
  ran out of time while flushing.
- ``hwm``: ZeroMQ's send high-water mark was reached for a subscriber.

By default ZeroMQ drops per subscriber: one that falls ``hwm`` messages behind loses its own
poses and nobody else's (its :class:`~posed.daemon.client.Subscriber` counts them in
``missed``), so a hung dashboard can never black out a closed-loop controller. With
``nodrop=True`` the socket sets ``ZMQ_XPUB_NODROP`` instead: a full subscriber makes ``send``
fail with ``EAGAIN`` and the pose is counted as an ``hwm`` drop, so every ``seq`` gap any
subscriber sees is explained by the daemon's counters; the price is that while one
subscriber's queue is full, that pose goes to no subscriber. Use it only where every
subscriber is trusted to keep up.

The wire format (:mod:`posed.daemon.protocol`) is described in ``docs/protocol.md``.
"""

from __future__ import annotations

import collections
import logging
import math
import socket as _socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import zmq

from posed.daemon.keys import CurveServer
from posed.daemon.protocol import (BASE_SCHEMA, META_TOPIC, SCHEMA, encode_meta, encode_pose,
                                   pose_topic)
from posed.daemon.types import Pose
from posed.errors import PublishError

# The wire format lives in posed.daemon.protocol; its names stay importable from here.
__all__ = ["SCHEMA", "BASE_SCHEMA", "META_TOPIC", "Publisher", "pose_topic", "encode_pose"]

log = logging.getLogger(__name__)

_DROP_REASONS = ("publish_queue", "hwm")
# How long start() waits for the socket thread to bind (CURVE start-up included).
_BIND_WAIT_S = 10.0
# Time the socket keeps at close for poses zmq already accepted, even past the flush deadline.
LAST_SEND_S = 0.25
# Largest message a subscriber may send (ZMQ_MAXMSGSIZE): subscriptions are a topic prefix,
# a few bytes; a peer that sends more is disconnected by ZeroMQ before it is buffered, so a
# stranger cannot make the daemon allocate memory (before CURVE, any peer can send).
MAX_SUBSCRIPTION_BYTES = 4096


def _binds_all_interfaces(endpoint: str) -> bool:
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0].strip("[]")
    return host in ("*", "0.0.0.0", "::", "")


def _ipc_in_use(path: str) -> bool:
    """Whether a live process listens on the Unix socket ``path``.

    libzmq silently replaces an existing ipc socket file on bind, which would steal the stream
    from a running daemon; probing first turns that into an "address in use" error.
    """
    if path.startswith("@") or not Path(path).exists():
        return False
    probe = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        return False  # stale file from a crashed run: safe to replace
    finally:
        probe.close()
    return True


class Publisher:
    """Publishes poses on a ZeroMQ PUB socket from its own thread.

    Args:
        endpoint: ``tcp://host:port`` or ``ipc://path`` to bind.
        bodyparts: Body part names, in keypoint order.
        metrics: Optional metrics object (``frames_published``, ``frames_dropped``,
            ``end_to_end_seconds``, ``errors``, each labelled as in ``posed.daemon.metrics``).
        hwm: ZeroMQ send high-water mark, in messages per subscriber.
        queue_size: Capacity of the in-memory queue in front of the socket.
        curve: CURVE server settings; ``None`` publishes in clear text.
        meta_interval_s: Period of the ``meta`` message (also sent right after binding).
        model: Description of the model, published in ``meta`` as is (msgpack-able values).
        nodrop: Set ``ZMQ_XPUB_NODROP``: a full subscriber holds the pose back from everyone
            and it is counted as an ``hwm`` drop (see the module notes). Default: per-subscriber
            drops.

    Attributes:
        published: Poses handed to ZeroMQ.
        dropped: Poses not sent, all reasons; ``dropped_by_reason`` splits them.
        errors: Poses that could not be encoded (bad shape, un-encodable ``extra``).
        unflushed: True when the shutdown budget ended with messages still queued in ZeroMQ
            for a subscriber (ZeroMQ discards them uncounted; a warning says so).
    """

    def __init__(
        self,
        endpoint: str,
        bodyparts: Sequence[str],
        *,
        metrics: Any = None,
        hwm: int = 1000,
        queue_size: int = 256,
        curve: CurveServer | None = None,
        meta_interval_s: float = 1.0,
        model: dict | None = None,
        nodrop: bool = False,
    ) -> None:
        if isinstance(bodyparts, (str, bytes)) or not all(isinstance(b, str) for b in bodyparts):
            raise PublishError(f"bodyparts must be a list of names, got {bodyparts!r}")
        if len(set(bodyparts)) != len(bodyparts) or not bodyparts:
            raise PublishError(f"bodyparts must be distinct and non-empty, got {list(bodyparts)}")
        if hwm < 1 or queue_size < 1:
            raise PublishError(f"{endpoint}: hwm and queue_size must be at least 1")
        if not (meta_interval_s > 0 and math.isfinite(meta_interval_s)):
            raise PublishError(f"{endpoint}: meta_interval_s must be a positive number")
        self.endpoint = endpoint
        self.bodyparts: tuple[str, ...] = tuple(bodyparts)
        self.metrics = metrics
        self.hwm = int(hwm)
        self.queue_size = int(queue_size)
        self.curve = curve
        self.meta_interval_s = float(meta_interval_s)
        self.model: dict = dict(model or {})
        self.nodrop = nodrop
        self.published = 0
        self.dropped = 0
        self.errors = 0
        self.unflushed = False
        self.dropped_by_reason: dict[str, int] = {r: 0 for r in _DROP_REASONS}
        self._queue: collections.deque[Pose] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._flush_deadline = math.inf
        self._thread: threading.Thread | None = None
        self._bound = threading.Event()
        self._topics: collections.Counter[bytes] = collections.Counter()  # socket thread's
        self._peers = 0  # max(_topics.values()), read from other threads
        self._bind_error: str | None = None

    # -- pipeline side -------------------------------------------------------------------

    def start(self) -> None:
        """Bind the socket in the publisher thread and start sending.

        Raises:
            PublishError: The endpoint is malformed or in use, or the CURVE keys are unusable.
        """
        if self._thread is not None:
            raise PublishError(f"{self.endpoint}: publisher already started")
        ep = self.endpoint
        if not (ep.startswith("tcp://") or ep.startswith("ipc://")) or len(ep) <= len("tcp://"):
            raise PublishError(f"{ep}: cannot bind (endpoint must be tcp://host:port or "
                               "ipc://path)")
        if ep.startswith("ipc://") and _ipc_in_use(ep[len("ipc://"):]):
            raise PublishError(f"{ep}: cannot bind (address already in use)")
        keys = self.curve.load() if self.curve is not None else None
        if keys is None and _binds_all_interfaces(ep):
            log.warning("%s: publishing on all network interfaces without CURVE; anyone on the "
                        "network can read the pose stream", ep)
        self._thread = threading.Thread(target=self._run, args=(keys,),
                                        name=f"posed-publisher[{ep}]", daemon=True)
        self._thread.start()
        if not self._bound.wait(_BIND_WAIT_S):
            self._request_stop(0.0)
            raise PublishError(f"{ep}: cannot bind (timed out after {_BIND_WAIT_S:g} s)")
        if self._bind_error is not None:
            self._thread.join(2.0)
            raise PublishError(f"{ep}: cannot bind ({self._bind_error})")
        log.info("publishing poses on %s%s", ep, " (CURVE)" if keys else "")

    def publish(self, pose: Pose) -> None:
        """Queue a pose for sending; never blocks.

        When the queue is full the oldest queued pose is dropped (reason ``publish_queue``),
        so subscribers always get the freshest poses. Poses published after :meth:`stop` are
        dropped the same way.
        """
        with self._cond:
            if self._stopping:
                dropped_pose: Pose | None = pose
            else:
                dropped_pose = None
                if len(self._queue) >= self.queue_size:
                    dropped_pose = self._queue.popleft()
                self._queue.append(pose)
                self._cond.notify()
        if dropped_pose is not None:
            self._count_drop(dropped_pose.camera, "publish_queue", 1)

    def stop(self, timeout: float = 1.0) -> None:
        """Send what is queued (for at most ``timeout`` s), close the socket, join the thread.

        Poses still queued at the deadline are counted as ``publish_queue`` drops.
        """
        self._request_stop(timeout)
        thread = self._thread
        if thread is None or not thread.is_alive():
            # Never started (or failed to bind): nothing will send what is queued.
            with self._cond:
                leftover = list(self._queue)
                self._queue.clear()
            self._drop_batch(leftover)
        if thread is not None:
            # The thread never blocks on the network, so this wait is bounded by the flush
            # deadline plus closing the socket and the CURVE authenticator.
            thread.join(timeout + 5.0)
            if thread.is_alive():
                log.warning("%s: publisher thread did not stop", self.endpoint)

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def queued(self) -> int:
        """Poses waiting in the in-memory queue."""
        return len(self._queue)

    # -- internals -----------------------------------------------------------------------

    def _request_stop(self, timeout: float) -> None:
        with self._cond:
            if not self._stopping:
                self._stopping = True
                self._flush_deadline = time.monotonic() + max(0.0, timeout)
            self._cond.notify_all()

    def _count_drop(self, camera: str, reason: str, n: int) -> None:
        with self._cond:
            self.dropped += n
            self.dropped_by_reason[reason] += n
        if self.metrics is not None:
            self.metrics.frames_dropped.labels(camera=camera, reason=reason).inc(n)

    def _count_error(self, pose: Pose, exc: Exception) -> None:
        self.errors += 1
        # Log the first few in full; after that a flood would only bury the cause.
        if self.errors <= 5:
            log.error("%s: cannot publish pose camera=%s seq=%s: %s", self.endpoint,
                      pose.camera, pose.seq, exc)
        if self.metrics is not None:
            self.metrics.errors.labels(stage="publish").inc()

    def _open(self, ctx: zmq.Context, keys: tuple[bytes, bytes] | None) -> tuple[zmq.Socket, Any]:
        auth = None
        if keys is not None:
            from zmq.auth.thread import ThreadAuthenticator

            auth = ThreadAuthenticator(ctx, log=logging.getLogger(f"{__name__}.auth"))
            auth.start()
            folder = self.curve.allowed_clients_dir if self.curve else None
            auth.configure_curve(domain="*", location=str(folder) if folder is not None
                                 else zmq.auth.CURVE_ALLOW_ANY)
        # XPUB rather than PUB: the same wire protocol for subscribers, but it tells us when
        # subscriptions arrive, so the service can wait for its consumers before capturing.
        sock = ctx.socket(zmq.XPUB)
        try:
            # Every subscribe and unsubscribe of every peer (a disconnect unsubscribes all of
            # its topics), so subscribers() can count peers per topic.
            sock.setsockopt(zmq.XPUB_VERBOSER, 1)
            sock.setsockopt(zmq.MAXMSGSIZE, MAX_SUBSCRIPTION_BYTES)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            if self.nodrop:
                sock.setsockopt(zmq.XPUB_NODROP, 1)
            if keys is not None:
                sock.curve_publickey, sock.curve_secretkey = keys
                sock.curve_server = True
            sock.bind(self.endpoint)
        except BaseException:
            sock.close(linger=0)
            if auth is not None:
                auth.stop()
            raise
        return sock, auth

    def _run(self, keys: tuple[bytes, bytes] | None) -> None:
        ctx = zmq.Context()
        linger = 0
        try:
            try:
                sock, auth = self._open(ctx, keys)
            except Exception as exc:  # noqa: BLE001 - any failure must reach start()
                self._bind_error = " ".join(str(exc).split()) or type(exc).__name__
                return
            finally:
                self._bound.set()
            try:
                self._loop(sock)
            finally:
                # Poses zmq accepted may still sit in its pipes: give them what is left of the
                # flush budget (at least LAST_SEND_S) to reach the subscribers' sockets;
                # linger 0 would drop them silently after they were counted as published.
                linger = self._linger_ms()
                sock.close(linger=linger)
                if auth is not None:
                    auth.stop()
        finally:
            t0 = time.monotonic()
            ctx.term()  # returns as soon as the pipes are empty, or when the linger ends
            self._warn_if_unflushed(linger, time.monotonic() - t0)

    def _warn_if_unflushed(self, linger_ms: int, waited_s: float) -> None:
        # ZeroMQ cannot say how many messages it discards at the end of the linger, but a
        # term() that used the whole linger means some were still queued for a subscriber.
        if linger_ms > 0 and waited_s >= 0.9 * linger_ms / 1000:
            self.unflushed = True
            log.warning("%s: the shutdown budget ended with poses still queued in ZeroMQ for "
                        "a slow subscriber; the last poses published may not have reached it "
                        "(its seq gap is not in the drop counters)", self.endpoint)

    def _linger_ms(self) -> int:
        if not self._stopping:
            return 0  # an error ends the loop: nothing to wait for
        left = self._flush_deadline - time.monotonic()
        return int(1000 * max(left, LAST_SEND_S))

    def _send_meta(self, sock: zmq.Socket, payload: bytes) -> None:
        try:
            sock.send_multipart([META_TOPIC, payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            pass  # the next one follows within meta_interval_s; no pose was lost

    def subscribers(self) -> int:
        """Subscribers connected now (distinct peers, not subscription messages).

        A peer subscribes once per topic prefix (a :class:`~posed.daemon.client.Subscriber`:
        its cameras, then ``meta``), so its subscriptions cannot simply be counted. Each peer
        that receives ``meta`` counts once: a Subscriber (``meta``) and a plain ZeroMQ client
        taking everything (the empty prefix). Clients that take only pose topics are counted
        as the largest group sharing one topic.
        """
        return self._peers

    def wait_for_subscribers(self, n: int, timeout: float) -> bool:
        """Block until at least ``n`` subscribers are connected; False on timeout."""
        deadline = time.monotonic() + timeout
        while self.subscribers() < n:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def _read_subscriptions(self, sock: zmq.Socket) -> None:
        while True:
            try:
                msg = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            topic = bytes(msg[1:])
            if msg[:1] == b"\x01":
                self._topics[topic] += 1
            elif msg[:1] == b"\x00" and self._topics[topic] > 0:
                self._topics[topic] -= 1
                if not self._topics[topic]:
                    del self._topics[topic]
            meta = sum(n for topic, n in self._topics.items() if META_TOPIC.startswith(topic))
            self._peers = max(meta, max(self._topics.values(), default=0))

    def _loop(self, sock: zmq.Socket) -> None:
        meta = encode_meta(self.bodyparts, self.model)
        self._send_meta(sock, meta)
        next_meta = time.monotonic() + self.meta_interval_s
        while True:
            self._read_subscriptions(sock)
            with self._cond:
                if not self._queue and not self._stopping:
                    # Wake at least every 50 ms to notice new subscriptions.
                    self._cond.wait(min(0.05, max(0.0, next_meta - time.monotonic())))
                batch = list(self._queue)
                self._queue.clear()
            for i, pose in enumerate(batch):
                if self._stopping and time.monotonic() > self._flush_deadline:
                    self._drop_batch(batch[i:])
                    break
                self._send_pose(sock, pose)
            now = time.monotonic()
            if now >= next_meta:
                self._send_meta(sock, meta)
                next_meta = now + self.meta_interval_s
            if self._stopping:
                with self._cond:
                    leftover = list(self._queue)
                    self._queue.clear()
                if not leftover:
                    return
                if time.monotonic() > self._flush_deadline:
                    self._drop_batch(leftover)
                    return
                with self._cond:
                    self._queue.extendleft(reversed(leftover))

    def _drop_batch(self, poses: list[Pose]) -> None:
        per_camera = collections.Counter(p.camera for p in poses)
        for camera, n in per_camera.items():
            self._count_drop(camera, "publish_queue", n)

    def _send_pose(self, sock: zmq.Socket, pose: Pose) -> None:
        try:
            payload = encode_pose(pose, self.bodyparts)
        except (ValueError, TypeError, OverflowError) as exc:
            self._count_error(pose, exc)
            return
        try:
            sock.send_multipart([pose_topic(pose.camera), payload], flags=zmq.NOBLOCK)
        except zmq.Again:
            self._count_drop(pose.camera, "hwm", 1)
            return
        except zmq.ZMQError as exc:
            self._count_error(pose, exc)
            return
        self.published += 1
        if self.metrics is not None:
            self.metrics.frames_published.labels(camera=pose.camera).inc()
            self.metrics.end_to_end_seconds.labels(camera=pose.camera).observe(
                max(0.0, time.monotonic() - pose.capture_mono))
