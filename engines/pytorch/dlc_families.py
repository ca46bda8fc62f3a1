"""Randomly initialised DeepLabCut 3 exports of every family posed imports.

For benchmarks and tests where no DeepLabCut-trained file is at hand: the ``.pt`` DeepLabCut's
``export_model`` would write (``{"config": pytorch_config, "pose": state dict}``, DeepLabCut's
keys and config layout) for a family, with posed's own modules' random weights. Speed does not
depend on the weights; parity with DeepLabCut is proved on files DeepLabCut made
(``benchmarks/dlc_reference/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from posed.engines.io import atomic_path
from posed.engines.padding import pad_frames
from posed.engines.pytorch.dlcrnet import DLCRNet
from posed.engines.pytorch.model import PoseNet

__all__ = ["DLC_FAMILIES", "TOP_DOWN_FAMILIES", "dlc_state_dict", "random_dlc_export"]

# family -> (net_type, backbone config, backbone output stride, multi-animal)
DLC_FAMILIES: dict[str, tuple[str, dict[str, Any], int, bool]] = {
    "resnet_50": ("resnet_50", {"type": "ResNet", "model_name": "resnet50_gn",
                                "output_stride": 16}, 16, False),
    "resnet_50_paf": ("resnet_50", {"type": "ResNet", "model_name": "resnet50_gn",
                                    "output_stride": 16}, 16, True),
    "hrnet_w32": ("hrnet_w32", {"type": "HRNet", "model_name": "hrnet_w32"}, 4, False),
    "hrnet_w32_paf": ("hrnet_w32", {"type": "HRNet", "model_name": "hrnet_w32"}, 4, True),
}
# top-down family -> (net_type, backbone config, backbone stride, detector variant)
# (RTMPose: CSPNeXt with DeepLabCut's rtmpose_s settings, stride 32)
TOP_DOWN_FAMILIES: dict[str, tuple[str, dict[str, Any], int, str]] = {
    "top_down_resnet_50": ("resnet_50", {"type": "ResNet", "model_name": "resnet50_gn",
                                         "output_stride": 16}, 16,
                           "fasterrcnn_mobilenet_v3_large_fpn"),
    "top_down_resnet_50_ssdlite": ("resnet_50", {"type": "ResNet", "model_name": "resnet50_gn",
                                                 "output_stride": 16}, 16, "ssdlite"),
    "rtmpose_s": ("rtmpose_s", {"type": "CSPNeXt", "model_name": "cspnext_s", "arch": "P5",
                                "deepen_factor": 0.33, "widen_factor": 0.5}, 32, "ssdlite"),
}
# DeepLabCut 3.0.2's rtmpose_s head (256x256 crops)
_RTMCC = {"type": "RTMCCHead", "input_size": [256, 256], "in_featuremap_size": [8, 8],
          "simcc_split_ratio": 2.0, "final_layer_kernel_size": 7,
          "gau_cfg": {"hidden_dims": 256, "s": 128, "expansion_factor": 2, "dropout_rate": 0,
                      "drop_path": 0.0, "act_fn": "SiLU", "use_rel_bias": False,
                      "pos_enc": False},
          "predictor": {"type": "SimCCPredictor", "simcc_split_ratio": 2.0,
                        "sigma": [5.66, 5.66], "decode_beta": 150.0, "apply_softmax": True,
                        "normalize_outputs": False}}
_OUTPUTS = {"heatmap.": "heatmap_head.deconv_layers.0.",
            "locref.": "locref_head.deconv_layers.0.", "paf.": "paf_head.deconv_layers.0."}


def dlc_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A posed network's tensors (:class:`PoseNet` or :class:`DLCRNet`) under DeepLabCut's
    ``PoseModel`` names: the inverse of the import's mapping."""
    pose = {}
    outputs = _OUTPUTS
    if getattr(model, "head", None) == "conv1x1":  # DeepLabCut's top-down head
        outputs = {"heatmap.": "heatmap_head.final_conv.", "locref.": "locref_head.final_conv."}
    for key, tensor in model.state_dict().items():
        if key.startswith("backbone."):
            pose["backbone.model." + key[len("backbone."):]] = tensor
        else:
            head = next((v + key[len(k):] for k, v in outputs.items() if key.startswith(k)), key)
            pose["heads.bodypart." + head] = tensor
    return pose


def _deconv(cin: int, cout: int) -> dict[str, Any]:
    return {"channels": [cin, cout], "kernel_size": [3], "strides": [2]}


