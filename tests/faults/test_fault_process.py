"""Process faults: SIGTERM under full load, SIGKILL while recording (and the restart that
follows), and a full disk while recording. ``posed serve`` runs as a real process with the
demo model where signals are involved; the disk-full case lowers RLIMIT_FSIZE in this process
so that HDF5's real writes fail the way they do on a full disk.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from faultkit import DEMO, free_port, wait_until
from posed.daemon.client import Subscriber
from posed.daemon.metrics import Metrics
from posed.daemon.recorder import Recorder
from posed.daemon.types import Pose

pytest.importorskip("torch")


def _serve(tmp_path: Path, name: str, **sections) -> tuple[subprocess.Popen, dict]:
    cfg = {"model": {"bundle": str(DEMO / "model"), "device": "cpu", "threads": 1},
           "cameras": [{"id": "cam0", "source": str(DEMO / "clip.mp4"), "loop": True}],
           "publisher": {"endpoint": f"tcp://127.0.0.1:{free_port()}"},
           "metrics": {"enabled": False}}
    for key, value in sections.items():
        if isinstance(value, dict):
            cfg[key] = {**cfg.get(key, {}), **value}
        else:
            cfg[key] = value
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("NOTIFY_SOCKET", None)
    proc = subprocess.Popen([sys.executable, "-m", "posed.cli", "serve", "--config",
                             str(path)], env=env, stderr=subprocess.PIPE, text=True)
    return proc, cfg


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


def _rows_on_disk(path: Path) -> int:
    try:
        return len(pd.read_hdf(path, "df_with_missing"))
    except Exception:  # noqa: BLE001 - not there yet
        return 0


def test_sigterm_under_load_then_sigkill_while_recording(tmp_path):
    """Run 1 is stopped with SIGTERM while the model is busy: it drains and writes a complete
    recording. Run 2 (a restart with the same recorder path) is SIGKILLed mid-recording: run 1's
    file is kept, run 2's file is readable up to its last flush, and the next start cleans up."""
    rec = tmp_path / "rec" / "session.h5"
    # Run 1: unpaced and looping, so the model is busy all the time; only the stop writes.
    proc, cfg = _serve(tmp_path, "load",
                       cameras=[{"id": "cam0", "source": str(DEMO / "clip.mp4"), "pace": "fast",
                                 "loop": True}],
                       recorder={"path": str(rec), "flush_every_s": 3600},
                       batching={"max_batch": 4, "max_delay_ms": 5})
    received = []
    try:
        with Subscriber(cfg["publisher"]["endpoint"]) as sub:
            while len(received) < 120:
                msg = sub.recv(timeout=90)
                assert msg is not None, f"no pose within 90 s: {proc.stderr.read()}"
                received.append(msg)
            assert not rec.exists()  # nothing flushed yet: the stop must write it
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    run1 = pd.read_hdf(rec, "df_with_missing")
    # Complete: every frame captured before the stop was inferred and recorded, in order.
    assert list(run1.index) == list(range(len(run1)))
    assert len(run1) >= received[-1].seq + 1
    table = run1.to_numpy(np.float32).reshape(len(run1), -1, 3)
    for msg in received[::10]:
        np.testing.assert_array_equal(table[msg.seq], msg.keypoints)
    assert _temps(rec.parent) == []

    # Run 2: paced, flushing every 0.2 s, killed once several flushes happened.
    proc, _ = _serve(tmp_path, "kill", recorder={"path": str(rec), "flush_every_s": 0.2})
    kept_pattern = "session.*.h5"
    try:
        assert wait_until(lambda: proc.poll() is not None or (
            len(list(rec.parent.glob(kept_pattern))) == 1 and _rows_on_disk(rec) >= 30),
            timeout=90, step=0.05), "run 2 recorded nothing"
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "from an earlier run" in proc.stderr.read()
    kept = list(rec.parent.glob(kept_pattern))
    assert len(kept) == 1
    pd.testing.assert_frame_equal(pd.read_hdf(kept[0], "df_with_missing"), run1)
    run2 = pd.read_hdf(rec, "df_with_missing")  # complete and readable after SIGKILL
    assert len(run2) >= 30 and list(run2.index) == list(range(len(run2)))

    # Run 3 (just its recorder): keeps run 2's file too and removes run 2's temporaries.
    again = Recorder(rec, ["snout", "leftear", "rightear", "tailbase"], "posed_test", ["cam0"])
    again.add(Pose("cam0", 0, 0, None, 0, 0.0, 0, np.zeros((4, 3), np.float32)))
    again.close()
    assert len(list(rec.parent.glob(kept_pattern))) == 2
    assert _temps(rec.parent) == []


def _pose(seq: int) -> Pose:
    kp = np.array([[seq, seq + 1, 0.9], [2 * seq, 3.0, 0.5]], np.float32)
    return Pose("cam0", seq, seq, None, 0, 0.0, 0, kp)


def test_disk_full_while_recording_is_an_error_and_keeps_earlier_data(tmp_path, caplog):
    path = tmp_path / "session.h5"
    metrics = Metrics()
    rec = Recorder(path, ["snout", "tail"], "posed_test", ["cam0"], flush_every_s=3600,
                   metrics=metrics)
    for i in range(100):
        rec.add(_pose(i))
    rec.flush()
    size = path.stat().st_size
    before = pd.read_hdf(path, "df_with_missing")
    for i in range(100, 20_000):
        rec.add(_pose(i))
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG, as a full disk
    # fails with ENOSPC: inside HDF5, midway through the temporary file.
    resource.setrlimit(resource.RLIMIT_FSIZE, (size + 4096, hard))
    try:
        with caplog.at_level(logging.ERROR, logger="posed.daemon.recorder"):
            rec.flush()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    errors = [r.getMessage() for r in caplog.records if r.name == "posed.daemon.recorder"]
    assert len(errors) == 1 and "\n" not in errors[0]
    assert errors[0].startswith(f"recorder: {path}: cannot write (")
    assert "disk full" in errors[0] and "HDF5 error back trace" not in errors[0]
    assert metrics.errors.labels(stage="recorder")._value.get() == 1
    # The earlier data is intact and nothing half-written is left behind.
    pd.testing.assert_frame_equal(pd.read_hdf(path, "df_with_missing"), before)
    assert _temps(tmp_path) == []
    # Space is back: the next flush writes everything, nothing was lost from memory.
    rec.close()
    after = pd.read_hdf(path, "df_with_missing")
    assert list(after.index) == list(range(20_000))
