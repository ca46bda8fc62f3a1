"""The wire format of the pose stream, in one place: schema numbers, topics, encoding and the
validating decoder.

The publisher encodes with :func:`encode_pose` and :func:`encode_meta`; subscribers decode with
:func:`decode_message` and :func:`decode_meta`. Only msgpack and numpy are needed. The format
is described for other languages in ``docs/protocol.md``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np

import posed
from posed.errors import ProtocolError

if TYPE_CHECKING:
    from posed.daemon.types import Pose

__all__ = [
    "BASE_SCHEMA", "META_TOPIC", "POSE_PREFIX", "SCHEMA", "PoseMessage", "decode_message",
    "decode_meta", "encode_meta", "encode_pose", "pose_topic",
]

SCHEMA = 2
"""Newest message layout; bumped on any incompatible change (see docs/protocol.md). Schema 2
adds the identified animals of multi-animal models; messages without animals (single-animal
models) and ``meta`` messages keep :data:`BASE_SCHEMA`, byte for byte as before."""
BASE_SCHEMA = 1
"""Layout of single-animal pose messages and of ``meta`` messages."""
META_TOPIC = b"meta"
"""Topic of the periodic stream-description message."""
POSE_PREFIX = b"pose."
"""Prefix of every pose topic; the camera id follows."""
# Bounds that keep a hostile or corrupt message from making msgpack allocate gigabytes.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
_INT_FIELDS = ("seq", "frame", "capture_ns", "infer_ns", "publish_ns")


# ----------------------------------------------------------------------------- encoding

def pose_topic(camera: str) -> bytes:
    """Return the topic frame of a camera's poses: ``b"pose.<camera>"``."""
    return f"pose.{camera}".encode()


