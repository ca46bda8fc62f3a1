"""Receiving the pose stream: message decoding, a subscriber and the ``posed listen`` loop.

Only pyzmq, msgpack and numpy are needed, so lab scripts can import this module without any
deep-learning framework::

    from posed.daemon.client import Subscriber

    with Subscriber("tcp://127.0.0.1:5555") as sub:
        for msg in sub:
            print(msg.camera, msg.seq, msg.keypoints[0])

The wire format is described in ``docs/protocol.md``.
"""

from __future__ import annotations

import collections
import logging
import math
import re
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import msgpack
import numpy as np
import pandas as pd
import zmq

from posed.daemon.keys import CurveClient
from posed.daemon.publisher import SCHEMA
from posed.errors import ProtocolError, PublishError

__all__ = ["SCHEMA", "PoseMessage", "Subscriber", "decode_message", "decode_meta", "listen"]

log = logging.getLogger(__name__)

_META_TOPIC = b"meta"
_POSE_PREFIX = b"pose."
# Bounds that keep a hostile or corrupt message from making msgpack allocate gigabytes.
_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_INT_FIELDS = ("seq", "frame", "capture_ns", "infer_ns", "publish_ns")
# Poll slice: how often blocking loops look at their deadline and stop flags.
_SLICE_S = 0.1


@dataclass(frozen=True, eq=False)
class PoseMessage:
    """One decoded pose message.

    Attributes:
        camera: Camera id.
        seq: +1 per frame captured on this camera; gaps are frames the daemon dropped.
        frame: Frame index in the source.
        pts: Source presentation time in seconds, if the source has one.
        capture_ns, infer_ns, publish_ns: ``time.time_ns()`` at capture, end of inference and
            just before sending, on the daemon's host.
        receive_ns: ``time.time_ns()`` when this client decoded the message.
        bodyparts: Body part names, one per keypoint row.
        keypoints: Read-only float32 K×3 array (x, y, likelihood); NaN = not found.
        batch_size: Size of the inference batch the frame was in.
        extra: Values added by the daemon's processors.
        individuals: Multi-animal streams (schema 2): the I identity names.
        animal_bodyparts: Multi-animal streams: the K' body parts of each individual.
        animals: Multi-animal streams: read-only float32 I×K'×3 keypoints by identity
            (identity i is ``individuals[i]``; all NaN when it is not seen in this frame);
            None for single-animal streams.
    """

    camera: str
    seq: int
    frame: int
    pts: float | None
    capture_ns: int
    infer_ns: int
    publish_ns: int
    receive_ns: int
    bodyparts: tuple[str, ...]
    keypoints: np.ndarray
    batch_size: int = 1
    extra: dict = field(default_factory=dict)
    individuals: tuple[str, ...] = ()
    animal_bodyparts: tuple[str, ...] = ()
    animals: np.ndarray | None = None

    @property
    def latency_s(self) -> float:
        """Capture to receive, in seconds (meaningful when both hosts' clocks agree)."""
        return (self.receive_ns - self.capture_ns) / 1e9


def _is_int(value: Any) -> bool:
    # bool is an int subclass but never a valid count or timestamp.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unpack_map(payload: Any, what: str) -> dict:
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"{what}: payload frame is {type(payload).__name__}, not bytes")
    if len(payload) > _MAX_MESSAGE_BYTES:
        raise ProtocolError(f"{what}: payload of {len(payload)} bytes is too large")
    try:
        # unpackb bounds every container and string by the payload's length, so the size
        # check above also bounds memory.
        obj = msgpack.unpackb(bytes(payload), raw=False, strict_map_key=True)
    except Exception as exc:  # noqa: BLE001 - msgpack raises many unrelated types on bad input
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise ProtocolError(f"{what}: payload is not valid msgpack ({reason[:120]})") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"{what}: payload is a msgpack {type(obj).__name__}, not a map")
    return obj


def _check_schema(obj: dict, what: str) -> int:
    if "schema" not in obj:
        raise ProtocolError(f"{what}: missing field 'schema'")
    schema = obj["schema"]
    if not _is_int(schema):
        raise ProtocolError(f"{what}: field 'schema' must be an integer, got "
                            f"{type(schema).__name__}")
    if schema > SCHEMA:
        raise ProtocolError(f"schema {schema} is newer than this client ({SCHEMA}); "
                            "upgrade posed")
    if schema < 1:
        raise ProtocolError(f"{what}: schema {schema} is not a valid version")
    return schema


