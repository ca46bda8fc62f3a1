"""Import DeepLabCut 2.x TensorFlow exports (frozen graphs) as posed bundles.

``deeplabcut.export_model`` writes a folder with ``pose_cfg.yaml`` and one frozen graph
``snapshot-N.pb``; :func:`import_dlc_tensorflow` checks the graph's tensors (the accepted
layouts are described in :mod:`posed.engines.tensorflow.dlc2`, which runs the bundle) and
writes a bundle of format ``frozen-graph`` for the TensorFlow engine.
:func:`import_dlc_tf_snapshot` does the same for a TensorFlow shuffle's training checkpoint,
frozen first into the graph DeepLabCut would export.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Mapping

from posed.engines.bundle import ModelBundle, read_yaml_mapping
from posed.engines.dlc.layout import TF_DEFAULTS
from posed.engines.io import atomic_path
from posed.engines.tensorflow.dlc2 import (ENGINE, FORMAT, INPUT, LOCREF, POSE, SCOREMAP,
                                           read_graph)
from posed.errors import ExportError, ModelLoadError

__all__ = ["find_graph", "graph_layout", "import_dlc_tensorflow", "import_dlc_tf_snapshot",
           "read_pose_cfg"]

log = logging.getLogger(__name__)


def read_pose_cfg(folder: Path, name: str = "pose_cfg.yaml",
                  defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``pose_cfg.yaml`` of an export (or a shuffle's) folder, merged over ``defaults``, with
    the keys posed needs checked."""
    path = folder / name
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no {name} (not a DeepLabCut 2.x export)")
    cfg = {**(defaults or {}), **read_yaml_mapping(path)}
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
    source = {"imported_from": "deeplabcut-2-tensorflow", "folder": str(folder),
              "graph": graph.name, "scorer": _scorer(cfg, graph)}
    return _write_bundle(cfg, graph.read_bytes(), graph.name, read_graph(graph), graph, out,
                         source)


def import_dlc_tf_snapshot(pose_cfg: str | Path, snapshot: str | Path, out: str | Path, *,
                           source: Mapping[str, Any]) -> Path:
    """A DeepLabCut TensorFlow shuffle's training snapshot (checkpoint prefix
    ``train/snapshot-N``) as a posed bundle in ``out``: the model such a shuffle folder serves
    in place. The checkpoint is frozen into DeepLabCut's export graph
    (:func:`posed.engines.tensorflow.checkpoint.freeze_snapshot`), then checked and written as
    :func:`import_dlc_tensorflow` does; ``source`` is the provenance the caller knows.
    """
    from posed.engines.tensorflow.checkpoint import freeze_snapshot

    pose_cfg, snapshot = Path(pose_cfg), Path(snapshot)
    # DeepLabCut infers with the shuffle's test/pose_cfg.yaml (train/'s when it lacks one).
    test_cfg = pose_cfg.parent.parent / "test" / "pose_cfg.yaml"
    if test_cfg.is_file():
        pose_cfg = test_cfg
    cfg = read_pose_cfg(pose_cfg.parent, pose_cfg.name, TF_DEFAULTS)
    graph_def = freeze_snapshot(cfg, pose_cfg, snapshot)
    name = f"{snapshot.name}.pb"
    provenance = {"imported_from": "deeplabcut-2-tensorflow-snapshot", "file": snapshot.name,
                  "graph": name, "dlc_net_type": str(cfg.get("net_type")), **source}
    return _write_bundle(cfg, graph_def.SerializeToString(), name, graph_def, snapshot,
                         Path(out), provenance)


def _write_bundle(cfg: dict[str, Any], graph_bytes: bytes, name: str, graph_def: Any,
                  path: Path, out: Path, source: dict[str, Any]) -> Path:
    """Check the graph's tensors, then write it and ``posed.yaml`` into ``out``."""
    refine = bool(cfg.get("location_refinement", True))
    layout, outputs = graph_layout(graph_def, path, refine)
    mean_pixel = [float(v) for v in cfg.get("mean_pixel", [123.68, 116.779, 103.939])]
    bundle = ModelBundle(
        engine=ENGINE, format=FORMAT, bodyparts=list(cfg["all_joints_names"]),
        architecture={"net": str(cfg.get("net_type", "unknown")), "input": INPUT,
                      "outputs": outputs, "layout": layout, "location_refinement": refine},
        stride=float(cfg["stride"]), locref_stdev=float(cfg.get("locref_stdev", 7.2801)),
        # The graph computes ``x - mean_pixel`` on 0..255: mean/255 and std 1/255 on 0..1.
        mean=tuple(m / 255.0 for m in mean_pixel), std=(1 / 255.0,) * 3, source=source,
    )
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / name) as tmp:
        tmp.write_bytes(graph_bytes)
    bundle.save(out, [name])
    log.info("imported %s -> %s (%s layout)", path, out, layout)
    return out
