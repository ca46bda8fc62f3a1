"""DeepLabCut's compat API on posed: signatures, parameter policy, layout rules, files.

No DeepLabCut is needed: its signatures are compared with the reference read from DeepLabCut
3.0.2's own source (tests/data/deeplabcut/compat_signatures_3.0.2.json), and its file rules
(scorer names, snapshot order, ``find_analyzed_data``, ``_meta.pickle``, the ``.mat`` training
set) are written here from its documented behaviour.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

from posed.engines import compat
from posed.engines.dlc import layout
from posed.engines.project import load_labels, load_project, load_split
from posed.errors import CapabilityError, ConfigError, ModelLoadError, PosedError

REFERENCE = Path(__file__).parent / "data" / "deeplabcut" / "compat_signatures_3.0.2.json"


# ----------------------------------------------------------------------------- signatures

def _reference() -> dict:
    return json.loads(REFERENCE.read_text())


@pytest.mark.parametrize("name", sorted(_reference()["functions"]))
def test_signature_is_deeplabcuts(name):
    """Same names, order, kinds and defaults; posed may add a trailing ``**kwargs`` (where
    DeepLabCut's decorator takes renamed parameters)."""
    want = _reference()["functions"][name]
    got = list(inspect.signature(getattr(compat, name)).parameters.values())
    if len(got) == len(want) + 1 and got[-1].kind is inspect.Parameter.VAR_KEYWORD:
        got = got[:-1]
    assert [p.name for p in got] == [p["name"] for p in want]
    assert [p.kind.name for p in got] == [p["kind"] for p in want]
    for p, ref in zip(got, want):
        if p.kind is not inspect.Parameter.VAR_KEYWORD:
            default = None if p.default is inspect.Parameter.empty else repr(p.default)
            assert default == ref["default"], f"{name}({p.name}=...)"


def test_engine_has_deeplabcuts_members():
    ref = _reference()["engine_members"]
    assert {"PYTORCH", "TF"} <= set(ref)
    assert compat.Engine.TF is compat.Engine.TENSORFLOW
    for member, text in ref.items():
        eng = getattr(compat.Engine, member)
        for attr in ("model_folder_name", "pose_cfg_name", "results_folder_name"):
            assert f"{attr}='{getattr(eng, attr)}'" in text
        assert set(eng.aliases) >= set(eval(text.split("aliases=")[1].split(")")[0] + ")"))


# ----------------------------------------------------------------------------- parameters

def test_renamed_parameter_both_names_and_conflict(project_copy, caplog):
    with pytest.raises(TypeError, match="both 'videotype' and 'video_extensions'"):
        compat.analyze_videos(project_copy / "config.yaml", [], video_extensions="mp4",
                              videotype="avi")
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        compat.analyze_videos(project_copy / "config.yaml", [], bogus=1)


def test_refused_parameter_is_one_line(project_copy):
    with pytest.raises(CapabilityError) as err:
        compat.analyze_videos(project_copy / "config.yaml", [], n_tracks=2)
    assert "n_tracks=2" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(CapabilityError, match="detector_type"):
        compat.create_training_dataset(project_copy / "config.yaml", detector_type="ssdlite")


def test_no_effect_parameter_warns_once_and_runs(project_copy, caplog):
    with caplog.at_level(logging.WARNING, logger="posed.compat"):
        out = compat.create_training_dataset(str(project_copy / "config.yaml"), Shuffles=[3],
                                             userfeedback=False, windows2linux=True)
    lines = [r.getMessage() for r in caplog.records]
    assert sum("userfeedback=False has no effect" in m for m in lines) == 1
    assert sum("windows2linux=True has no effect" in m for m in lines) == 1
    assert out[0][1] == 3


def test_project_engine_and_aug_methods():
    assert compat.get_project_engine({"engine": "tensorflow"}) is compat.Engine.TF
    assert compat.get_project_engine({}) is compat.Engine.PYTORCH
    assert compat.get_available_aug_methods(compat.Engine.PYTORCH) == ("albumentations",)
    assert compat.get_available_aug_methods("tf")[0] == "imgaug"


# ----------------------------------------------------------------------------- datasets

def test_create_training_dataset_honours_indices_in_dlc_order(project_copy):
    cfg = project_copy / "config.yaml"
    project = load_project(cfg)
    from posed.engines.dlc.datasets import dlc_image_order

    order = dlc_image_order(project)
    assert order == sorted(order, key=lambda p: tuple(Path(p).parts))
    train, test = list(range(0, 20)), list(range(20, 25))
    result = compat.create_training_dataset(cfg, Shuffles=[2], trainIndices=[train],
                                            testIndices=[test], net_type="resnet_18")
    frac, shuffle, (got_train, got_test) = result[0]
    assert shuffle == 2 and sorted(got_train) == train and sorted(got_test) == test
    assert frac == pytest.approx(0.8)
    split = load_split(project, 2)
    assert set(split.train) == {order[i] for i in train}
    assert set(split.test) == {order[i] for i in test}
    from posed.engines.dlc.datasets import shuffle_settings

    assert shuffle_settings(project, 2) == {"net_type": "resnet_18"}
    # Without Shuffles, the next numbers after the highest existing split.
    nxt = compat.create_training_dataset(cfg, num_shuffles=2)
    assert [s for _, s, _ in nxt] == [3, 4]
    with pytest.raises(ConfigError, match="out of range"):
        compat.create_training_dataset(cfg, Shuffles=[9], trainIndices=[[10_000]],
                                       testIndices=[[0]])


def test_dlc_split_from_mat_is_the_split(project_copy):
    """A shuffle DeepLabCut split (its .mat training set) is read and used, not re-made."""
    from scipy.io import savemat

    from posed.engines.dlc.split import dlc_split_path

    project = load_project(project_copy)
    images = list(load_labels(project, check_images=False).images)
    train = images[::3]
    dtype = [("image", "O"), ("size", "O"), ("joints", "O")]
    records = np.array([(np.array(Path(p).parts, dtype=object), np.array([3, 128, 128]),
                         np.array([[0, 5, 5]])) for p in train], dtype=dtype)
    path = dlc_split_path(project, 1, project.training_fraction[0])
    path.parent.mkdir(parents=True)
    savemat(str(path), {"dataset": records})
    split = load_split(project, 1)
    assert set(split.train) == set(train)
    assert set(split.test) == set(images) - set(train)
    from posed.engines.project import create_split

    assert create_split(project, 1).train == split.train  # not replaced by posed's own


# ----------------------------------------------------------------------------- layout


def _snap(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"")


def test_snapshot_order_and_index_rule(tmp_path):
    _snap(tmp_path, "snapshot-005.pt", "snapshot-best-010.pt", "snapshot-020.pt",
          "snapshot-100.pt", "snapshot-detector-020.pt", "notes.txt")
    snaps = layout.list_snapshots(tmp_path)
    assert [s.uid for s in snaps] == ["5", "20", "100", "best-10"]  # by epoch, best last
    pick = lambda i: layout.select_snapshot(snaps, i, tmp_path).uid  # noqa: E731
    assert pick(-1) == "best-10" and pick("best") == "best-10" and pick(0) == "5"
    assert pick("all") == "best-10" and pick(-2) == "100"
    with pytest.raises(ModelLoadError, match="does not select"):
        pick(4)


def test_model_folder_truncates_the_fraction_as_deeplabcut(project_copy):
    project = load_project(project_copy)
    folder = layout.model_folder(project, 3, 0.57)
    assert folder.name == f"{project.name}-trainset56shuffle3"  # int(0.57 * 100) == 56
    assert folder.parent.parent.name == "dlc-models-pytorch"


def test_dlc_scorer_and_shuffle_from_folder(project_copy):
    project = load_project(project_copy)
    folder = layout.model_folder(project, 1, project.training_fraction[0])
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "pytorch_config.yaml").write_text("net_type: resnet_50\nmethod: bu\n")
    _snap(folder / "train", "snapshot-200.pt")
    found = layout.find_shuffle(project, 1)
    assert found is not None and found.folder == folder
    assert found.scorer(found.snapshot()) == f"DLC_Resnet50_{project.name}shuffle1_snapshot_200"
    again = layout.shuffle_from_folder(folder / "train")
    assert again is not None and again.shuffle == 1 and again.project.root == project.root
    assert layout.shuffle_from_folder(project_copy / "labeled-data") is None
    train, test, snaps = compat.return_train_network_path(str(project_copy / "config.yaml"))
    assert (train, test, snaps) == (folder / "train" / "pytorch_config.yaml",
                                    folder / "test" / "pose_cfg.yaml", folder / "train")


