"""Inference with DeepLabCut 2.x TensorFlow exports (frozen graphs).

Importing an export folder as a bundle is :mod:`posed.exporters.dlc2`; this module runs it.

``deeplabcut.export_model`` writes a folder with ``pose_cfg.yaml`` and a frozen graph
``snapshot-N.pb`` (see ``deeplabcut/pose_estimation_tensorflow/export.py``). Its input is the
float32 placeholder ``Placeholder`` (N×H×W×3 RGB on the 0..255 scale; the graph subtracts
``mean_pixel`` itself). Two output layouts are accepted:

``scoremaps`` (``TFGPUinference=False``, what DeepLabCut-live uses)
    ``Sigmoid``: part probabilities N×h×w×K, and, when ``location_refinement`` is on,
    ``pose/locref_pred/block4/BiasAdd``: offsets N×h×w×2K interleaved (x, y) in units of
    ``locref_stdev``. Decoded by posed's shared argmax + locref code, which uses
    DeepLabCut's cell-centre convention ``(i + 0.5) * stride``.

``pose`` (``TFGPUinference=True``, the default of ``export_model``)
    ``concat_1``: (N·K)×3 rows ``[y, x, likelihood]`` in input pixels, ordered image by
    image then part by part, decoded inside the graph.

A graph with ``concat_1`` is read through it (the GPU-decoding graph also holds the score-map
tensors, but ``concat_1`` is what its exporter declared, so poses match DeepLabCut's own);
otherwise the score maps are. A missing input or output tensor is a :class:`ModelLoadError`
naming the graph file and the tensor. Only single-animal models are supported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode
from posed.engines.tensorflow.devices import select_device, set_threads
from posed.errors import ConfigError, InferenceError, ModelLoadError

log = logging.getLogger(__name__)

ENGINE = "tensorflow"
FORMAT = "frozen-graph"
INPUT = "Placeholder"
SCOREMAP = "Sigmoid"
LOCREF = "pose/locref_pred/block4/BiasAdd"
POSE = "concat_1"
LAYOUTS = {"scoremaps": (SCOREMAP, LOCREF), "pose": (POSE,)}


def _tf() -> Any:
    from posed.engines.tensorflow import import_tensorflow

    return import_tensorflow()


def read_graph(path: Path) -> Any:
    """Parse a frozen ``GraphDef`` (a protobuf: no code is executed by reading it)."""
    tf = _tf()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError and RuntimeWarning-like errors
        raise ModelLoadError(f"{path}: not a frozen TensorFlow graph ({type(exc).__name__})") from None
    return graph_def


class FrozenGraphRunner(PoseRunner):
    """Runs an imported DeepLabCut 2.x frozen graph through one compiled function."""

    engine = ENGINE

    def __init__(self, bundle: ModelBundle, pruned: Any, layout: str, device: str,
                 batch: int | None) -> None:
        super().__init__(bundle)
        tf = _tf()
        self.layout = layout
        self.device = device
        self.batch = batch  # fixed batch size of the placeholder, None when free
        self._pruned = pruned

        def run(frames):
            with tf.device(device):
                return self._pruned(tf.cast(frames, tf.float32))

        self.function = tf.function(run, input_signature=[
            tf.TensorSpec([None, None, None, 3], tf.uint8, name="frames")])

    @classmethod
    def load(cls, bundle: ModelBundle, device: str = "auto", threads: int | None = None,
             **options: Any) -> "FrozenGraphRunner":
        if options:
            raise ConfigError(f"tensorflow engine: unknown option '{next(iter(options))}'")
        tf = _tf()
        set_threads(threads)
        path = bundle.weights_path
        graph_def = read_graph(path)
        arch = bundle.architecture
        layout = arch.get("layout")
        if layout not in LAYOUTS:
            raise ModelLoadError(f"{bundle.path}: architecture key 'layout' must be one of "
                                 f"{', '.join(LAYOUTS)}, got {layout!r}")
        nodes = {n.name: n for n in graph_def.node}
        for name in [arch.get("input", INPUT), *arch.get("outputs", LAYOUTS[layout])]:
            if name not in nodes:
                raise ModelLoadError(f"{path}: tensor '{name}' not in the graph")
        batch = None
        shape = nodes[arch.get("input", INPUT)].attr["shape"].shape
        if shape.dim and shape.dim[0].size > 0:
            batch = int(shape.dim[0].size)

        def imports():
            tf.compat.v1.import_graph_def(graph_def, name="")

        try:
            wrapped = tf.compat.v1.wrap_function(imports, [])
            g = wrapped.graph
            pruned = wrapped.prune(g.get_tensor_by_name(f"{arch.get('input', INPUT)}:0"),
                                   [g.get_tensor_by_name(f"{n}:0") for n in arch["outputs"]])
        except (ValueError, KeyError, tf.errors.OpError) as exc:
            raise ModelLoadError(f"{path}: cannot load graph ({str(exc).splitlines()[0]})") from None
        return cls(bundle, pruned, layout, select_device(device), batch)

    def _run(self, frames: np.ndarray) -> list[np.ndarray]:
        tf = _tf()
        try:
            return [t.numpy() for t in self.function(tf.convert_to_tensor(frames))]
        except (tf.errors.OpError, ValueError) as exc:
            raise InferenceError(f"frozen graph forward failed: {str(exc).splitlines()[0]}") from exc

    def _forward(self, frames: np.ndarray) -> np.ndarray:
        if self.batch is not None and len(frames) != self.batch:
            # A graph exported with a fixed batch size runs in chunks, the last one padded.
            parts = []
            for i in range(0, len(frames), self.batch):
                chunk = frames[i:i + self.batch]
                pad = self.batch - len(chunk)
                if pad:
                    chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
                parts.append(self._forward(chunk)[: self.batch - pad])
            return np.concatenate(parts)
        outputs = self._run(frames)
        k = len(self.bodyparts)
        if self.layout == "pose":
            rows = outputs[0].reshape(len(frames), k, 3)  # [y, x, p] per part
            return np.ascontiguousarray(rows[..., [1, 0, 2]], dtype=np.float32)
        scores = np.transpose(outputs[0], (0, 3, 1, 2))
        locref = np.transpose(outputs[1], (0, 3, 1, 2)) if len(outputs) > 1 else None
        if scores.shape[1] != k:
            raise InferenceError(f"{self.bundle.weights_path}: graph gives {scores.shape[1]} score "
                                 f"maps, the bundle lists {k} body parts")
        return decode(scores, locref, float(self.bundle.stride), float(self.bundle.locref_stdev))

