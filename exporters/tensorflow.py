"""Export TensorFlow (Keras 3) bundles to SavedModel and ONNX, checked against the original.

Both exports are built from one :class:`PoseMaps` ``tf.function`` with a fixed input
signature: uint8 N×H×W×3 RGB frames, with the cast and the normalisation in the graph. Like
the PyTorch exports (:mod:`posed.exporters.torch`) they return score maps (sigmoid applied)
and locref fields in the channels-first layout N×K×h×w / N×2K×h×w that the shared decoding
takes; the Keras heads are channels-last and the transposes are part of the graph, so an ONNX
export of a TensorFlow model runs on the ONNX engine exactly like one of a PyTorch model.

``savedmodel``
    A ``savedmodel/`` folder in the bundle (``tf.saved_model.save``) with the function
    ``maps`` (frames -> (scores, locref)) and the ``serving_default`` signature (outputs
    ``scores`` and ``locref``), so TensorFlow Serving and plain ``tf.saved_model.load`` can use
    it too. Every file of the folder is hashed in ``posed.yaml``.
``onnx``
    ``tf2onnx.convert.from_function`` on the same function (``from_keras`` does not handle
    Keras 3 models), inputs and outputs renamed to ``frames``, ``scores``, ``locref``; then the
    same simplification and FP16/INT8 options as PyTorch ONNX exports.

The parity checks and tolerances are those of every exporter (:mod:`posed.exporters.common`).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from posed.engines.bundle import ModelBundle
from posed.engines.tensorflow import import_tensorflow
from posed.errors import ConfigError, ExportError
from posed.exporters.common import DEFAULT_OPSET, as_maps
from posed.exporters.common import check_frames as _check_frames
from posed.exporters.common import (calibration_record, check_precision, export_as, finish_onnx,
                                    run_onnx, staging_parent, verify, write_bundle)

tf = import_tensorflow()
import keras  # noqa: E402  (after TensorFlow's environment is set up)

log = logging.getLogger(__name__)

SAVEDMODEL_DIR = "savedmodel"
FUNCTION = "maps"  # the exported function SavedModel runners call
OUTPUTS = ("scores", "locref")
OUTPUT_LAYOUT = "scores N×K×h×w (sigmoid), locref N×2K×h×w (x, y interleaved)"


class PoseMaps(tf.Module):
    """A Keras pose model as one ``tf.function``: uint8 NHWC frames -> channels-first maps.

    ``fixed_size`` ``(height, width)`` fixes the input size in the signature; batch is always
    free. ``maps`` returns the tuple ``(scores, locref)``; ``serve`` the same as a dict, for
    the SavedModel's ``serving_default`` signature.
    """

    def __init__(self, model: "keras.Model", fixed_size: tuple[int, int] | None = None) -> None:
        super().__init__(name="posed_pose_maps")
        self.model = model
        height, width = fixed_size or (None, None)
        spec = tf.TensorSpec([None, height, width, 3], tf.uint8, name="frames")
        self.maps = tf.function(self._maps, input_signature=[spec])
        self.serve = tf.function(self._serve, input_signature=[spec])

    def _maps(self, frames: "tf.Tensor") -> tuple["tf.Tensor", "tf.Tensor"]:
        heat, locref = self.model(tf.cast(frames, tf.float32), training=False)
        return tf.transpose(tf.sigmoid(heat), (0, 3, 1, 2)), tf.transpose(locref, (0, 3, 1, 2))

    def _serve(self, frames: "tf.Tensor") -> dict[str, "tf.Tensor"]:
        return dict(zip(OUTPUTS, self._maps(frames)))


def _native(bundle: ModelBundle, native_dilation: bool = False) -> "keras.Model":
    from posed.engines.tensorflow.backend import build_model
    from posed.engines.tensorflow.model import load_weights

    if bundle.engine != "tensorflow" or bundle.format != "safetensors":
        raise ExportError(f"{bundle.path}: only TensorFlow safetensors bundles can be exported here "
                          f"(this one is {bundle.engine}/{bundle.format})")
    model = build_model(bundle, native_dilation=native_dilation)
    load_weights(model, bundle.weights_path)
    return model


def _other_size(frames: np.ndarray) -> np.ndarray:
    # A second size: an export that baked the first size in would mis-predict on others.
    return np.ascontiguousarray(np.pad(frames, ((0, 0), (16, 0), (0, 32), (0, 0))))


def export_savedmodel(bundle: ModelBundle, out: str | Path, *, check_frames: np.ndarray | None = None,
                      overwrite: bool = False) -> Path:
    """Save the model as a TensorFlow SavedModel in a new bundle folder ``out``.

    The reloaded SavedModel is checked against the native model on the check frames and on
    a second input size.
    """
    out = Path(out)
    module = PoseMaps(_native(bundle))
    frames = _check_frames(check_frames, (96, 128))
    with tempfile.TemporaryDirectory(dir=staging_parent(out)) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        saved = staging / SAVEDMODEL_DIR
        try:
            tf.saved_model.save(module, str(saved), signatures={"serving_default": module.serve})
        except Exception as exc:  # TensorFlow raises many internal error types here
            raise ExportError(f"{out}: SavedModel export failed ({str(exc).splitlines()[0]})") from exc
        loaded = tf.saved_model.load(str(saved))
        parity = {}
        for name, batch in (("same_size", frames), ("other_size", _other_size(frames))):
            reference = as_maps(module.maps(batch))
            parity[name] = verify("fp32", reference, as_maps(loaded.maps(batch)), bundle, out)
        files = sorted(p.relative_to(staging).as_posix() for p in saved.rglob("*") if p.is_file())
        # The graph first: it is the file runners open (the folder is its parent).
        files.sort(key=lambda name: name != f"{SAVEDMODEL_DIR}/saved_model.pb")
        export = {"tool": f"tf.saved_model.save (TensorFlow {tf.__version__}, Keras {keras.__version__})",
                  "precision": "fp32", "input": "uint8 NHWC RGB", "outputs": OUTPUT_LAYOUT,
                  "function": FUNCTION, "signature": "serving_default", "parity": parity}
        return write_bundle(bundle, staging, out, files, engine="tensorflow", fmt="savedmodel",
                            input_size=None, export=export, overwrite=overwrite)


def export_onnx(bundle: ModelBundle, out: str | Path, *, opset: int = DEFAULT_OPSET,
                fixed_size: tuple[int, int] | None = None, precision: str = "fp32",
                calibration: np.ndarray | None = None, simplify: bool = True,
                check_frames: np.ndarray | None = None, overwrite: bool = False,
                calibration_info: dict[str, Any] | None = None, approximate: bool = False) -> Path:
    """Export to ONNX (``model.onnx``, engine ``onnx``) in a new bundle folder ``out``.

    Options are those of :func:`posed.exporters.torch.export_onnx`: ``fixed_size``
    ``(height, width)`` or dynamic height and width, ``precision`` ``fp32``/``fp16``/``int8``
    (static, needs ``calibration`` frames)/``int8-dynamic``, ``simplify``, ``check_frames``,
    ``calibration_info``, ``approximate``.
    """
    out = Path(out)
    check_precision(precision, calibration)
    try:
        import onnx
        import tf2onnx
    except ImportError as exc:
        raise ExportError(f"ONNX export of TensorFlow models needs {exc.name}: "
                          "pip install 'posed[tensorflow,export]'") from None
    # The reference is the model as trained; the graph is traced from its variant with native
    # dilated depthwise convolutions, which tf2onnx turns into plain dilated Conv nodes.
    module = PoseMaps(_native(bundle), fixed_size)
    traced = PoseMaps(_native(bundle, native_dilation=True), fixed_size)
    frames = _check_frames(check_frames, fixed_size or (96, 128))
    if fixed_size is not None and frames.shape[1:3] != tuple(fixed_size):
        raise ExportError(f"check frames are {frames.shape[1:3]}, the fixed size is {fixed_size}")
    sizes = [frames] if fixed_size is not None else [frames, _other_size(frames)]
    with tempfile.TemporaryDirectory(dir=staging_parent(out)) as tmp:
        staging = Path(tmp) / "bundle"
        staging.mkdir()
        fp32_path = Path(tmp) / "fp32.onnx"
        try:
            with _quiet_tf2onnx():
                proto, _ = tf2onnx.convert.from_function(
                    traced.maps, input_signature=traced.maps.input_signature, opset=opset)
        except Exception as exc:  # the converter raises many internal error types
            raise ExportError(f"{out}: ONNX export failed ({str(exc).splitlines()[0]})") from exc
        _name_io(proto, fixed_size is None)
        onnx.save(proto, str(fp32_path))
        onnx.checker.check_model(str(fp32_path))
        final = staging / "model.onnx"
        steps = [f"tf2onnx.convert.from_function (tf2onnx {tf2onnx.__version__}, "
                 f"TensorFlow {tf.__version__})"]
        steps += finish_onnx(fp32_path, final, precision, calibration, simplify)
        kind = "fp32" if precision == "fp32" else precision.split("-")[0]
        checks = [verify(kind, as_maps(module.maps(batch)), run_onnx(final, batch), bundle, out,
                         approximate=approximate) for batch in sizes]
        parity = {**checks[0], "checked_sizes": [list(b.shape[1:3]) for b in sizes]}
        dynamic = ["batch"] + ([] if fixed_size else ["height", "width"])
        export = {"tool": steps, "opset": opset, "precision": precision, "input": "uint8 NHWC RGB",
                  "outputs": OUTPUT_LAYOUT, "dynamic_axes": {"frames": dynamic}, "parity": parity}
        if precision == "int8":
            export["calibration"] = calibration_record(calibration, calibration_info)
        return write_bundle(bundle, staging, out, ["model.onnx"], engine="onnx", fmt="onnx",
                            input_size=list(fixed_size) if fixed_size else None, export=export,
                            overwrite=overwrite)


FORMATS = {"savedmodel": export_savedmodel, "onnx": export_onnx}


def export(bundle: ModelBundle, fmt: str, out: Path, **options: Any) -> Path:
    """The TensorFlow engine's ``export`` capability: a bundle to ``savedmodel`` or ``onnx``."""
    if fmt == "savedmodel":
        unknown = sorted(set(options) - {"check_frames", "overwrite"})
        if unknown:
            raise ConfigError(f"option '{unknown[0]}' applies to --format onnx, not savedmodel")
    return export_as("tensorflow", FORMATS, bundle, fmt, Path(out), options)


