"""Property-based tests: random and malformed input to the config loader, serve's start-up
checks, the DeepLabCut label and pose-table readers and the pose-message decoder gives either a
valid result or the one error type each promises, with a one-line message; never a traceback
from deep inside. A config that is accepted is checked too: its numbers are finite and in
range, and it survives a round trip.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import shutil
from pathlib import Path

import msgpack
import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from posed.daemon.client import PoseMessage, decode_message, decode_meta
from posed.daemon.config import DaemonConfig, load_config, parse_config
from posed.daemon.validate import check_startup
from posed.engines.project.posetables import read_pose_table
from posed.engines.project import LabeledData, read_label_file
from posed.errors import ConfigError, DataError, ProtocolError

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo"
# tmp_path is shared by all examples of one test; every example writes the same file.
SETTINGS = settings(max_examples=100, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text and "\r" not in text, repr(text)
    return text


# ----------------------------------------------------------------------------- values

scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=20))
yaml_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=10) | st.integers(), inner,
                                             max_size=4), max_leaves=20)


# ----------------------------------------------------------------------------- config

VALID = {
    "model": {"bundle": "m", "engine": "onnx", "device": "cpu", "threads": 2, "warmup": True},
    "cameras": [{"id": "cam0", "source": "a.mp4", "pace": "fast", "loop": True,
                 "queue_size": 4, "crop": [0, 0, 10, 10], "resize": [8, 8]},
                {"id": "cam1", "source": "rtsp://h/x", "policy": "latest",
                 "options": {"rtsp_transport": "tcp"}}],
    "batching": {"max_batch": 4, "max_delay_ms": 2.0},
    "processors": {"hook": "m:f", "hook_args": {"a": 1},
                   "kalman": {"enabled": True, "lead_ms": 5.0}},
    "publisher": {"endpoint": "tcp://127.0.0.1:5555", "hwm": 10,
                  "curve": {"server_secret_key": "k", "allowed_clients": "d"}},
    "recorder": {"path": "r.h5", "csv": True},
    "metrics": {"host": "127.0.0.1", "port": 9108},
    "log_level": "info",
}


def _paths(obj, prefix=()):
    """Every key/index path into ``obj``."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            yield prefix + (i,)
            yield from _paths(value, prefix + (i,))


