"""Exports and the ONNX engine: same keypoints from every runtime."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from posed.engines import api
from posed.engines.bundle import load_bundle
from posed.engines.onnx.backend import choose_providers
from posed.engines.project import load_image, load_project, load_split
from posed.errors import ConfigError, InferenceError, ModelLoadError

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


def _test_frames(project_dir):
    project = load_project(project_dir)
    names = load_split(project, 1).test
    return np.stack([load_image(project.root, n) for n in names])


@pytest.fixture(scope="module")
def exports(trained_project, tmp_path_factory):
    """TorchScript, ONNX FP32/FP16/INT8 exports of the trained synthetic model."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("exports")
    made = {}
    for name, fmt, options in (
        ("torchscript", "torchscript", {}),
        ("onnx", "onnx", {}),
        ("onnx_fixed", "onnx", {"fixed_size": (128, 128)}),
        ("onnx_fp16", "onnx", {"precision": "fp16"}),
        ("onnx_int8", "onnx", {"precision": "int8"}),
    ):
        made[name] = api.export_model(trained_project, fmt, out / name, **options)
    return made


def _parity(native, other):
    dist = np.linalg.norm(native[..., :2] - other[..., :2], axis=-1)
    return float(dist.max()), float(np.abs(native[..., 2] - other[..., 2]).max())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchscript", "onnx", "onnx_fixed"])
def test_fp32_exports_match_the_native_model_on_every_test_frame(trained_project, exports, name):
    frames = _test_frames(trained_project)
    native = api.load_model(trained_project, device="cpu").predict(frames)
    runner = api.load_model(exports[name])
    got = np.concatenate([runner.predict(frames[i:i + 7]) for i in range(0, len(frames), 7)])
    max_px, max_p = _parity(native, got)
    assert max_px <= 0.1 and max_p <= 1e-3, (max_px, max_p)
    # The export decodes in the same body window as the trained model (fitted to its labels).
    window = load_bundle(exports[name]).body_window
    assert window is not None and window == runner.bundle.body_window == \
        api.resolve_bundle(trained_project).body_window


@pytest.mark.slow
@pytest.mark.parametrize("name,tol_px", [("onnx_fp16", 2.0), ("onnx_int8", 8.0)])
def test_reduced_precision_exports_record_and_meet_their_tolerance(trained_project, exports, name,
                                                                  tol_px):
    bundle = load_bundle(exports[name])
    parity = bundle.export["parity"]
    assert parity["tolerance_px"] == tol_px and parity["max_px_confident"] <= tol_px
    frames = _test_frames(trained_project)
    native = api.load_model(trained_project, device="cpu").predict(frames)
    got = api.load_model(exports[name]).predict(frames)
    seen = native[..., 2] >= 0.5
    dist = np.linalg.norm(native[..., :2] - got[..., :2], axis=-1)
    assert seen.mean() > 0.8 and dist[seen].max() <= tol_px


@pytest.mark.slow
def test_exported_bundles_describe_themselves(exports):
    meta = yaml.safe_load((exports["onnx_fixed"] / "posed.yaml").read_text())
    assert meta["engine"] == "onnx" and meta["format"] == "onnx"
    assert meta["input_size"] == [128, 128]
    assert meta["export"]["opset"] == 17 and meta["export"]["precision"] == "fp32"
    assert meta["source"]["exported_from"]["name"] == "snapshot-040.safetensors"
    ts = load_bundle(exports["torchscript"])
    assert ts.engine == "pytorch" and ts.format == "torchscript"
    assert set(ts.export["parity"]) == {"same_size", "other_size"}


@pytest.mark.slow
def test_fixed_size_bundle_refuses_other_sizes(exports):
    runner = api.load_model(exports["onnx_fixed"])
    with pytest.raises(InferenceError, match="128×128"):
        runner.predict(np.zeros((1, 96, 128, 3), np.uint8))


@pytest.mark.slow
def test_onnx_path_imports_no_framework(exports):
    code = (
        "import sys, json, numpy as np\n"
        "from posed.engines import api\n"
        f"r = api.load_model({str(exports['onnx'])!r}, provider='cpu')\n"
        "out = r.predict(np.zeros((2, 64, 80, 3), np.uint8))\n"
        "print(json.dumps([list(out.shape), r.provider,\n"
        "  sorted(m for m in ('torch', 'tensorflow', 'timm') if m in sys.modules)]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    shape, provider, frameworks = json.loads(res.stdout)
    assert shape == [2, 4, 3] and provider == CPU and frameworks == []


@pytest.mark.slow
def test_corrupt_and_unexpected_onnx_models_are_refused(exports, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(exports["onnx"], copy)
    data = (copy / "model.onnx").read_bytes()
    (copy / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="sha256 mismatch"):
        api.load_model(copy)
    # A graph with a float input is not a posed export, even with a matching hash.
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 3, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 3, 4])])
    onnx.save(helper.make_model(graph), str(copy / "model.onnx"))
    bundle = load_bundle(copy, verify=False)
    with pytest.raises(ModelLoadError, match="expected uint8"):
        api.load_model(bundle)


