"""``posed listen``: print the pose stream, or record it as DeepLabCut tables.

Kept out of :mod:`posed.daemon.client` so that the subscriber stays free of pandas; pandas
and the table writers are imported only when something is recorded.
"""

from __future__ import annotations

import logging
import math
import re
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from posed.daemon.client import SLICE_S, Subscriber
from posed.daemon.keys import CurveClient
from posed.daemon.protocol import PoseMessage

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["listen", "recording_path"]

log = logging.getLogger(__name__)


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
        import pandas as pd

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


def _receive(sub: Subscriber, recordings: dict[str, _Recording] | None, count: int | None,
             deadline: float, out: TextIO, stop: threading.Event | None) -> int:
    """Receive until ``count``, ``deadline``, ``stop`` or Ctrl-C; print or collect each pose."""
    received = 0
    try:
        while count is None or received < count:
            if stop is not None and stop.is_set():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msg = sub.recv(min(left, SLICE_S))
            if msg is None:
                continue
            received += 1
            if recordings is not None:
                rec = recordings.get(msg.camera)
                if rec is None:
                    rec = recordings[msg.camera] = _Recording(msg.bodyparts)
                rec.add(msg)
            else:
                out.write(_format_line(msg) + "\n")
                out.flush()
    except KeyboardInterrupt:
        pass  # Ctrl-C is the normal way to end a listen: fall through and save
    return received


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
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    recordings: dict[str, _Recording] = {}
    sub = Subscriber(endpoint, cameras, curve=curve)
    try:
        received = _receive(sub, recordings if recording else None, count, deadline, out, stop)
    finally:
        model = sub.meta.get("model") if isinstance(sub.meta.get("model"), dict) else {}
        sub.close()
    if not recording:
        return received
    if not recordings:
        log.warning("no poses received; nothing recorded")
        return received
    single = len(cameras) == 1 if cameras is not None else len(recordings) == 1
    scorer = model.get("scorer") if isinstance(model.get("scorer"), str) else None
    for path in _write_recordings(recordings, None if csv is None else Path(csv),
                                  None if h5 is None else Path(h5), single,
                                  scorer or "posed_stream"):
        log.info("recorded %s", path)
    return received
