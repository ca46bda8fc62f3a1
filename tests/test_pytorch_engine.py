"""PyTorch engine end to end: training accuracy, resume, runner contract, analysis."""

from __future__ import annotations

import csv

import numpy as np
import pandas as pd
import pytest

from posed.engines import compat
from posed.engines.bundle import load_bundle
from posed.engines.project import load_project
from posed.errors import ConfigError, InferenceError, ModelLoadError

torch = pytest.importorskip("torch")

ACCURACY_PX = 3.0  # held-out mean error the tiny model must reach on 128x128 synthetic frames


@pytest.mark.slow
def test_training_reaches_accuracy_on_held_out_images(trained_project):
    project = load_project(trained_project)
    result = compat.evaluate_network(project, 1, "pytorch")
    test_all = result.table.loc[("test", "all")]
    assert test_all["n"] >= 100
    assert test_all["error_px"] <= ACCURACY_PX, result.format()
    assert (result.folder / "errors.csv").is_file()
    # The training set is fitted at least as well as the held-out set is predicted, and the
    # per-part rows exist for every body part.
    assert result.table.loc[("train", "all")]["error_px"] <= ACCURACY_PX
    assert set(result.table.loc["test"].index) == {*project.bodyparts, "all"}


@pytest.mark.slow
def test_training_writes_snapshots_stats_and_a_bundle(trained_project):
    project = load_project(trained_project)
    folder = compat.get_train_folder(project, 1, "pytorch")
    assert [p.name for p in compat.list_snapshots(folder)] == [
        "snapshot-010.safetensors", "snapshot-020.safetensors", "snapshot-030.safetensors",
        "snapshot-040.safetensors"]
    with open(folder / "learning_stats.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 41))
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])
    bundle = load_bundle(folder)  # verifies sha256
    assert bundle.weights[0]["name"] == "snapshot-040.safetensors"
    assert bundle.bodyparts == list(project.bodyparts)
    assert bundle.scorer == "posed_MobilenetV2035_synthJan1shuffle1_snapshot_40"
    assert compat.get_snapshot(project, 1, "torch", 20).name == "snapshot-020.safetensors"
    with pytest.raises(ModelLoadError, match="no such snapshot"):
        compat.get_snapshot(project, 1, "torch", 15)


@pytest.mark.slow
def test_runner_contract(trained_project):
    runner = compat.load_model(trained_project, "pytorch", device="cpu")
    frames = np.random.default_rng(0).integers(0, 255, (3, 96, 112, 3), dtype=np.uint8)
    out = runner.predict(frames)
    assert out.shape == (3, 4, 3) and out.dtype == np.float32
    assert ((out[..., 2] >= 0) & (out[..., 2] <= 1)).all()
    assert runner.predict(frames[0]).shape == (1, 4, 3)
    np.testing.assert_allclose(runner.predict(frames[1:2])[0], out[1], atol=1e-4)
    with pytest.raises(InferenceError, match="uint8"):
        runner.predict(frames.astype(np.float32))
    with pytest.raises(InferenceError, match="N×H×W×3"):
        runner.predict(frames[..., :2])


@pytest.mark.slow
def test_analyze_video_matches_ground_truth(trained_project, tmp_path):
    video = trained_project / "videos" / "synth1.mp4"
    report = compat.analyze_videos(trained_project, [video], dest=tmp_path, csv=True,
                                   progress=False, batch_size=16)
    assert not report.failed and len(report.outputs) == 1
    h5 = report.outputs[0]
    assert h5.name == "synth1posed_MobilenetV2035_synthJan1shuffle1_snapshot_40.h5"
    df = pd.read_hdf(h5, "df_with_missing")
    assert df.shape == (60, 12) and list(df.index) == list(range(60))
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    assert df.notna().all().all()
    truth = pd.read_csv(trained_project / "videos" / "synth1_truth.csv", index_col="frame")
    scorer = df.columns.get_level_values(0)[0]
    errors = []
    for bp in ("snout", "leftear", "rightear", "tailbase"):
        dx = df[(scorer, bp, "x")].to_numpy() - truth[f"{bp}_x"].to_numpy()
        dy = df[(scorer, bp, "y")].to_numpy() - truth[f"{bp}_y"].to_numpy()
        errors.append(np.hypot(dx, dy))
    # Video frames went through H.264, so allow a little more than on the PNG test set.
    assert float(np.median(np.concatenate(errors))) <= ACCURACY_PX
    assert (tmp_path / (h5.stem + ".csv")).is_file()
    assert (tmp_path / (h5.stem + "_meta.json")).is_file()


