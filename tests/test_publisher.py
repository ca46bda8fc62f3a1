"""The pose stream: publisher, CURVE keys, message decoding, subscriber and ``listen``.

Real ZeroMQ sockets on 127.0.0.1 (or ipc:// in tmp_path). PUB/SUB drops what is sent before a
subscription reaches the publisher ("slow joiner"), so tests wait for the periodic ``meta``
message before publishing poses.
"""

from __future__ import annotations

import io
import json
import socket
import stat
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pandas as pd
import pytest
import zmq

from posed.daemon.client import PoseMessage, Subscriber, decode_message
from posed.daemon.keys import CurveClient, CurveServer, generate_keys
from posed.daemon.listening import listen
from posed.daemon.publisher import BASE_SCHEMA, Publisher, encode_pose
from posed.daemon.types import Pose
from posed.errors import ProtocolError, PublishError
from faults.ports import free_port  # noqa: E402

BODYPARTS = ("snout", "leftear", "tailbase")
META_S = 0.05  # fast meta so subscribers know quickly that they are connected




@pytest.fixture
def endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


def make_pose(seq: int, camera: str = "cam0", extra: dict | None = None) -> Pose:
    kp = np.array([[seq, seq + 0.5, 0.9], [2.25 * seq, -1.0, 0.125], [np.nan, np.nan, 0.0]],
                  dtype=np.float32)
    now = time.time_ns()
    return Pose(camera=camera, seq=seq, index=seq + 100, pts=None if seq % 2 else seq / 30.0,
                capture_ns=now - 5_000_000, capture_mono=time.monotonic() - 0.005,
                infer_ns=now - 1_000_000, keypoints=kp, batch_size=1 + seq % 4,
                extra=extra or {})