def _mutate(draw, base: dict) -> dict:
    """``base`` with a few keys replaced by random values, deleted or added."""
    data = copy.deepcopy(base)
    paths = list(_paths(base))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(paths))
        parent = data
        try:
            for part in path[:-1]:
                parent = parent[part]
            action = draw(st.sampled_from(["replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(yaml_values)
            elif action == "delete" and isinstance(parent, dict):
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(st.text(max_size=8))] = draw(yaml_values)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier mutation removed or replaced that branch
    return data


@st.composite
def mutated_configs(draw):
    """A valid config with a few keys replaced by random values, deleted or added."""
    return _mutate(draw, VALID)


def _numbers(obj, path=()):
    """Every number in a nested dump, with its path."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _numbers(value, (*path, key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from _numbers(value, (*path, i))
    elif isinstance(obj, (int, float)):
        yield path, obj


def assert_config_invariants(cfg: DaemonConfig, source: str) -> None:
    """What every config the parser accepts satisfies: finite numbers in range, integers that
    are not booleans, crops inside known frames, and a lossless round trip."""
    dump = cfg.model_dump()
    settings_only = {**dump, "processors": dump["processors"]["kalman"]}  # hook_args: anything
    for path, number in _numbers(settings_only):
        assert math.isfinite(number), path
    b = cfg.batching
    assert type(b.max_batch) is int and 1 <= b.max_batch <= 256
    assert 0 <= b.max_delay_ms <= 1000
    for cam in cfg.cameras:
        assert type(cam.queue_size) is int and cam.queue_size >= 1
        assert 0 < cam.reconnect_initial_s <= 3600 and 0 < cam.reconnect_max_s <= 3600
        assert cam.fps is None or 0 < cam.fps <= 1000
        if cam.crop is not None:
            x, y, w, h = cam.crop
            assert all(type(v) is int for v in cam.crop) and x >= 0 and y >= 0 and w > 0 and h > 0
            if cam.width is not None and cam.height is not None:
                assert x + w <= cam.width and y + h <= cam.height
        if cam.resize is not None:
            assert all(type(v) is int and v > 0 for v in cam.resize)
    pub = cfg.publisher
    assert type(pub.hwm) is int and pub.hwm >= 1 and pub.wait_for_subscribers >= 0
    assert type(cfg.metrics.port) is int and 0 <= cfg.metrics.port <= 65535
    assert len({c.id for c in cfg.cameras}) == len(cfg.cameras)
    again = parse_config(cfg.model_dump(), source)
    assert repr(again.model_dump()) == repr(dump) and again.source == cfg.source == source


def test_the_unmutated_config_is_valid():
    assert_config_invariants(parse_config(copy.deepcopy(VALID), "rig.yaml"), "rig.yaml")


@SETTINGS
@given(data=mutated_configs())
def test_config_mutations_give_a_config_or_a_config_error(data):
    try:
        cfg = parse_config(data, "rig.yaml")
    except ConfigError as exc:
        assert one_line(exc).startswith("rig.yaml: ")
    else:
        assert_config_invariants(cfg, "rig.yaml")


@SETTINGS
@given(doc=yaml_values)
def test_config_from_random_yaml_documents(tmp_path, doc):
    path = tmp_path / "rig.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert one_line(exc).startswith(str(path))
    else:
        assert_config_invariants(cfg, str(path))


@SETTINGS
@given(raw=st.binary(max_size=400) | st.text(max_size=400).map(str.encode))
def test_config_from_random_bytes(tmp_path, raw):
    path = tmp_path / "rig.yaml"
    path.write_bytes(raw)
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        assert one_line(exc).startswith(str(path))
    else:
        assert_config_invariants(cfg, str(path))


# ----------------------------------------------------------------------------- serve's checks

@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> dict:
    """A valid config whose bundle, key files and hook all exist (paths absolute)."""
    from posed.daemon.keys import generate_keys

    root = tmp_path_factory.mktemp("rig")
    shutil.copytree(DEMO / "model", root / "model")
    generate_keys(root / "keys")
    public, _ = generate_keys(root / "keys", "client")
    (root / "allowed").mkdir()
    shutil.copy(public, root / "allowed")
    return {"model": {"bundle": str(root / "model"), "device": "cpu", "threads": 1},
            "cameras": [{"id": "cam0", "source": str(DEMO / "clip.mp4"), "loop": True,
                         "crop": [0, 0, 32, 32], "resize": [16, 16]},
                        {"id": "top", "source": "/dev/video0", "width": 64, "height": 48,
                         "fps": 30.0, "reconnect_initial_s": 0.5, "reconnect_max_s": 2.0},
                        {"id": "net", "source": "rtsp://127.0.0.1:1/x", "policy": "latest"}],
            "batching": {"max_batch": 3, "max_delay_ms": 2.0},
            "processors": {"hook": "operator:truth", "kalman": {"enabled": True}},
            "publisher": {"endpoint": "tcp://127.0.0.1:5555", "hwm": 10,
                          "curve": {"server_secret_key": str(root / "keys" / "server.key_secret"),
                                    "allowed_clients": str(root / "allowed")}},
            "metrics": {"enabled": False}}


def assert_startup_invariants(cfg: DaemonConfig, startup) -> None:
    """What serve may rely on once its start-up checks pass."""
    assert [s.id for s in startup.cameras] == [c.id for c in cfg.cameras]
    for spec in startup.cameras:
        assert 0 < spec.reconnect_initial_s <= spec.reconnect_max_s
        if spec.resolved_kind() != "v4l2":
            assert spec.width is None and spec.fps is None and spec.pixel_format is None
        assert (spec.width is None) == (spec.height is None)
    assert startup.bundle.path == cfg.model.bundle and startup.bundle.bodyparts
    assert (startup.hook is None) == (not cfg.processors.hook)
    assert startup.hook is None or callable(startup.hook)


def test_the_unmutated_rig_passes_serves_checks(rig):
    cfg = parse_config(copy.deepcopy(rig), "rig.yaml")
    assert_startup_invariants(cfg, check_startup(cfg))


@SETTINGS
@given(data=st.data())
def test_serves_checks_on_mutated_configs(rig, data):
    """Serve's start-up checks (the ones `posed config check` runs) give a checked start-up
    or one ConfigError line naming the config file; never another exception."""
    mutated = _mutate(data.draw, rig)
    try:
        cfg = parse_config(mutated, "rig.yaml")
        startup = check_startup(cfg)
    except ConfigError as exc:
        assert one_line(exc).startswith("rig.yaml: ")
    else:
        assert_config_invariants(cfg, "rig.yaml")
        assert_startup_invariants(cfg, startup)


@pytest.mark.parametrize("raw", [
    b"\xff\xfe\x00 not utf-8",
    b"[" * 5000 + b"]" * 5000,                     # deeper than PyYAML's recursion allows
    b"model: !!python/object/apply:os.system [echo hi]",
    b"model: &a [*a]",
])
def test_config_edge_cases(tmp_path, raw):
    path = tmp_path / "rig.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert one_line(err.value).startswith(str(path))


# ----------------------------------------------------------------------------- label files

cells = st.one_of(
    st.sampled_from(["", "scorer", "bodyparts", "coords", "individuals", "x", "y", "likelihood",
                     "snout", "tail", "labeled-data", "vid", "img001.png", "nan", "inf", "-1e309",
                     "1.5", "0", " 12 ", "1,2", '"'] ),
    st.floats(allow_nan=True).map(repr),
    st.text(max_size=6),
)


@st.composite
def label_csvs(draw):
    """CSV text shaped roughly like a DeepLabCut label file, with random damage."""
    width = draw(st.integers(1, 8))
    rows = [draw(st.lists(cells, min_size=0, max_size=width + 1))
            for _ in range(draw(st.integers(0, 7)))]
    if draw(st.booleans()) and len(rows) >= 3:
        # Often a plausible header, so the reader gets past its first checks.
        rows[0] = ["scorer"] + ["me"] * (width - 1)
        rows[1] = ["bodyparts"] + [draw(st.sampled_from(["snout", "tail"]))
                                   for _ in range(width - 1)]
        rows[2] = ["coords"] + [draw(st.sampled_from(["x", "y", "likelihood"]))
                                for _ in range(width - 1)]
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return out.getvalue().encode()


@SETTINGS
@given(raw=label_csvs() | st.binary(max_size=300))
def test_label_csv_reader(tmp_path, raw):
    path = tmp_path / "CollectedData_me.csv"
    path.write_bytes(raw)
    try:
        labels = read_label_file(path)
    except (DataError, ConfigError) as exc:
        assert str(path) in one_line(exc)
    else:
        assert isinstance(labels, LabeledData)
        assert labels.keypoints.shape == (len(labels.images), len(labels.bodyparts), 2)


@SETTINGS
@given(raw=label_csvs() | st.binary(max_size=300))
def test_pose_table_csv_reader(tmp_path, raw):
    path = tmp_path / "video1DLC_x.csv"
    path.write_bytes(raw)
    try:
        df = read_pose_table(path)
    except (DataError, ConfigError) as exc:
        assert str(path) in one_line(exc)
    else:
        assert df.columns.nlevels == 3


@st.composite
def odd_frames(draw):
    """DataFrames with random column levels and values, as a damaged label file holds."""
    nlevels = draw(st.integers(1, 4))
    names = draw(st.lists(st.sampled_from(["scorer", "individuals", "bodyparts", "coords", None,
                                           "other"]), min_size=nlevels, max_size=nlevels))
    ncols = draw(st.integers(0, 4))
    level_values = st.sampled_from(["me", "snout", "tail", "x", "y", "likelihood", "single"])
    tuples = [tuple(draw(level_values) for _ in range(nlevels)) for _ in range(ncols)]
    nrows = draw(st.integers(0, 3))
    values = draw(st.lists(st.lists(st.one_of(st.floats(allow_nan=True), st.text(max_size=3)),
                                    min_size=ncols, max_size=ncols),
                           min_size=nrows, max_size=nrows))
    index = [f"labeled-data/v/img{i}.png" for i in range(nrows)]
    if nlevels == 1:
        columns = pd.Index([t[0] for t in tuples], name=names[0])
    else:
        columns = pd.MultiIndex.from_tuples(tuples, names=names) if tuples else \
            pd.MultiIndex.from_arrays([[]] * nlevels, names=names)
    return pd.DataFrame(values, index=index, columns=columns, dtype=object)


# Object columns make PyTables pickle the values (and warn); that is the point here.
@pytest.mark.filterwarnings("ignore::pandas.errors.PerformanceWarning")
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(df=odd_frames())
def test_label_h5_reader_with_malformed_tables(tmp_path, df):
    path = tmp_path / "CollectedData_me.h5"
    try:
        df.to_hdf(path, key="df_with_missing", mode="w")
    except Exception:  # noqa: BLE001 - pandas cannot store this frame at all: not our input
        assume(False)
    for reader in (read_label_file, read_pose_table):
        try:
            reader(path)
        except (DataError, ConfigError) as exc:
            assert str(path) in one_line(exc)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_damaged_h5_label_file(tmp_path, data):
    path = tmp_path / "CollectedData_me.h5"
    cols = pd.MultiIndex.from_product([["me"], ["snout", "tail"], ["x", "y"]],
                                      names=["scorer", "bodyparts", "coords"])
    pd.DataFrame(np.arange(12.0).reshape(3, 4), index=["a.png", "b.png", "c.png"],
                 columns=cols).to_hdf(path, key="df_with_missing", mode="w")
    raw = bytearray(path.read_bytes())
    for _ in range(data.draw(st.integers(1, 20))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(len(raw) // 4, len(raw)))
    path.write_bytes(bytes(raw[:cut]))
    for reader in (read_label_file, read_pose_table):
        try:
            reader(path)
        except (DataError, ConfigError) as exc:
            assert str(path) in one_line(exc)


# ----------------------------------------------------------------------------- messages

msgpack_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats()
    | st.text(max_size=12) | st.binary(max_size=12),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=5),
    max_leaves=25)

GOOD = {"schema": 1, "camera": "cam0", "seq": 4, "frame": 104, "pts": None,
        "capture_ns": 10, "infer_ns": 20, "publish_ns": 30, "bodyparts": ["a", "b"],
        "keypoints": [1.0, 2.0, 0.5, 3.0, 4.0, 0.25], "batch_size": 1}


def _check_decode(frames) -> None:
    try:
        msg = decode_message(frames)
    except ProtocolError as exc:
        one_line(exc)
        assert exc.__cause__ is None
    else:
        assert isinstance(msg, PoseMessage)
        assert msg.keypoints.shape == (len(msg.bodyparts), 3)


@SETTINGS
@given(value=msgpack_values)
def test_decode_random_msgpack_values(value):
    _check_decode([b"pose.cam0", msgpack.packb(value, use_bin_type=True)])


@SETTINGS
@given(changes=st.dictionaries(st.sampled_from(sorted(GOOD) + ["extra", "zzz"]),
                               msgpack_values | st.just(KeyError), min_size=1, max_size=4),
       topic=st.sampled_from([b"pose.cam0", b"pose.cam1", b"pose.", b"meta"]) | st.binary(
           max_size=10))
def test_decode_mutated_messages(changes, topic):
    msg = dict(GOOD)
    for key, value in changes.items():
        if value is KeyError:
            msg.pop(key, None)
        else:
            msg[key] = value
    _check_decode([topic, msgpack.packb(msg, use_bin_type=True)])


@SETTINGS
@given(frames=st.lists(st.binary(max_size=40) | st.text(max_size=5) | st.integers(), max_size=4)
       | msgpack_values)
def test_decode_random_frame_lists(frames):
    _check_decode(frames)


@SETTINGS
@given(value=msgpack_values)
def test_decode_meta_random(value):
    try:
        meta = decode_meta([b"meta", msgpack.packb(value, use_bin_type=True)])
    except ProtocolError as exc:
        one_line(exc)
    else:
        assert isinstance(meta, dict)
