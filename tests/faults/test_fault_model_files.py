"""Model files that must be refused with one clear line: truncated weights whose hash was
updated to match, pickle payloads that would run code if unpickled, ONNX graphs with
unexpected inputs, and a damaged ``posed.yaml``.

Already covered elsewhere: a hash mismatch (tests/test_bundle.py, test_pytorch_engine.py), a
truncated ONNX file and a float-input ONNX graph (tests/test_export.py), and code-running
pickles in DeepLabCut ``.pt`` files for ``posed import-dlc`` (tests/test_dlc_import.py).
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import pytest
import yaml

from faultkit import DEMO
from posed.engines import api
from posed.engines.bundle import BUNDLE_FILE, ModelBundle, load_bundle
from posed.errors import ModelLoadError


class _RunsCode:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _one_line_naming(err: pytest.ExceptionInfo, path: Path) -> str:
    text = str(err.value)
    assert "\n" not in text and str(path) in text, text
    # Short enough to read at a glance: detail is behind --debug (the traceback).
    assert len(text.replace(str(path), "<path>")) <= 160, text
    return text


def _demo_copy(tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(DEMO / "model", copy)
    return copy


def _rehash(folder: Path, fmt: str, weights: str) -> None:
    """Rewrite posed.yaml for ``weights`` with a matching sha256 (as an attacker could)."""
    bundle = load_bundle(folder, verify=False)
    bundle.format = fmt
    bundle.save(folder, [weights])


def test_truncated_safetensors_with_a_matching_hash_is_refused(tmp_path):
    pytest.importorskip("torch")
    folder = _demo_copy(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _rehash(folder, "safetensors", "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        api.load_model(folder, device="cpu")
    _one_line_naming(err, weights)


def test_weights_linking_outside_the_bundle_are_refused(tmp_path):
    """A weights file that is a symlink to a file elsewhere (same hash) is not read."""
    folder = _demo_copy(tmp_path)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(folder / "model.safetensors", outside)
    (folder / "model.safetensors").symlink_to(outside)
    for verify in (True, False):
        with pytest.raises(ModelLoadError, match="links outside the bundle") as err:
            load_bundle(folder, verify=verify)
        _one_line_naming(err, folder / "model.safetensors")
    # A link that stays inside the bundle is fine.
    (folder / "model.safetensors").unlink()
    (folder / "weights").mkdir()
    shutil.move(outside, folder / "weights" / "w.safetensors")
    (folder / "model.safetensors").symlink_to(folder / "weights" / "w.safetensors")
    assert load_bundle(folder).weights_path == folder / "model.safetensors"


def test_pickle_in_a_torchscript_bundle_is_refused_without_running(tmp_path):
    torch = pytest.importorskip("torch")
    marker = tmp_path / "MARKER"
    folder = _demo_copy(tmp_path)
    (folder / "model.safetensors").unlink()
    # A plain torch.save pickle posing as TorchScript, with a payload inside.
    torch.save({"w": torch.zeros(1), "payload": _RunsCode(marker)}, folder / "model.pt")
    _rehash(folder, "torchscript", "model.pt")
    with pytest.raises(ModelLoadError) as err:
        api.load_model(folder, device="cpu")
    _one_line_naming(err, folder / "model.pt")
    assert not marker.exists()


def test_pickle_inside_a_real_torchscript_archive_is_refused(tmp_path):
    """A TorchScript zip whose data.pkl was replaced by a code-running pickle."""
    torch = pytest.importorskip("torch")
    import pickle
    import zipfile

    marker = tmp_path / "MARKER"
    clean = tmp_path / "clean.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, still read
        torch.jit.script(torch.nn.Linear(2, 2)).save(str(clean))
    folder = _demo_copy(tmp_path)
    (folder / "model.safetensors").unlink()
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(folder / "model.pt", "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("/data.pkl"):
                data = pickle.dumps(_RunsCode(marker), protocol=2)
            dst.writestr(item, data)
    _rehash(folder, "torchscript", "model.pt")
    with pytest.raises(ModelLoadError) as err:
        api.load_model(folder, device="cpu")
    _one_line_naming(err, folder / "model.pt")
    assert not marker.exists()


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_pickle_in_a_pretrained_backbone_file_is_refused(tmp_path, zipped):
    """``posed train --pretrained FILE.pt`` reads the file with weights_only=True."""
    torch = pytest.importorskip("torch")
    from posed.engines.pytorch.model import load_state_dict

    marker = tmp_path / "MARKER"
    path = tmp_path / "backbone.pt"
    torch.save({"conv.weight": torch.zeros(1), "x": _RunsCode(marker)}, path,
               _use_new_zipfile_serialization=zipped)
    with pytest.raises(ModelLoadError) as err:
        load_state_dict(path)
    _one_line_naming(err, path)
    assert not marker.exists()
    # The refusal says why and never suggests the unsafe way round (torch's own message does).
    assert "pickled objects other than tensors" in str(err.value)
    assert "weights_only=False" not in str(err.value) and "weights_only` set" not in str(err.value)


def test_a_pickle_named_safetensors_is_refused(tmp_path):
    pytest.importorskip("torch")
    import pickle

    marker = tmp_path / "MARKER"
    folder = _demo_copy(tmp_path)
    (folder / "model.safetensors").write_bytes(pickle.dumps(_RunsCode(marker)))
    _rehash(folder, "safetensors", "model.safetensors")
    with pytest.raises(ModelLoadError) as err:
        api.load_model(folder, device="cpu")
    _one_line_naming(err, folder / "model.safetensors")
    assert not marker.exists()


def _onnx_bundle(folder: Path, inputs: list[tuple[str, int, list]]) -> Path:
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    folder.mkdir()
    nodes = [helper.make_node("Cast", [inputs[0][0]], ["scores"], to=TensorProto.FLOAT),
             helper.make_node("Cast", [inputs[0][0]], ["locref"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("locref", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(folder / "model.onnx"))
    ModelBundle(engine="onnx", format="onnx", bodyparts=["a"], architecture={}, stride=8.0,
                locref_stdev=7.2801).save(folder, ["model.onnx"])
    return folder / "model.onnx"


UINT8 = 2  # onnx.TensorProto.UINT8 (onnx is imported lazily)


@pytest.mark.parametrize("inputs, why", [
    ([("frames", UINT8, ["N", "H", "W", 3]), ("extra", UINT8, ["N", "H", "W", 3])], "found 2"),
    ([("frames", UINT8, ["H", "W", 3])], "rank 3"),
    ([("frames", UINT8, ["N", "C", "H", "W", 3])], "rank 5"),
], ids=["two-inputs", "rank-3", "rank-5"])
def test_onnx_with_unexpected_inputs_is_refused(tmp_path, inputs, why):
    weights = _onnx_bundle(tmp_path / "b", inputs)
    with pytest.raises(ModelLoadError, match=why) as err:
        api.load_model(tmp_path / "b", provider="cpu")
    _one_line_naming(err, weights)


@pytest.mark.parametrize("change, message", [
    ({"weights": "model.safetensors"}, "key 'weights' must be a list"),
    ({"weights": ["model.safetensors"]}, "weights[0] must have a 'name' and a 'sha256'"),
    ({"weights": [{"name": "../../../etc/passwd", "sha256": "0" * 64}]}, "not a file inside"),
    ({"weights": [{"name": "/etc/passwd", "sha256": "0" * 64}]}, "not a file inside"),
    ({"bodyparts": "snout"}, "key 'bodyparts' must be a non-empty list"),
    ({"mean": 0.5}, "key 'mean' must be a list of 3 numbers"),
    ({"stride": "four"}, "key 'stride' must be a positive number"),
    ({"architecture": ["resnet"]}, "key 'architecture' must be a mapping"),
    ({"input_size": [128]}, "key 'input_size' must be null or [height, width]"),
])
def test_damaged_posed_yaml_is_a_clear_error(tmp_path, change, message):
    folder = _demo_copy(tmp_path)
    meta = yaml.safe_load((folder / BUNDLE_FILE).read_text())
    meta.update(change)
    (folder / BUNDLE_FILE).write_text(yaml.safe_dump(meta))
    with pytest.raises(ModelLoadError) as err:
        load_bundle(folder)
    text = _one_line_naming(err, folder / BUNDLE_FILE)
    assert message in text