def _head(k: int, graph: list[list[int]] | None, cin: int, individuals: int) -> dict[str, Any]:
    if graph is None:
        return {"type": "HeatmapHead",
                "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False,
                              "clip_scores": True, "location_refinement": True,
                              "locref_std": 7.2801},
                "heatmap_config": _deconv(cin, k), "locref_config": _deconv(cin, 2 * k)}
    return {"type": "DLCRNetHead", "num_stages": 5, "features_dim": 128,
            "predictor": {"type": "PartAffinityFieldPredictor", "num_animals": individuals,
                          "num_multibodyparts": k, "num_uniquebodyparts": 0, "nms_radius": 5,
                          "sigma": 1.0, "locref_stdev": 7.2801, "min_affinity": 0.05,
                          "graph": graph, "edges_to_keep": list(range(len(graph))),
                          "apply_sigmoid": True, "clip_scores": False},
            "heatmap_config": _deconv(cin, k), "locref_config": _deconv(cin, 2 * k),
            "paf_config": _deconv(cin, 2 * len(graph))}


def _calibrate_batchnorm(model: torch.nn.Module) -> None:
    """Set batch-norm statistics from random images: a random BatchNorm network (HRNet)
    otherwise grows its activations layer by layer to ~1e7, where float32 rounding alone
    moves keypoints and no export parity check can pass."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the calibration batches
    model.train()
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        model(torch.rand(4, 3, 128, 160, generator=generator) * 255)
    model.eval()


def _sparse_scores(model: torch.nn.Module, images: torch.Tensor, spread: float = 20.0,
                   cells: int = 8) -> None:
    """Rescale each part's score layer so that only about ``cells`` cells of ``images`` reach
    DeepLabCut's peak threshold (0.01), sharply: a handful of candidates per part, as a
    trained model finds for a few animals. Random heads otherwise give hundreds to thousands,
    and the assembly, whose cost grows with their square, would be far from a real model's."""
    heat = model(images)[0].transpose(0, 1).flatten(1)  # parts × all cells
    std = heat.std(dim=1).clamp_min(1e-6)
    gain = spread / std
    cut = torch.quantile(heat, 1 - cells * len(images) / heat.shape[1], dim=1)
    layer = model.heatmap  # ConvTranspose2d: weight (in, out, k, k)
    layer.weight.mul_(gain.view(1, -1, 1, 1))
    layer.bias.copy_(gain * (layer.bias - cut) + torch.logit(torch.tensor(0.01)))


def random_dlc_export(family: str, path: str | Path, *, bodyparts: int = 12, individuals: int = 3,
                      seed: int = 0, frames: np.ndarray | None = None) -> Path:
    """Write a random-weights DeepLabCut 3 export of ``family`` (a key of :data:`DLC_FAMILIES`).

    For multi-animal families the score layer is set so that ``frames`` (uint8 N×H×W×3, the
    frames the model will be timed on; default: 2 noise frames of 128×160) give a few
    candidates per part (see :func:`_sparse_scores`).
    """
    if family in TOP_DOWN_FAMILIES:
        return _random_top_down_export(family, Path(path), bodyparts, individuals, seed)
    net_type, backbone, stride, multi = DLC_FAMILIES[family]
    names = [f"part{i}" for i in range(bodyparts)]
    graph = [[a, b] for a in range(bodyparts) for b in range(a + 1, bodyparts)] if multi else None
    hrnet = backbone["type"] == "HRNet"
    pad = {"pad_width_divisor": 32, "pad_height_divisor": 32} if hrnet else None
    torch.manual_seed(seed)
    if multi:
        model = DLCRNet(net_type, bodyparts, graph, stride, timm_model=backbone["model_name"])
    else:
        model = PoseNet(net_type, bodyparts, stride, timm_model=backbone["model_name"],
                        score="clip", head="deconv3x3s2_nopad")
    with torch.no_grad():  # heads that vary over the image: unambiguous maxima for parity checks
        for name, param in model.named_parameters():
            if not name.startswith("backbone."):
                param.normal_(0.0, 0.01)
        _calibrate_batchnorm(model)
        if multi:
            if frames is None:
                frames = np.random.default_rng(seed).integers(0, 256, (2, 128, 160, 3), np.uint8)
            if pad:
                frames = pad_frames(np.asarray(frames), pad)[0]
            _sparse_scores(model, torch.from_numpy(np.ascontiguousarray(frames)).permute(
                0, 3, 1, 2).float())
    cin = model.backbone.feature_info.channels()[-1]
    pose = dlc_state_dict(model)
    inference: dict[str, Any] = {"normalize_images": True}
    if pad:
        inference["auto_padding"] = pad
    config = {
        "method": "bu", "net_type": net_type,
        "metadata": {"project_path": "/data/bench-posed-2026-01-01", "bodyparts": names,
                     "unique_bodyparts": [],
                     "individuals": [f"animal{i + 1}" for i in range(individuals if multi else 1)],
                     "with_identity": None},
        "data": {"colormode": "RGB", "inference": inference},
        "model": {"backbone": backbone, "backbone_output_channels": cin,
                  "heads": {"bodypart": _head(bodyparts, graph, cin, individuals)}},
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"config": config, "pose": pose}, tmp)
    return path