def _check_bodyparts(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(b, str) for b in value):
        raise ProtocolError(f"{what}: field 'bodyparts' must be a list of strings")
    return tuple(value)


def _keypoints(value: Any, k: int, what: str, name: str = "keypoints") -> np.ndarray:
    if not isinstance(value, list):
        raise ProtocolError(f"{what}: field '{name}' must be a list, got "
                            f"{type(value).__name__}")
    if value and isinstance(value[0], list):
        # List of K triples.
        if not all(isinstance(t, list) and len(t) == 3 for t in value):
            raise ProtocolError(f"{what}: field '{name}' must be a flat list or a list of "
                                "[x, y, likelihood] triples")
        flat = [v for t in value for v in t]
    else:
        flat = value
    if len(flat) != 3 * k:
        where = "" if name == "keypoints" else f"field '{name}': "
        raise ProtocolError(f"{what}: {where}{len(flat)} keypoint values for {k} bodyparts "
                            f"(expected {3 * k})")
    if not all(_is_number(v) for v in flat):
        raise ProtocolError(f"{what}: keypoint values must be numbers")
    with np.errstate(over="ignore"):  # a double beyond float32's range becomes inf, as in C
        arr = np.asarray(flat, dtype=np.float64).astype(np.float32).reshape(k, 3)
    arr.setflags(write=False)
    return arr


def decode_message(frames: Sequence[bytes], receive_ns: int | None = None) -> PoseMessage:
    """Decode and validate one pose message.

    Unknown fields are ignored (later schemas may add some); ``pts``, ``batch_size`` and
    ``extra`` are optional.

    Args:
        frames: The message frames: topic ``b"pose.<camera>"`` and the msgpack map.
        receive_ns: Receive time to record; ``time.time_ns()`` by default.

    Returns:
        The message.

    Raises:
        ProtocolError: The message is malformed, in one line that names the problem.
    """
    if receive_ns is None:
        receive_ns = time.time_ns()
    # A mapping has a length too but no frames[0]: only real sequences are messages.
    if not isinstance(frames, Sequence) or isinstance(frames, (str, bytes, bytearray)):
        raise ProtocolError(f"message is a {type(frames).__name__}, not a list of frames")
    n = len(frames)
    if n != 2:
        raise ProtocolError(f"message has {n} frames, expected 2 (topic, payload)")
    topic = frames[0]
    if not isinstance(topic, (bytes, bytearray, memoryview)):
        raise ProtocolError(f"topic frame is {type(topic).__name__}, not bytes")
    topic = bytes(topic)
    if not topic.startswith(_POSE_PREFIX):
        raise ProtocolError(f"topic {topic[:64]!r} is not 'pose.<camera>'")
    try:
        topic_camera = topic[len(_POSE_PREFIX):].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"topic {topic[:64]!r} is not valid UTF-8") from None
    what = f"pose message on {topic_camera!r}"
    obj = _unpack_map(frames[1], what)
    _check_schema(obj, what)
    for name in ("camera", *_INT_FIELDS, "bodyparts", "keypoints"):
        if name not in obj:
            raise ProtocolError(f"{what}: missing field {name!r}")
    camera = obj["camera"]
    if not isinstance(camera, str):
        raise ProtocolError(f"{what}: field 'camera' must be a string")
    if camera != topic_camera:
        raise ProtocolError(f"{what}: payload camera {camera!r} does not match the topic")
    for name in _INT_FIELDS:
        if not _is_int(obj[name]):
            raise ProtocolError(f"{what}: field {name!r} must be an integer, got "
                                f"{type(obj[name]).__name__}")
    pts = obj.get("pts")
    if pts is not None and not _is_number(pts):
        raise ProtocolError(f"{what}: field 'pts' must be a number or nil")
    batch_size = obj.get("batch_size", 1)
    if not _is_int(batch_size):
        raise ProtocolError(f"{what}: field 'batch_size' must be an integer")
    extra = obj.get("extra", {})
    if not isinstance(extra, dict):
        raise ProtocolError(f"{what}: field 'extra' must be a map")
    bodyparts = _check_bodyparts(obj["bodyparts"], what)
    keypoints = _keypoints(obj["keypoints"], len(bodyparts), what)
    individuals: tuple[str, ...] = ()
    animal_bodyparts: tuple[str, ...] = ()
    animals = None
    if "animals" in obj:
        for name in ("individuals", "animal_bodyparts"):
            value = obj.get(name)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ProtocolError(f"{what}: field {name!r} must be a list of strings "
                                    "(it comes with 'animals')")
        individuals, animal_bodyparts = tuple(obj["individuals"]), tuple(obj["animal_bodyparts"])
        flat = _keypoints(obj["animals"], len(individuals) * len(animal_bodyparts), what,
                          "animals")
        animals = flat.reshape(len(individuals), len(animal_bodyparts), 3)
        animals.setflags(write=False)
    return PoseMessage(
        camera=camera, seq=obj["seq"], frame=obj["frame"],
        pts=None if pts is None else float(pts),
        capture_ns=obj["capture_ns"], infer_ns=obj["infer_ns"], publish_ns=obj["publish_ns"],
        receive_ns=int(receive_ns), bodyparts=bodyparts, keypoints=keypoints,
        batch_size=batch_size, extra=extra, individuals=individuals,
        animal_bodyparts=animal_bodyparts, animals=animals,
    )


