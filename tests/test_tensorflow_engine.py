"""What only the TensorFlow engine has: no framework import until used, no retracing, its
exports, DeepLabCut 2.x frozen graphs. What every engine must do is in ``test_engine_contract.py``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from posed.engines import api
from posed.engines.bundle import ModelBundle, load_bundle
from posed.engines.project import load_project
from posed.errors import ConfigError, ModelLoadError


def test_importing_posed_does_not_import_tensorflow():
    code = ("import sys, posed.engines.api, posed.engines.tensorflow, posed.cli;"
            "from posed.engines import api;"
            "print(api.engine_available('tf'), 'tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    available = "True" if _has_tf() else "False"
    assert out.stdout.split() == [available, "False", "False"]


def test_pytorch_engine_still_loads_after_tensorflow_in_one_process():
    """Triton (torch's) loaded after TensorFlow used to crash the process (segfault)."""
    if not (_has_tf() and _has("torchvision")):
        pytest.skip("needs tensorflow and torchvision")
    code = ("from posed.engines.tensorflow import import_tensorflow; import_tensorflow();"
            "import torch, torchvision.ops; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.split() == ["ok"], out.stderr[-2000:]


def _has_tf() -> bool:
    import importlib.util

    return importlib.util.find_spec("tensorflow") is not None


if not _has_tf():
    pytest.skip("tensorflow is not installed", allow_module_level=True)
# Through posed, as the engine imports it (quiet, and Triton first: see the test above).
from posed.engines.tensorflow import import_tensorflow  # noqa: E402

tf = import_tensorflow()


# ----------------------------------------------------------------------------- fixtures

def _random_bundle(folder: Path, net: str = "mobilenet_v2_0.35", stride: int = 16) -> Path:
    """A randomly initialised TF bundle (no training)."""
    from posed.engines.tensorflow.model import build_pose_model, save_weights

    model = build_pose_model(net, 3, stride)
    folder.mkdir(parents=True)
    save_weights(model, folder / "snapshot-001.safetensors")
    ModelBundle(engine="tensorflow", format="safetensors", bodyparts=["a", "b", "c"],
                architecture={"net": net, "output_stride": stride}, stride=stride / 2,
                locref_stdev=7.2801).save(folder, ["snapshot-001.safetensors"])
    return folder


# ----------------------------------------------------------------------------- training

def test_unsupported_net_names_what_tensorflow_supports(project_copy):
    with pytest.raises(ConfigError, match="tensorflow engine supports resnet_50, mobilenet_v2_1.0"):
        api.train_network(load_project(project_copy), 1, "tf", {"net": "efficientnet_b0"},
                             progress=False)


# ----------------------------------------------------------------------------- inference

def test_runner_compiles_once_for_any_batch_and_frame_size(tmp_path):
    bundle = _random_bundle(tmp_path / "bundle")
    runner = api.load_model(bundle, device="cpu", threads=2)
    assert runner.engine == "tensorflow"
    rng = np.random.default_rng(0)
    for n, h, w in ((1, 64, 64), (3, 96, 128), (2, 128, 96), (1, 64, 64)):
        out = runner.predict(rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8))
        assert out.shape == (n, 3, 3) and out.dtype == np.float32
        assert ((out[..., 2] >= 0) & (out[..., 2] <= 1)).all()
        assert (out[..., 0] < w + 8).all() and (out[..., 1] < h + 8).all()
    assert runner.function.experimental_get_tracing_count() == 1
    frames = rng.integers(0, 255, (3, 64, 80, 3), dtype=np.uint8)
    np.testing.assert_allclose(runner.predict(frames)[1], runner.predict(frames[1:2])[0], atol=1e-4)


@pytest.mark.parametrize("net,stride,grid", [("mobilenet_v2_0.35", 8, (24, 32)),
                                             ("mobilenet_v2_0.35", 16, (12, 16)),
                                             ("resnet_50", 32, (6, 8))])
def test_output_strides_give_the_expected_grid(net, stride, grid):
    from posed.engines.tensorflow.model import build_pose_model

    model = build_pose_model(net, 2, stride)
    heat, loc = model(np.zeros((1, 96, 128, 3), np.float32))
    assert tuple(heat.shape) == (1, *grid, 2) and tuple(loc.shape) == (1, *grid, 4)


def test_device_option():
    from posed.engines.tensorflow.backend import select_device

    assert select_device("cpu") == "/CPU:0"
    if not tf.config.list_physical_devices("GPU"):
        assert select_device("auto") == "/CPU:0"
        assert select_device("gpu") == "/CPU:0"  # falls back, with a warning
    with pytest.raises(ConfigError, match="device 'tpu'"):
        select_device("tpu")


# ----------------------------------------------------------------------------- export

@pytest.fixture(scope="module")
def tf_exports(tf_trained, tmp_path_factory) -> dict[str, Path]:
    """SavedModel (through the CLI) and ONNX exports of the trained TF model."""
    pytest.importorskip("tf2onnx")
    from posed.cli import main

    out = tmp_path_factory.mktemp("tfexports")
    assert main(["export", str(tf_trained), "--engine", "tf", "--format", "savedmodel",
                 "--out", str(out / "savedmodel"), "-q"]) == 0
    return {"savedmodel": out / "savedmodel",
            "onnx": api.export_model(tf_trained, "onnx", out / "onnx", "tf")}


def _test_frames(project_dir: Path) -> np.ndarray:
    from posed.engines.project import load_image, load_split

    project = load_project(project_dir)
    return np.stack([load_image(project.root, n) for n in load_split(project, 1).test])


@pytest.mark.slow
@pytest.mark.heavy  # needs the trained TensorFlow model (test_engine_contract.TF_HEAVY)
def test_exports_match_the_native_model_on_every_test_frame(tf_trained, tf_exports):
    frames = _test_frames(tf_trained)
    assert len(frames) >= 25
    native = api.load_model(tf_trained, "tf", device="cpu").predict(frames)
    assert (native[..., 2] >= 0.5).mean() > 0.8  # a trained model, not flat maps
    for name, (engine, fmt) in {"savedmodel": ("tensorflow", "savedmodel"),
                                "onnx": ("onnx", "onnx")}.items():
        bundle = load_bundle(tf_exports[name])
        assert (bundle.engine, bundle.format) == (engine, fmt)
        assert bundle.bodyparts == list(load_project(tf_trained).bodyparts)
        assert bundle.export["parity"]  # measured on the project's test images at export
        runner = api.load_model(tf_exports[name])
        assert runner.engine == engine
        got = np.concatenate([runner.predict(frames[i:i + 7]) for i in range(0, len(frames), 7)])
        dist = np.linalg.norm(native[..., :2] - got[..., :2], axis=-1)
        assert dist.max() <= 0.1, (name, dist.max())
        assert np.abs(native[..., 2] - got[..., 2]).max() <= 1e-3, name


@pytest.mark.slow
@pytest.mark.heavy  # needs the trained TensorFlow model (test_engine_contract.TF_HEAVY)
def test_savedmodel_bundle_lists_and_verifies_every_file(tf_exports, tmp_path):
    bundle = load_bundle(tf_exports["savedmodel"])
    names = [w["name"] for w in bundle.weights]
    assert names[0] == "savedmodel/saved_model.pb"
    assert "savedmodel/variables/variables.index" in names
    on_disk = sorted(p.relative_to(bundle.path).as_posix()
                     for p in (bundle.path / "savedmodel").rglob("*") if p.is_file())
    assert sorted(names) == on_disk
    assert set(bundle.export["parity"]) == {"same_size", "other_size"}
    copy = tmp_path / "b"
    shutil.copytree(tf_exports["savedmodel"], copy)
    data = copy / "savedmodel" / "variables" / "variables.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(ModelLoadError, match="variables.data-00000-of-00001: sha256 mismatch"):
        api.load_model(copy)


@pytest.mark.slow
@pytest.mark.heavy  # needs the trained TensorFlow model (test_engine_contract.TF_HEAVY)
def test_onnx_export_of_a_tf_model_imports_no_framework(tf_exports):
    code = (
        "import sys, json, numpy as np\n"
        "from posed.engines import api\n"
        f"r = api.load_model({str(tf_exports['onnx'])!r}, provider='cpu')\n"
        "out = r.predict(np.zeros((2, 64, 80, 3), np.uint8))\n"
        "print(json.dumps([list(out.shape), r.engine,\n"
        "  sorted(m for m in ('torch', 'tensorflow', 'keras', 'tf2onnx') if m in sys.modules)]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shape, engine, frameworks = json.loads(res.stdout)
    assert shape == [2, 4, 3] and engine == "onnx" and frameworks == []


@pytest.mark.slow
def test_onnx_export_has_plain_dilated_convolutions_for_any_frame_size(tmp_path):
    """Dynamic-size exports keep the backbone as Conv nodes (no SpaceToDepth shape arithmetic)."""
    pytest.importorskip("tf2onnx")
    import onnx

    from posed.engines.tensorflow.backend import build_model
    from posed.engines.tensorflow.model import load_weights
    from posed.exporters.common import run_onnx
    from posed.exporters.tensorflow import PoseMaps

    bundle = load_bundle(_random_bundle(tmp_path / "bundle", stride=8))
    out = api.export_model(bundle, "onnx", tmp_path / "onnx")
    graph = onnx.load(str(out / "model.onnx")).graph
    ops = [n.op_type for n in graph.node]
    dilated = [n for n in graph.node if n.op_type == "Conv" and any(
        a.name == "dilations" and list(a.ints) != [1, 1] for a in n.attribute)]
    assert len(dilated) == 10  # MobileNetV2 blocks 7-13 at rate 2, 14-16 at rate 4
    assert "SpaceToDepth" not in ops and "DepthToSpace" not in ops
    assert [i.name for i in graph.input] == ["frames"]
    assert [o.name for o in graph.output] == ["scores", "locref"]
    model = build_model(bundle)
    load_weights(model, bundle.weights_path)
    frames = np.random.default_rng(1).integers(0, 256, (2, 97, 131, 3), dtype=np.uint8)
    for want, got in zip(PoseMaps(model).maps(frames), run_onnx(out / "model.onnx", frames)):
        assert want.shape == got.shape
        np.testing.assert_allclose(want.numpy(), got, atol=1e-4)


def test_export_formats_are_checked_per_engine(tmp_path):
    bundle = _random_bundle(tmp_path / "bundle")
    with pytest.raises(ConfigError, match="tensorflow engine exports savedmodel, onnx"):
        api.export_model(bundle, "torchscript", tmp_path / "ts")
    with pytest.raises(ConfigError, match="option 'opset' applies to --format onnx"):
        api.export_model(bundle, "savedmodel", tmp_path / "sm", opset=17)


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


# ----------------------------------------------------------------------------- DeepLabCut 2.x

STRIDE = 8
PARTS = ["nose", "tail"]


def _dlc_export(folder: Path, variant: str = "scoremaps", skip: str | None = None) -> Path:
    """A DeepLabCut 2.x-style export: pose_cfg.yaml + a frozen graph with DLC's tensor names.

    The "network" scores each stride-8 cell by the mean brightness of one colour channel
    (red for ``nose``, blue for ``tail``), so a bright square places a body part exactly;
    locref says +0.25 * locref_stdev in x and -0.5 * locref_stdev in y everywhere.
    ``skip`` leaves one tensor name out (renamed) to test the error.
    """
    import yaml

    def name(n: str) -> str:
        return n + "_renamed" if n == skip else n

    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3], name=name("Placeholder"))
        mean = tf.constant([[[[123.68, 116.779, 103.939]]]], name="img_mean")
        centred = x - mean
        pooled = tf.nn.avg_pool2d(centred, STRIDE, STRIDE, "VALID")
        w = tf.compat.v1.get_variable("w", initializer=np.array(
            [[[[0.1, 0.0], [0.0, 0.0], [0.0, 0.1]]]], np.float32))
        b = tf.compat.v1.get_variable("b", initializer=np.zeros(2, np.float32))
        logits = tf.nn.bias_add(tf.nn.conv2d(pooled, w, 1, "SAME"), b,
                                name="pose/part_pred/block4/BiasAdd")
        probs = tf.sigmoid(logits, name=name("Sigmoid"))
        # No tf.concat before the decoding below: DeepLabCut's pose output is the graph's
        # second concat, auto-named concat_1.
        locref = tf.add(tf.tile(tf.zeros_like(logits), [1, 1, 1, 2]),
                        tf.constant([0.25, -0.5, 0.25, -0.5]), name=name("pose/locref_pred/block4/BiasAdd"))
        outputs = [probs.op.name, locref.op.name]
        if variant == "pose":  # DeepLabCut's GPU decoding (nnets/base.py inference, batch None)
            stdev = 7.2801
            s = tf.shape(probs)
            loc5 = tf.transpose(tf.reshape(locref, (s[0], s[1], s[2], s[3], 2)), [1, 2, 0, 3, 4])
            p = tf.transpose(probs, [1, 2, 0, 3])
            ls = tf.shape(p)
            loc5 = tf.reshape(loc5, (ls[0] * ls[1], -1, 2))
            p = tf.reshape(p, (ls[0] * ls[1], -1))
            maxloc = tf.argmax(p, axis=0)
            loc = tf.unravel_index(maxloc, (tf.cast(ls[0], tf.int64), tf.cast(ls[1], tf.int64)))
            maxloc = tf.reshape(maxloc, (1, -1))
            joints = tf.reshape(tf.range(0, tf.cast(ls[2] * ls[3], tf.int64)), (1, -1))
            indices = tf.transpose(tf.concat([maxloc, joints], axis=0))
            offset = tf.gather(tf.gather_nd(loc5, indices), [1, 0], axis=1)
            likelihood = tf.reshape(tf.gather_nd(p, indices), (-1, 1))
            pose = STRIDE * tf.cast(tf.transpose(loc), tf.float32) + STRIDE * 0.5 + offset * stdev
            pose = tf.concat([pose, likelihood], axis=1)
            if skip == "concat_1":
                pose = tf.identity(pose, name="pose_renamed")
            assert pose.op.name in ("concat_1", "pose_renamed")
            outputs = [pose.op.name]
        with tf.compat.v1.Session(graph=graph) as sess:
            sess.run(tf.compat.v1.global_variables_initializer())
            frozen = tf.compat.v1.graph_util.convert_variables_to_constants(
                sess, graph.as_graph_def(), outputs)
    folder.mkdir(parents=True)
    (folder / "snapshot-1030000.pb").write_bytes(frozen.SerializeToString())
    cfg = {"all_joints_names": PARTS, "all_joints": [[0], [1]], "stride": float(STRIDE),
           "locref_stdev": 7.2801, "location_refinement": True, "net_type": "resnet_50",
           "mean_pixel": [123.68, 116.779, 103.939],
           "init_weights": "/p/dlc-models/iteration-0/openfieldOct30-trainset95shuffle1/train/snapshot-1030000"}
    (folder / "pose_cfg.yaml").write_text(yaml.safe_dump(cfg))
    return folder


