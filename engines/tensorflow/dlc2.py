"""Inference with DeepLabCut 2.x TensorFlow exports (frozen graphs).

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
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from posed.engines.base import PoseRunner
from posed.engines.bundle import ModelBundle
from posed.engines.decoding import decode
from posed.errors import ConfigError, ExportError, InferenceError, ModelLoadError

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


def read_pose_cfg(folder: Path) -> dict[str, Any]:
    """``pose_cfg.yaml`` of an export folder, with the keys posed needs checked."""
    path = folder / "pose_cfg.yaml"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no pose_cfg.yaml (not a DeepLabCut 2.x export)")
    try:
        cfg = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ModelLoadError(f"{path}: invalid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(cfg, dict):
        raise ModelLoadError(f"{path}: expected a mapping")
    names = cfg.get("all_joints_names")
    if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
        raise ModelLoadError(f"{path}: key 'all_joints_names' is not a list of body-part names")
    if "stride" not in cfg:
        raise ModelLoadError(f"{path}: missing key 'stride'")
    if int(cfg.get("num_outputs", 1) or 1) > 1 or cfg.get("multi_stage") is True:
        raise ModelLoadError(f"{path}: key 'num_outputs': only single-animal models are supported")
    return cfg


def find_graph(folder: Path) -> Path:
    """The single frozen graph ``*.pb`` of an export folder."""
    graphs = sorted(folder.glob("*.pb"))
    if len(graphs) != 1:
        found = ", ".join(p.name for p in graphs) or "none"
        raise ModelLoadError(f"{folder}: expected one frozen graph *.pb, found {found}")
    return graphs[0]


def read_graph(path: Path) -> Any:
    """Parse a frozen ``GraphDef`` (a protobuf: no code is executed by reading it)."""
    tf = _tf()
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(path.read_bytes())
    except Exception as exc:  # protobuf raises DecodeError and RuntimeWarning-like errors
        raise ModelLoadError(f"{path}: not a frozen TensorFlow graph ({type(exc).__name__})") from None
    return graph_def


def graph_layout(graph_def: Any, path: Path, location_refinement: bool = True) -> tuple[str, list[str]]:
    """Which accepted layout a graph has and its output tensor names.

    Raises:
        ModelLoadError: the input tensor or every accepted output is missing (names them).
    """
    nodes = {n.name for n in graph_def.node}
    if INPUT not in nodes:
        raise ModelLoadError(f"{path}: input tensor '{INPUT}' not in the graph")
    if POSE in nodes:
        return "pose", [POSE]
    if SCOREMAP in nodes and (LOCREF in nodes or not location_refinement):
        return "scoremaps", [SCOREMAP] + ([LOCREF] if location_refinement else [])
    lacking = next(n for n in (SCOREMAP, LOCREF) if n not in nodes)
    raise ModelLoadError(f"{path}: output tensor '{lacking}' not in the graph (and no '{POSE}'); "
                         "expected DeepLabCut export names")


def _scorer(cfg: dict[str, Any], graph: Path) -> str:
    """DeepLabCut 2.x scorer ``DLC_<net>_<Task><date>shuffle<N>_<iterations>`` when recoverable."""
    net = str(cfg.get("net_type", "model")).replace("_", "")
    snap = re.search(r"snapshot-(\d+)", str(cfg.get("init_weights", "")) + " " + graph.name)
    model = re.search(r"([^/\\]+)-trainset\d+shuffle(\d+)", str(cfg.get("init_weights", "")))
    if model and snap:
        return f"DLC_{net}_{model.group(1)}shuffle{model.group(2)}_{snap.group(1)}"
    return f"DLC_{net}_imported" + (f"_{snap.group(1)}" if snap else "")


def import_dlc_tensorflow(folder: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Turn a DeepLabCut 2.x export folder into a posed bundle that the TF engine runs.

    The graph is copied beside ``posed.yaml`` (listed with its sha256); its tensors are
    checked first, so a bundle is only written for a graph posed can run.

    Args:
        folder: Export folder with ``pose_cfg.yaml`` and one frozen graph ``*.pb``.
        out: Bundle directory to create.
        overwrite: Replace the bundle files in an existing non-empty ``out``.

    Returns:
        ``out``.

    Raises:
        ModelLoadError: missing/malformed ``pose_cfg.yaml``, no or several graphs, or a
            graph without the expected tensors.
        ExportError: ``out`` exists, is not empty, and ``overwrite`` is false.
    """
    folder, out = Path(folder), Path(out)
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: not a directory (expected a DeepLabCut 2.x export folder)")
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out}: already exists and is not empty (pass overwrite to replace it)")
    cfg = read_pose_cfg(folder)
    graph = find_graph(folder)
    refine = bool(cfg.get("location_refinement", True))
    layout, outputs = graph_layout(read_graph(graph), graph, refine)
    mean_pixel = [float(v) for v in cfg.get("mean_pixel", [123.68, 116.779, 103.939])]
    bundle = ModelBundle(
        engine=ENGINE, format=FORMAT, bodyparts=list(cfg["all_joints_names"]),
        architecture={"net": str(cfg.get("net_type", "unknown")), "input": INPUT,
                      "outputs": outputs, "layout": layout, "location_refinement": refine},
        stride=float(cfg["stride"]), locref_stdev=float(cfg.get("locref_stdev", 7.2801)),
        # The graph computes ``x - mean_pixel`` on 0..255: mean/255 and std 1/255 on 0..1.
        mean=tuple(m / 255.0 for m in mean_pixel), std=(1 / 255.0,) * 3,
        source={"imported_from": "deeplabcut-2-tensorflow", "folder": str(folder),
                "graph": graph.name, "scorer": _scorer(cfg, graph)},
    )
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(graph, out / graph.name)
    bundle.save(out, [graph.name])
    log.info("imported %s -> %s (%s layout)", graph, out, layout)
    return out


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
        from posed.engines.tensorflow.backend import select_device, set_threads

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

