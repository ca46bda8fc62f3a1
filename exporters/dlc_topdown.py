"""DeepLabCut 3's top-down models (``method: td``): a torchvision detector, then a pose model
on a fixed-size crop of each detected animal.

Imported, a top-down shuffle becomes one posed bundle with two weights files: the pose model
(``model.safetensors``: a :class:`~posed.engines.pytorch.model.PoseNet` with the ``conv1x1``
head DeepLabCut's top-down ``HeatmapHead`` has, or for RTMPose (``RTMCCHead``) a
:class:`~posed.engines.pytorch.rtmpose.RTMPoseNet` with ``architecture.rtmpose``) and the
detector (``detector.safetensors``,
torchvision's state dict, :func:`posed.engines.pytorch.topdown.build_detector`).
``architecture.topdown`` names the detector, ``architecture.crop`` holds DeepLabCut's
``data.inference.top_down_crop`` (width, height, margin) and ``individuals`` the animal slots.

Refused, one line each: RTMPose variants DeepLabCut's configs do not use (relative position
bias or rotary encoding in the attention unit, SimCC without softmax), a crop without context
(``crop_with_context: false``), unique body parts and identity heads (DeepLabCut 3 does not
offer them for top-down models either), and a detector whose input transforms differ from the
pose model's.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from posed.errors import ModelLoadError
from posed.exporters.common import unsupported as _unsupported

__all__ = ["DETECTOR_FILE", "map_detector_state", "topdown_spec"]

DETECTOR_FILE = "detector.safetensors"
_PREFIX = "heads.bodypart."
_OUTPUTS = {"heatmap_head.final_conv.": "heatmap.", "locref_head.final_conv.": "locref."}
_DETECTOR_TYPES = {"FasterRCNN": None, "SSDLite": "ssdlite"}


def _check_final_conv(cfg: Any, name: str, out_channels: int, path: Path) -> None:
    """The top-down head: no deconvolution, one 1x1 ``final_conv`` to ``out_channels``."""
    if not isinstance(cfg, Mapping):
        raise ModelLoadError(f"{path}: HeatmapHead {name}_config is missing")
    if cfg.get("kernel_size") or cfg.get("strides"):
        raise _unsupported(path, f"top-down HeatmapHead {name}_config with deconvolutions")
    final = cfg.get("final_conv") or {}
    if int(final.get("kernel_size", 0)) != 1 or int(final.get("out_channels", -1)) != out_channels:
        raise ModelLoadError(f"{path}: top-down HeatmapHead {name}_config final_conv must be 1x1 "
                             f"to {out_channels} maps, got {dict(final)}")


def _detector(config: Mapping, path: Path, normalisation: Any) -> dict[str, Any]:
    from posed.engines.pytorch.topdown import DETECTORS

    detector = config.get("detector")
    model = detector.get("model") if isinstance(detector, Mapping) else None
    if not isinstance(model, Mapping):
        raise ModelLoadError(f"{path}: config key 'detector.model' is missing (a top-down "
                             "model needs its detector)")
    dtype = str(model.get("type"))
    if dtype not in _DETECTOR_TYPES:
        raise _unsupported(path, f"detector type '{dtype}'")
    variant = _DETECTOR_TYPES[dtype] or str(model.get("variant"))
    if variant not in DETECTORS:
        raise _unsupported(path, f"detector variant '{variant}'")
    if normalisation({"data": detector.get("data") or {}}, path) != normalisation(config, path):
        raise _unsupported(path, "a detector whose input transforms differ from the pose model's")
    return {"variant": variant, "box_score_thresh": float(model.get("box_score_thresh", 0.01))}


def _two_stage(config: Mapping, path: Path, normalisation: Any) -> dict[str, Any]:
    """What every top-down bundle's architecture holds: the animal slots, the crop and the
    detector."""
    metadata = config.get("metadata") or {}
    if metadata.get("unique_bodyparts"):
        raise _unsupported(path, "unique body parts in a top-down model")
    if metadata.get("with_identity"):
        raise _unsupported(path, "identity heads")
    crop = ((config.get("data") or {}).get("inference") or {}).get("top_down_crop") or {}
    if not crop.get("crop_with_context", True):
        raise _unsupported(path, "top_down_crop without context (crop_with_context: false)")
    try:
        crop = {"width": int(crop.get("width", 256)), "height": int(crop.get("height", 256)),
                "margin": int(crop.get("margin", 0))}
    except (TypeError, ValueError):
        raise ModelLoadError(f"{path}: data.inference.top_down_crop must hold integers, "
                             f"got {dict(crop)}") from None
    return {"individuals": [str(i) for i in (metadata.get("individuals") or ["single"])],
            "crop": crop, "topdown": _detector(config, path, normalisation)}


def rtmpose_spec(config: Mapping, head: Mapping, path: Path, common: dict[str, Any],
                 normalisation: Any) -> dict[str, Any]:
    """The bundle settings of an RTMPose model (CSPNeXt backbone, ``RTMCCHead``, SimCC)."""
    backbone = ((config.get("model") or {}).get("backbone")) or {}
    if backbone.get("type") != "CSPNeXt":
        raise _unsupported(path, f"RTMCCHead on backbone type '{backbone.get('type')}'")
    for key, want in (("arch", "P5"), ("activation_fn", "SiLU"), ("channel_attention", True)):
        if backbone.get(key, want) != want:
            raise _unsupported(path, f"CSPNeXt {key} {backbone.get(key)!r}")
    if backbone.get("norm_layer", "SyncBN") not in ("SyncBN", "BN"):
        raise _unsupported(path, f"CSPNeXt norm_layer {backbone.get('norm_layer')!r}")
    gau = head.get("gau_cfg") or {}
    for key, want in (("use_rel_bias", False), ("pos_enc", False), ("act_fn", "SiLU")):
        if gau.get(key, want) != want:
            raise _unsupported(path, f"RTMCCHead gau_cfg {key} {gau.get(key)!r}")
    predictor = head.get("predictor") or {}
    if predictor.get("type") != "SimCCPredictor":
        raise _unsupported(path, f"RTMCCHead with predictor '{predictor.get('type')}'")
    if predictor.get("normalize_outputs") or not predictor.get("apply_softmax", True):
        raise _unsupported(path, "SimCC decoding without softmax, or with normalize_outputs")
    if int(head.get("out_channels", -1)) != len(common["bodyparts"]):
        raise ModelLoadError(f"{path}: RTMCCHead out_channels {head.get('out_channels')} do not "
                             f"match {len(common['bodyparts'])} body parts")
    try:
        spec = {"deepen_factor": float(backbone["deepen_factor"]),
                "widen_factor": float(backbone["widen_factor"]),
                "expand_ratio": float(backbone.get("expand_ratio", 0.5)),
                "input_size": [int(v) for v in head["input_size"]],
                "in_featuremap_size": [int(v) for v in head["in_featuremap_size"]],
                "simcc_split_ratio": float(head["simcc_split_ratio"]),
                "final_layer_kernel_size": int(head["final_layer_kernel_size"]),
                "hidden_dims": int(gau["hidden_dims"]), "s": int(gau["s"]),
                "expansion_factor": float(gau["expansion_factor"]),
                "sigma": [float(v) for v in predictor["sigma"]],
                "decode_beta": float(predictor["decode_beta"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: RTMPose config lacks or mangles {exc}") from None
    arch = {"net": "rtmpose", "head": "rtmcc", "rtmpose": spec,
            **_two_stage(config, path, normalisation)}
    if [arch["crop"]["width"], arch["crop"]["height"]] != spec["input_size"]:
        raise ModelLoadError(f"{path}: top_down_crop {arch['crop']} differs from the RTMCCHead "
                             f"input_size {spec['input_size']}")
    # stride and locref_stdev are heatmap settings SimCC does not use (bin = pixel / split)
    return {"bodyparts": common["bodyparts"], "architecture": arch, "stride": 1.0,
            "locref_stdev": 1.0, "mean": common["mean"], "std": common["std"],
            "net_type": common["net_type"]}


def topdown_spec(config: Mapping, head: Mapping, path: Path, common: dict[str, Any],
                 normalisation: Any) -> dict[str, Any]:
    """The bundle settings of a top-down model. ``common`` holds what every DeepLabCut model
    has (body parts, output stride, normalisation, architecture so far); ``normalisation``
    is the importer's ``(config, path) -> (mean, std)``."""
    htype = str(head.get("type"))
    if htype != "HeatmapHead":
        raise _unsupported(path, f"top-down head type '{htype}'")
    k = len(common["bodyparts"])
    _check_final_conv(head.get("heatmap_config"), "heatmap", k, path)
    _check_final_conv(head.get("locref_config"), "locref", 2 * k, path)
    predictor = head.get("predictor") or {}
    if predictor.get("type", "HeatmapPredictor") != "HeatmapPredictor":
        raise _unsupported(path, f"predictor '{predictor.get('type')}'")
    if predictor.get("apply_sigmoid", True) or not predictor.get("clip_scores", False):
        raise _unsupported(path, "a top-down predictor other than clipped raw scores "
                                 "(apply_sigmoid false, clip_scores true)")
    if not predictor.get("location_refinement", True):
        raise _unsupported(path, "a top-down predictor without location refinement")
    arch = {**common["architecture"], "score": "clip", "head": "conv1x1",
            **_two_stage(config, path, normalisation)}
    return {"bodyparts": common["bodyparts"], "architecture": arch,
            "stride": float(common["output_stride"]),
            "locref_stdev": float(predictor.get("locref_std", 7.2801)),
            "location_refinement": True, "has_locref_layer": True, "mean": common["mean"],
            "std": common["std"], "net_type": common["net_type"]}