def test_both_layouts_trained_is_an_error_that_asks(project_copy):
    from posed.engines.loading import resolve_bundle
    from posed.engines.project.folders import get_train_folder

    project = load_project(project_copy)
    folder = layout.model_folder(project, 1, project.training_fraction[0])
    (folder / "train").mkdir(parents=True)
    (folder / "train" / "pytorch_config.yaml").write_text("net_type: resnet_50\n")
    _snap(get_train_folder(project, 1, "pytorch"), "snapshot-001.safetensors")
    with pytest.raises(ConfigError, match="both by posed .* and by DeepLabCut"):
        resolve_bundle(project_copy, shuffle=1)
    with pytest.raises(ConfigError, match="layout: must be one of"):
        resolve_bundle(project_copy, shuffle=1, layout="dlc")


# ----------------------------------------------------------------------------- files


def test_meta_pickle_is_plain_and_deeplabcuts_keys(tmp_path):
    from posed.engines.bundle import ModelBundle
    from posed.engines.dlc.meta import video_metadata, write_meta_pickle

    shuffle = tmp_path / "iteration-2" / "openfieldOct30-trainset95shuffle1"
    (shuffle / "train").mkdir(parents=True)
    (shuffle / "train" / "pytorch_config.yaml").write_text(
        "net_type: resnet_50\nmetadata:\n  bodyparts: [a, b]\n  individuals: [individual_1]\n"
        "  unique_bodyparts: []\n")
    bundle = ModelBundle(engine="pytorch", format="safetensors", bodyparts=["a", "b"],
                         architecture={}, stride=8.0, locref_stdev=7.2801,
                         source={"layout": "deeplabcut", "shuffle_folder": str(shuffle),
                                 "train_fraction": 0.95, "scorer": "DLC_X"})
    data = video_metadata(bundle, start=1.0, stop=3.5, fps=30.0, batch_size=4, width=640,
                          height=480, nframes=12)
    path = tmp_path / "v_meta.pickle"
    write_meta_pickle(path, data)
    back = pickle.loads(path.read_bytes())  # posed's own file
    assert set(back) == {"data"}
    assert set(back["data"]) == {
        "start", "stop", "run_duration", "Scorer", "pytorch-config", "fps", "batch_size",
        "frame_dimensions", "nframes", "iteration (active-learning)", "training set fraction",
        "cropping", "cropping_parameters", "individuals", "bodyparts", "unique_bodyparts"}
    d = back["data"]
    assert d["frame_dimensions"] == (640, 480) and d["cropping_parameters"] == [0, 640, 0, 480]
    assert d["iteration (active-learning)"] == 2 and d["run_duration"] == 2.5
    assert d["Scorer"] == "DLC_X" and d["pytorch-config"]["net_type"] == "resnet_50"
    # Only built-in types: the pickle names no module at all.
    import pickletools

    assert not [op for op, _, _ in pickletools.genops(path.read_bytes())
                if op.name in ("GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ")]
    with pytest.raises(TypeError, match="not a built-in type"):
        write_meta_pickle(tmp_path / "bad.pickle", {"data": {"x": np.float32(1)}})


