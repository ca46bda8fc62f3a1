"""Daemon stages that need no network: config, batching inference, processors, recorder."""

from __future__ import annotations

import copy
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from posed.daemon.config import load_config, non_loopback_endpoints, parse_config
from posed.daemon.inference import InferenceStage, Preprocess
from posed.daemon.metrics import Metrics
from posed.daemon.processors import KalmanPredictor, Processors, load_hook
from posed.daemon.queues import FrameQueue, FrameSignal
from posed.daemon.recorder import Recorder
from posed.daemon.types import Frame, Pose
from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
MINIMAL = {"model": {"bundle": "m"}, "cameras": [{"id": "cam0", "source": "a.mp4"}]}


# ----------------------------------------------------------------------------- config

@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_every_shipped_config_is_valid_and_loopback_only(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.cameras and non_loopback_endpoints(cfg) == []


@pytest.mark.parametrize("change,message", [
    (lambda d: d.update(colour=1), "unknown key 'colour'"),
    (lambda d: d["cameras"][0].update(fps="fast"), "key 'cameras[0].fps'"),
    (lambda d: d["cameras"][0].update(sorce="x"), "unknown key 'cameras[0].sorce'"),
    (lambda d: d.update(batching={"max_batch": 0}), "key 'batching.max_batch'"),
    (lambda d: d["cameras"].append({"id": "cam0", "source": "b"}), "camera id 'cam0' is used twice"),
    (lambda d: d.pop("model"), "missing key 'model'"),
    (lambda d: d.update(publisher={"endpoint": "http://x:1"}), "key 'publisher.endpoint'"),
    (lambda d: d["cameras"][0].update(id="cam 0"), "key 'cameras[0].id'"),
    (lambda d: d.update(cameras=[]), "key 'cameras'"),
])
def test_config_errors_name_the_key(change, message):
    data = copy.deepcopy(MINIMAL)
    change(data)
    with pytest.raises(ConfigError) as err:
        parse_config(data, "rig.yaml")
    assert str(err.value).startswith("rig.yaml: ") and message in str(err.value)
    assert "\n" not in str(err.value)


def test_config_paths_resolve_against_the_file_and_yaml_errors_give_the_line(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("model: {bundle: models/m}\ncameras:\n  - {id: a, source: v.mp4}\n"
                        "  - {id: b, source: /dev/video0}\n  - {id: c, source: 'rtsp://h/x'}\n")
    cfg = load_config(cfg_file)
    assert cfg.model.bundle == tmp_path / "models" / "m"
    assert [c.source for c in cfg.cameras] == [str(tmp_path / "v.mp4"), "/dev/video0", "rtsp://h/x"]
    cfg_file.write_text("model:\n  bundle: [unclosed\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: invalid YAML at line \d"):
        load_config(cfg_file)


def test_non_loopback_endpoints_are_reported():
    data = copy.deepcopy(MINIMAL)
    data["publisher"] = {"endpoint": "tcp://0.0.0.0:5555"}
    data["metrics"] = {"host": "0.0.0.0"}
    assert len(non_loopback_endpoints(parse_config(data))) == 2


# ----------------------------------------------------------------------------- inference

class CentreRunner(PoseRunner):
    """Puts keypoint k at (k, frame mean); can be told to fail or return NaN."""

    engine = "fake"
    fail_next = False
    nan_next = False

    @classmethod
    def load(cls, bundle, **options):
        return cls(bundle)

    def _forward(self, frames):
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("boom")
        n, h, w, _ = frames.shape
        out = np.zeros((n, 2, 3), np.float32)
        out[:, 0] = (w / 2, h / 2, 1.0)
        out[:, 1, 0] = frames.reshape(n, -1).mean(axis=1)
        out[:, 1, 2] = 0.5
        if self.nan_next:
            self.nan_next = False
            out[:, 1] = np.nan
        self.calls.append(n)
        return out


def _runner():
    bundle = ModelBundle(engine="fake", format="none", bodyparts=["centre", "mean"],
                         architecture={}, stride=8.0, locref_stdev=7.2801)
    r = CentreRunner.load(bundle)
    r.calls = []
    return r


def _frame(camera, seq, value=0, size=(40, 60)):
    return Frame(camera, seq, seq, None, time.time_ns(), time.monotonic(),
                 np.full((*size, 3), value, np.uint8))


def test_batches_fill_across_cameras_and_poses_map_back_to_full_frames():
    signal = FrameSignal()
    queues = [FrameQueue(c, 8, "lossless", signal) for c in ("a", "b")]
    out: list[Pose] = []
    metrics = Metrics()
    stage = InferenceStage(_runner(), queues, signal, out.append, max_batch=4, max_delay_ms=50,
                           preprocess={"b": Preprocess(crop=(10, 5, 40, 30), resize=(20, 15))},
                           metrics=metrics)
    for i in range(3):
        queues[0].put(_frame("a", i, 10))
        queues[1].put(_frame("b", i, 20))
    stage.start()
    deadline = time.monotonic() + 5
    while len(out) < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    stage.stop.set()
    stage.join(2)
    assert sorted((p.camera, p.seq) for p in out) == [(c, i) for c in "ab" for i in range(3)]
    a = next(p for p in out if p.camera == "a")
    b = next(p for p in out if p.camera == "b")
    np.testing.assert_allclose(a.keypoints[0, :2], (30, 20))   # centre of a 60x40 frame
    np.testing.assert_allclose(b.keypoints[0, :2], (30, 20))   # crop centre, mapped back
    assert max(p.batch_size for p in out) >= 2
    assert metrics.frames_inferred.labels(camera="b")._value.get() == 3


def test_a_failing_batch_is_counted_and_the_stage_goes_on():
    signal = FrameSignal()
    q = FrameQueue("a", 8, "lossless", signal)
    out: list[Pose] = []
    metrics = Metrics()
    runner = _runner()
    stage = InferenceStage(runner, [q], signal, out.append, max_batch=1, metrics=metrics)
    runner.fail_next = True
    stage.infer([_frame("a", 0)])
    runner.nan_next = True
    stage.infer([_frame("a", 1)])
    stage.infer([_frame("a", 2)])
    assert [p.seq for p in out] == [1, 2]
    assert np.isnan(out[0].keypoints[1, :2]).all() and out[0].keypoints[1, 2] == 0.0
    assert metrics.frames_dropped.labels(camera="a", reason="inference")._value.get() == 1
    assert metrics.errors.labels(stage="inference")._value.get() == 1


def test_latest_policy_drops_the_oldest_frames():
    signal = FrameSignal()
    dropped = []
    q = FrameQueue("a", 2, "latest", signal, on_drop=dropped.append)
    for i in range(5):
        q.put(_frame("a", i))
    assert [q.get_nowait().seq, q.get_nowait().seq] == [3, 4] and sum(dropped) == 3


def test_lossless_put_gives_up_when_stopped():
    signal = FrameSignal()
    q = FrameQueue("a", 1, "lossless", signal)
    stop = threading.Event()
    q.put(_frame("a", 0))
    stop.set()
    assert q.put(_frame("a", 1), stop) is False and len(q) == 1


# ----------------------------------------------------------------------------- processors

def _pose(camera="a", seq=0, xy=(10.0, 20.0), t=0.0):
    kp = np.array([[*xy, 0.9], [1.0, 1.0, 0.9]], np.float32)
    return Pose(camera, seq, seq, None, 0, t, 0, kp)


def test_hook_from_module_path_with_args_and_failures_contained(tmp_path, monkeypatch):
    (tmp_path / "rig_hooks.py").write_text(
        "class Zone:\n"
        "    def __init__(self, bodypart, x_min):\n"
        "        self.bodypart, self.x_min = bodypart, x_min\n"
        "    def __call__(self, pose, bodyparts):\n"
        "        k = bodyparts.index(self.bodypart)\n"
        "        if pose.seq == 3:\n"
        "            raise ValueError('bad frame')\n"
        "        return {'in_zone': bool(pose.keypoints[k, 0] > self.x_min)}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    hook = load_hook("rig_hooks:Zone", {"bodypart": "nose", "x_min": 15})
    metrics = Metrics()
    proc = Processors(["nose", "tail"], hook=hook, metrics=metrics)
    assert proc(_pose(xy=(10, 0))).extra == {"in_zone": False}
    assert proc(_pose(xy=(20, 0))).extra == {"in_zone": True}
    assert proc(_pose(seq=3)).extra == {}
    assert proc.failures == 1 and metrics.errors.labels(stage="processor")._value.get() == 1
    with pytest.raises(ConfigError, match="cannot import 'no_such_module'"):
        load_hook("no_such_module:f")
    with pytest.raises(ConfigError, match="has no attribute 'Nope'"):
        load_hook("rig_hooks:Nope")
    with pytest.raises(ConfigError, match="entry point"):
        load_hook("not-registered")
    sys.modules.pop("rig_hooks", None)


def test_kalman_predicts_linear_motion_ahead():
    kf = KalmanPredictor(process_noise=50.0, measurement_noise=0.5, lead_s=0.0)
    for i in range(30):  # 100 px/s along x, 30 Hz
        t = i / 30
        kf.update("a", np.array([[100 * t, 5.0, 1.0]]), t)
    ahead = kf.predict("a", 29 / 30 + 0.05)
    np.testing.assert_allclose(ahead[0], (100 * (29 / 30 + 0.05), 5.0), atol=0.5)
    assert kf.predict("unseen", 1.0) is None


def test_kalman_processor_publishes_prediction_and_keeps_measurement():
    proc = Processors(["nose", "tail"], kalman=KalmanPredictor(lead_s=0.0))
    pose = proc(_pose(t=time.monotonic()))
    assert pose.extra["measured"][0] == [10.0, 20.0]
    assert pose.keypoints.shape == (2, 3)


# ----------------------------------------------------------------------------- recorder

def test_recorder_writes_one_deeplabcut_table_per_camera(tmp_path):
    rec = Recorder(tmp_path / "session.h5", ["nose", "tail"], "posed_test", ["a", "b"], csv=True,
                   flush_every_s=3600)
    for i in range(5):
        rec.add(_pose("a", i))
        if i % 2 == 0:
            rec.add(_pose("b", i))
    assert not (tmp_path / "session_a.h5").exists()  # not flushed yet
    rec.close()
    a = pd.read_hdf(tmp_path / "session_a.h5", "df_with_missing")
    b = pd.read_hdf(tmp_path / "session_b.h5", "df_with_missing")
    # Row i is frame i: camera b's frames 1 and 3 produced no pose, so they are NaN rows
    # with likelihood 0 (as offline analysis writes a frame that failed).
    assert list(a.index) == [0, 1, 2, 3, 4] and list(b.index) == [0, 1, 2, 3, 4]
    lik = b.xs("likelihood", axis=1, level="coords")
    assert b.xs("x", axis=1, level="coords").isna().all(axis=1).tolist() == [0, 1, 0, 1, 0]
    assert (lik.loc[[1, 3]] == 0).all().all() and (lik.loc[[0, 2, 4]] > 0).all().all()
    assert a.columns.names == ["scorer", "bodyparts", "coords"] and a.shape == (5, 6)
    assert (tmp_path / "session_a.csv").is_file()


def test_watchdog_is_fed_only_while_frames_flow():
    import threading as _t
    from types import SimpleNamespace

    from posed.daemon.service import WATCHDOG_STALL_S, Service

    now = 1000.0
    service = Service.__new__(Service)
    service.inference = SimpleNamespace(is_alive=lambda: True, heartbeat=now)
    live = SimpleNamespace(finished=_t.Event(), last_frame_mono=now - 0.1)
    service.cameras = [live]
    assert service._healthy(now)
    live.last_frame_mono = now - WATCHDOG_STALL_S - 1  # camera silent: stop feeding systemd
    assert not service._healthy(now)
    live.last_frame_mono = None  # never delivered a frame
    assert not service._healthy(now)
    live.finished.set()  # a file that ended is not a stall
    assert service._healthy(now)
    service.inference = SimpleNamespace(is_alive=lambda: False, heartbeat=now)
    assert not service._healthy(now)


def test_recorder_keys_a_looping_source_by_pass_and_frame(tmp_path):
    """A file that loops restarts its frame numbers: rows are keyed (loop, frame), each pass
    complete from frame 0; a jump too large to be lost frames starts a new pass unfilled."""
    from posed.daemon.recorder import PoseRows

    rec = Recorder(tmp_path / "loop.h5", ["nose", "tail"], "posed_test", ["a"],
                   flush_every_s=3600)
    for seq, frame in enumerate([0, 1, 3, 0, 1]):  # frame 2 of the first pass lost
        rec.add(Pose("a", seq, frame, None, 0, 0.0, 0, _pose().keypoints))
    rec.close()
    df = pd.read_hdf(tmp_path / "loop.h5", "df_with_missing")
    assert df.index.names == ["loop", "frame"]
    assert df.index.tolist() == [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1)]
    assert df.loc[(0, 2)].isna().sum() == 4  # x and y of both parts

    rows = PoseRows(2, from_zero=False)
    rows.add(0, 10, _pose().keypoints)
    rows.add(1, 10 + PoseRows.MAX_GAP + 1, _pose().keypoints)
    assert len(rows.table(["nose", "tail"], "s")) == 2
