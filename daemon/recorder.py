"""Records published poses into DeepLabCut-format tables, one per camera.

Rows are kept in memory (48 bytes per frame for 4 body parts: an hour at 30 frames/s is
about 5 MB) and the whole table is rewritten atomically every ``flush_every_s`` and on stop,
so the file on disk is always complete up to the last flush, even after a crash.

A recording already at the path (an earlier run's, e.g. before a crash and a restart by
systemd) is never overwritten: before its first write the recorder renames it to
``<stem>.<its modification time><suffix>`` and logs where it went.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from posed.daemon.types import Pose
from posed.engines.project.posetables import write_pose_table
from posed.errors import PosedError

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)


class PoseRows:
    """The poses of one camera, keyed so that row i of a pass over the source is frame i.

    Each pose arrives with its camera's ``seq`` (frames captured) and ``frame`` (the frame's
    true index in the source). A looping file or a reconnected stream restarts ``frame``, so
    rows are keyed by (``loop``, ``frame``): a new pass starts when ``frame`` goes back (or
    ``seq`` does: the daemon restarted), or when more frames were captured since the last
    pose than ``frame`` advanced (the restart itself was among the poses not received).
    Frames of a pass that produced no pose (dropped, failed to decode, never received) are
    NaN rows with likelihood 0 in :meth:`table`, so positions and frame numbers agree.

    Args:
        parts: Keypoints per pose (K).
        from_zero: The first pass starts at frame 0 (the daemon's recorder, which sees the
            stream from its start); else at the first frame heard (a subscriber joining late).
    """

    # A jump in ``frame`` larger than this starts a new pass instead of being filled with NaN
    # rows (about an hour at 30 frames/s; a timestamp discontinuity, not lost frames).
    MAX_GAP = 100_000

    def __init__(self, parts: int, *, from_zero: bool) -> None:
        self.parts = parts
        self.from_zero = from_zero
        self.loops: list[int] = []
        self.frames: list[int] = []
        self.rows: list[np.ndarray] = []
        self._last: tuple[int, int] | None = None  # (seq, frame) of the last pose

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, seq: int, frame: int, keypoints: np.ndarray) -> None:
        loop = self.loops[-1] if self.loops else 0
        if self._last is not None:
            last_seq, last_frame = self._last
            # seq counts captured frames, frame every source frame: within one pass seq can
            # never advance more than frame does.
            if (frame <= last_frame or seq <= last_seq or seq - last_seq > frame - last_frame
                    or frame - last_frame > self.MAX_GAP):
                loop += 1
        self._last = (seq, frame)
        self.loops.append(loop)
        self.frames.append(frame)
        self.rows.append(np.asarray(keypoints, dtype=np.float32))

    def table(self, bodyparts: Sequence[str], scorer: str) -> "pd.DataFrame":
        """The DeepLabCut table: row index ``frame``, or levels (``loop``, ``frame``) once the
        recording holds more than one pass; every frame of a pass has a row."""
        import pandas as pd

        from posed.engines.project.posetables import poses_to_frame

        loops = np.asarray(self.loops, dtype=np.int64)
        frames = np.asarray(self.frames, dtype=np.int64)
        keys_l, keys_f, chunks = [], [], []
        for loop in np.unique(loops):
            mine = loops == loop
            f = frames[mine]
            start = 0 if (self.from_zero and loop == 0) else int(f[0])
            span = np.arange(start, int(f[-1]) + 1)
            block = np.full((len(span), self.parts, 3), np.nan, np.float32)
            block[:, :, 2] = 0.0  # no pose: likelihood 0, as analysis writes failed frames
            block[f - start] = np.stack([r for r, m in zip(self.rows, mine) if m])
            keys_l.append(np.full(len(span), loop))
            keys_f.append(span)
            chunks.append(block)
        poses = np.concatenate(chunks) if chunks else np.zeros((0, self.parts, 3), np.float32)
        frames_all = np.concatenate(keys_f) if keys_f else np.zeros(0, np.int64)
        if len(keys_l) > 1:
            index = pd.MultiIndex.from_arrays([np.concatenate(keys_l), frames_all],
                                              names=["loop", "frame"])
        else:
            index = pd.Index(frames_all)
        return poses_to_frame(poses, bodyparts, scorer, index=index)


class Recorder:
    """Collects poses per camera and writes ``<path>`` (one camera) or ``<stem>_<camera>.h5``.

    Row i of a pass is frame i of the source (:class:`PoseRows`): a frame that produced no
    pose (dropped by the queue policy, failed to decode, lost at shutdown) is a NaN row with
    likelihood 0, and a looping source's table is keyed (``loop``, ``frame``).
    """

    def __init__(self, path: Path, bodyparts: Sequence[str], scorer: str, cameras: Sequence[str], *,
                 csv: bool = False, flush_every_s: float = 10.0, metrics: Any = None) -> None:
        self.path = Path(path)
        self.bodyparts = list(bodyparts)
        self.scorer = scorer
        self.cameras = list(cameras)
        self.csv = csv
        self.flush_every_s = flush_every_s
        self.metrics = metrics
        self._rows: dict[str, PoseRows] = {}
        self._dirty = False
        self._last_flush = time.monotonic()
        self._claimed: set[str] = set()  # cameras whose path this recorder has written

    def path_for(self, camera: str) -> Path:
        """Output file of ``camera``."""
        if len(self.cameras) == 1:
            return self.path
        return self.path.with_name(f"{self.path.stem}_{camera}{self.path.suffix or '.h5'}")

    def _keep_earlier(self, camera: str) -> None:
        """Move an earlier run's recording of ``camera`` aside instead of replacing it."""
        targets = [self.path_for(camera)]
        if self.csv:
            targets.append(targets[0].with_suffix(".csv"))
        for target in targets:
            if not target.exists():
                continue
            stamp = _dt.datetime.fromtimestamp(target.stat().st_mtime).strftime("%Y%m%dT%H%M%S")
            kept = target.with_name(f"{target.stem}.{stamp}{target.suffix}")
            n = 1
            while kept.exists():
                kept = target.with_name(f"{target.stem}.{stamp}-{n}{target.suffix}")
                n += 1
            os.replace(target, kept)
            log.warning("recorder: %s is from an earlier run; kept as %s", target, kept.name)

    def add(self, pose: Pose) -> None:
        """Keep one pose; flushes when the interval has passed."""
        rows = self._rows.get(pose.camera)
        if rows is None:
            rows = self._rows[pose.camera] = PoseRows(len(self.bodyparts), from_zero=True)
        rows.add(pose.seq, pose.index, pose.keypoints)
        self._dirty = True
        if time.monotonic() - self._last_flush >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Rewrite every camera's table atomically; errors are logged and counted."""
        self._last_flush = time.monotonic()
        if not self._dirty:
            return
        for camera, rows in self._rows.items():
            if not rows:
                continue
            try:
                self.path_for(camera).parent.mkdir(parents=True, exist_ok=True)
                if camera not in self._claimed:
                    self._keep_earlier(camera)
                    self._claimed.add(camera)
                df = rows.table(self.bodyparts, self.scorer)
                write_pose_table(df, self.path_for(camera), csv=self.csv)
            except Exception as exc:  # disk full, permissions: keep running, keep the rows
                # A PosedError names the file already.
                log.error("recorder: %s", exc if isinstance(exc, PosedError)
                          else f"cannot write {self.path_for(camera)}: {exc}")
                if self.metrics is not None:
                    self.metrics.errors.labels(stage="recorder").inc()
                return
        self._dirty = False

    def close(self) -> None:
        """Final flush."""
        self.flush()
