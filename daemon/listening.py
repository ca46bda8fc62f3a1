"""``posed listen``: print the pose stream, or record it as DeepLabCut tables.

Kept out of :mod:`posed.daemon.client` so that the subscriber stays free of pandas; pandas
and the table writers are imported only when something is recorded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO


from posed.daemon.client import SLICE_S, Subscriber
from posed.daemon.keys import CurveClient
from posed.daemon.protocol import PoseMessage
from posed.daemon.recorder import PoseRows
from posed.errors import DataError, ProtocolError

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["listen", "recording_path", "stop_on_signals"]

log = logging.getLogger(__name__)


def _printable(name: str) -> str:
    """A publisher-supplied name as printed: control characters (a terminal escape, a
    newline that would forge a line) escaped the way Python's repr() does."""
    return name if name.isprintable() else repr(name)[1:-1]


def _format_line(msg: PoseMessage) -> str:
    latency_ms = (msg.receive_ns - msg.capture_ns) / 1e6
    parts = [f"{_printable(msg.camera)} seq={msg.seq} frame={msg.frame} "
             f"latency={latency_ms:.1f}ms"]
    for name, (x, y, p) in zip(msg.bodyparts, msg.keypoints.tolist()):
        parts.append(f"{_printable(name)}=({x:.1f},{y:.1f},{p:.2f})")
    return " ".join(parts)


class _BadMessages:
    """Malformed messages: counted per kind, each kind reported once (a publisher that
    sends garbage at 1 kHz must not flood the terminal), then skipped."""

    def __init__(self) -> None:
        self.kinds: dict[str, int] = {}

    def add(self, exc: ProtocolError) -> None:
        text = str(exc).split(": ", 1)[-1]  # drop "pose message on 'cam0'"
        kind = re.sub(r"\d+", "N", text.split(" (")[0])
        self.kinds[kind] = self.kinds.get(kind, 0) + 1
        if self.kinds[kind] == 1:
            log.warning("skipping malformed message: %s (reported once per kind)",
                        _printable(str(exc))[:160])

    def report(self) -> None:
        if self.kinds:
            log.warning("%d malformed message(s) skipped: %s", sum(self.kinds.values()),
                        "; ".join(f"{n} x {k}" for k, n in self.kinds.items())[:160])