def find_analyzed_data(folder: Path, videoname: str, scorer: str) -> Path:
    """DeepLabCut's rule for finding a video's unfiltered table (utils/auxiliaryfunctions.py):
    an ``.h5`` whose name starts with video name + scorer, not a skeleton, not filtered, not a
    tracker's."""
    found = [f for f in sorted(folder.glob("*.h5"))
             if f.name.startswith(videoname + scorer) and "skeleton" not in f.name
             and "filtered" not in f.name
             and not f.stem.endswith(("_el", "_sk", "_bx", "_tracklets"))]
    if not found:
        raise FileNotFoundError(f"no data file for {videoname} and {scorer} in {folder}")
    return found[0]


# ----------------------------------------------------------------------------- in place (real)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DLC_MODEL = SHARED / "models" / "dlc3-openfield-resnet50"
DLC_EXPORT = DLC_MODEL / "DLC_openfield_NetType.RESNET_50_iteration-0_shuffle-1_snapshot-1.pt"
DLC_H5 = DLC_MODEL / "m3v1mp4DLC_Resnet50_openfieldOct30shuffle1_snapshot_1.h5"
OPENFIELD = SHARED / "data" / "dlc-examples" / "openfield-Pranav-2018-10-30"
SCORER = "DLC_Resnet50_openfieldOct30shuffle1_snapshot_1"


