"""Tests for posed.engines.project.posetables and posed.engines.io (DeepLabCut pose tables)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tables

from posed.engines.project import posetables as df_mod
from posed.engines.project.posetables import (
    metadata_path,
    output_stem,
    poses_to_frame,
    read_pose_table,
    scorer_name,
    write_metadata,
    write_pose_table,
)
from posed.engines.io import atomic_path, atomic_write_text, cleanup_stale_temps
from posed.errors import DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC_MODEL = SHARED / "models" / "dlc3-openfield-resnet50"
DLC_STEM = "m3v1mp4DLC_Resnet50_openfieldOct30shuffle1_snapshot_1"
DLC_H5 = DLC_MODEL / f"{DLC_STEM}.h5"
DLC_CSV = DLC_MODEL / f"{DLC_STEM}.csv"
needs_dlc = pytest.mark.skipif(not DLC_H5.is_file(), reason="shared DLC reference absent")

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]


def _poses(n: int = 7, k: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = rng.random((n, k, 3)).astype(np.float32) * [640, 480, 1]
    poses[n // 2, 1] = np.nan  # DLC tables may hold NaN; it must survive the round trip
    return poses.astype(np.float32)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# --- scorer and file names -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("net", "camel"),
    [
        ("resnet_50", "Resnet50"),
        ("resnet_101", "Resnet101"),
        ("mobilenet_v2_0.35", "MobilenetV2035"),
        ("mobilenet_v2_1.0", "MobilenetV210"),
        ("hrnet_w32", "HrnetW32"),
        ("dlcrnet_ms5", "DlcrnetMs5"),
        ("efficientnet_b0", "EfficientnetB0"),
    ],
)
def test_scorer_name_nets(net: str, camel: str) -> None:
    assert scorer_name(net, "openfieldOct30", 1, 1) == (
        f"posed_{camel}_openfieldOct30shuffle1_snapshot_1"
    )


def test_scorer_name_follows_dlc_pattern() -> None:
    ours = scorer_name("resnet_50", "openfieldOct30", 1, 1)
    assert ours.replace("posed_", "DLC_", 1) == "DLC_Resnet50_openfieldOct30shuffle1_snapshot_1"
    assert scorer_name("resnet_50", "reachingAug30", 3, 200).endswith("shuffle3_snapshot_200")


def test_scorer_name_rejects_empty_net() -> None:
    with pytest.raises(ValueError):
        scorer_name("_.", "p", 1, 1)


def test_output_stem_and_metadata_path(tmp_path: Path) -> None:
    scorer = "DLC_Resnet50_openfieldOct30shuffle1_snapshot_1"
    stem = output_stem(Path("/videos/m3v1mp4.mp4"), scorer)
    assert stem == DLC_STEM
    assert metadata_path(tmp_path / f"{stem}.h5") == tmp_path / f"{stem}_meta.json"


# --- poses_to_frame --------------------------------------------------------------------------


def test_poses_to_frame_layout() -> None:
    poses = _poses()
    frame = poses_to_frame(poses, BODYPARTS, "S")
    assert frame.shape == (7, 12)
    assert list(frame.columns.names) == ["scorer", "bodyparts", "coords"]
    assert list(frame.columns[:3]) == [("S", "snout", "x"), ("S", "snout", "y"),
                                       ("S", "snout", "likelihood")]
    assert isinstance(frame.index, pd.RangeIndex) and list(frame.index) == list(range(7))
    assert set(frame.dtypes) == {np.dtype(np.float32)}
    np.testing.assert_array_equal(frame[("S", "leftear", "y")].to_numpy(), poses[:, 1, 1])


def test_poses_to_frame_index_paths() -> None:
    index = [Path("labeled-data/v/img0.png"), "labeled-data/v/img1.png"]
    frame = poses_to_frame(_poses(2), BODYPARTS, "S", index=index)
    assert list(frame.index) == ["labeled-data/v/img0.png", "labeled-data/v/img1.png"]


@pytest.mark.parametrize(
    "shape", [(7, 4), (7, 3, 3), (7, 4, 2), (4, 3)],
)
def test_poses_to_frame_shape_errors(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"\(7|\(4"):
        poses_to_frame(np.zeros(shape), BODYPARTS, "S")


def test_poses_to_frame_other_errors() -> None:
    with pytest.raises(ValueError, match="3 labels for 7"):
        poses_to_frame(_poses(), BODYPARTS, "S", index=["a", "b", "c"])
    with pytest.raises(ValueError, match="repeat"):
        poses_to_frame(np.zeros((1, 2, 3)), ["a", "a"], "S")


# --- writing and reading ---------------------------------------------------------------------


def test_round_trip_h5_and_csv(tmp_path: Path) -> None:
    frame = poses_to_frame(_poses(), BODYPARTS, scorer_name("resnet_50", "p", 1, 5))
    h5 = tmp_path / "out" / "vidposed.h5"
    written = write_pose_table(frame, h5, csv=True)
    assert written == [h5, h5.with_suffix(".csv")]
    assert _listing(h5.parent) == ["vidposed.csv", "vidposed.h5"]  # no temporaries left

    back = pd.read_hdf(h5, "df_with_missing")
    pd.testing.assert_frame_equal(back, frame, check_index_type=False)
    assert back.index.dtype == np.int64
    pd.testing.assert_frame_equal(read_pose_table(h5), back)

    lines = h5.with_suffix(".csv").read_text().splitlines()
    assert [line.split(",")[0] for line in lines[:4]] == ["scorer", "bodyparts", "coords", "0"]
    from_csv = read_pose_table(h5.with_suffix(".csv"))
    pd.testing.assert_frame_equal(from_csv, back)


def test_round_trip_image_index(tmp_path: Path) -> None:
    paths = [f"labeled-data/m4s1/img{i:03d}.png" for i in range(3)]
    frame = poses_to_frame(_poses(3), BODYPARTS, "S", index=paths)
    h5 = tmp_path / "imgs.h5"
    write_pose_table(frame, h5, csv=True)
    assert list(read_pose_table(h5).index) == paths
    assert list(read_pose_table(h5.with_suffix(".csv")).index) == paths


def test_overwrite_replaces_file(tmp_path: Path) -> None:
    h5 = tmp_path / "a.h5"
    write_pose_table(poses_to_frame(_poses(5), BODYPARTS, "S"), h5)
    write_pose_table(poses_to_frame(_poses(2), BODYPARTS, "S"), h5)
    assert read_pose_table(h5).shape == (2, 12)


def _group_attrs(h5: Path) -> tuple[dict, dict]:
    with tables.open_file(h5, "r") as handle:
        group = handle.get_node("/df_with_missing")
        table = handle.get_node("/df_with_missing/table")
        g = {k: group._v_attrs[k] for k in group._v_attrs._f_list("user")}
        t = {k: table._v_attrs[k] for k in table._v_attrs._f_list("user")}
        t["_description"] = {n: str(table.coldtypes[n]) for n in table.colnames}
    return g, t


@needs_dlc
def test_structure_matches_dlc_file(tmp_path: Path) -> None:
    dlc = pd.read_hdf(DLC_H5, "df_with_missing")
    scorer = dlc.columns.get_level_values("scorer")[0]
    bodyparts = list(dict.fromkeys(dlc.columns.get_level_values("bodyparts")))
    poses = dlc.to_numpy().reshape(len(dlc), len(bodyparts), 3)
    ours_path = tmp_path / f"{DLC_STEM}.h5"
    write_pose_table(poses_to_frame(poses, bodyparts, scorer), ours_path)
    ours = pd.read_hdf(ours_path, "df_with_missing")

    # What a pandas user sees: same names, levels, dtypes, index kind and values.
    assert list(ours.columns.names) == list(dlc.columns.names)
    assert list(ours.columns) == list(dlc.columns)
    assert list(ours.dtypes) == list(dlc.dtypes)
    assert ours.index.dtype == dlc.index.dtype
    assert type(ours.index) is type(dlc.index)
    pd.testing.assert_frame_equal(ours, dlc)

    # What is on disk: same PyTables layout and the pandas attributes older readers need.
    dlc_g, dlc_t = _group_attrs(DLC_H5)
    our_g, our_t = _group_attrs(ours_path)
    assert set(dlc_g) <= set(our_g)
    for key in ("pandas_type", "table_type", "pandas_version", "levels", "index_cols",
                "info", "non_index_axes", "values_cols", "data_columns", "encoding"):
        assert our_g[key] == dlc_g[key], key
    for key in ("index_kind", "values_block_0_dtype", "values_block_0_kind", "_description"):
        assert our_t[key] == dlc_t[key], key
    with pd.HDFStore(ours_path, "r") as store:
        assert store.keys() == ["/df_with_missing"]
        assert store.get_storer("df_with_missing").is_table


@needs_dlc
def test_read_dlc_h5_and_csv() -> None:
    from_h5 = read_pose_table(DLC_H5)
    from_csv = read_pose_table(DLC_CSV)
    assert from_h5.shape == (300, 12)
    pd.testing.assert_frame_equal(from_csv, from_h5)
    assert from_h5.columns.get_level_values("scorer")[0] == (
        "DLC_Resnet50_openfieldOct30shuffle1_snapshot_1"
    )


def test_read_pose_table_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.h5"
    with pytest.raises(DataError, match="missing.h5: no such file"):
        read_pose_table(missing)

    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(os.urandom(2000))
    with pytest.raises(DataError, match="garbage.h5: cannot read pose table"):
        read_pose_table(garbage)

    plain = tmp_path / "plain.csv"
    plain.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match="plain.csv"):
        read_pose_table(plain)

    two_keys = tmp_path / "two.h5"
    pd.DataFrame({"a": [1.0]}).to_hdf(two_keys, key="one", format="table")
    pd.DataFrame({"a": [1.0]}).to_hdf(two_keys, key="two", format="table")
    with pytest.raises(DataError, match="two.h5: no 'df_with_missing'"):
        read_pose_table(two_keys)

    flat = tmp_path / "flat.h5"
    pd.DataFrame({"a": [1.0]}).to_hdf(flat, key="df_with_missing", format="table")
    with pytest.raises(DataError, match="flat.h5: not a pose table"):
        read_pose_table(flat)


def test_write_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def half_written(self, path, *args, **kwargs):  # noqa: ANN001
        Path(path).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pd.DataFrame, "to_hdf", half_written)
    h5 = tmp_path / "v.h5"
    with pytest.raises(DataError, match="v.h5: cannot write"):
        write_pose_table(poses_to_frame(_poses(), BODYPARTS, "S"), h5)
    assert _listing(tmp_path) == []


def test_failed_csv_keeps_previous_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    h5 = tmp_path / "v.h5"
    write_pose_table(poses_to_frame(_poses(3), BODYPARTS, "S"), h5, csv=True)
    before = h5.with_suffix(".csv").read_bytes()

    def broken(self, path, *args, **kwargs):  # noqa: ANN001
        Path(path).write_text("scorer,half")
        raise OSError(5, "I/O error")

    monkeypatch.setattr(pd.DataFrame, "to_csv", broken)
    with pytest.raises(DataError, match="v.csv: cannot write"):
        write_pose_table(poses_to_frame(_poses(5), BODYPARTS, "S"), h5, csv=True)
    assert h5.with_suffix(".csv").read_bytes() == before
    assert _listing(tmp_path) == ["v.csv", "v.h5"]


# --- atomic helpers --------------------------------------------------------------------------


def test_atomic_path_names_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "out.h5"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.name.startswith(f".out.h5.tmp-{os.getpid()}-")
        assert tmp.suffix == ".h5"
        tmp.write_text("new")
        assert target.read_text() == "old"  # nothing visible before the block ends
    assert target.read_text() == "new"
    assert _listing(tmp_path) == ["out.h5"]


def test_atomic_path_failure_leaves_no_file(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert _listing(tmp_path) == []

    target.write_text("keep")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert _listing(tmp_path) == ["out.csv"] and target.read_text() == "keep"


def test_atomic_write_text(tmp_path: Path) -> None:
    target = tmp_path / "notes.txt"
    atomic_write_text(target, "é\nline\r\n")
    assert target.read_bytes() == "é\nline\r\n".encode()


def test_cleanup_stale_temps(tmp_path: Path) -> None:
    name = "v.h5"
    dead = tmp_path / f".{name}.tmp-999999999-abcd.h5"  # above Linux's pid_max: never alive
    garbled = tmp_path / f".{name}.tmp-xyz.h5"
    live = tmp_path / f".{name}.tmp-{os.getppid()}-abcd.h5"  # another running process
    mine_stale = tmp_path / f".{name}.tmp-{os.getpid()}-0000.h5"
    other = tmp_path / ".w.h5.tmp-999999999-abcd.h5"
    for p in (dead, garbled, live, mine_stale, other):
        p.write_text("x")
    with atomic_path(tmp_path / name) as active:
        active.write_text("writing")
        removed = cleanup_stale_temps(tmp_path, name)
        assert active.exists()
    assert sorted(removed) == sorted([dead, garbled, mine_stale])
    assert live.exists() and other.exists()
    assert cleanup_stale_temps(tmp_path / "absent", name) == []


# --- metadata --------------------------------------------------------------------------------


def test_write_metadata_json(tmp_path: Path) -> None:
    meta = {
        "zeta": np.float32(1.5),
        "fps": np.float64(30.0),
        "nframes": np.int64(2330),
        "frame_dimensions": (480, 640),
        "cropping_parameters": np.array([0, 640, 0, 480]),
        "video": tmp_path / "v.mp4",
        "missing": float("nan"),
        "nested": {"b": True, "a": [np.int32(1), None]},
        3: "int key",
    }
    path = write_metadata(metadata_path(tmp_path / "vDLC.h5"), meta)
    assert path.name == "vDLC_meta.json"
    text = path.read_text()
    data = json.loads(text)
    assert data == {
        "3": "int key",
        "cropping_parameters": [0, 640, 0, 480],
        "fps": 30.0,
        "frame_dimensions": [480, 640],
        "missing": None,
        "nested": {"a": [1, None], "b": True},
        "nframes": 2330,
        "video": str(tmp_path / "v.mp4"),
        "zeta": 1.5,
    }
    assert list(data) == sorted(data)  # keys written sorted
    assert _listing(tmp_path) == ["vDLC_meta.json"]


def test_write_metadata_rejects_unknown_types(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="metadata outer.inner: cannot store object"):
        write_metadata(tmp_path / "m.json", {"outer": {"inner": object()}})
    assert _listing(tmp_path) == []


def test_module_exports() -> None:
    assert df_mod.H5_KEY == "df_with_missing"
    assert df_mod.COORDS == ("x", "y", "likelihood")