def decode_meta(frames: Sequence[bytes]) -> dict:
    """Decode and validate a ``meta`` message.

    Args:
        frames: ``[b"meta", msgpack map]``.

    Returns:
        The map (``schema``, ``bodyparts``, ``model``, ``posed_version``, ...).

    Raises:
        ProtocolError: The message is malformed.
    """
    if len(frames) != 2 or bytes(frames[0]) != _META_TOPIC:
        raise ProtocolError(f"meta message has {len(frames)} frames, expected 2")
    obj = _unpack_map(frames[1], "meta message")
    _check_schema(obj, "meta message")
    if "bodyparts" in obj:
        _check_bodyparts(obj["bodyparts"], "meta message")
    if "model" in obj and not isinstance(obj["model"], dict):
        raise ProtocolError("meta message: field 'model' must be a map")
    return obj


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
            if curve is not None:
                curve.apply(self._sock)
            topics = [_POSE_PREFIX] if self.cameras is None else \
                [_POSE_PREFIX + c.encode() for c in sorted(self.cameras)]
            for topic in (*topics, _META_TOPIC):
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
        if frames and frames[0] == _META_TOPIC:
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
            left = _SLICE_S if deadline is None else deadline - time.monotonic()
            if left < 0:
                return None
            # Wait in short slices so Ctrl-C is handled promptly on every platform.
            msg = self._recv_one(min(left, _SLICE_S))
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
            msg = self._recv_one(min(left, _SLICE_S))
            if msg is not None:
                self._pending.append(msg)
        return True

    def __iter__(self) -> Iterator[PoseMessage]:
        """Yield pose messages until the subscriber is closed."""
        while not self._sock.closed:
            msg = self.recv(_SLICE_S)
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


# -- posed listen ---------------------------------------------------------------------------

def _format_line(msg: PoseMessage) -> str:
    latency_ms = (msg.receive_ns - msg.capture_ns) / 1e6
    parts = [f"{msg.camera} seq={msg.seq} frame={msg.frame} latency={latency_ms:.1f}ms"]
    for name, (x, y, p) in zip(msg.bodyparts, msg.keypoints.tolist()):
        parts.append(f"{name}=({x:.1f},{y:.1f},{p:.2f})")
    return " ".join(parts)


def _safe_name(camera: str) -> str:
    # Camera ids end up in file names: keep them to characters every file system accepts.
    return re.sub(r"[^A-Za-z0-9._-]", "_", camera) or "_"


def recording_path(path: Path, camera: str, single: bool) -> Path:
    """Where ``listen`` writes one camera's table.

    Args:
        path: The ``--h5``/``--csv`` path given.
        camera: Camera id.
        single: Whether only one camera is recorded.

    Returns:
        ``path`` itself for a single camera, else ``<stem>_<camera><suffix>`` beside it.
    """
    if single:
        return path
    return path.with_name(f"{path.stem}_{_safe_name(camera)}{path.suffix}")


