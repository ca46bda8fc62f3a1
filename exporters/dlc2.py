"""Import DeepLabCut 2.x TensorFlow exports (frozen graphs) as posed bundles.

``deeplabcut.export_model`` writes a folder with ``pose_cfg.yaml`` and one frozen graph
``snapshot-N.pb``; :func:`import_dlc_tensorflow` checks the graph's tensors (the accepted
layouts are described in :mod:`posed.engines.tensorflow.dlc2`, which runs the bundle) and
writes a bundle of format ``frozen-graph`` for the TensorFlow engine.
"""

from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any

from posed.engines.bundle import ModelBundle, read_yaml_mapping
from posed.engines.tensorflow.dlc2 import (ENGINE, FORMAT, INPUT, LOCREF, POSE, SCOREMAP,
                                           read_graph)
from posed.errors import ExportError, ModelLoadError

__all__ = ["find_graph", "graph_layout", "import_dlc_tensorflow", "read_pose_cfg"]

log = logging.getLogger(__name__)


def read_pose_cfg(folder: Path) -> dict[str, Any]:
    """``pose_cfg.yaml`` of an export folder, with the keys posed needs checked."""
    path = folder / "pose_cfg.yaml"
    if not path.is_file():
        raise ModelLoadError(f"{folder}: no pose_cfg.yaml (not a DeepLabCut 2.x export)")
    cfg = read_yaml_mapping(path)
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
