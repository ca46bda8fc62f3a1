"""DeepLabCut 3's multi-animal bottom-up models (``DLCRNetHead`` + part-affinity fields).

A multi-animal DeepLabCut 3 shuffle (``method: bu``; ``resnet_50`` is DeepLabCut's default)
has one ``bodypart`` head of ``type: DLCRNetHead`` with a ``PartAffinityFieldPredictor``.
Imported, it becomes a posed multi-animal bundle whose network is
:class:`posed.engines.pytorch.dlcrnet.DLCRNet` and whose ``architecture.dlc_predictor`` holds
the predictor's settings, so every engine assembles animals with DeepLabCut's own algorithm
(:mod:`posed.engines.dlc.assembler`):

- ``graph`` (all PAF edges, in the order of the field channels), ``edges_to_keep`` (the edges
  the assembler uses), ``nms_radius``, ``sigma``, ``locref_stdev``, ``min_affinity`` and
  ``clip_scores`` from the predictor; ``pcutoff`` 0.1, ``min_n_links`` 2 and ``max_overlap``
  0.8, the values DeepLabCut's predictor builds its assembler with.
- The predictor's ``add_discarded`` and ``force_fusion`` (off by default) change which parts
  join animals; posed does not reproduce them yet and refuses them, as it refuses unique body
  parts, identity heads and an even ``nms_radius`` (DeepLabCut's max pooling needs it odd).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from posed.errors import ModelLoadError
from posed.exporters.common import unsupported as _unsupported

__all__ = ["map_paf_state", "paf_spec"]

HEAD = "dlcrnet"
_PREFIX = "heads.bodypart."
_OUTPUTS = {"heatmap_head.deconv_layers.0.": "heatmap.",
            "locref_head.deconv_layers.0.": "locref.",
            "paf_head.deconv_layers.0.": "paf."}
_STAGES = ("convt1.", "convt2.", "convt3.", "convt4.", "hm_ref_layers.", "paf_ref_layers.")

# The assembler settings DeepLabCut's PartAffinityFieldPredictor does not pass on (its
# Assembler.empty defaults).
_ASSEMBLER_DEFAULTS = {"pcutoff": 0.1, "min_n_links": 2, "max_overlap": 0.8}


def _edges(value: Any, what: str, n_parts: int, path: Path) -> list[tuple[int, int]]:
    try:
        edges = [(int(a), int(b)) for a, b in value]
    except (TypeError, ValueError):
        raise ModelLoadError(f"{path}: predictor '{what}' is not a list of part pairs") from None
    bad = [e for e in edges if not (0 <= e[0] < n_parts and 0 <= e[1] < n_parts) or e[0] == e[1]]
    if bad:
        raise ModelLoadError(f"{path}: predictor '{what}' has edge {list(bad[0])} outside the "
                             f"{n_parts} body parts")
    return edges


def paf_spec(config: Mapping, head: Mapping, path: Path, common: dict[str, Any]) -> dict[str, Any]:
    """The bundle settings of a DLCRNetHead model; ``common`` holds what the single-animal
    check already read (bodyparts, backbone, normalisation)."""
    metadata = config.get("metadata") or {}
    if metadata.get("unique_bodyparts"):
        raise _unsupported(path, "unique body parts in multi-animal models")
    if metadata.get("with_identity"):
        raise _unsupported(path, "identity heads")
    predictor = dict(head.get("predictor") or {})
    if predictor.get("type") != "PartAffinityFieldPredictor":
        raise _unsupported(path, f"DLCRNetHead predictor '{predictor.get('type')}'")
    for flag in ("add_discarded", "force_fusion"):
        if predictor.get(flag):
            raise _unsupported(path, f"PartAffinityFieldPredictor {flag}: true")
    bodyparts = common["bodyparts"]
    k = len(bodyparts)
    graph = _edges(predictor.get("graph"), "graph", k, path)
    keep = [int(i) for i in predictor.get("edges_to_keep", range(len(graph)))]
    if any(not 0 <= i < len(graph) for i in keep):
        raise ModelLoadError(f"{path}: predictor 'edges_to_keep' indexes past the "
                             f"{len(graph)} graph edges")
    nms_radius = int(predictor.get("nms_radius", 5))
    if nms_radius < 1 or nms_radius % 2 == 0:
        raise _unsupported(path, f"PartAffinityFieldPredictor nms_radius {nms_radius} "
                                 "(DeepLabCut's peak search needs an odd radius)")
    num_stages = int(head.get("num_stages", 5))
    features_dim = int(head.get("features_dim", 128))
    channels = {name: list((head.get(f"{name}_config") or {}).get("channels") or [])
                for name in ("heatmap", "locref", "paf")}
    for name, want in (("heatmap", k), ("locref", 2 * k), ("paf", 2 * len(graph))):
        if not channels[name] or channels[name][-1] != want:
            raise ModelLoadError(f"{path}: DLCRNetHead {name}_config channels "
                                 f"{channels[name]} do not match {want} output maps")
    if len(channels["heatmap"]) != 2:
        raise _unsupported(path, "DLCRNetHead with more than one output deconvolution")
    apply_sigmoid = bool(predictor.get("apply_sigmoid", True))
    individuals = [str(i) for i in metadata.get("individuals") or []]
    if not individuals:
        n = int(predictor.get("num_animals", 1))
        individuals = [f"individual{i + 1}" for i in range(n)]
    settings = {
        "graph": [list(e) for e in graph], "edges_to_keep": keep,
        "locref_stdev": float(predictor.get("locref_stdev", 7.2801)),
        "nms_radius": nms_radius, "sigma": float(predictor.get("sigma", 1.0)),
        "min_affinity": float(predictor.get("min_affinity", 0.05)),
        "clip_scores": bool(predictor.get("clip_scores", False)), **_ASSEMBLER_DEFAULTS,
    }
    stride = common["output_stride"] / (4 if num_stages > 0 else 2)
    architecture = {
        **common["architecture"], "head": HEAD, "num_stages": num_stages,
        "features_dim": features_dim, "score": "sigmoid" if apply_sigmoid else "clip",
        "individuals": individuals, "multianimalbodyparts": list(bodyparts),
        "uniquebodyparts": [], "paf_edges": [list(e) for e in graph], "dlc_predictor": settings,
    }
    return {**common, "architecture": architecture, "stride": stride,
            "locref_stdev": settings["locref_stdev"], "location_refinement": True,
            "has_locref_layer": True}


def map_paf_state(pose: Mapping[str, torch.Tensor], path: Path,
                  backbone_prefix: str) -> dict[str, torch.Tensor]:
    """DeepLabCut ``PoseModel`` keys of a DLCRNetHead model -> :class:`DLCRNet` keys."""
    from posed.exporters.common import rename_dlc_state

    return rename_dlc_state(pose, path, backbone_prefix, _PREFIX, _OUTPUTS, keep=_STAGES)