class FakeMetrics:
    """The metric attributes the publisher uses, on a private registry."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.frames_published = Counter("posed_frames_published", "", ["camera"],
                                        registry=self.registry)
        self.frames_dropped = Counter("posed_frames_dropped", "", ["camera", "reason"],
                                      registry=self.registry)
        self.end_to_end_seconds = Histogram("posed_end_to_end_seconds", "", ["camera"],
                                            registry=self.registry)
        self.errors = Counter("posed_errors", "", ["stage"], registry=self.registry)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def connected(sub: Subscriber) -> None:
    assert sub.wait_for_meta(5.0), "no meta message within 5 s"


# -- publish / receive ----------------------------------------------------------------------

def test_poses_arrive_in_order_with_exact_fields(endpoint):
    metrics = FakeMetrics()
    pub = Publisher(endpoint, BODYPARTS, metrics=metrics, meta_interval_s=META_S,
                    model={"scorer": "posed_test", "engine": "onnx"})
    pub.start()
    try:
        with Subscriber(endpoint) as sub:
            connected(sub)
            assert sub.meta["schema"] == BASE_SCHEMA  # meta keeps the single-animal schema
            assert sub.meta["bodyparts"] == list(BODYPARTS)
            assert sub.meta["model"] == {"scorer": "posed_test", "engine": "onnx"}
            assert isinstance(sub.meta["posed_version"], str)
            poses = [make_pose(i, extra={"zone": i % 3, "v": np.float32(0.5)} if i == 3 else None)
                     for i in range(50)]
            for p in poses:
                pub.publish(p)
            got = [sub.recv(5.0) for _ in poses]
    finally:
        pub.stop()
    assert all(isinstance(m, PoseMessage) for m in got)
    for p, m in zip(poses, got):
        assert (m.camera, m.seq, m.frame, m.pts) == (p.camera, p.seq, p.index, p.pts)
        assert (m.capture_ns, m.infer_ns, m.batch_size) == (p.capture_ns, p.infer_ns,
                                                            p.batch_size)
        assert m.infer_ns <= m.publish_ns <= m.receive_ns
        assert m.bodyparts == BODYPARTS
        assert m.keypoints.dtype == np.float32 and m.keypoints.shape == (3, 3)
        np.testing.assert_array_equal(m.keypoints, p.keypoints)  # NaN == NaN here
        assert m.extra == ({"zone": 0, "v": 0.5} if p.seq == 3 else {})
    assert pub.published == 50 and pub.dropped == 0 and not pub.unflushed
    assert metrics.value("posed_frames_published_total", camera="cam0") == 50
    assert metrics.value("posed_end_to_end_seconds_count", camera="cam0") == 50
    assert metrics.value("posed_end_to_end_seconds_sum", camera="cam0") >= 50 * 0.005


def test_camera_filter_is_exact(tmp_path):
    ep = f"ipc://{tmp_path}/poses.sock"
    with Publisher(ep, BODYPARTS, meta_interval_s=META_S) as pub:
        with Subscriber(ep, cameras=["cam1"]) as sub:
            connected(sub)
            for i in range(5):
                for cam in ("cam1", "cam10", "cam2"):
                    pub.publish(make_pose(i, camera=cam))
            got = [sub.recv(5.0) for _ in range(5)]
            assert sub.recv(0.2) is None
    assert [(m.camera, m.seq) for m in got] == [("cam1", i) for i in range(5)]


def test_subscriber_in_another_process(endpoint):
    n = 40
    script = (
        "import json, sys\n"
        "from posed.daemon.client import Subscriber\n"
        f"with Subscriber({endpoint!r}) as sub:\n"
        "    assert sub.wait_for_meta(10)\n"
        "    print('ready', flush=True)\n"
        f"    msgs = [sub.recv(10) for _ in range({n})]\n"
        "print(json.dumps([[m.seq, m.keypoints[0, 1].item()] for m in msgs if m]))\n"
    )
    pub = Publisher(endpoint, BODYPARTS, meta_interval_s=META_S)
    pub.start()
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        for i in range(n):
            pub.publish(make_pose(i))
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        pub.stop()
    assert proc.returncode == 0, err
    assert json.loads(out) == [[i, i + 0.5] for i in range(n)]


def test_client_imports_neither_pandas_nor_a_framework():
    """A control program subscribing to poses pays for pyzmq, msgpack and numpy only."""
    script = ("import sys, posed.daemon.client\n"
              "heavy = ('pandas', 'torch', 'tensorflow', 'onnxruntime', 'cv2', 'av')\n"
              "print(','.join(m for m in heavy if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""


# -- never blocking -------------------------------------------------------------------------

def test_publish_without_subscriber_never_blocks(endpoint):
    pub = Publisher(endpoint, BODYPARTS, hwm=10, queue_size=64)
    pub.start()
    pose = make_pose(1)
    for _ in range(20_000):
        pub.publish(pose)
    pub.stop(timeout=1.0)
    assert pub.published + pub.dropped == 20_000
    assert pub.dropped == pub.dropped_by_reason["publish_queue"]
    assert pub.queued == 0


def test_publish_with_stalled_subscriber_counts_drops_in_nodrop_mode(endpoint):
    metrics = FakeMetrics()
    pub = Publisher(endpoint, BODYPARTS, metrics=metrics, hwm=10, queue_size=64,
                    meta_interval_s=META_S, nodrop=True)
    pub.start()
    try:
        with Subscriber(endpoint, rcvhwm=10) as sub:
            connected(sub)  # after this the subscriber never reads again
            pose = make_pose(1)
            for _ in range(20_000):
                pub.publish(pose)
            pub.stop(timeout=1.0)
    finally:
        pub.stop()
    by = pub.dropped_by_reason
    assert pub.published + pub.dropped == 20_000
    assert by["hwm"] + by["publish_queue"] == pub.dropped
    # Socket buffers hold far less than 20k messages, so the mark must have been hit.
    assert by["hwm"] > 0
    for reason in ("hwm", "publish_queue"):
        assert metrics.value("posed_frames_dropped_total", camera="cam0",
                             reason=reason) == by[reason]
    assert metrics.value("posed_frames_published_total", camera="cam0") == pub.published


def test_poses_left_in_zeromq_at_the_end_of_the_budget_are_reported(endpoint, caplog):
    pub = Publisher(endpoint, BODYPARTS, hwm=5000, queue_size=4096, meta_interval_s=META_S)
    pub.start()
    try:
        with Subscriber(endpoint, rcvhwm=10) as sub:
            connected(sub)  # after this the subscriber never reads again
            for i in range(2_000):  # 100 MB: far more than the kernel's socket buffers hold
                pub.publish(make_pose(i, extra={"pad": "x" * 50_000}))
            with caplog.at_level("WARNING", logger="posed.daemon.publisher"):
                pub.stop(timeout=0.3)
    finally:
        pub.stop()
    assert pub.unflushed
    assert "may not have reached it" in caplog.text


def test_publish_after_stop_is_counted(endpoint):
    pub = Publisher(endpoint, BODYPARTS)
    pub.start()
    pub.stop()
    pub.publish(make_pose(0))
    assert pub.dropped_by_reason["publish_queue"] == 1
    never_started = Publisher(endpoint, BODYPARTS)
    for i in range(3):
        never_started.publish(make_pose(i))
    never_started.stop()
    assert never_started.dropped == 3 and never_started.queued == 0


def test_bad_pose_is_counted_as_error_not_raised(endpoint):
    metrics = FakeMetrics()
    bad = make_pose(0)
    bad.keypoints = np.zeros((2, 3), np.float32)
    with Publisher(endpoint, BODYPARTS, metrics=metrics, meta_interval_s=META_S) as pub:
        with Subscriber(endpoint) as sub:
            connected(sub)
            pub.publish(bad)
            pub.publish(make_pose(1, extra={"obj": object()}))
            pub.publish(make_pose(2))
            assert sub.recv(5.0).seq == 2
    assert pub.errors == 2
    assert metrics.value("posed_errors_total", stage="publish") == 2


# -- binding --------------------------------------------------------------------------------

def test_endpoint_in_use_raises(endpoint):
    with Publisher(endpoint, BODYPARTS):
        second = Publisher(endpoint, BODYPARTS)
        with pytest.raises(PublishError, match="cannot bind") as info:
            second.start()
        assert endpoint in str(info.value) and "\n" not in str(info.value)


def test_ipc_in_use_raises(tmp_path):
    ep = f"ipc://{tmp_path}/s.sock"
    with Publisher(ep, BODYPARTS):
        with pytest.raises(PublishError, match="in use"):
            Publisher(ep, BODYPARTS).start()
    # A stale socket file (nobody listening, as after a crash) is replaced.
    stale = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(stale))
    assert stale.exists()
    with Publisher(f"ipc://{stale}", BODYPARTS) as pub:
        assert pub.published == 0


@pytest.mark.parametrize("ep", ["udp://127.0.0.1:1", "tcp://127.0.0.1:notaport",
                                "tcp://no-such-host.invalid:5555"])
def test_bad_endpoint_raises(ep):
    with pytest.raises(PublishError, match="cannot bind"):
        Publisher(ep, BODYPARTS).start()


def test_all_interfaces_without_curve_warns(caplog):
    # An invalid port makes the bind fail, so nothing is ever exposed beyond loopback; the
    # warning comes before the bind.
    with pytest.raises(PublishError, match="cannot bind"):
        Publisher("tcp://*:notaport", BODYPARTS).start()
    assert "all network interfaces without CURVE" in caplog.text
    caplog.clear()
    with pytest.raises(PublishError):
        Publisher("tcp://0.0.0.0:notaport", BODYPARTS).start()
    assert "without CURVE" in caplog.text
    caplog.clear()
    with pytest.raises(PublishError):
        Publisher("tcp://127.0.0.1:notaport", BODYPARTS).start()
    assert "without CURVE" not in caplog.text


# -- CURVE ----------------------------------------------------------------------------------

@pytest.fixture
def keys(tmp_path):
    server_pub, server_sec = generate_keys(tmp_path / "server", "server")
    client_pub, client_sec = generate_keys(tmp_path / "client", "client")
    _, stranger_sec = generate_keys(tmp_path / "stranger", "stranger")
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "client.key").write_bytes(client_pub.read_bytes())
    return {"server": CurveServer(server_sec, allowed),
            "client": CurveClient(client_sec, server_pub),
            "stranger": CurveClient(stranger_sec, server_pub)}


def test_generate_keys_files(tmp_path):
    public, secret = generate_keys(tmp_path / "k")
    assert public.name == "server.key" and secret.name == "server.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert b"secret-key" not in public.read_bytes()
    with pytest.raises(PublishError, match="already exists"):
        generate_keys(tmp_path / "k")
    assert [p.name for p in sorted((tmp_path / "k").iterdir())] == ["server.key",
                                                                    "server.key_secret"]


def test_missing_key_file_names_it(tmp_path, endpoint):
    missing = tmp_path / "nope.key_secret"
    with pytest.raises(PublishError, match="nope.key_secret"):
        Publisher(endpoint, BODYPARTS, curve=CurveServer(missing, None)).start()
    public, _ = generate_keys(tmp_path)
    with pytest.raises(PublishError, match="no secret key"):
        Publisher(endpoint, BODYPARTS, curve=CurveServer(public, None)).start()
    with pytest.raises(PublishError, match="nope.key_secret"):
        Subscriber(endpoint, curve=CurveClient(missing, public))
    _, secret = generate_keys(tmp_path, "client")
    with pytest.raises(PublishError, match="gone.key"):
        Subscriber(endpoint, curve=CurveClient(secret, tmp_path / "gone.key"))


def test_curve_authorised_client_receives_others_do_not(keys, endpoint):
    with Publisher(endpoint, BODYPARTS, curve=keys["server"], meta_interval_s=META_S) as pub:
        with Subscriber(endpoint, curve=keys["client"]) as good, \
                Subscriber(endpoint, curve=keys["stranger"]) as stranger, \
                Subscriber(endpoint) as plain:
            connected(good)
            for i in range(5):
                pub.publish(make_pose(i))
            assert [good.recv(5.0).seq for _ in range(5)] == list(range(5))
            deadline = time.monotonic() + 1.0
            while time.monotonic() < deadline:
                pub.publish(make_pose(99))
                assert stranger.recv(0.05) is None and plain.recv(0.05) is None
            assert not stranger.meta and not plain.meta


def test_curve_allow_any_client(tmp_path, endpoint):
    server_pub, server_sec = generate_keys(tmp_path / "s")
    _, client_sec = generate_keys(tmp_path / "c", "anyone")
    with Publisher(endpoint, BODYPARTS, curve=CurveServer(server_sec, None),
                   meta_interval_s=META_S) as pub:
        with Subscriber(endpoint, curve=CurveClient(client_sec, server_pub)) as sub:
            connected(sub)
            pub.publish(make_pose(7))
            assert sub.recv(5.0).seq == 7


# -- decoding -------------------------------------------------------------------------------

def good_payload(**changes) -> dict:
    msg = msgpack.unpackb(encode_pose(make_pose(4), BODYPARTS))
    for key, value in changes.items():
        if value is KeyError:
            del msg[key]
        else:
            msg[key] = value
    return msg


def frames_of(msg: dict, topic: bytes = b"pose.cam0") -> list[bytes]:
    return [topic, msgpack.packb(msg)]


def test_decode_accepts_flat_and_triples():
    flat = decode_message(frames_of(good_payload()), receive_ns=5)
    triples = decode_message(frames_of(good_payload(
        keypoints=make_pose(4).keypoints.tolist())))
    np.testing.assert_array_equal(flat.keypoints, triples.keypoints)
    assert flat.receive_ns == 5
    assert not flat.keypoints.flags.writeable
    minimal = good_payload(pts=KeyError, batch_size=KeyError, future_field=[1, 2])
    msg = decode_message(frames_of(minimal))
    assert (msg.pts, msg.batch_size, msg.extra) == (None, 1, {})


@pytest.mark.parametrize("frames, match", [
    ([b"pose.cam0"], "1 frames"),
    ([b"pose.cam0", b"x", b"y"], "3 frames"),
    ([b"pose.cam0", b"\xc1\xc1"], "not valid msgpack"),
    ([b"pose.cam0", msgpack.packb([1, 2])], "not a map"),
    ([b"pose.cam0", msgpack.packb(good_payload())[:-3]], "not valid msgpack"),
    ([b"other", msgpack.packb(good_payload())], "pose.<camera>"),
    ([b"pose.\xff", msgpack.packb(good_payload())], "UTF-8"),
    (frames_of(good_payload(), b"pose.cam1"), "does not match"),
    (frames_of(good_payload(seq=KeyError)), "missing field 'seq'"),
    (frames_of(good_payload(schema=KeyError)), "missing field 'schema'"),
    (frames_of(good_payload(keypoints=KeyError)), "missing field 'keypoints'"),
    (frames_of(good_payload(seq="1")), "'seq' must be an integer"),
    (frames_of(good_payload(capture_ns=1.5)), "'capture_ns' must be an integer"),
    (frames_of(good_payload(frame=True)), "'frame' must be an integer"),
    (frames_of(good_payload(camera=3)), "'camera' must be a string"),
    (frames_of(good_payload(pts="now")), "'pts'"),
    (frames_of(good_payload(extra=[1])), "'extra'"),
    (frames_of(good_payload(bodyparts=["a", 1, "c"])), "'bodyparts'"),
    (frames_of(good_payload(keypoints=[1.0] * 8)), "8 keypoint values for 3 bodyparts"),
    (frames_of(good_payload(keypoints=[[1.0, 2.0]] * 3)), "triples"),
    (frames_of(good_payload(keypoints=[1.0] * 8 + ["x"])), "must be numbers"),
    (frames_of(good_payload(keypoints="abc")), "must be a list"),
    (frames_of(good_payload(schema=3)), r"schema 3 is newer than this client \(2\)"),
    (frames_of(good_payload(schema=0)), "not a valid version"),
])
def test_decode_rejects_malformed(frames, match):
    with pytest.raises(ProtocolError, match=match) as info:
        decode_message(frames)
    assert "\n" not in str(info.value)
    assert info.value.__cause__ is None


def test_decode_random_bytes_only_protocol_error():
    rng = np.random.default_rng(0)
    good = msgpack.packb(good_payload())
    for i in range(400):
        if i % 2:
            payload = rng.bytes(int(rng.integers(0, 64)))
        else:  # corrupt a valid message so the decoder gets past the first byte
            arr = bytearray(good)
            for pos in rng.integers(0, len(arr), size=3):
                arr[pos] = int(rng.integers(0, 256))
            payload = bytes(arr)
        try:
            decode_message([b"pose.cam0", payload])
        except ProtocolError:
            pass


def test_decode_hypothesis():
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.binary(max_size=256), st.binary(max_size=16))
    def check(payload: bytes, topic: bytes) -> None:
        try:
            decode_message([topic, payload])
        except ProtocolError:
            pass

    check()


def test_subscriber_skip_malformed(endpoint):
    ctx = zmq.Context()
    raw = ctx.socket(zmq.PUB)
    raw.setsockopt(zmq.LINGER, 0)
    raw.bind(endpoint)
    try:
        with Subscriber(endpoint, skip_malformed=True) as lenient, Subscriber(endpoint) as strict:
            good = frames_of(good_payload())
            deadline = time.monotonic() + 5.0
            # Slow joiner: send good messages until both subscribers got one.
            got_lenient = got_strict = False
            while time.monotonic() < deadline and not (got_lenient and got_strict):
                raw.send_multipart(good)
                got_lenient = got_lenient or lenient.recv(0.05) is not None
                got_strict = got_strict or strict.recv(0.05) is not None
            assert got_lenient and got_strict
            while strict.recv(0.05) is not None or lenient.recv(0.05) is not None:
                pass
            raw.send_multipart([b"pose.cam0", b"junk"])
            raw.send_multipart(good)
            assert lenient.recv(2.0).seq == 4
            assert lenient.malformed == 1
            with pytest.raises(ProtocolError, match="msgpack"):
                strict.recv(2.0)
    finally:
        raw.close()
        ctx.term()


# -- listen ---------------------------------------------------------------------------------

def run_listen(endpoint: str, cameras: tuple[str, ...], **kwargs) -> int:
    """Run listen() in a thread while publishing until it has received what it wants."""
    result: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: result.setdefault("n", listen(endpoint, **kwargs)), daemon=True)
    with Publisher(endpoint, BODYPARTS, meta_interval_s=META_S,
                   model={"scorer": "posed_scorer"}) as pub:
        thread.start()
        for seq in range(2000):  # bounded: ~10 s at most
            for cam in cameras:
                pub.publish(make_pose(seq, camera=cam))
            time.sleep(0.005)
            if not thread.is_alive():
                break
        thread.join(10.0)
    assert not thread.is_alive()
    return result["n"]


def check_table(df: pd.DataFrame, n: int) -> None:
    assert len(df) == n
    assert list(df.columns.names) == ["scorer", "bodyparts", "coords"]
    assert df.columns.get_level_values(0)[0] == "posed_scorer"
    assert list(df.columns.get_level_values(1).unique()) == list(BODYPARTS)
    frames = df.index.to_numpy()
    # Loopback with a reading subscriber loses nothing: consecutive frames.
    np.testing.assert_array_equal(frames, np.arange(frames[0], frames[0] + n))
    for frame, row in df.iterrows():
        expected = make_pose(int(frame) - 100).keypoints.reshape(-1)
        np.testing.assert_array_equal(row.to_numpy(np.float32), expected)


def test_listen_records_h5_and_csv(tmp_path, endpoint):
    h5 = tmp_path / "rec" / "poses.h5"
    csv = tmp_path / "rec" / "poses.csv"
    n = run_listen(endpoint, ("cam0",), h5=h5, csv=csv, count=20, timeout_s=15)
    assert n == 20
    df = pd.read_hdf(h5, "df_with_missing")
    check_table(df, 20)
    df_csv = pd.read_csv(csv, header=[0, 1, 2], index_col=0)
    np.testing.assert_array_equal(df_csv.to_numpy(np.float32), df.to_numpy())
    assert sorted(p.name for p in h5.parent.iterdir()) == ["poses.csv", "poses.h5"]


def test_listen_two_cameras_one_file_each(tmp_path, endpoint):
    h5 = tmp_path / "poses.h5"
    n = run_listen(endpoint, ("cam0", "cam1"), h5=h5, count=20, timeout_s=15)
    assert n == 20
    tables = {cam: pd.read_hdf(tmp_path / f"poses_{cam}.h5", "df_with_missing")
              for cam in ("cam0", "cam1")}
    assert sum(len(t) for t in tables.values()) == 20
    assert not h5.exists()


def test_listen_prints_lines(endpoint):
    out = io.StringIO()
    n = run_listen(endpoint, ("cam0",), count=3, timeout_s=15, out=out)
    lines = out.getvalue().splitlines()
    assert n == 3 and len(lines) == 3
    assert lines[0].startswith("cam0 seq=") and "latency=" in lines[0]
    assert "snout=(" in lines[0] and "tailbase=(nan,nan,0.00)" in lines[0]


def test_listen_stops_on_event_and_timeout(endpoint, tmp_path):
    stop = threading.Event()
    stop.set()
    assert listen(endpoint, stop=stop, h5=tmp_path / "x.h5") == 0
    assert not (tmp_path / "x.h5").exists()
    t0 = time.monotonic()
    assert listen(endpoint, timeout_s=0.2) == 0
    assert time.monotonic() - t0 < 2.0