@contextlib.contextmanager
def _quiet_tf2onnx() -> Iterator[None]:
    """tf2onnx logs every conversion step at INFO/WARNING; posed reports the result instead."""
    logger = logging.getLogger("tf2onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _name_io(proto: Any, dynamic_size: bool) -> None:
    """Rename tf2onnx's ``frames:0``/``Identity:0`` to posed's names and name the free dims.

    The ONNX engine reads inputs and outputs by position, but the names (and ``batch``,
    ``height``, ``width`` instead of ``unk__12``) make the graph self-explanatory in any tool.
    """
    graph = proto.graph
    rename = {graph.input[0].name: "frames"}
    rename.update({o.name: new for o, new in zip(graph.output, OUTPUTS)})
    for node in graph.node:
        for field in (node.input, node.output):
            for i, name in enumerate(field):
                if name in rename:
                    field[i] = rename[name]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        if value.name in rename:
            value.name = rename[value.name]
    dims = {"frames": ("batch", "height", "width", None)}
    for out in OUTPUTS:
        dims[out] = ("batch", None, "grid_h", "grid_w")
    for value in [*graph.input, *graph.output]:
        for dim, label in zip(value.type.tensor_type.shape.dim, dims[value.name]):
            if label and (dim.dim_param or not dim.HasField("dim_value")) and (
                    dynamic_size or label == "batch"):
                dim.dim_param = label

