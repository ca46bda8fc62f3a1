"""What every engine must do, on the same synthetic project: train to the same accuracy, write
the same files, honour the runner contract, analyse a video, refuse a damaged snapshot,
resume exactly, and reject bad settings in one line.

Each test runs once per engine that trains (PyTorch, TensorFlow); the runner contract also
runs on the ONNX export of the PyTorch model. An engine whose framework is not installed is
skipped with the reason. Engine-specific behaviour stays in ``test_pytorch_engine.py`` and
``test_tensorflow_engine.py``.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import FAST_TRAIN, TF_TRAIN

from posed.engines import api, backend_common
from posed.engines.bundle import load_bundle
from posed.engines.project import load_project
from posed.errors import ConfigError, InferenceError, ModelLoadError

# Held-out mean error the tiny models must reach on 128x128 synthetic frames. Measured:
# PyTorch 1.9-2.5 px, TensorFlow 2.1-2.4 px over seeds 0-2 (Intel AVX-512 and AMD EPYC).
ACCURACY_PX = 3.0

FRAMEWORK = {"pytorch": "torch", "tensorflow": "tensorflow"}
SETTINGS = {"pytorch": FAST_TRAIN, "tensorflow": TF_TRAIN}
FIXTURE = {"pytorch": "trained_project", "tensorflow": "tf_trained"}


def _needs(engine: str) -> None:
    if importlib.util.find_spec(FRAMEWORK[engine]) is None:
        pytest.skip(f"{FRAMEWORK[engine]} is not installed")


# TensorFlow traces its graph again in every run (~15 s) and trains a third slower than PyTorch:
# its side of the contract, and the TensorFlow model it needs, run with the heavy tier
# (`make test-heavy`, and CI); `make test` holds every test on PyTorch.
TF_HEAVY = pytest.param("tensorflow", marks=[pytest.mark.slow, pytest.mark.heavy])


@pytest.fixture(params=["pytorch", TF_HEAVY])
def engine(request) -> str:
    _needs(request.param)
    return request.param


@pytest.fixture
def trained(engine, request) -> Path:
    """The synthetic project with shuffle 1 trained by ``engine`` (session-wide, read-only)."""
    return request.getfixturevalue(FIXTURE[engine])


# ----------------------------------------------------------------------------- training

@pytest.mark.slow
def test_training_reaches_accuracy_on_held_out_images(engine, trained):
    project = load_project(trained)
    result = api.evaluate_network(project, 1, engine)
    test_all = result.table.loc[("test", "all")]
    assert test_all["n"] >= 100
    assert test_all["error_px"] <= ACCURACY_PX, result.format()
    assert (result.folder / "errors.csv").is_file()
    # The training set is fitted at least as well as the bound, and every body part has rows.
    assert result.table.loc[("train", "all")]["error_px"] <= ACCURACY_PX
    assert set(result.table.loc["test"].index) == {*project.bodyparts, "all"}


@pytest.mark.slow
def test_training_writes_snapshots_stats_and_a_bundle(engine, trained):
    project = load_project(trained)
    epochs, every = SETTINGS[engine]["epochs"], SETTINGS[engine]["save_every"]
    folder = api.get_train_folder(project, 1, engine)
    assert folder.parts[-4] == f"posed-models-{engine}"
    assert [p.name for p in api.list_snapshots(folder)] == [
        f"snapshot-{e:03d}.safetensors" for e in range(every, epochs + 1, every)]
    with open(folder / "learning_stats.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, epochs + 1))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    bundle = load_bundle(folder)  # verifies every sha256
    assert (bundle.engine, bundle.format) == (engine, "safetensors")
    assert bundle.weights[0]["name"] == f"snapshot-{epochs:03d}.safetensors"
    assert bundle.bodyparts == list(project.bodyparts)
    assert bundle.scorer == f"posed_MobilenetV2035_synthJan1shuffle1_snapshot_{epochs}"
    assert api.get_snapshot(project, 1, engine, every).name == f"snapshot-{every:03d}.safetensors"
    with pytest.raises(ModelLoadError, match="no such snapshot"):
        api.get_snapshot(project, 1, engine, every + 1)


# A small project's run of two epochs, as the resume and budget tests train it: TensorFlow
# traces its graph in every run (~15 s), so the straight run is made once and shared.
SMALL_RUN = {"net": "mobilenet_v2_0.35", "epochs": 2, "save_every": 1, "batch_size": 8,
             "crop": [64, 64], "recipe": "scratch"}


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """``engine -> (pristine project, training folder of its straight SMALL_RUN)``, made once
    per engine; both read-only (copy the project before training it)."""
    from posed.engines.synth import generate_project

    made = {}

    def get(engine: str) -> tuple[Path, Path]:
        if engine not in made:
            root = tmp_path_factory.mktemp(f"small-{engine}")
            generate_project(root / "pristine", frames=24, size=(96, 96), seed=4, video_frames=2)
            shutil.copytree(root / "pristine", root / "straight")
            made[engine] = (root / "pristine", api.train_network(
                load_project(root / "straight"), 1, engine, dict(SMALL_RUN), progress=False))
        return made[engine]
    return get


def test_resume_reproduces_an_uninterrupted_run(engine, small_runs, tmp_path, monkeypatch):
    """A run killed right after a snapshot and resumed ends with the same weights."""
    backend = api.get_backend(engine)
    settings = SMALL_RUN
    pristine, straight = small_runs(engine)
    project_copy = tmp_path / "proj"
    shutil.copytree(pristine, project_copy)

    project = load_project(project_copy)
    save = backend_common.write_snapshot
    # Every module of the engine that writes snapshots through the shared helper.
    holders = [m for name, m in list(sys.modules.items()) if name.startswith(backend.__package__)
               and getattr(m, "write_snapshot", None) is save]
    assert holders, f"{engine}: no module writes snapshots through backend_common"

    def save_then_die(folder, epoch, *args, **kwargs):
        save(folder, epoch, *args, **kwargs)
        if epoch == 1:  # as if the process were interrupted right after snapshot 1
            raise KeyboardInterrupt

    for module in holders:
        monkeypatch.setattr(module, "write_snapshot", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        api.train_network(project, 1, engine, dict(settings), progress=False)
    for module in holders:
        monkeypatch.setattr(module, "write_snapshot", save)
    assert not (api.get_train_folder(project, 1, engine) / "snapshot-002.safetensors").exists()
    with pytest.raises(ConfigError, match="--resume"):
        api.train_network(project, 1, engine, dict(settings), progress=False)
    resumed = api.train_network(project, 1, engine, dict(settings), progress=False, resume=True)

    from safetensors.numpy import load_file

    a = load_file(str(straight / "snapshot-002.safetensors"))
    b = load_file(str(resumed / "snapshot-002.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-4, err_msg=key)
    with open(resumed / "learning_stats.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]


def test_a_budget_ends_training_as_a_run_of_the_epochs_it_fits(engine, small_runs, tmp_path,
                                                              monkeypatch, caplog):
    """A budget that fits 2 of 4 epochs trains exactly as ``epochs: 2`` would (the schedule
    follows the lowered epochs), and a resumed run keeps them."""
    import logging

    import yaml

    settings = SMALL_RUN
    pristine, straight = small_runs(engine)
    shutil.copytree(pristine, tmp_path / "b")
    seen = []

    def fits_two(cfg, seconds):
        seen.append(seconds)
        return 2
    monkeypatch.setattr(backend_common, "budget_epochs", fits_two)
    with caplog.at_level(logging.INFO, logger="posed.engines.backend_common"):
        budgeted = api.train_network(load_project(tmp_path / "b"), 1, engine,
                                     {**settings, "epochs": 4, "budget_minutes": 5},
                                     progress=False)
    assert len(seen) == 1 and seen[0] > 0  # asked once, after the first epoch
    assert "training budget 5 min" in caplog.text and "2 of 4 epochs" in caplog.text
    resolved = yaml.safe_load((budgeted / "train_config.yaml").read_text())
    assert (resolved["epochs"], resolved["budget_minutes"]) == (2, 5.0)
    assert [p.name for p in api.list_snapshots(budgeted)] == [
        "snapshot-001.safetensors", "snapshot-002.safetensors"]
    with open(budgeted / "learning_stats.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2"]

    from safetensors.numpy import load_file

    a = load_file(str(straight / "snapshot-002.safetensors"))
    b = load_file(str(budgeted / "snapshot-002.safetensors"))
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-3, atol=1e-4, err_msg=key)
    # Resumed with the same settings, the run makes the same choice at the pace it recorded:
    # it is already complete.
    again = api.train_network(load_project(tmp_path / "b"), 1, engine,
                              {**settings, "epochs": 4, "budget_minutes": 5},
                              progress=False, resume=True)
    assert seen[1] == seen[0]
    assert json.loads((again / "budget.json").read_text()) == {
        "budget_minutes": 5.0, "epoch_seconds": seen[0], "epochs_asked": 4, "epochs_kept": 2}
    assert len(api.list_snapshots(again)) == 2
    monkeypatch.undo()
    # A budget shorter than one epoch keeps the epoch already run (the run starts again over
    # the budgeted one: none of its snapshots may remain).
    short = api.train_network(load_project(tmp_path / "b"), 1, engine,
                              {**settings, "epochs": 3, "budget_minutes": 1e-4},
                              progress=False, overwrite=True)
    assert [p.name for p in api.list_snapshots(short)] == ["snapshot-001.safetensors"]


def test_unknown_training_setting_is_a_clear_error(engine, project_copy):
    project = load_project(project_copy)
    folder = api.get_model_folder(project, 1, engine)
    folder.mkdir(parents=True)
    (folder / "train_config.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"train_config\.yaml: unknown key 'learning_rate'"):
        api.train_network(project, 1, engine, progress=False)
    (folder / "train_config.yaml").write_text("epochs: two\n")
    with pytest.raises(ConfigError, match=r"train_config\.yaml: key 'epochs': expected int"):
        api.train_network(project, 1, engine, progress=False)
    (folder / "train_config.yaml").write_text("augment:\n  rotation: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"key 'augment.rotation': expected float"):
        api.train_network(project, 1, engine, progress=False)
    (folder / "train_config.yaml").unlink()
    with pytest.raises(ConfigError, match="net 'vgg' is not known"):
        api.train_network(project, 1, engine, {"net": "vgg", "epochs": 1}, progress=False)


# ----------------------------------------------------------------------------- inference

@pytest.fixture(scope="module")
def onnx_export(request, tmp_path_factory) -> Path:
    """The ONNX export of the trained PyTorch shuffle (what the ONNX and OpenVINO engines run)."""
    _needs("pytorch")
    pytest.importorskip("onnx")
    out = tmp_path_factory.mktemp("contract-onnx") / "onnx"
    return api.export_model(request.getfixturevalue("trained_project"), "onnx", out)


@pytest.fixture(params=["pytorch", TF_HEAVY, "onnx", "openvino"])
def runner_source(request) -> tuple[str, Path]:
    """(engine, model) for every engine that runs models: the trained shuffles and the ONNX
    export of the PyTorch one (for ONNX Runtime and OpenVINO)."""
    if request.param in ("onnx", "openvino"):
        if request.param == "openvino":
            pytest.importorskip("openvino")
        return request.param, request.getfixturevalue("onnx_export")
    _needs(request.param)
    return request.param, request.getfixturevalue(FIXTURE[request.param])


@pytest.mark.slow
def test_runner_contract(runner_source):
    """uint8 N×H×W×3 RGB in, N×K×3 float32 (x, y, likelihood in [0, 1]) out, batch-independent,
    one frame accepted as a batch of one, wrong input refused in one line."""
    engine, source = runner_source
    options = {} if engine in ("onnx", "openvino") else {"device": "cpu"}
    with api.load_model(source, engine, **options) as runner:
        assert runner.engine == engine
        frames = np.random.default_rng(0).integers(0, 255, (3, 96, 112, 3), dtype=np.uint8)
        out = runner.predict(frames)
        assert out.shape == (3, 4, 3) and out.dtype == np.float32
        assert ((out[..., 2] >= 0) & (out[..., 2] <= 1)).all()
        assert runner.predict(frames[0]).shape == (1, 4, 3)
        np.testing.assert_allclose(runner.predict(frames[1:2])[0], out[1], atol=1e-4)
        assert runner.predict(frames[:0]).shape == (0, 4, 3)
        with pytest.raises(InferenceError, match="uint8"):
            runner.predict(frames.astype(np.float32))
        with pytest.raises(InferenceError, match="N×H×W×3"):
            runner.predict(frames[..., :2])


@pytest.mark.slow
def test_openvino_runs_the_onnx_export_as_onnxruntime(onnx_export, trained_project):
    """Same keypoints as ONNX Runtime on the same export (fp32), on frames with the animal;
    bf16 only where the CPU has it natively, refused in one line otherwise."""
    pytest.importorskip("openvino")
    from posed.engines.cpu import native_bf16
    from posed.engines.openvino.backend import cpu_capabilities
    from posed.engines.video import VideoReader

    video = trained_project / "videos" / "synth1.mp4"
    with VideoReader(video) as reader:
        frames = np.stack([f for _, f in reader][:8])
    with api.load_model(onnx_export, "onnx", provider="cpu") as ort_runner:
        ref = ort_runner.predict(frames)
    with api.load_model(onnx_export, "openvino") as ov_runner:
        assert ov_runner.precision == "f32"
        got = ov_runner.predict(frames)
    assert np.abs(got[..., :2] - ref[..., :2]).max() < 1e-2
    assert np.abs(got[..., 2] - ref[..., 2]).max() < 1e-3
    if "BF16" in cpu_capabilities() and native_bf16() is not None:  # as the backend decides
        with api.load_model(onnx_export, "openvino", precision="bf16") as bf16:
            assert bf16.predict(frames).shape == ref.shape
    else:
        with pytest.raises(ConfigError, match="no native bf16"):
            api.load_model(onnx_export, "openvino", precision="bf16")
    with pytest.raises(ModelLoadError, match="runs onnx bundles"):
        api.load_model(api.get_train_folder(load_project(trained_project), 1, "pytorch"),
                       "openvino")


@pytest.mark.slow
def test_analyze_video_matches_ground_truth(engine, trained, tmp_path):
    video = trained / "videos" / "synth1.mp4"
    report = api.analyze_videos(trained, [video], engine, dest=tmp_path, csv=True,
                                   progress=False, batch_size=16)
    assert not report.failed and len(report.outputs) == 1
    h5 = report.outputs[0]
    epochs = SETTINGS[engine]["epochs"]
    assert h5.name == f"synth1posed_MobilenetV2035_synthJan1shuffle1_snapshot_{epochs}.h5"
    df = pd.read_hdf(h5, "df_with_missing")
    assert df.shape == (60, 12) and list(df.index) == list(range(60))
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    assert df.notna().all().all()
    truth = pd.read_csv(trained / "videos" / "synth1_truth.csv", index_col="frame")
    scorer = df.columns.get_level_values(0)[0]
    errors = [np.hypot(df[(scorer, bp, "x")].to_numpy() - truth[f"{bp}_x"].to_numpy(),
                       df[(scorer, bp, "y")].to_numpy() - truth[f"{bp}_y"].to_numpy())
              for bp in ("snout", "leftear", "rightear", "tailbase")]
    # Video frames went through H.264; the median is held to the PNG test set's bound.
    assert float(np.median(np.concatenate(errors))) <= ACCURACY_PX
    assert (tmp_path / (h5.stem + ".csv")).is_file()
    assert (tmp_path / (h5.stem + "_meta.json")).is_file()


@pytest.mark.slow
def test_corrupt_snapshot_is_refused(engine, trained, tmp_path):
    folder = api.get_train_folder(load_project(trained), 1, engine)
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    weights = copy / load_bundle(folder).weights[0]["name"]
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        api.load_model(copy)


@pytest.mark.slow
@pytest.mark.heavy  # trains the TensorFlow model (see TF_HEAVY)
def test_engines_write_outputs_of_the_same_structure(request, tmp_path):
    """Same evaluation CSV columns, h5 layout, file names and bundle keys from every engine:
    the names differ only in the snapshot number (epochs trained)."""
    for eng in FRAMEWORK:
        _needs(eng)
    results = {}
    for eng in FRAMEWORK:
        proj = request.getfixturevalue(FIXTURE[eng])
        project = load_project(proj)
        ev = api.evaluate_network(project, 1, eng)
        report = api.analyze_videos(proj, [proj / "videos" / "synth1.mp4"], eng,
                                       dest=tmp_path / eng, csv=True, progress=False)
        assert not report.failed
        bundle = load_bundle(api.get_train_folder(project, 1, eng))
        epochs = SETTINGS[eng]["epochs"]
        results[eng] = {
            "errors_columns": pd.read_csv(ev.folder / "errors.csv").columns.tolist(),
            "table_index": ev.table.index.tolist(), "table_columns": ev.table.columns.tolist(),
            "bundle_keys": sorted(bundle.to_dict()), "source_keys": sorted(bundle.source),
            "files": sorted(p.name.replace(f"snapshot_{epochs}", "snapshot_N")
                            for p in (tmp_path / eng).iterdir()),
            "df": pd.read_hdf(report.outputs[0], "df_with_missing"),
        }
    a, b = results["tensorflow"], results["pytorch"]
    for key in ("errors_columns", "table_index", "table_columns", "bundle_keys", "source_keys",
                "files"):
        assert a[key] == b[key], key
    assert a["df"].shape == b["df"].shape == (60, 12)
    assert a["df"].columns.droplevel("scorer").equals(b["df"].columns.droplevel("scorer"))
    assert a["df"].index.equals(b["df"].index)
    assert list(a["df"].dtypes) == list(b["df"].dtypes)
