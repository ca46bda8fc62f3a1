"""``posed listen`` against a hostile or careless publisher: malformed messages in the middle
of a recording, SIGTERM while recording, and names carrying terminal control characters.
The publisher is a bare ZeroMQ XPUB socket that sends whatever the test wants.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import zmq

from faultkit import free_port, reaped, wait_until
from posed.daemon.listening import listen
from posed.daemon.protocol import MAX_MESSAGE_BYTES, encode_pose
from posed.daemon.types import Pose

BODYPARTS = ("snout", "tail")


class RawPublisher:
    """An XPUB socket: knows when a subscriber arrived, sends any bytes as a message."""

    def __init__(self) -> None:
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.XPUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(self.endpoint)

    def wait_subscriber(self, timeout: float = 20.0) -> None:
        """Block until a SUB subscribed to poses (so nothing sent later is lost)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.sock.poll(100) and self.sock.recv().startswith(b"\x01pose."):
                return
        raise AssertionError("no subscriber")

    def pose(self, seq: int, camera: str = "cam0", bodyparts=BODYPARTS) -> None:
        kp = np.array([[seq, seq + 0.5, 0.9]] * len(bodyparts), np.float32)
        pose = Pose(camera, seq, seq, None, time.time_ns(), 0.0, time.time_ns(), kp)
        self.raw(camera, encode_pose(pose, bodyparts))

    def raw(self, camera: str, payload: bytes) -> None:
        self.sock.send_multipart([b"pose." + camera.encode(), payload])

    def close(self) -> None:
        self.sock.close()
        self._ctx.term()


def _wrong_keypoint_count(seq: int) -> bytes:
    return msgpack.packb({"schema": 1, "camera": "cam0", "seq": seq, "frame": seq,
                          "capture_ns": 1, "infer_ns": 1, "publish_ns": 1,
                          "bodyparts": list(BODYPARTS), "keypoints": [1.0, 2.0, 0.5]})


def test_malformed_messages_are_counted_once_per_kind_and_the_recording_survives(
        tmp_path, caplog):
    pub = RawPublisher()
    csv = tmp_path / "rec.csv"
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "n", listen(pub.endpoint, csv=csv, count=10, timeout_s=60)), daemon=True)
    try:
        with caplog.at_level(logging.WARNING, logger="posed.daemon.listening"):
            thread.start()
            pub.wait_subscriber()
            for seq in range(10):
                pub.pose(seq)
                if seq in (3, 6):  # each kind twice: reported once
                    pub.raw("cam0", b"\xc1 not msgpack")
                    pub.raw("cam0", b"\x00" * (MAX_MESSAGE_BYTES + 1))
                    pub.raw("cam0", _wrong_keypoint_count(seq))
            thread.join(60)  # messages arrive in order: all bad ones before the 10th pose
    finally:
        pub.close()
    assert not thread.is_alive() and result["n"] == 10
    table = pd.read_csv(csv, header=[0, 1, 2], index_col=0)
    assert list(table.index) == list(range(10))
    warnings = [r.getMessage() for r in caplog.records]
    once = [w for w in warnings if w.startswith("skipping malformed message")]
    assert len(once) == 3, warnings
    assert any("not valid msgpack" in w for w in once)
    assert any("too large" in w for w in once)
    assert any("keypoint values for 2 bodyparts" in w for w in once)
    assert any(w.startswith("6 malformed message(s) skipped") for w in warnings), warnings


def test_sigterm_writes_the_recording_and_rows_are_flushed_as_they_arrive(tmp_path):
    pub = RawPublisher()
    h5 = tmp_path / "rec.h5"
    proc = subprocess.Popen([sys.executable, "-m", "posed.cli", "listen", "--endpoint",
                             pub.endpoint, "--h5", str(h5), "--flush-every", "0.2"],
                            stderr=subprocess.PIPE, text=True)
    with reaped(proc), contextlib.closing(pub):
        pub.wait_subscriber()
        for seq in range(5):
            pub.pose(seq)
        # Flushed while listening: a SIGKILL now would still leave these rows.
        assert wait_until(lambda: _rows(h5) == 5, timeout=20)
        for seq in range(5, 12):
            pub.pose(seq)
        assert wait_until(lambda: _rows(h5) == 12, timeout=20)
        for seq in range(12, 20):  # some of these arrive after the last flush
            pub.pose(seq)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    stderr = proc.stderr.read()
    assert code == 0, stderr
    received = int(re.search(r"(\d+) poses received", stderr).group(1))
    assert received >= 12
    # Everything received is in the file, SIGTERM or not.
    assert list(pd.read_hdf(h5, "df_with_missing").index) == list(range(received))


def _rows(path: Path) -> int:
    try:
        return len(pd.read_hdf(path, "df_with_missing"))
    except Exception:  # noqa: BLE001 - not written yet
        return 0


def test_names_from_the_publisher_are_printed_with_control_characters_escaped():
    pub = RawPublisher()
    out = io.StringIO()
    camera = "cam\x1b[2J"
    thread = threading.Thread(target=lambda: listen(pub.endpoint, count=1, timeout_s=20,
                                                    out=out), daemon=True)
    try:
        thread.start()
        pub.wait_subscriber()
        pub.pose(7, camera=camera, bodyparts=("snout\n\x1b[31mfake line", "tail"))
        thread.join(20)
    finally:
        pub.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and "\x1b" not in text, repr(text)
    assert text.startswith("cam\\x1b[2J seq=7") and "snout\\n\\x1b[31mfake line=(" in text