def _frames() -> tuple[np.ndarray, np.ndarray]:
    """Two 64×80 frames with a red and a blue 8×8 square; expected (x, y) per part."""
    frames = np.zeros((2, 64, 80, 3), np.uint8)
    truth = np.zeros((2, 2, 2), np.float32)
    for i, ((rr, rc), (br, bc)) in enumerate((((1, 2), (5, 7)), ((6, 0), (0, 3)))):
        frames[i, rr * 8:(rr + 1) * 8, rc * 8:(rc + 1) * 8, 0] = 255
        frames[i, br * 8:(br + 1) * 8, bc * 8:(bc + 1) * 8, 2] = 255
        for k, (r, c) in enumerate(((rr, rc), (br, bc))):
            truth[i, k] = ((c + 0.5) * 8 + 0.25 * 7.2801, (r + 0.5) * 8 - 0.5 * 7.2801)
    return frames, truth


@pytest.mark.parametrize("variant", ["scoremaps", "pose"])
def test_deeplabcut2_frozen_graph_round_trip(tmp_path, variant):
    from posed.exporters.dlc2 import import_dlc_tensorflow

    export = _dlc_export(tmp_path / "export", variant)
    if variant == "pose":  # `posed import-dlc` takes the folder too
        from posed.cli import main

        assert main(["import-dlc", str(export), "--out", str(tmp_path / "bundle"), "-q"]) == 0
        out = tmp_path / "bundle"
    else:
        out = import_dlc_tensorflow(export, tmp_path / "bundle")
    bundle = load_bundle(out)  # verifies the graph's sha256
    assert (bundle.engine, bundle.format) == ("tensorflow", "frozen-graph")
    assert bundle.architecture["layout"] == variant
    assert bundle.weights[0]["name"] == "snapshot-1030000.pb"
    assert bundle.bodyparts == PARTS and bundle.stride == 8.0
    assert bundle.scorer == "DLC_resnet50_openfieldOct30shuffle1_1030000"
    frames, truth = _frames()
    with api.load_model(out, device="cpu") as runner:
        poses = runner.predict(frames)
        assert poses.shape == (2, 2, 3)
        np.testing.assert_allclose(poses[..., :2], truth, atol=1e-3)
        assert (poses[..., 2] > 0.9).all()
        np.testing.assert_allclose(runner.predict(frames[1:])[0], poses[1], atol=1e-5)
        runner.predict(np.zeros((3, 32, 48, 3), np.uint8))
        assert runner.function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("missing", ["Placeholder", "Sigmoid", "pose/locref_pred/block4/BiasAdd"])