@pytest.mark.slow
def test_export_from_the_cli(trained_project, tmp_path, capsys):
    from posed.cli import main

    out = tmp_path / "ts"
    assert main(["export", str(trained_project), "--format", "onnx", "--out", str(out), "-q"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == str(out) and "parity with the native model" in captured.err
    assert main(["export", str(trained_project), "--format", "onnx", "--out", str(out), "-q"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert main(["export", str(trained_project), "--format", "torchscript", "--fp16",
                 "--out", str(tmp_path / "x"), "-q"]) == 2


@pytest.mark.parametrize("requested,available,first,why", [
    ("auto", [TRT, CUDA, CPU], TRT, "auto"),
    ("auto", [CUDA, CPU], CUDA, "auto"),
    ("auto", [CPU], CPU, "auto"),
    ("cuda", [TRT, CUDA, CPU], CUDA, "as requested"),
    ("cuda", [CPU], CPU, "falling back"),
    ("tensorrt", [CUDA, CPU], CUDA, "falling back"),
    ("cpu", [TRT, CUDA, CPU], CPU, "as requested"),
])
def test_provider_choice(requested, available, first, why):
    chosen, reason = choose_providers(requested, available)
    assert chosen[0] == first and chosen[-1] == CPU and why in reason


def test_provider_choice_rejects_unknown_names():
    with pytest.raises(ConfigError, match="provider 'npu'"):
        choose_providers("npu", [CPU])


def test_runner_reports_the_provider_really_used(exports_onnx_tiny, monkeypatch, caplog):
    """onnxruntime-gpu lists CUDA without a usable GPU and silently runs on the CPU."""
    import onnxruntime as ort

    from posed.engines.onnx import backend

    real = ort.InferenceSession

    class FallingBack(real):
        def __init__(self, path, sess_options=None, providers=None, provider_options=None):
            assert providers[0] == CUDA
            super().__init__(path, sess_options=sess_options, providers=[CPU])

    monkeypatch.setattr(backend.ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(backend.ort, "InferenceSession", FallingBack)
    with caplog.at_level("WARNING"):
        runner = api.load_model(exports_onnx_tiny, provider="cuda")
    assert runner.provider == CPU
    assert "CUDAExecutionProvider could not be used" in caplog.text


@pytest.fixture
def exports_onnx_tiny(tmp_path):
    """A tiny untrained model exported to ONNX (no training needed)."""
    pytest.importorskip("torch")
    from posed.engines.pytorch.backend import random_bundle

    random_bundle("mobilenet_v2_0.35", tmp_path / "src", keypoints=2)
    return api.export_model(tmp_path / "src", "onnx", tmp_path / "onnx")


def test_gpu_providers_run_through_io_binding(exports_onnx_tiny, monkeypatch):
    """On CUDA/TensorRT the runner binds the input once and copies only the outputs back."""
    import onnxruntime as ort

    from posed.engines.onnx import backend

    real = ort.InferenceSession
    calls = []

    class Binding:
        def __init__(self, session):
            self.session, self.feed, self.outputs, self.result = session, {}, [], None

        def bind_cpu_input(self, name, array):
            calls.append("input")
            self.feed[name] = array

        def bind_output(self, name, device, device_id):
            assert (device, device_id) == ("cuda", 0)
            self.outputs.append(name)

        def clear_binding_inputs(self):
            self.feed = {}

        def copy_outputs_to_cpu(self):
            calls.append("copy")
            return self.result

    class OnCuda(real):  # a session that says it runs on CUDA; the arithmetic is the CPU's
        def __init__(self, path, sess_options=None, providers=None, provider_options=None):
            super().__init__(path, sess_options=sess_options, providers=[CPU])

        def get_providers(self):
            return [CUDA, CPU]

        def get_provider_options(self):
            return {CUDA: {"device_id": "0"}}

        def io_binding(self):
            return Binding(self)

        def run_with_iobinding(self, binding):
            calls.append("run")
            binding.result = self.run(binding.outputs, binding.feed)

    frames = np.random.default_rng(0).integers(0, 255, (2, 64, 64, 3), dtype=np.uint8)
    want = api.load_model(exports_onnx_tiny, provider="cpu").predict(frames)
    monkeypatch.setattr(backend.ort, "get_available_providers", lambda: [CUDA, CPU])
    monkeypatch.setattr(backend.ort, "InferenceSession", OnCuda)
    runner = api.load_model(exports_onnx_tiny, provider="cuda")
    assert runner.provider == CUDA
    np.testing.assert_array_equal(runner.predict(frames), want)
    assert calls == ["input", "run", "copy"]