@contextlib.contextmanager
def stop_on_signals(stop: threading.Event) -> Iterator[threading.Event]:
    """SIGTERM and SIGINT set ``stop`` (so listening ends and the recording is written)
    instead of killing the process; the previous handlers come back on exit. Main thread
    only."""
    def handler(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


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
    """Poses of one camera for a DeepLabCut table (rows keyed as :class:`PoseRows` says; a
    subscriber joins late, so the first pass starts at the first frame heard)."""

    def __init__(self, bodyparts: tuple[str, ...]) -> None:
        self.bodyparts = bodyparts
        self.rows = PoseRows(len(bodyparts), from_zero=False)
        self.mismatched = 0

    def add(self, msg: PoseMessage) -> None:
        if msg.bodyparts != self.bodyparts:
            self.mismatched += 1  # a model swap mid-recording; one table has one layout
            return
        self.rows.add(msg.seq, msg.frame, msg.keypoints)

    def frame(self, scorer: str) -> pd.DataFrame:
        """The DeepLabCut table: row index ``frame``, or levels (``loop``, ``frame``) when the
        recording holds more than one pass over the source."""
        return self.rows.table(self.bodyparts, scorer)


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    from posed.engines.io import atomic_path, cleanup_stale_temps
    from posed.errors import DataError

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        cleanup_stale_temps(path.parent, path.name)
        with atomic_path(path) as tmp:
            # No index name: it would add a fourth header row DeepLabCut readers take for data.
            # A looped recording keeps its (loop, frame) names: its rows need both to be read.
            if df.index.nlevels == 1:
                df = df.rename_axis(index=None)
            df.to_csv(tmp)
    except OSError as exc:
        raise DataError(f"{path}: cannot write ({' '.join(str(exc).split())})") from exc


def _write_recordings(recordings: dict[str, _Recording], csv: Path | None, h5: Path | None,
                      single: bool, scorer: str, final: bool = True) -> list[Path]:
    from posed.engines.project.posetables import write_pose_table

    written: list[Path] = []
    for camera, rec in sorted(recordings.items()):
        if rec.mismatched and final:
            log.warning("camera %s: %d poses with other bodyparts were not recorded",
                        _printable(camera), rec.mismatched)
        df = rec.frame(scorer)
        if h5 is not None:
            written += write_pose_table(df, recording_path(h5, camera, single))
        if csv is not None:
            target = recording_path(csv, camera, single)
            _write_csv(df, target)
            written.append(target)
    return written


class _Tables:
    """The recordings of one ``listen`` and their files, rewritten atomically every
    ``flush_every_s`` (as the daemon's recorder does) and at the end, so a killed listener
    leaves its rows up to the last flush."""

    def __init__(self, csv: Path | None, h5: Path | None, cameras: Sequence[str] | None,
                 flush_every_s: float) -> None:
        self.csv = None if csv is None else Path(csv)
        self.h5 = None if h5 is None else Path(h5)
        self.cameras = cameras
        self.flush_every_s = flush_every_s
        self.recordings: dict[str, _Recording] = {}
        self._written: set[Path] = set()
        self._last = time.monotonic()
        self._dirty = False

    def add(self, msg: PoseMessage) -> None:
        rec = self.recordings.get(msg.camera)
        if rec is None:
            rec = self.recordings[msg.camera] = _Recording(msg.bodyparts)
        rec.add(msg)
        self._dirty = True

    def maybe_flush(self, scorer: str) -> None:
        """Write now if rows arrived and ``flush_every_s`` passed; an error is logged (the
        rows stay in memory for the next try)."""
        if self._dirty and time.monotonic() - self._last >= self.flush_every_s:
            try:
                self.write(scorer, final=False)
            except DataError as exc:
                log.error("%s", exc)

    def write(self, scorer: str, final: bool = True) -> list[Path]:
        self._last = time.monotonic()
        self._dirty = False
        single = (len(self.cameras) == 1 if self.cameras is not None
                  else len(self.recordings) == 1)
        paths = _write_recordings(self.recordings, self.csv, self.h5, single, scorer, final)
        # A second camera heard later renames the tables: the one-camera file goes.
        for stale in self._written - set(paths):
            stale.unlink(missing_ok=True)
        self._written = set(paths)
        return paths


def _scorer(sub: Subscriber) -> str:
    model = sub.meta.get("model") if isinstance(sub.meta.get("model"), dict) else {}
    scorer = model.get("scorer")
    return scorer if isinstance(scorer, str) else "posed_stream"


def _receive(sub: Subscriber, tables: _Tables | None, count: int | None, deadline: float,
             out: TextIO, stop: threading.Event | None, bad: _BadMessages) -> int:
    """Receive until ``count``, ``deadline``, ``stop`` or Ctrl-C; print or collect each pose;
    malformed messages are counted and skipped."""
    received = 0
    try:
        while count is None or received < count:
            if stop is not None and stop.is_set():
                break
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if tables is not None:
                tables.maybe_flush(_scorer(sub))
            try:
                msg = sub.recv(min(left, SLICE_S))
            except ProtocolError as exc:
                bad.add(exc)
                continue
            if msg is None:
                continue
            received += 1
            if tables is not None:
                tables.add(msg)
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
    flush_every_s: float = 10.0,
) -> int:
    """Receive poses, print them or record them as DeepLabCut tables.

    Without ``csv``/``h5`` one line per pose is written to ``out``, e.g.
    ``cam0 seq=12 frame=12 latency=3.1ms snout=(12.3,45.6,0.98) ...`` (names sent by the
    publisher are printed with control characters escaped). With ``csv`` and/or ``h5``
    nothing is printed; poses are collected per camera and written every ``flush_every_s``
    and when listening ends (``count`` reached, ``timeout_s`` elapsed, ``stop`` set or
    Ctrl-C), atomically, as DeepLabCut single-animal tables: row index = source frame index
    (levels ``loop``, ``frame`` once the source has looped, see ``_Recording``), scorer =
    the ``scorer`` of the daemon's model description (``meta``) or ``"posed_stream"``. A
    malformed message (not msgpack, too large, a wrong keypoint count...) is counted, reported
    once per kind and skipped.

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
        stop: Set from another thread (or by :func:`stop_on_signals`) to stop listening.
        flush_every_s: Seconds between rewrites of the tables while recording.

    Returns:
        The number of poses received.

    Raises:
        PublishError: A CURVE key file is unusable.
        DataError: A recording cannot be written.
    """
    deadline = math.inf if timeout_s is None else time.monotonic() + timeout_s
    tables = _Tables(csv, h5, cameras, flush_every_s) if csv is not None or h5 is not None \
        else None
    bad = _BadMessages()
    sub = Subscriber(endpoint, cameras, curve=curve)
    try:
        received = _receive(sub, tables, count, deadline, out, stop, bad)
    finally:
        scorer = _scorer(sub)
        sub.close()
        bad.report()
    if tables is None:
        return received
    if not tables.recordings:
        log.warning("no poses received; nothing recorded")
        return received
    for path in tables.write(scorer):
        log.info("recorded %s", path)
    return received
