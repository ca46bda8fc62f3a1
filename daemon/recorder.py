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
from typing import Any, Sequence

import numpy as np

from posed.daemon.types import Pose
from posed.engines.project.posetables import poses_to_frame, write_pose_table
from posed.errors import PosedError

log = logging.getLogger(__name__)


class Recorder:
    """Collects poses per camera and writes ``<path>`` (one camera) or ``<stem>_<camera>.h5``.

    The row index is the camera's ``seq``; frames that never produced a pose are absent.
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
        self._rows: dict[str, list[np.ndarray]] = {c: [] for c in self.cameras}
        self._index: dict[str, list[int]] = {c: [] for c in self.cameras}
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
        self._rows.setdefault(pose.camera, []).append(pose.keypoints.astype(np.float32))
        self._index.setdefault(pose.camera, []).append(pose.seq)
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
                df = poses_to_frame(np.stack(rows), self.bodyparts, self.scorer,
                                    index=self._index[camera])
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