def _msgpack_default(value: Any) -> Any:
    """Turn numpy values found in ``Pose.extra`` into plain msgpack types."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tuple, set, frozenset)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} in msgpack")


def _pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, default=_msgpack_default, use_bin_type=True)


def encode_pose(pose: Pose, bodyparts: Sequence[str], publish_ns: int | None = None) -> bytes:
    """Encode a pose as the msgpack payload of a message: schema 1, or schema 2 when the pose
    carries identified animals (``pose.animals``).

    Args:
        pose: The pose.
        bodyparts: Body part names, one per keypoint row.
        publish_ns: ``time.time_ns()`` to stamp; now by default.

    Returns:
        The msgpack bytes (the second frame of the message).

    Raises:
        ValueError: ``pose.keypoints`` is not K×3 with K = ``len(bodyparts)``, or the animals'
            keypoints are not I×K'×3 for their names.
        TypeError: ``pose.extra`` holds a value msgpack cannot encode.
    """
    kp = np.asarray(pose.keypoints, dtype=np.float32)
    if kp.shape != (len(bodyparts), 3):
        raise ValueError(f"keypoints shape {kp.shape} is not ({len(bodyparts)}, 3)")
    msg: dict[str, Any] = {
        "schema": BASE_SCHEMA if pose.animals is None else SCHEMA,
        "camera": pose.camera,
        "seq": int(pose.seq),
        "frame": int(pose.index),
        "pts": None if pose.pts is None else float(pose.pts),
        "capture_ns": int(pose.capture_ns),
        "infer_ns": int(pose.infer_ns),
        "publish_ns": time.time_ns() if publish_ns is None else int(publish_ns),
        "bodyparts": list(bodyparts),
        # float32 -> Python float (double) is exact, so subscribers get the model's values.
        "keypoints": kp.reshape(-1).tolist(),
        "batch_size": int(pose.batch_size),
        # Whether the model saw a crop (fixed or dynamic) and which: nil for the whole frame.
        "crop": None if pose.crop is None else [int(v) for v in pose.crop],
    }
    if pose.extra:
        msg["extra"] = pose.extra
    if pose.animals is not None:
        animals = pose.animals
        akp = np.asarray(animals.keypoints, dtype=np.float32)
        shape = (len(animals.individuals), len(animals.bodyparts), 3)
        if akp.shape != shape:
            raise ValueError(f"animal keypoints shape {akp.shape} is not {shape}")
        msg["individuals"] = list(animals.individuals)
        msg["animal_bodyparts"] = list(animals.bodyparts)
        msg["animals"] = akp.reshape(-1).tolist()
        msg["identities"] = [i for i in range(shape[0]) if np.isfinite(akp[i, :, :2]).any()]
    return _pack(msg)


def encode_meta(bodyparts: Sequence[str], model: dict[str, Any]) -> bytes:
    """The msgpack payload of a ``meta`` message (schema, body parts, model, posed version)."""
    return _pack({"schema": BASE_SCHEMA, "bodyparts": list(bodyparts), "model": model,
                  "posed_version": posed.__version__})


# ----------------------------------------------------------------------------- decoding

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
        crop: (x, y, width, height) of the frame the model saw (a fixed or dynamic crop); None
            when it saw the whole frame (or the daemon did not say).
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
    crop: tuple[int, int, int, int] | None = None
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
    if len(payload) > MAX_MESSAGE_BYTES:
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


def _check_names(obj: dict, name: str, what: str, why: str = "") -> tuple[str, ...]:
    value = obj.get(name)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ProtocolError(f"{what}: field {name!r} must be a list of strings{why}")
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


def _topic_camera(frames: Any) -> str:
    """The camera named by a message's topic frame, after checking the frames' layout."""
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
    if not topic.startswith(POSE_PREFIX):
        raise ProtocolError(f"topic {topic[:64]!r} is not 'pose.<camera>'")
    try:
        return topic[len(POSE_PREFIX):].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"topic {topic[:64]!r} is not valid UTF-8") from None


def _check_required(obj: dict, topic_camera: str, what: str) -> None:
    """The fields every pose message has: present, typed, and the camera matching the topic."""
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


def _optional(obj: dict, what: str) -> tuple[float | None, int, dict]:
    """``pts``, ``batch_size`` and ``extra``, with their defaults when absent."""
    pts = obj.get("pts")
    if pts is not None and not _is_number(pts):
        raise ProtocolError(f"{what}: field 'pts' must be a number or nil")
    batch_size = obj.get("batch_size", 1)
    if not _is_int(batch_size):
        raise ProtocolError(f"{what}: field 'batch_size' must be an integer")
    extra = obj.get("extra", {})
    if not isinstance(extra, dict):
        raise ProtocolError(f"{what}: field 'extra' must be a map")
    return None if pts is None else float(pts), batch_size, extra


def _crop(obj: dict, what: str) -> tuple[int, int, int, int] | None:
    """``crop``: four non-negative integers (x, y, width, height), or nil/absent."""
    crop = obj.get("crop")
    if crop is None:
        return None
    if not (isinstance(crop, (list, tuple)) and len(crop) == 4
            and all(_is_int(v) and v >= 0 for v in crop)):
        raise ProtocolError(f"{what}: field 'crop' must be nil or 4 integers x, y, width, height")
    return tuple(int(v) for v in crop)  # type: ignore[return-value]


def _animals(obj: dict, what: str) -> tuple[tuple[str, ...], tuple[str, ...], np.ndarray | None]:
    """Schema 2's identified animals: (individuals, animal body parts, I×K'×3), or empty."""
    if "animals" not in obj:
        return (), (), None
    why = " (it comes with 'animals')"
    individuals = _check_names(obj, "individuals", what, why)
    animal_bodyparts = _check_names(obj, "animal_bodyparts", what, why)
    flat = _keypoints(obj["animals"], len(individuals) * len(animal_bodyparts), what, "animals")
    animals = flat.reshape(len(individuals), len(animal_bodyparts), 3)
    animals.setflags(write=False)
    return individuals, animal_bodyparts, animals


def decode_message(frames: Sequence[bytes], receive_ns: int | None = None) -> PoseMessage:
    """Decode and validate one pose message.

    Unknown fields are ignored (later schemas may add some); ``pts``, ``batch_size``,
    ``extra`` and ``crop`` are optional.

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
    topic_camera = _topic_camera(frames)
    what = f"pose message on {topic_camera!r}"
    obj = _unpack_map(frames[1], what)
    _check_schema(obj, what)
    _check_required(obj, topic_camera, what)
    pts, batch_size, extra = _optional(obj, what)
    bodyparts = _check_names(obj, "bodyparts", what)
    keypoints = _keypoints(obj["keypoints"], len(bodyparts), what)
    individuals, animal_bodyparts, animals = _animals(obj, what)
    return PoseMessage(
        camera=obj["camera"], seq=obj["seq"], frame=obj["frame"], pts=pts,
        capture_ns=obj["capture_ns"], infer_ns=obj["infer_ns"], publish_ns=obj["publish_ns"],
        receive_ns=int(receive_ns), bodyparts=bodyparts, keypoints=keypoints,
        batch_size=batch_size, extra=extra, crop=_crop(obj, what), individuals=individuals,
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
    if len(frames) != 2 or bytes(frames[0]) != META_TOPIC:
        raise ProtocolError(f"meta message has {len(frames)} frames, expected 2")
    obj = _unpack_map(frames[1], "meta message")
    _check_schema(obj, "meta message")
    if "bodyparts" in obj:
        _check_names(obj, "bodyparts", "meta message")
    if "model" in obj and not isinstance(obj["model"], dict):
        raise ProtocolError("meta message: field 'model' must be a map")
    return obj