def map_topdown_state(pose: Mapping[str, torch.Tensor], path: Path,
                      backbone_prefix: str) -> dict[str, torch.Tensor]:
    """DeepLabCut's top-down ``PoseModel`` keys -> ``PoseNet`` keys."""
    from posed.exporters.common import rename_dlc_state

    return rename_dlc_state(pose, path, backbone_prefix, _PREFIX, _OUTPUTS)


def map_detector_state(detector: Any, path: Path) -> dict[str, torch.Tensor]:
    """DeepLabCut's detector state dict (``model.`` + torchvision's keys) -> torchvision's."""
    if not isinstance(detector, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in detector.items()):
        raise ModelLoadError(f"{path}: the detector is not a state dict of named tensors")
    bad = next((k for k in detector if not k.startswith("model.")), None)
    if bad is not None:
        raise ModelLoadError(f"{path}: unexpected detector tensor '{bad}' (DeepLabCut's "
                             "detector keys start with 'model.')")
    return {k[len("model."):]: v for k, v in detector.items()}


def save_detector(spec: dict[str, Any], state: dict[str, torch.Tensor], path: Path,
                  out: Path) -> None:
    """Check ``state`` against the detector strictly and write ``out/detector.safetensors``."""
    from safetensors.torch import save_file

    from posed.engines.io import atomic_path
    from posed.engines.pytorch.topdown import build_detector

    model = build_detector(spec["architecture"]["topdown"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"{path}: detector weights do not fit "
                             f"{spec['architecture']['topdown']['variant']} "
                             f"({' '.join(str(exc).split())[:300]})") from None
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / DETECTOR_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"imported_from": "deeplabcut", "file": path.name})