@pytest.fixture(scope="module")
def dlc_shuffle_project(tmp_path_factory) -> Path:
    """The openfield project with DeepLabCut 3.0.2's trained shuffle 1 in DeepLabCut's layout:
    its ``pytorch_config.yaml`` and the weights DeepLabCut exported, as ``snapshot-001.pt``
    (``{"model": state_dict, "metadata": ...}``, DeepLabCut's snapshot structure)."""
    torch = pytest.importorskip("torch")
    if not (DLC_EXPORT.is_file() and OPENFIELD.is_dir()):
        pytest.skip("shared DeepLabCut model or example project absent")
    import shutil

    root = tmp_path_factory.mktemp("dlcshuffle") / OPENFIELD.name
    shutil.copytree(OPENFIELD, root, ignore=shutil.ignore_patterns("videos"))
    for p in root.rglob("*"):
        p.chmod(p.stat().st_mode | 0o200)
    train = root / "dlc-models-pytorch" / "iteration-0" / "openfieldOct30-trainset95shuffle1" / "train"
    train.mkdir(parents=True)
    shutil.copy(DLC_MODEL / "pytorch_config.yaml", train)
    pose = torch.load(DLC_EXPORT, map_location="cpu", weights_only=True)["pose"]
    torch.save({"model": pose, "metadata": {"epoch": 1}}, train / "snapshot-001.pt")
    (root / "videos").mkdir()
    _first_packets(OPENFIELD / "videos" / "m3v1mp4.mp4", root / "videos" / "m3v1mp4.mp4", 12)
    return root