@torch.no_grad()
def _spread_detector(detector: torch.nn.Module, seed: int) -> None:
    """Re-draw a torchvision detector's weights so that its box scores differ. torchvision's
    own init gives an untrained Faster R-CNN's boxes tied scores, and which of the tied boxes
    a runtime keeps is chance, so no export could pass a parity check. Weights: He normal;
    norm gains U(0.5, 1), biases and means N(0, 0.1), variances U(0.5, 1.5) (the rule of the
    top-down reference fixture, ``tests/data/deeplabcut/td_fixture/seeded_weights.py``)."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in detector.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if not tensor.is_floating_point():
            continue
        if leaf == "weight" and tensor.dim() >= 2:
            tensor.normal_(0.0, (2.0 / tensor[0].numel()) ** 0.5, generator=generator)
        elif leaf == "weight":
            tensor.uniform_(0.5, 1.0, generator=generator)
        elif leaf == "running_var":
            tensor.uniform_(0.5, 1.5, generator=generator)
        else:  # bias, running_mean
            tensor.normal_(0.0, 0.1, generator=generator)


def _random_top_down_export(family: str, path: Path, bodyparts: int, individuals: int,
                            seed: int) -> Path:
    """A random DeepLabCut 3 top-down export: ``{"config", "pose", "detector"}``. The
    detector finds boxes (of no meaning) in any frame, with distinct scores (see
    :func:`_spread_detector`)."""
    from posed.engines.pytorch.topdown import build_detector

    net_type, backbone, stride, variant = TOP_DOWN_FAMILIES[family]
    torch.manual_seed(seed)
    detector = build_detector({"variant": variant, "box_score_thresh": 0.01})
    _spread_detector(detector, seed)
    if backbone["type"] == "CSPNeXt":
        model, head, cin, pose = _random_rtmpose(backbone, bodyparts)
    else:
        model = PoseNet(net_type, bodyparts, stride, timm_model=backbone["model_name"],
                        score="clip", head="conv1x1")
        cin = model.backbone.feature_info.channels()[-1]
        final = {"channels": [cin], "kernel_size": [], "strides": []}
        head = {"type": "HeatmapHead",
                "predictor": {"type": "HeatmapPredictor", "apply_sigmoid": False,
                              "clip_scores": True, "location_refinement": True,
                              "locref_std": 7.2801},
                "heatmap_config": {**final, "final_conv": {"out_channels": bodyparts,
                                                           "kernel_size": 1}},
                "locref_config": {**final, "final_conv": {"out_channels": 2 * bodyparts,
                                                          "kernel_size": 1}}}
        pose = dlc_state_dict(model)
    inference = {"normalize_images": True}
    crop = head.get("input_size", [256, 256])
    config = {
        "method": "td", "net_type": net_type,
        "metadata": {"project_path": "/data/bench-posed-2026-01-01",
                     "bodyparts": [f"part{i}" for i in range(bodyparts)], "unique_bodyparts": [],
                     "individuals": [f"animal{i + 1}" for i in range(individuals)],
                     "with_identity": None},
        "data": {"colormode": "RGB",
                 "inference": {**inference,
                               "top_down_crop": {"width": crop[0], "height": crop[1]}}},
        "model": {"backbone": backbone, "backbone_output_channels": cin,
                  "heads": {"bodypart": head}},
        "detector": {"model": {"type": "FasterRCNN", "variant": variant,
                               "box_score_thresh": 0.01},
                     "data": {"colormode": "RGB", "inference": inference}},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"config": config, "pose": pose,
                    "detector": {"model." + k: v for k, v in detector.state_dict().items()}},
                   tmp)
    return path


def _random_rtmpose(backbone: dict[str, Any], bodyparts: int
                    ) -> tuple[torch.nn.Module, dict[str, Any], int, dict[str, torch.Tensor]]:
    """A random RTMPose (posed's modules, DeepLabCut's settings): the model, DeepLabCut's head
    config, the backbone's output channels and the state dict under DeepLabCut's names."""
    from posed.engines.pytorch.rtmpose import RTMPoseNet

    head = {**_RTMCC, "out_channels": bodyparts}
    spec = {"deepen_factor": backbone["deepen_factor"], "widen_factor": backbone["widen_factor"],
            **{k: head[k] for k in ("input_size", "in_featuremap_size", "simcc_split_ratio",
                                    "final_layer_kernel_size")},
            **{k: head["gau_cfg"][k] for k in ("hidden_dims", "s", "expansion_factor")}}
    model = RTMPoseNet(bodyparts, spec, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    head["in_channels"] = model.backbone.channels
    # DeepLabCut's names: its CSPNeXt has no timm ``model.`` level; the head is heads.bodypart
    pose = {("heads.bodypart." + k[len("head."):]) if k.startswith("head.") else k: v
            for k, v in model.state_dict().items()}
    return model, head, model.backbone.channels, pose