def test_deeplabcut2_graph_without_a_tensor_is_a_clear_error(tmp_path, missing):
    from posed.exporters.dlc2 import import_dlc_tensorflow

    export = _dlc_export(tmp_path / "export", skip=missing)
    with pytest.raises(ModelLoadError, match=f"snapshot-1030000.pb: .*'{missing}' not in the graph"):
        import_dlc_tensorflow(export, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_deeplabcut2_bundle_naming_a_wrong_tensor_is_refused(tmp_path):
    import yaml

    from posed.exporters.dlc2 import import_dlc_tensorflow

    # A folder: DeepLabCut 2.x, through the façade to the TensorFlow exporter.
    out = api.import_dlc(_dlc_export(tmp_path / "export"), tmp_path / "bundle")
    meta = yaml.safe_load((out / "posed.yaml").read_text())
    meta["architecture"]["outputs"] = ["Sigmoid", "pose/locref/typo"]
    (out / "posed.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError, match=r"\.pb: tensor 'pose/locref/typo' not in the graph"):
        api.load_model(out)
    (export := tmp_path / "nocfg").mkdir()
    with pytest.raises(ModelLoadError, match="no pose_cfg.yaml"):
        import_dlc_tensorflow(export, tmp_path / "b2")


@pytest.mark.slow
@pytest.mark.heavy  # the pseudo-labelling is shared: test_pseudo_labels.py runs it on PyTorch
def test_tensorflow_training_learns_from_confident_labels_too(tf_trained, tmp_path):
    """Pseudo-labels on the TensorFlow engine (here, beside the other TensorFlow tests: one
    process training TensorFlow and then PyTorch can crash): resumed with pseudo-labels, its
    model labels the unlabelled video; the kept labels are right against the ground truth,
    training goes on to the last epoch, and the labels sit in the training folder as with
    PyTorch."""
    from posed.engines import api
    from posed.engines.project import load_project
    from posed.engines.training.pseudo import read_labels
    from test_pseudo_labels import _label_errors, _with_unlabelled_video

    proj = _with_unlabelled_video(tf_trained, tmp_path)
    pseudo = {"enabled": True, "videos": ["videos/unlabelled.mp4"], "frames": 20, "start": 0.9,
              "pcutoff": 0.6}
    project = load_project(proj)
    folder = api.train_network(project, 1, "tensorflow",
                               {"epochs": 22, "pseudo_labels": pseudo},
                               progress=False, resume=True)
    rows = read_labels(folder / "pseudo-labels.csv", len(project.bodyparts))
    assert 10 <= len(rows) <= 20
    err, kept = _label_errors(rows, proj)
    assert kept.mean() > 0.5
    # measured: 17 frames, 69% of parts kept, median 1.75 px, 95th percentile 3.1 px (one run,
    # AMD EPYC with AVX-512); the bounds leave room for other CPUs
    assert np.median(err[kept]) < 3.0 and np.percentile(err[kept], 95) < 8.0
    assert (folder / "learning_stats.csv").read_text().splitlines()[-1].startswith("22,")
