"""DeepLabCut 3's multi-animal bottom-up models: DeepLabCut's predictor and assembler, the
DLCRNet head, import and exports.

References made by DeepLabCut 3.0.2 itself (``benchmarks/dlc_reference/make_paf_cases.py``):
``paf_cases.npz`` holds maps rendered from random animals with the animals DeepLabCut's
``PartAffinityFieldPredictor`` assembles from them, and random candidate sets (many tied
affinities) with the animals DeepLabCut's ``Assembler`` makes of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from posed.engines.dlc.assembler import assemble, predict
from posed.engines.dlc.paf import Candidates, candidates, gaussian_kernel
from posed.errors import InferenceError, ModelLoadError

DATA = Path(__file__).parent / "data" / "deeplabcut"
CASES = DATA / "paf_cases.npz"
XY_TOL_PX = 1e-3


@pytest.fixture(scope="module")
def cases():
    data = np.load(CASES)
    return data, json.loads(str(data["settings"]))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(np.float32)


def _settings(case: dict) -> dict:
    return {**case, "pcutoff": 0.1, "min_n_links": 2, "max_overlap": 0.8, "clip_scores": False}


def test_predictor_matches_deeplabcut_on_rendered_maps(cases):
    data, meta = cases
    assert meta["deeplabcut"] == "3.0.2"
    animals_seen = 0
    for i, case in enumerate(meta["cases"]):
        got, affinity = predict(_sigmoid(data[f"heat_{i}"]), data[f"locref_{i}"],
                                data[f"paf_{i}"], stride=case["stride"],
                                settings=_settings(case), n_parts=case["n_parts"],
                                slots=case["num_animals"])
        want = data[f"poses_{i}"]
        found = (want[..., 0] != -1).any(axis=-1)  # DeepLabCut: -1 in empty slots
        n = int(found.sum())
        assert np.isfinite(got[..., 0]).any(axis=-1).sum() == n, f"case {i}"
        assert found[:n].all() and np.isnan(got[n:, :, :2]).all()
        np.testing.assert_array_equal(np.isnan(got[:n, :, 0]), np.isnan(want[:n, :, 0]))
        np.testing.assert_allclose(got[:n, :, :2], want[:n, :, :2], atol=XY_TOL_PX,
                                   err_msg=f"case {i}")
        np.testing.assert_allclose(got[:n, :, 2], want[:n, :, 2], atol=1e-5)
        np.testing.assert_allclose(affinity[:n], want[:n, 0, 4], atol=1e-5)
        animals_seen += n
    assert animals_seen > len(meta["cases"])  # the cases hold real work


def _found(case: dict) -> Candidates:
    return Candidates(
        xy=[np.asarray(x, dtype=np.float32).reshape(-1, 2) for x in case["xy"]],
        confidence=[np.asarray(c, dtype=np.float32) for c in case["confidence"]],
        costs={int(e): (np.asarray(c["m1"], dtype=np.float32),
                        np.asarray(c["distance"], dtype=np.float32))
               for e, c in case["costs"].items()})


def test_assembler_matches_deeplabcut_with_ties(cases):
    _, meta = cases
    counts = []
    for i, case in enumerate(meta["assembler_cases"]):
        animals = assemble(_found(case), n_parts=case["n_parts"], slots=case["num_animals"],
                           graph=[tuple(e) for e in case["graph"]], keep=case["edges_to_keep"],
                           min_affinity=case["min_affinity"])
        want = case["dlc_assemblies"]
        assert len(animals) == len(want), f"assembler case {i}"
        for animal, ref in zip(animals, want):
            ref_data = np.array([[np.nan if v is None else v for v in row] for row in ref["data"]])
            np.testing.assert_allclose(animal.data, ref_data, atol=1e-6, err_msg=f"case {i}")
            assert animal.affinity == pytest.approx(ref["affinity"], abs=1e-7)
        counts.append(len(want))
    assert max(counts) >= 3 and counts.count(0) < len(counts) / 2


def test_assembly_invariants_on_random_maps():
    """Whatever it finds: at most ``slots`` animals, no candidate in two animals, each
    animal's parts are candidates of that part, best first by nothing but DeepLabCut's order."""
    rng = np.random.default_rng(7)
    for _ in range(60):
        k, h, w, slots = int(rng.integers(2, 5)), 16, 20, int(rng.integers(1, 4))
        graph = [(a, b) for a in range(k) for b in range(a + 1, k)]
        scores = _sigmoid(rng.normal(-2, 2, size=(k, h, w)).astype(np.float32))
        locref = rng.normal(0, 0.2, size=(2 * k, h, w)).astype(np.float32)
        pafs = rng.normal(0, 0.5, size=(2 * len(graph), h, w)).astype(np.float32)
        settings = {"graph": graph, "edges_to_keep": list(range(len(graph))),
                    "locref_stdev": 7.2801, "nms_radius": 3, "sigma": 1.0, "pcutoff": 0.1,
                    "min_affinity": 0.05, "min_n_links": 2, "max_overlap": 0.8}
        got, affinity = predict(scores, locref, pafs, stride=8.0, settings=settings,
                                n_parts=k, slots=slots)
        assert got.shape == (slots, k, 3)
        found = candidates(scores, locref, pafs, stride=8.0, graph=graph,
                           keep=settings["edges_to_keep"], locref_stdev=7.2801, nms_radius=3,
                           sigma=1.0)
        used = set()
        for animal in got[np.isfinite(got[..., 0]).any(axis=-1)]:
            for part, (x, y, p) in enumerate(animal):
                if np.isnan(x):
                    assert p == 0
                    continue
                match = np.flatnonzero((found.xy[part] == (x, y)).all(axis=1))
                assert len(match) == 1 and (part, int(match[0])) not in used
                used.add((part, int(match[0])))
                assert found.confidence[part][match[0]] == pytest.approx(p)
        empty = ~np.isfinite(got[..., 0]).any(axis=-1)
        assert (affinity[empty] == 0).all() and (affinity >= 0).all()


def test_smoothing_kernel_is_deeplabcuts_normalised_gaussian():
    k = gaussian_kernel(1.0, 5)
    assert k.shape == (11,) and k.sum() == pytest.approx(1, abs=1e-6)
    assert k[5] == k.max() and k[4] / k[5] == pytest.approx(np.exp(-0.5), rel=1e-5)


def test_no_candidate_means_no_animal():
    k, h, w = 3, 8, 8
    flat = np.zeros((k, h, w), np.float32)
    settings = {"graph": [(0, 1), (1, 2)], "edges_to_keep": [0, 1], "locref_stdev": 7.2801,
                "nms_radius": 5, "sigma": 1.0, "pcutoff": 0.1, "min_affinity": 0.05,
                "min_n_links": 2, "max_overlap": 0.8}
    got, affinity = predict(flat, np.zeros((2 * k, h, w), np.float32),
                            np.zeros((4, h, w), np.float32), stride=4.0, settings=settings,
                            n_parts=k, slots=2)
    assert np.isnan(got).all() and (affinity == 0).all()


# ----------------------------------------------------------------------------- the network


torch = pytest.importorskip("torch")

BODYPARTS = ["snout", "leftear", "rightear", "tailbase"]
GRAPH = [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]


def _dlc_config(**predictor) -> dict:
    """A DeepLabCut 3 ``pytorch_config`` of a multi-animal ``resnet_50`` shrunk to timm's
    ``test_resnet`` (96 channels), as DeepLabCut writes it."""
    k, p = len(BODYPARTS), 2 * len(GRAPH)
    return {
        "method": "bu", "net_type": "resnet_50",
        "metadata": {"project_path": "/x/ma-me-2024-05-06", "bodyparts": BODYPARTS,
                     "unique_bodyparts": [], "individuals": ["a1", "a2", "a3"],
                     "with_identity": None},
        "data": {"colormode": "RGB", "inference": {"normalize_images": True}},
        "model": {"backbone": {"type": "ResNet", "model_name": "test_resnet",
                               "output_stride": 16},
                  "backbone_output_channels": 96,
                  "heads": {"bodypart": {
                      "type": "DLCRNetHead", "num_stages": 5, "features_dim": 128,
                      "predictor": {"type": "PartAffinityFieldPredictor", "num_animals": 3,
                                    "num_multibodyparts": k, "num_uniquebodyparts": 0,
                                    "nms_radius": 5, "sigma": 1.0, "locref_stdev": 7.2801,
                                    "min_affinity": 0.05, "graph": GRAPH,
                                    "edges_to_keep": list(range(len(GRAPH))),
                                    "apply_sigmoid": True, "clip_scores": False, **predictor},
                      "heatmap_config": {"channels": [96, k], "kernel_size": [3], "strides": [2]},
                      "locref_config": {"channels": [96, 2 * k], "kernel_size": [3],
                                        "strides": [2]},
                      "paf_config": {"channels": [96, p], "kernel_size": [3], "strides": [2]}}}},
    }


def _dlc_state(model) -> dict:
    """posed's DLCRNet tensors under DeepLabCut's ``PoseModel`` names."""
    from posed.engines.pytorch.dlc_families import dlc_state_dict

    return dlc_state_dict(model)


@pytest.fixture(scope="module")
def dlc_export(tmp_path_factory):
    from posed.engines.pytorch.dlcrnet import DLCRNet

    torch.manual_seed(0)
    model = DLCRNet("resnet_50", len(BODYPARTS), GRAPH, 16, timm_model="test_resnet")
    with torch.no_grad():
        for param in model.parameters():  # larger than init so the maps have structure
            param.add_(torch.randn_like(param) * 0.05)
    path = tmp_path_factory.mktemp("dlcma") / \
        "DLC_ma_resnet_50_iteration-0_shuffle-1_snapshot-005.pt"
    torch.save({"config": _dlc_config(), "pose": _dlc_state(model)}, path)
    return path, model.eval()


def _frames(n: int = 3) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, size=(n, 96, 128, 3), dtype=np.uint8)


def test_dlcrnet_grid_is_a_quarter_of_the_backbone_stride():
    from posed.engines.pytorch.dlcrnet import DLCRNet

    model = DLCRNet("x", 4, GRAPH, 16, timm_model="test_resnet")
    assert model.stride == 4
    heat, locref, paf = model(torch.zeros(1, 3, 96, 128))
    assert heat.shape == (1, 4, 25, 33) and locref.shape == (1, 8, 25, 33)
    assert paf.shape == (1, 12, 25, 33)
    flat = DLCRNet("x", 4, GRAPH, 16, timm_model="test_resnet", num_stages=0)
    assert flat.stride == 8 and flat(torch.zeros(1, 3, 96, 128))[0].shape == (1, 4, 13, 17)


def test_import_runs_deeplabcuts_predictor(dlc_export, tmp_path):
    from posed.engines import api
    from posed.engines.base import MultiAnimalRunner
    from posed.exporters.dlc import import_dlc_pytorch

    path, model = dlc_export
    out = import_dlc_pytorch(path, tmp_path / "bundle")
    runner = api.load_model(out, device="cpu")
    assert isinstance(runner, MultiAnimalRunner)
    assert runner.individuals == ["a1", "a2", "a3"] and runner.bodyparts == BODYPARTS
    frames = _frames()
    got = runner.predict_animals(frames)
    with torch.no_grad():
        heat, locref, paf = model(torch.from_numpy(frames).permute(0, 3, 1, 2).float())
    scores = torch.sigmoid(heat).numpy()
    settings = runner.assembly
    assert settings["graph"] == GRAPH and settings["pcutoff"] == 0.1
    n_found = 0
    for i in range(len(frames)):
        want, affinity = predict(scores[i], locref[i].numpy(), paf[i].numpy(), stride=4.0,
                                 settings=settings, n_parts=4, slots=3)
        want[..., 2][np.isnan(want[..., 2])] = 0
        np.testing.assert_allclose(got.animals[i], want, atol=1e-3)
        np.testing.assert_allclose(got.scores[i], affinity, atol=1e-4)
        n_found += int(np.isfinite(want[..., 0]).any(axis=-1).sum())
    assert n_found >= 1


def test_assembly_overrides_are_deeplabcuts_settings(dlc_export, tmp_path):
    from posed.engines import api
    from posed.exporters.dlc import import_dlc_pytorch

    out = import_dlc_pytorch(dlc_export[0], tmp_path / "bundle")
    runner = api.load_model(out, device="cpu", assembly={"pcutoff": 0.5})
    assert runner.assembly["pcutoff"] == 0.5
    with pytest.raises(InferenceError, match="unknown assembly setting 'threshold'"):
        api.load_model(out, device="cpu", assembly={"threshold": 0.5})


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_find_deeplabcuts_animals(dlc_export, tmp_path, fmt):
    from posed.engines import api
    from posed.exporters.dlc import import_dlc_pytorch

    out = import_dlc_pytorch(dlc_export[0], tmp_path / "bundle")
    exported = api.export_model(out, fmt, tmp_path / fmt)
    frames = _frames()
    want = api.load_model(out, device="cpu").predict_animals(frames)
    got = api.load_model(exported, device="cpu").predict_animals(frames)
    np.testing.assert_array_equal(np.isnan(got.animals[..., 0]), np.isnan(want.animals[..., 0]))
    np.testing.assert_allclose(got.animals, want.animals, atol=1e-2)


def _change(**predictor):
    def apply(cfg):
        cfg["model"]["heads"]["bodypart"]["predictor"].update(predictor)
    return apply


def _unique(cfg):
    cfg["metadata"]["unique_bodyparts"] = ["corner"]


def _identity(cfg):
    cfg["metadata"]["with_identity"] = True


@pytest.mark.parametrize("change, what", [
    (_change(add_discarded=True), "add_discarded"),
    (_change(force_fusion=True), "force_fusion"),
    (_change(nms_radius=4), "nms_radius 4"),
    (_unique, "unique body parts"),
    (_identity, "identity heads"),
])
def test_refused_predictor_settings_name_themselves(dlc_export, tmp_path, change, what):
    from posed.exporters.dlc import import_dlc_pytorch

    config = _dlc_config()
    change(config)
    path = tmp_path / "m.pt"
    torch.save({"config": config, "pose": _dlc_state(dlc_export[1])}, path)
    with pytest.raises(ModelLoadError, match="not supported yet") as err:
        import_dlc_pytorch(path, tmp_path / "out")
    assert what in str(err.value) and str(path) in str(err.value)


def test_graph_outside_the_parts_is_one_line(dlc_export, tmp_path):
    from posed.exporters.dlc import import_dlc_pytorch

    config = _dlc_config(graph=[[0, 7]], edges_to_keep=[0])
    path = tmp_path / "m.pt"
    torch.save({"config": config, "pose": _dlc_state(dlc_export[1])}, path)
    with pytest.raises(ModelLoadError, match=r"edge \[0, 7\] outside the 4 body parts"):
        import_dlc_pytorch(path, tmp_path / "out")


# ----------------------------------------------------------------------------- DeepLabCut's own


MA = DATA / "ma_fixture"
MA_TRAIN = MA / "dlc-models-pytorch" / "iteration-0" / "synthJan1-trainset80shuffle1" / "train"
MA_SCORER = "DLC_Resnet50_synthJan1shuffle1_snapshot_best-60"


@pytest.fixture(scope="module")
def ma_reference():
    data = np.load(MA / "reference_maps.npz")
    check = json.loads((MA / "check.json").read_text())
    return data, check


@pytest.fixture(scope="module")
def ma_bundle(tmp_path_factory):
    """posed's import of DeepLabCut's export of the fixture shuffle (the export is
    ``{"config": pytorch_config, "pose": the snapshot's model}``, rebuilt from the two)."""
    import yaml

    from posed.exporters.dlc import import_dlc_pytorch

    tmp = tmp_path_factory.mktemp("ma")
    config = yaml.safe_load((MA_TRAIN / "pytorch_config.yaml").read_text())
    snapshot = torch.load(MA_TRAIN / "snapshot-best-060.pt", map_location="cpu",
                          weights_only=True)
    path = tmp / "DLC_synth_NetType.RESNET_50_iteration-0_shuffle-1_snapshot-best-60.pt"
    torch.save({"config": config, "pose": snapshot["model"]}, path)
    return import_dlc_pytorch(path, tmp / "bundle")


def _assert_same_animals(got, want_xy, want_conf, where):
    """posed's animals (slots × K × 3) against DeepLabCut's (A × K × 2 and A × K)."""
    n = len(want_xy)
    found = np.isfinite(got[..., 0]).any(axis=-1)
    assert found.sum() == n and found[:n].all(), where
    np.testing.assert_array_equal(np.isnan(got[:n, :, 0]), np.isnan(want_xy[..., 0]))
    np.testing.assert_allclose(got[:n, :, :2], want_xy, atol=XY_TOL_PX, err_msg=where)
    np.testing.assert_allclose(got[:n, :, 2], want_conf, atol=1e-5, err_msg=where)


def test_deeplabcut_trained_model_maps_and_animals(ma_bundle, ma_reference):
    """On DeepLabCut's own preprocessed frames: the network's maps equal DeepLabCut's, and the
    same animals come out, in DeepLabCut's order, with DeepLabCut's scores."""
    from posed.engines import api

    data, _ = ma_reference
    runner = api.load_model(ma_bundle, device="cpu")
    assert runner.bundle.stride == float(data["stride"]) == 4.0
    frames = data["frames"]
    heat, locref, paf = runner._maps(frames)
    np.testing.assert_allclose(heat, 1 / (1 + np.exp(-data["heatmap"].astype(np.float64))),
                               atol=1e-5)
    np.testing.assert_allclose(locref, data["locref"], atol=1e-4)
    np.testing.assert_allclose(paf, data["paf"], atol=1e-4)
    got = runner.predict_animals(frames)
    poses = data["poses"]  # frames × slots × parts × (x, y, score, id, affinity); -1: empty
    for i in range(len(frames)):
        present = (poses[i, ..., 0] != -1).any(axis=-1)
        _assert_same_animals(got.animals[i], poses[i][present][..., :2],
                             poses[i][present][..., 2], f"frame {i}")
        np.testing.assert_allclose(got.scores[i][: present.sum()], poses[i][present][:, 0, 4],
                                   atol=1e-5)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_exports_of_the_deeplabcut_model_find_deeplabcuts_animals(ma_bundle, ma_reference,
                                                                   tmp_path, fmt):
    from posed.engines import api

    data, _ = ma_reference
    runner = api.load_model(api.export_model(ma_bundle, fmt, tmp_path / fmt), device="cpu")
    assert runner.engine == ("onnx" if fmt == "onnx" else "pytorch")
    got = runner.predict_animals(data["frames"])
    poses = data["poses"]
    for i in range(len(poses)):
        present = (poses[i, ..., 0] != -1).any(axis=-1)
        _assert_same_animals(got.animals[i], poses[i][present][..., :2],
                             poses[i][present][..., 2], f"{fmt} frame {i}")


def test_deeplabcut_analyze_videos_assemblies_in_place(ma_reference, tmp_path, monkeypatch):
    """The shuffle DeepLabCut trained, analysed in place through DeepLabCut's own call with
    ``auto_track=False``: every frame's animals are those DeepLabCut's ``analyze_videos``
    assembled (its ``_assemblies.pickle``, read here from check.json: posed never unpickles
    DeepLabCut's files), in its order, in DeepLabCut's file names and scorer; posed's own
    ``_assemblies.pickle`` and ``_full.pickle`` hold them as DeepLabCut's do."""
    import pickle
    import shutil

    import pandas as pd

    import posed.engines.compat as deeplabcut
    from posed.engines import api

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "synth"
    shutil.copytree(MA, root)
    _, check = ma_reference
    assemblies = check["analyze_videos"]["assemblies_pickle"]
    runner = api.load_model(root, device="cpu")
    assert runner.bundle.scorer == MA_SCORER and runner.bundle.source["layout"] == "deeplabcut"
    scorer = deeplabcut.analyze_videos(root / "config.yaml", [root / "videos" / "synth1.mp4"],
                                       shuffle=1, destfolder=tmp_path / "out", auto_track=False,
                                       progress=False)
    assert scorer == MA_SCORER
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        f"synth1{scorer}{end}" for end in (".h5", "_assemblies.pickle", "_full.pickle",
                                           "_meta.json", "_meta.pickle")]
    table = pd.read_hdf(out / f"synth1{scorer}.h5")
    assert len(table) == len(assemblies) == 12
    animals = table.to_numpy().reshape(len(table), 3, 4, 3)  # individuals × parts × xyp
    # DeepLabCut's detection pickles, as DeepLabCut writes them (posed wrote these two)
    with open(out / f"synth1{scorer}_assemblies.pickle", "rb") as fh:
        got_assemblies = pickle.load(fh)
    with open(out / f"synth1{scorer}_full.pickle", "rb") as fh:
        full = pickle.load(fh)
    assert sorted(got_assemblies, key=str) == sorted(["single", *range(12)], key=str)
    assert full["metadata"]["nframes"] == 12 and full["metadata"]["key_str_width"] == 2
    assert full["metadata"]["all_joints_names"] == ["snout", "leftear", "rightear", "tailbase"]
    for i in range(len(table)):
        want = np.array(assemblies[str(i)], dtype=float)  # A × K × (x, y, likelihood, id)
        _assert_same_animals(animals[i], want[..., :2], want[..., 2], f"frame {i}")
        got = got_assemblies[i]
        assert got.shape == want.shape, f"frame {i}"
        np.testing.assert_allclose(got, want, atol=XY_TOL_PX, err_msg=f"frame {i}")
        frame = full[f"frame{i:02d}"]
        xy = np.stack(frame["coordinates"][0], axis=1)  # slots × parts × 2, -1 when missing
        conf = np.stack(frame["confidence"], axis=1)[..., 0]
        np.testing.assert_allclose(xy[:len(want)], want[..., :2], atol=XY_TOL_PX)
        np.testing.assert_allclose(conf[:len(want)], want[..., 2], atol=1e-5)
        assert (xy[len(want):] == -1).all() and frame["costs"] is None


@pytest.mark.slow
def test_daemon_serves_the_deeplabcut_shuffle_in_place(ma_reference, tmp_path, monkeypatch):
    """``posed serve`` with ``model.bundle`` naming DeepLabCut's shuffle folder: every frame
    reaches a real subscriber with the identities offline analysis (the daemon's online
    tracker) gives, DeepLabCut's animals underneath."""
    import shutil

    import pandas as pd

    from posed.engines import api
    from test_daemon_e2e import stream_file

    monkeypatch.setenv("POSED_CACHE_DIR", str(tmp_path / "cache"))
    root = tmp_path / "synth"
    shutil.copytree(MA, root)
    shuffle = MA_TRAIN.parent.relative_to(MA)
    video = root / "videos" / "synth1.mp4"
    messages = stream_file(root / shuffle, video, 12, tmp_path, threads=1)
    assert [m.seq for m in messages] == list(range(12))
    assert messages[0].individuals == ("individual1", "individual2", "individual3")
    streamed = np.stack([m.animals for m in messages])
    report = api.analyze_videos(root / shuffle, [video], dest=tmp_path / "offline",
                                progress=False, tracking={"identities": "online"})
    offline = pd.read_hdf(report.outputs[0]).to_numpy().reshape(streamed.shape)
    np.testing.assert_allclose(streamed, offline, atol=1e-3, equal_nan=True)
    assert np.isfinite(streamed[..., 0]).any(axis=2).sum() >= 12  # animals in every frame