def _first_packets(src: Path, dst: Path, n: int) -> None:
    """The first ``n`` packets by stream copy, as DeepLabCut's reference input was cut."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        ostream = out.add_stream_from_template(stream)
        for i, packet in enumerate(p for p in inp.demux(stream) if p.dts is not None):
            if i >= n:
                break
            packet.stream = ostream
            out.mux(packet)


@pytest.mark.realdata
@pytest.mark.torch
def test_dlc_shuffle_in_place_matches_deeplabcut(dlc_shuffle_project, tmp_path, monkeypatch):
    """A DeepLabCut user's call, unchanged: DeepLabCut's scorer and files, keypoints within
    1e-3 px of DeepLabCut's own analyze_videos, a _meta.pickle, DeepLabCut's lookup finds it."""
    import pandas as pd

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    cfg = str(dlc_shuffle_project / "config.yaml")
    dest = tmp_path / "out"
    scorer = compat.analyze_videos(cfg, [str(dlc_shuffle_project / "videos")], videotype=".mp4",
                                   shuffle=1, save_as_csv=True, destfolder=str(dest),
                                   batchsize=4, progress=False)
    assert scorer == SCORER
    h5 = find_analyzed_data(dest, "m3v1mp4", scorer)
    assert h5.with_suffix(".csv").is_file()
    got = pd.read_hdf(h5, "df_with_missing")
    ref = pd.read_hdf(DLC_H5, "df_with_missing").iloc[: len(got) - 1]  # last packet: cut edge
    assert got.columns.equals(ref.columns) and len(got) == 12
    diff = np.abs(got.iloc[: len(ref)].to_numpy() - ref.to_numpy())
    assert diff[:, 0::3].max() < 1e-3 and diff[:, 1::3].max() < 1e-3
    assert diff[:, 2::3].max() < 1e-3
    meta = pickle.loads(h5.with_name(h5.stem + "_meta.pickle").read_bytes())["data"]
    assert meta["Scorer"] == SCORER and meta["nframes"] == 12
    assert meta["frame_dimensions"] == (640, 480) and meta["cropping"] is False
    assert meta["pytorch-config"]["net_type"] == "resnet_50"

    # The same shuffle by posed's CLI and as a daemon's model (config check loads it).
    from posed.cli import main

    folder = dlc_shuffle_project / "dlc-models-pytorch" / "iteration-0" / \
        "openfieldOct30-trainset95shuffle1" / "train"
    config = tmp_path / "serve.yaml"
    config.write_text(f"model:\n  bundle: {folder}\n  device: cpu\ncameras:\n  - id: c\n"
                      f"    source: {dlc_shuffle_project / 'videos' / 'm3v1mp4.mp4'}\n"
                      "publisher:\n  endpoint: tcp://127.0.0.1:5599\nmetrics:\n  port: 0\n")
    assert main(["config", "check", str(config)]) == 0
    out2 = tmp_path / "cli"
    assert main(["analyze", str(dlc_shuffle_project), str(dlc_shuffle_project / "videos"),
                 "--dest", str(out2), "-q"]) == 0
    again = pd.read_hdf(out2 / h5.name, "df_with_missing")
    assert np.allclose(again.to_numpy(), got.to_numpy(), atol=1e-4, equal_nan=True)


# ----------------------------------------------------------------------------- DeepLabCut's shuffle

FIXTURE = Path(__file__).parent / "data" / "deeplabcut" / "shuffle_fixture"
FX_SCORER = "DLC_Resnet50_synthJan1shuffle1_snapshot_best-2"


@pytest.fixture
def dlc_fixture(tmp_path, monkeypatch) -> Path:
    """A writable copy of the shuffle DeepLabCut 3.0.2 trained (tests/data/deeplabcut/
    shuffle_fixture, README there): its split, snapshot, analysis, evaluation and export."""
    pytest.importorskip("torch")
    import shutil

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "synth"
    shutil.copytree(FIXTURE, root)
    return root


@pytest.mark.torch
def test_deeplabcuts_split_scorer_keypoints_and_evaluation(dlc_fixture, tmp_path, capsys):
    """DeepLabCut's own shuffle, unchanged: its split (as DeepLabCut's loader read it), its
    scorer, its analyze_videos keypoints, its evaluation errors."""
    import pandas as pd

    check = json.loads((dlc_fixture / "check.json").read_text())["split"]
    split = load_split(load_project(dlc_fixture), 1)
    names = check["all_images"]
    assert sorted(split.train) == sorted(names[i] for i in check["train_indices"])
    assert sorted(split.test) == sorted(names[i] for i in check["test_indices"])

    cfg = dlc_fixture / "config.yaml"
    scorer = compat.analyze_videos(cfg, [dlc_fixture / "videos" / "synth1.mp4"],
                                   destfolder=tmp_path / "out", progress=False)
    assert scorer == FX_SCORER
    got = pd.read_hdf(tmp_path / "out" / f"synth1{scorer}.h5", "df_with_missing")
    ref = pd.read_hdf(dlc_fixture / "videos" / f"synth1{scorer}.h5", "df_with_missing")
    assert got.columns.equals(ref.columns) and got.index.equals(ref.index)
    assert np.abs(got.to_numpy() - ref.to_numpy()).max() < 1e-3

    results = (dlc_fixture / "evaluation-results-pytorch" / "iteration-0" /
               "synthJan1-trainset80shuffle1" / f"{FX_SCORER}-results.csv")
    dlc = pd.read_csv(results)  # DeepLabCut's; posed writes its own in its place
    dlc_h5 = pd.read_hdf(results.with_name(f"{FX_SCORER}.h5"))
    compat.evaluate_network(str(cfg), Shuffles=[1])
    printed = capsys.readouterr().out
    ours = pd.read_csv(results)
    assert list(ours.columns) == list(dlc.columns)
    keep = [c for c in dlc.columns if "mAP" not in c and "mAR" not in c]  # posed leaves AP empty
    pd.testing.assert_frame_equal(ours[keep], dlc[keep], atol=0.006)
    ours_h5 = pd.read_hdf(results.with_name(f"{FX_SCORER}.h5"))
    assert ours_h5.columns.equals(dlc_h5.columns) and ours_h5.index.equals(dlc_h5.index)
    assert np.nanmax(np.abs(ours_h5.to_numpy() - dlc_h5.to_numpy())) < 1e-3
    overall = [float(line.split()[1]) for line in printed.splitlines()
               if line.split()[:1] == ["all"]]  # the train and the test row of the table
    # DeepLabCut rounds to 2 decimals; its rmse is posed's mean pixel error.
    assert overall == pytest.approx([dlc["train rmse"][0], dlc["test rmse"][0]], abs=0.006)


@pytest.mark.torch
def test_export_model_is_what_deeplabcut_exported(dlc_fixture):
    torch = pytest.importorskip("torch")
    compat.export_model(str(dlc_fixture / "config.yaml"), shuffle=1)
    ours = dlc_fixture / "exported-models-pytorch" / "DLC_synth_resnet_50_iteration-0_shuffle-1" \
        / "DLC_synth_resnet_50_iteration-0_shuffle-1_snapshot-best-2.pt"
    theirs = next((dlc_fixture / "exported-models-pytorch").glob("DLC_synth_NetType*/*.pt"))
    a = torch.load(ours, map_location="cpu", weights_only=True)
    b = torch.load(theirs, map_location="cpu", weights_only=True)
    assert set(a) == set(b) == {"config", "pose"}
    assert a["pose"].keys() == b["pose"].keys()
    assert all(torch.equal(a["pose"][k], b["pose"][k]) for k in a["pose"])
    assert a["config"]["model"] == b["config"]["model"]
    assert a["config"]["method"] == "bu" and a["config"]["metadata"]["bodyparts"] == \
        b["config"]["metadata"]["bodyparts"]


# ----------------------------------------------------------------------------- the round trip

@pytest.mark.torch
def test_round_trip_writes_deeplabcuts_layout_and_format(tmp_path, monkeypatch):
    """A shuffle posed trains through DeepLabCut's calls is written as DeepLabCut 3 writes
    one (checked here without DeepLabCut; benchmarks/results/dlc_roundtrip.json has DeepLabCut
    3.0.2 and DeepLabCut-Live running on it), and posed serves the published copy."""
    torch = pytest.importorskip("torch")
    import pickletools

    import pandas as pd
    from scipy.io import loadmat

    from posed.engines.synth import generate_project

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "rt"
    generate_project(root, frames=12, size=(64, 64), seed=5, video_frames=6)
    cfg = str(root / "config.yaml")
    [(frac, shuffle, (train, test))] = compat.create_training_dataset(cfg, Shuffles=[1],
                                                                      net_type="resnet_50")
    project = load_project(root)
    data = root / "training-datasets" / "iteration-0" / f"UnaugmentedDataSet_{project.name}"
    pp = int(frac * 100)
    mat = loadmat(str(data / f"{project.task}_{project.scorer}{pp}shuffle1.mat"))["dataset"]
    first = mat[0, 0]
    assert first["image"].dtype.kind == "U" and first["image"].shape == (1, 3)
    assert first["joints"].dtype == object and first["joints"][0, 0].shape[1] == 3
    doc = (data / f"Documentation_data-{project.task}_{pp}shuffle1.pickle").read_bytes()
    assert not [op for op, _, _ in pickletools.genops(doc) if "GLOBAL" in op.name]
    records, doc_train, doc_test, doc_frac = pickle.loads(doc)  # posed's own file
    assert (sorted(doc_train), sorted(doc_test), doc_frac) == (sorted(train), sorted(test), frac)
    assert "shuffle1" in (data / "metadata.yaml").read_text()

    compat.train_network(cfg, shuffle=1, epochs=1, batch_size=4)
    found = layout.find_shuffle(project, 1)
    snap = torch.load(found.train_dir / "snapshot-001.pt", map_location="cpu", weights_only=True)
    assert set(snap) == {"model", "metadata"}
    assert all(k.startswith(("backbone.model.", "heads.bodypart.heatmap_head.deconv_layers.0.",
                             "heads.bodypart.locref_head.deconv_layers.0.")) for k in snap["model"])
    assert sum(v.numel() for v in snap["model"].values()) == 23_729_228  # DeepLabCut's resnet_50
    assert (found.train_dir / "learning_stats.csv").read_text().startswith("step,")

    from posed.engines import api

    video = root / "videos"
    dest = tmp_path / "out"
    scorer = compat.analyze_videos(cfg, [video], destfolder=dest, progress=False)
    assert scorer == f"DLC_Resnet50_{project.name}shuffle1_snapshot_1"  # no layout question
    published = pickle.loads(next(dest.glob("*_meta.pickle")).read_bytes())["data"]
    assert published["pytorch-config"]["model"]["backbone"]["model_name"] == "resnet50_gn"
    own = api.analyze_videos(root, [video], layout="posed", dest=tmp_path / "own", progress=False)
    a = pd.read_hdf(next(dest.glob("*.h5"))).to_numpy()
    b = pd.read_hdf(own.outputs[0]).to_numpy()
    assert np.abs(a - b).max() < 1e-4  # the same model in both layouts
    compat.export_model(cfg, shuffle=1)
    exported = next((root / "exported-models-pytorch").rglob("*.pt"))
    assert torch.load(exported, map_location="cpu", weights_only=True).keys() == {"config", "pose"}


@pytest.mark.torch
def test_analyze_images_returns_and_writes_deeplabcuts(dlc_fixture, tmp_path):
    import pandas as pd

    images = dlc_fixture / "labeled-data" / "synth1"
    out = compat.analyze_images(str(dlc_fixture / "config.yaml"), str(images), frame_type=".png",
                                destfolder=str(tmp_path), save_as_csv=True, progress=False)
    assert len(out) == 20 and all(v["bodyparts"].shape == (1, 4, 3) for v in out.values())
    table = pd.read_hdf(tmp_path / f"image_predictions_{FX_SCORER}.h5", "predictions")
    assert table.columns.names == ["scorer", "individuals", "bodyparts", "coords"]
    assert list(table.index) == list(out)
    first = next(iter(out))
    assert np.allclose(table.loc[first].to_numpy(), out[first]["bodyparts"].reshape(-1))


@pytest.mark.torch
def test_extract_maps_in_deeplabcuts_structure(dlc_fixture, tmp_path):
    """The maps decode to the keypoints analysis gives: argmax cell + its refinement."""
    maps = compat.extract_maps(str(dlc_fixture / "config.yaml"), shuffle=1, Indices=[0, 3])
    [(frac, per_snapshot)] = maps.items()
    assert frac == 0.8 and list(per_snapshot) == ["snapshot-best-002"]
    entry = per_snapshot["snapshot-best-002"]
    assert sorted(entry) == [0, 3]
    image, scmap, locref, paf, peaks, names, graph, stem, is_train = entry[3]
    assert image.shape == (64, 64, 3) and 0 <= image.min() and image.max() <= 1
    assert len(scmap) == 4 and len(locref) == 8 and paf == [] and peaks is None
    assert names == ["snout", "leftear", "rightear", "tailbase"] and stem == "img0003"
    assert is_train is False  # image 3 is one of DeepLabCut's test images (check.json)
    heat = np.stack(scmap)
    k, h, w = heat.shape
    iy, ix = np.unravel_index(heat.reshape(k, -1).argmax(axis=1), (h, w))
    rows = compat.analyze_images(str(dlc_fixture / "config.yaml"),
                                 str(dlc_fixture / "labeled-data" / "synth1" / "img0003.png"),
                                 destfolder=str(tmp_path), progress=False)
    pose = next(iter(rows.values()))["bodyparts"][0]
    stride, std = 8.0, 7.2801  # DeepLabCut shows locref x stride; decoding scales by its std
    for j in range(k):
        x = (ix[j] + 0.5) * stride + locref[2 * j][iy[j], ix[j]] / stride * std
        y = (iy[j] + 0.5) * stride + locref[2 * j + 1][iy[j], ix[j]] / stride * std
        assert (x, y) == pytest.approx((pose[j, 0], pose[j, 1]), abs=1e-3)
    compat.extract_save_all_maps(str(dlc_fixture / "config.yaml"), shuffle=1, Indices=[0],
                                 dest_folder=str(tmp_path / "maps"))
    assert sorted(p.name.split("_")[1] for p in (tmp_path / "maps").glob("*.png")) == \
        ["locref", "scmap"]


@pytest.mark.torch
def test_cropping_as_deeplabcut(dlc_fixture, tmp_path):
    """cropping analyses that part of each frame (keypoints in the crop's pixels, recorded in
    _meta.pickle); the project's cropping: true does the same; a crop outside the frame is
    one line."""
    import pandas as pd
    import yaml

    from posed.engines import api

    cfg = dlc_fixture / "config.yaml"
    video = dlc_fixture / "videos" / "synth1.mp4"
    compat.analyze_videos(cfg, [video], destfolder=tmp_path / "a", cropping=[8, 56, 4, 60],
                          progress=False)
    h5 = tmp_path / "a" / f"synth1{FX_SCORER}.h5"
    meta = pickle.loads(h5.with_name(h5.stem + "_meta.pickle").read_bytes())["data"]
    assert meta["cropping"] is True and meta["cropping_parameters"] == [8, 56, 4, 60]
    assert meta["frame_dimensions"] == (64, 64)
    got = pd.read_hdf(h5).to_numpy()
    # The same model on the cropped frames, by hand.
    from posed.engines.video import VideoReader

    with VideoReader(video) as reader:
        frames = np.stack([f for _, f in reader])[:, 4:60, 8:56].copy()
    with api.load_model(dlc_fixture) as runner:
        want = runner.predict(frames).reshape(len(frames), -1)
    assert np.abs(got - want).max() < 1e-4
    raw = yaml.safe_load(cfg.read_text())
    raw.update(cropping=True, x1=8, x2=56, y1=4, y2=60)
    cfg.write_text(yaml.safe_dump(raw))
    compat.analyze_videos(cfg, [video], destfolder=tmp_path / "b", progress=False)
    assert np.abs(pd.read_hdf(tmp_path / "b" / h5.name).to_numpy() - got).max() < 1e-4
    with pytest.raises(PosedError, match="leaves nothing"):
        compat.analyze_videos(cfg, [video], destfolder=tmp_path / "c", cropping=[70, 90, 0, 10],
                              progress=False)