class _Recording:
    """Poses of one camera collected for a DeepLabCut table."""

    def __init__(self, bodyparts: tuple[str, ...]) -> None:
        self.bodyparts = bodyparts
        self.frames: list[int] = []
        self.rows: list[np.ndarray] = []
        self.mismatched = 0

    def add(self, msg: PoseMessage) -> None:
        if msg.bodyparts != self.bodyparts:
            self.mismatched += 1  # a model swap mid-recording; one table has one layout
            return
        self.frames.append(msg.frame)
        self.rows.append(msg.keypoints)

    def frame(self, scorer: str) -> pd.DataFrame:
        from posed.engines.project.posetables import poses_to_frame

        poses = np.stack(self.rows) if self.rows else np.zeros((0, len(self.bodyparts), 3))
        index = pd.Index(np.asarray(self.frames, dtype=np.int64))
        return poses_to_frame(poses, self.bodyparts, scorer, index=index)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    from posed.engines.io import atomic_path, cleanup_stale_temps
    from posed.errors import DataError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cleanup_stale_temps(path.parent, path.name)
        with atomic_path(path) as tmp:
            # No index name: it would add a fourth header row DeepLabCut readers take for data.
            df.rename_axis(index=None).to_csv(tmp)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({' '.join(str(exc).split())})") from exc


def _write_recordings(recordings: dict[str, _Recording], csv: Path | None, h5: Path | None,
                      single: bool, scorer: str) -> list[Path]:
    from posed.engines.project.posetables import write_pose_table

    written: list[Path] = []
    for camera, rec in sorted(recordings.items()):
        if rec.mismatched:
            log.warning("camera %s: %d poses with other bodyparts were not recorded",
                        camera, rec.mismatched)
        df = rec.frame(scorer)
        if h5 is not None:
            written += write_pose_table(df, recording_path(h5, camera, single))
        if csv is not None:
            target = recording_path(csv, camera, single)
            _write_csv(df, target)
            written.append(target)
    return written


def listen(
    endpoint: str,
    *,
    csv: Path | None = None,
    h5: Path | None = None,
    count: int | None = None,
    timeout_s: float | None = None,
    cameras: Sequence[str] | None = None,
    curve: CurveClient | None = None,
    out: TextIO = sys.stdout,
    stop: threading.Event | None = None,
) -> int:
    """Receive poses, print them or record them as DeepLabCut tables.

    Without ``csv``/``h5`` one line per pose is written to ``out``, e.g.
    ``cam0 seq=12 frame=12 latency=3.1ms snout=(12.3,45.6,0.98) ...``. With ``csv`` and/or
    ``h5`` nothing is printed; poses are collected per camera and written when listening ends
    (``count`` reached, ``timeout_s`` elapsed, ``stop`` set or Ctrl-C), atomically, as
    DeepLabCut single-animal tables: row index = source frame index, scorer = the ``scorer``
    of the daemon's model description (``meta``) or ``"posed_stream"``.

    File names: when one camera is recorded (``cameras`` names exactly one, or, without
    ``cameras``, only one camera was heard) the given path is used as is; otherwise each camera
    gets ``<stem>_<camera><suffix>`` beside it. Nothing is written when no pose arrived.

    Args:
        endpoint: The daemon's endpoint.
        csv: Record to this CSV path.
        h5: Record to this HDF5 path (key ``df_with_missing``).
        count: Stop after this many poses.
        timeout_s: Stop after this many seconds in total.
        cameras: Cameras to receive; all by default.
        curve: CURVE client keys.
        out: Where lines are printed.
        stop: Set from another thread to stop listening.

    Returns:
        The number of poses received.

    Raises:
        ProtocolError: A malformed message arrived.
        PublishError: A CURVE key file is unusable.
        DataError: A recording cannot be written.
    """
    recording = csv is not None or h5 is not None
    csv = None if csv is None else Path(csv)
    h5 = None if h5 is None else Path(h5)
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    recordings: dict[str, _Recording] = {}
    received = 0
    sub = Subscriber(endpoint, cameras, curve=curve)
    try:
        while count is None or received < count:
            if stop is not None and stop.is_set():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msg = sub.recv(min(left, _SLICE_S))
            if msg is None:
                continue
            received += 1
            if recording:
                rec = recordings.get(msg.camera)
                if rec is None:
                    rec = recordings[msg.camera] = _Recording(msg.bodyparts)
                rec.add(msg)
            else:
                out.write(_format_line(msg) + "\n")
                out.flush()
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to end a listen: fall through and save
    finally:
        model = sub.meta.get("model") if isinstance(sub.meta.get("model"), dict) else {}
        sub.close()
    if recording:
        if not recordings:
            log.warning("no poses received; nothing recorded")
        else:
            single = len(cameras) == 1 if cameras is not None else len(recordings) == 1
            scorer = model.get("scorer") if isinstance(model.get("scorer"), str) else None
            for path in _write_recordings(recordings, csv, h5, single, scorer or "posed_stream"):
                log.info("recorded %s", path)
    return received