@pytest.mark.slow
def test_corrupt_snapshot_is_refused(trained_project, tmp_path):
    import shutil

    folder = compat.get_train_folder(load_project(trained_project), 1, "pytorch")
    copy = tmp_path / "bundle"
    shutil.copytree(folder, copy)
    weights = copy / "snapshot-040.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        compat.load_model(copy)


def test_resume_reproduces_an_uninterrupted_run(project_copy, tmp_path, monkeypatch):
    import shutil

    from posed.engines.pytorch import backend

    settings = {"net": "mobilenet_v2_0.35", "epochs": 3, "save_every": 1, "batch_size": 16,
                "crop": [64, 64]}
    other = tmp_path / "other"
    shutil.copytree(project_copy, other)
    straight = compat.train_network(load_project(other), 1, "torch", dict(settings), progress=False)

    project = load_project(project_copy)
    save = backend._save_snapshot

    def save_then_die(folder, project, shuffle, cfg, model, optimizer, epoch):
        save(folder, project, shuffle, cfg, model, optimizer, epoch)
        if epoch == 2:  # as if the process were interrupted right after snapshot 2
            raise KeyboardInterrupt

    monkeypatch.setattr(backend, "_save_snapshot", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        compat.train_network(project, 1, "torch", dict(settings), progress=False)
    monkeypatch.setattr(backend, "_save_snapshot", save)
    assert not (compat.get_train_folder(project, 1, "torch") / "snapshot-003.safetensors").exists()
    with pytest.raises(ConfigError, match="--resume"):
        compat.train_network(project, 1, "torch", dict(settings), progress=False)
    resumed = compat.train_network(project, 1, "torch", dict(settings), progress=False, resume=True)

    from safetensors.torch import load_file

    a = load_file(str(straight / "snapshot-003.safetensors"))
    b = load_file(str(resumed / "snapshot-003.safetensors"))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5)
    with open(resumed / "learning_stats.csv") as fh:
        assert [r["epoch"] for r in csv.DictReader(fh)] == ["1", "2", "3"]


def test_unknown_training_setting_is_a_clear_error(project_copy):
    project = load_project(project_copy)
    folder = compat.get_model_folder(project, 1, "pytorch")
    folder.mkdir(parents=True)
    (folder / "train_config.yaml").write_text("epochs: 2\nlearning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"train_config\.yaml: unknown key 'learning_rate'"):
        compat.train_network(project, 1, "pytorch", progress=False)
    (folder / "train_config.yaml").write_text("epochs: two\n")
    with pytest.raises(ConfigError, match=r"train_config\.yaml: key 'epochs': expected int"):
        compat.train_network(project, 1, "pytorch", progress=False)
    (folder / "train_config.yaml").write_text("augment:\n  rotation: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"key 'augment.rotation': expected float"):
        compat.train_network(project, 1, "pytorch", progress=False)
    (folder / "train_config.yaml").unlink()
    with pytest.raises(ConfigError, match="net 'vgg' is not known"):
        compat.train_network(project, 1, "pytorch", {"net": "vgg", "epochs": 1}, progress=False)


@pytest.mark.parametrize("net", ["resnet_50", "resnet_18", "mobilenet_v2_1.0", "mobilenet_v2_0.35",
                                 "efficientnet_b0"])
def test_every_net_builds_and_matches_its_grid(net):
    from posed.engines.pytorch.model import PoseNet

    model = PoseNet(net, 3, output_stride=16).eval()
    with torch.no_grad():
        heat, loc = model(torch.zeros(1, 3, 96, 128))
    assert heat.shape == (1, 3, 12, 16) and loc.shape == (1, 6, 12, 16)
    assert model.stride == 8


def test_device_selection_falls_back_to_cpu(monkeypatch, caplog):
    from posed.engines.pytorch.backend import select_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    with caplog.at_level("WARNING"):
        assert select_device("cuda:0").type == "cpu"
    assert "CUDA is not available" in caplog.text
    with pytest.raises(ConfigError, match="device 'tpu'"):
        select_device("tpu")
